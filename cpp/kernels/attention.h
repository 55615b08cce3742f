// attention.h — causal multi-head attention, tiled over queries (flash-style: the scores of one
// query tile against its key range live in a per-thread scratch of TILE x T floats; the T x T
// matrix is never materialised). Backward recomputes the probabilities from the saved
// log-sum-exp, as FlashAttention does.
#pragma once
#include <cstdint>
namespace hm {
// q, k, v, out: (B, T, H*hd) with row stride ld (>= H*hd); lse (B, H, T).
// doc_start (B*T) or null: query t attends keys j with doc_start[t] <= j <= t (packed documents).
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const int32_t* doc_start, int64_t B, int64_t T, int64_t H, int64_t hd, int64_t ld);
// dq, dk, dv (B, T, H*hd, stride ld) += ...
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, const int32_t* doc_start, int64_t B,
                        int64_t T, int64_t H, int64_t hd, int64_t ld);
// The same with separate row strides for q, k, v and out (dq, dk, dv and dout share them), e.g. v
// read in place from a fused (N, W) qkv projection. accumulate = false writes dq, dk, dv instead of
// adding to them (no zeroing pass needed).
// Grouped-query attention: Hkv key/value heads (H % Hkv == 0; 0 = H), k and v rows hold Hkv*hd
// values and query head h reads kv head h / (H / Hkv); dk, dv sum over the query heads of a group.
struct AttnStrides {
  int64_t q, k, v, o;
};
void attention_forward_strided(float* out, float* lse, const float* q, const float* k, const float* v,
                               const int32_t* doc_start, int64_t B, int64_t T, int64_t H, int64_t hd,
                               const AttnStrides& ld, int64_t Hkv = 0);
void attention_backward_strided(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                                const float* v, const float* out, const float* lse, const int32_t* doc_start,
                                int64_t B, int64_t T, int64_t H, int64_t hd, const AttnStrides& ld, bool accumulate,
                                int64_t Hkv = 0);
// One query against n cached keys (KV-cached generation): out, q (H*hd); kcache, vcache (n, Hkv*hd),
// keys already normed and rotated. Same formula as attention_forward: scale 1/sqrt(hd),
// max-subtracted softmax (sum in double) over all n keys (the query is the last position).
void attention_decode(float* out, const float* q, const float* kcache, const float* vcache, int64_t n, int64_t H,
                      int64_t hd, int64_t Hkv = 0);
}  // namespace hm
