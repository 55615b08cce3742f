// anchor_model.h — the anchor transformer (paper §2.1): pre-norm RMSNorm blocks with QK-norm over
// the full q/k vectors, RoPE, causal attention, SwiGLU FFN, no biases, tied embeddings.
//   h   = x + Wo · Attn(rope(qnorm(Wq u)), rope(knorm(Wk u)), Wv u),  u = norm1(x)
//   out = h + W3 · (silu(W1 v) ⊙ W2 v),                                v = norm2(h)
// Generalised to the Llama family by ModelDims' flags: grouped-query attention (Hkv kv heads),
// QK-norm optional (qnorm/knorm = identity), q/k/v biases (Wqkv u + bqkv), an untied output head
// (logits = lnf · lm_head^T instead of · wte^T) and Llama-3.1 RoPE frequency scaling.
// Parameters and gradients live in caller-owned flat buffers (plain data, llm.c style); this
// struct only holds dims, pointers into those buffers and the activation scratch.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "contract.h"  // ModelDims, ModelMemory, MemoryGroup
#include "kernels/ffn_memory.h"
#include "kernels/rope.h"

namespace hm {

struct TensorSlot {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset, size;
  bool decay;
};

// Flat parameter layout, in file order.
std::vector<TensorSlot> anchor_layout(const ModelDims& d);
int64_t anchor_param_count(const ModelDims& d);

// bqkv is null without qkv_bias, q_norm / k_norm null without qk_norm.
struct LayerParams {
  float *attn_norm, *wqkv, *bqkv, *q_norm, *k_norm, *wo, *ffn_norm, *w1, *w2, *w3;
};
// head: the output projection (V, C): lm_head, or wte itself when the embeddings are tied.
struct AnchorParams {
  float* wte;
  std::vector<LayerParams> layers;
  float* final_norm;
  float* head;
};
AnchorParams anchor_params_view(const ModelDims& d, float* base);

// FFN-memories (paper §2.3): R fetched hidden units in each memory layer.
struct MemoryConfig {
  int64_t R = 0, Lm = 0;
  std::vector<int32_t> layer_to_mem;  // (L): memory layer index of each layer, -1 = none
  // the plain-data view the CUDA model takes (valid while this config lives)
  ModelMemory view() const { return {R, Lm, layer_to_mem.empty() ? nullptr : layer_to_mem.data()}; }
};

// The fetched blocks of one batch: fetched / dfetched (S, Lm, 3, R, C); seq_slot (B): slot of each
// sequence, -1 = no memory for that sequence. dfetched is ADDED to by backward.
struct MemoryBatch {
  const float* fetched;
  float* dfetched;
  const int32_t* seq_slot;
  int64_t num_slots;
};

// One batch: tokens/targets (B*T), doc_start (B*T) or null, memory or null.
struct Batch {
  const int32_t* tokens;
  const int32_t* targets;
  const int32_t* doc_start;
  int64_t B, T;
  const MemoryBatch* memory = nullptr;
};

// Incremental decoding state of one sequence (batch 1): per layer, the keys (after QK-norm and
// RoPE) and values of every position seen so far, so that a new token attends to them without
// recomputing the prefix. k, v: (L, T, D) with T = dims.T (the model's max sequence length) and
// D = dims.Dkv() (the kv heads only: grouped-query attention shrinks the cache by H / Hkv);
// rows [0, len) of each layer are filled. A full cache (len == T) cannot take another token: the
// caller falls back to re-running a sliding window through last_logits (what generation did
// before the cache existed), because dropping the oldest token changes every later key.
struct KVCache {
  int64_t L = 0, T = 0, D = 0, len = 0;
  std::vector<float> k, v;
  KVCache() = default;
  explicit KVCache(const ModelDims& d)
      : L(d.L), T(d.T), D(d.Dkv()), k((size_t)(d.L * d.T * d.Dkv())), v((size_t)(d.L * d.T * d.Dkv())) {}
  bool fits(const ModelDims& d) const { return L == d.L && T == d.T && D == d.Dkv(); }
  float* k_at(int64_t l, int64_t t) { return k.data() + (l * T + t) * D; }
  float* v_at(int64_t l, int64_t t) { return v.data() + (l * T + t) * D; }
};

class AnchorModel {
 public:
  AnchorModel(const ModelDims& d, float* params, float* grads, int64_t max_batch, const MemoryConfig& mem = {});
  // Forward + backward; adds gradients into grads. Returns mean loss over non-ignored targets.
  double forward_backward(const Batch& batch);
  // Forward only; returns mean loss (NaN if no target).
  double forward_loss(const Batch& batch);
  // Logits (V) of the last position of a single sequence of length T <= dims.T.
  void last_logits(const int32_t* tokens, int64_t T, float* logits_out, const MemoryBatch* memory = nullptr);
  // KV-cached generation (preconditions, checked by the binding: cache.fits(dims()), tokens in
  // [0, V), memory (if any) has one sequence, i.e. seq_slot has 1 entry; pass the same memory to
  // every call on one cache).
  // prefill: runs the prompt (1 <= T <= dims.T) once like last_logits, writes the same logits, and
  // fills the cache with its keys/values (cache.len = T).
  void prefill(const int32_t* tokens, int64_t T, KVCache& cache, float* logits_out, const MemoryBatch* memory = nullptr);
  // decode_step: appends one token at position cache.len (< dims.T) and writes the logits (V) of
  // that position; equal to last_logits over the whole sequence up to float rounding.
  void decode_step(int32_t token, KVCache& cache, float* logits_out, const MemoryBatch* memory = nullptr);
  const MemoryConfig& memory_config() const { return mem_; }

  const ModelDims& dims() const { return d_; }
  int64_t max_batch() const { return max_batch_; }

 private:
  struct LayerActs {
    // qkv (N, W): [q_raw | k_raw | v] of each row (W = D + 2 Dkv; biases added), one GEMM over the stacked
    // wqkv; q (N, D), k (N, Dkv): normed (if qk_norm) and rotated; gu (N, 2F):
    // [gate | up] of each row, one GEMM over [w1; w2]
    std::vector<float> x_in, ln1, ln1_rstd, qkv, q_rstd, k_rstd, q, k, att, lse, h_mid, ln2, ln2_rstd, gu, gate_m,
        up_m;
  };
  void forward(const Batch& b);  // fills activations up to lnf
  double loss_and_grad(const Batch& b, bool backward);
  void backward(const Batch& b);

  ModelDims d_;
  MemoryConfig mem_;
  std::vector<MemoryGroup> groups_;
  int64_t max_batch_;
  AnchorParams p_, g_;
  std::vector<LayerActs> acts_;
  std::vector<float> x_final_, lnf_, lnf_rstd_, losses_, cls_scratch_;
  std::vector<int32_t> pos_;
  // decode_step scratch (one row)
  std::vector<float> dec_x_, dec_h_, dec_ln_, dec_qkv_, dec_q_, dec_att_, dec_gate_, dec_up_, dec_hidden_, dec_gate_m_,
      dec_up_m_, dec_mem_hidden_;
  RopeTable dec_rope_;
  // backward scratch
  std::vector<float> dresid_, dln_, dqkv_, datt_, dq_, dk_, s_h_, s_dh_, s_dgu_, ffn_hidden_, mem_hidden_, mem_scratch_;
  RopeTable rope_;  // of the current batch's positions (forward builds it, backward reuses it)
};

}  // namespace hm
