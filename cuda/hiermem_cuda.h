// hiermem_cuda.h — the CUDA backend's interface (issue #8).
//
// The CUDA code is its own shared library (hiermem_cuda.so, static cudart) that the Node addon
// opens with dlopen only when a driver and a GPU are present; the CPU addon never links CUDA.
// Every kernel here has a CPU twin in cpp/kernels with the same arguments and semantics (named in
// each comment); pointers are DEVICE pointers unless the name says host, and every call is
// asynchronous on the given stream (nullptr = legacy default stream). Functions return 0 or a
// cudaError_t value (launch errors are checked with cudaGetLastError, not synchronised).
//
// The plain data both backends share (ModelDims, ModelMemory, MemoryGroup, AdamWHyper/AdamWConsts)
// is defined once in cpp/contract.h and used here as is: the hmc names below are the hm types.
//
// The harness (cuda/test, built as hiermem_cuda_harness) checks each kernel against its twin.
// C++ linkage inside namespace hmc for the kernels (the harness links them directly); the
// dlopen entry point hmc_get_api is extern "C" and hands out a table of function pointers.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../cpp/contract.h"  // relative: the fakes and probes compile this header with -I cuda only

// 2: streams, pinned memory, the device model, the optimizer; 3: AdamWArgs.one_minus_beta*;
// 4: the types of cpp/contract.h (AdamWConsts replaces AdamWArgs; ModelMemory.layer_to_mem is a
//    pointer to L entries, no 64-layer cap); 5: ModelDims grows the Llama-family fields (Hkv,
//    qk_norm, qkv_bias, tie_embeddings, rope_scaling)
#define HMC_ABI_VERSION 5

namespace hmc {

using hm::AdamWConsts;
using hm::AdamWHyper;
using hm::MemoryGroup;
using hm::ModelDims;
using hm::ModelMemory;

using Stream = void*;  // cudaStream_t, kept opaque so that C++ callers need no CUDA headers

// Dense products. FP32 is the reference mode (plain FMA in fp32, SIMT); TF32 and BF16 use tensor
// cores (mma.sync) with fp32 accumulation, operands rounded to tf32 / bf16 as they are loaded.
enum class GemmMode : int32_t { FP32 = 0, TF32 = 1, BF16 = 2 };

// ---- dense GEMM (twin: hm::gemm in cpp/kernels/gemm.h) ---------------------------------------------
// Row-major C (M,N) = alpha * op(A) (M,K) * op(B) (K,N) + beta * C.
// op(A) = A (M,K, lda) or, if trans_a, A^T with A stored (K,M); op(B) = B (K,N, ldb) or, if
// trans_b, B^T with B stored (N,K). beta = 0 never reads C (C may hold NaN).
int gemm(GemmMode mode, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
         int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc, Stream s);

// ---- elementwise / normalisation (twins: cpp/kernels/{embedding,rmsnorm,rope,ffn}.h) --------
int embedding_forward(float* out, const int32_t* tokens, const float* wte, int64_t N, int64_t C, Stream s);
// Deterministic: each (vocab row, channel) sums its tokens in token order (no float atomics).
// Needs the token ids sorted: the caller passes order (N) = token positions sorted by
// (token, position) — see embedding_sort_tokens — so that one pass can segment by token.
int embedding_backward(float* dwte, const float* dout, const int32_t* tokens, const int32_t* order, int64_t N,
                       int64_t C, Stream s);
// order (N) = argsort of tokens, stable; scratch: embedding_sort_scratch_bytes(N) bytes.
int embedding_sort_tokens(int32_t* order, const int32_t* tokens, int64_t N, void* scratch, size_t scratch_bytes,
                          Stream s);
size_t embedding_sort_scratch_bytes(int64_t N);

int rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t C, float eps,
                    Stream s);
// dx (N,C) += ...; dw (C) += ... (dw reduced deterministically: per-block partials, then a fixed-order sum;
// scratch: rmsnorm_backward_scratch_floats(N, C) floats).
int rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd,
                     int64_t N, int64_t C, float* scratch, Stream s);
int64_t rmsnorm_backward_scratch_floats(int64_t N, int64_t C);

// in place on (N, H, hd) rows with stride ld floats between rows n (ld >= H*hd)
int rope_forward(float* x, const int32_t* pos, int64_t N, int64_t H, int64_t hd, int64_t ld, double base, Stream s);
int rope_backward(float* dx, const int32_t* pos, int64_t N, int64_t H, int64_t hd, int64_t ld, double base,
                  Stream s);

int swiglu_forward(float* h, const float* gate, const float* up, int64_t n, Stream s);
int swiglu_backward(float* dgate, float* dup, const float* dh, const float* gate, const float* up, int64_t n,
                    Stream s);  // dgate, dup += ...

// ---- attention (twin: cpp/kernels/attention.h) ------------------------------------------------
// q, k, v, out: (B, T, H*hd) with row stride ld; lse (B, H, T); doc_start (B*T) or null.
// Flash-style: scores live in shared memory / registers per tile, never (T, T) in global memory.
// 1 <= hd <= 128 (cudaErrorInvalidValue above); B, H <= 65535 (grid limits).
int attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                      const int32_t* doc_start, int64_t B, int64_t T, int64_t H, int64_t hd, int64_t ld, Stream s);
// dq, dk, dv += ... ; deterministic (no float atomics across query tiles).
// scratch: attention_backward_scratch_floats(B, T, H) floats (the row sums D = rowsum(dout * out)).
int attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                       const float* v, const float* out, const float* lse, const int32_t* doc_start, int64_t B,
                       int64_t T, int64_t H, int64_t hd, int64_t ld, float* scratch, Stream s);
int64_t attention_backward_scratch_floats(int64_t B, int64_t T, int64_t H);

// ---- anchor FFN (twin: hm::ffn_forward / ffn_backward in cpp/kernels/ffn.h) ---------------
// y (N,C) = W3 (silu(W1 x) * (W2 x)); gate, up (N,F) written; hidden (N,F) scratch.
int ffn_forward(GemmMode mode, float* y, float* gate, float* up, float* hidden, const float* x, const float* w1,
                const float* w2, const float* w3, int64_t N, int64_t C, int64_t F, Stream s);
// dx, dw1, dw2, dw3 += ...; scratch: 4 * N * F floats.
int ffn_backward(GemmMode mode, float* dx, float* dw1, float* dw2, float* dw3, const float* dy, const float* x,
                 const float* gate, const float* up, const float* w1, const float* w2, const float* w3, int64_t N,
                 int64_t C, int64_t F, float* scratch, Stream s);

// ---- FFN memory units (twin: cpp/kernels/ffn_memory.h) ----------------------------------------
// groups: DEVICE array of G groups (built on the host with hm::memory_groups and copied).
// layer_w: slot 0's block of this layer in the fetched buffer; slot s at + s * slot_stride; gate
// rows at +0, up at +R*C, down at +2*R*C. y (N,C) += ...; gate_m, up_m (N,R) written for grouped
// rows. Fused: the hidden (rows, R) never goes to global memory; no concatenated weight matrix.
int ffn_memory_forward(GemmMode mode, float* y, float* gate_m, float* up_m, const float* x, const float* layer_w,
                       int64_t slot_stride, const MemoryGroup* groups, int64_t G, int64_t N, int64_t C, int64_t R,
                       Stream s);
// dx (N,C) += ...; dlayer_w (same layout, in dfetched) += ... ; scratch: ffn_memory_backward_scratch_floats.
int ffn_memory_backward(GemmMode mode, float* dx, float* dlayer_w, const float* dy, const float* x,
                        const float* gate_m, const float* up_m, const float* layer_w, int64_t slot_stride,
                        const MemoryGroup* groups, int64_t G, int64_t N, int64_t C, int64_t R, float* scratch,
                        Stream s);
int64_t ffn_memory_backward_scratch_floats(int64_t N, int64_t R);

// ---- classifier + cross-entropy (twin: cpp/kernels/classifier.h) -------------------------------
// losses (N) = logsumexp(x wte^T) - logit[target] (0 where target = -1). If dx / dwte are non-null
// the gradient of grad_scale * sum(losses) is ADDED. Chunked over rows: scratch holds
// classifier_scratch_floats(N, V) floats and the (N, V) logits never exist at once.
int classifier_forward_backward(GemmMode mode, float* losses, float* dx, float* dwte, const float* x,
                                const float* wte, const int32_t* targets, int64_t N, int64_t C, int64_t V,
                                float grad_scale, float* scratch, Stream s);
int64_t classifier_scratch_floats(int64_t N, int64_t V);

// ---- optimizer (twin: cpp/kernels/adamw.h) ----------------------------------------------------
// k: hm::adamw_consts (cpp/contract.h), derived on the host in double exactly as the CPU twin does.
int adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWConsts& k, Stream s);
// sum of squares in double, fixed-order two-pass reduction (deterministic); result to *out_dev.
// scratch: global_norm_scratch_doubles(n) doubles.
int global_sumsq(double* out_dev, const float* g, int64_t n, double* scratch, Stream s);
int64_t global_norm_scratch_doubles(int64_t n);

// ---- block-sparse memory (twin: cpp/kernels/memory.h) -----------------------------------------
// The tree layout, flattened: levels 0..num_levels-1 where the last may be the generic level.
struct MemoryLayoutDesc {
  int32_t num_levels;     // p (+1 with a generic block)
  int32_t generic;        // 1: level num_levels-1 is the generic block (rows R, row_offset 0), as hm::MemoryLayout
  int64_t Lm, d, R;       // memory layers, model width, fetched units per slot
  int64_t rows[17];       // rows of each level (0 = level absent)
  int64_t row_offset[17]; // where level l's rows start inside a slot's R rows
};
// A bank level resident in device memory: weights (nodes, Lm, 3, rows, d).
// fetched (S, Lm, 3, R, d): slot s gets, for each tree level l < p (p = num_levels - generic) with
// rows > 0, the block level_w[l] + node * block_floats(l), node = paths[s * path_stride + l], in rows
// [row_offset[l], +rows[l]); a slot whose paths[s * path_stride] < 0 uses only the generic block
// (level num_levels-1, node 0) for all R rows (the caller rejects such a slot when generic = 0).
// block_floats(l) = Lm * 3 * rows[l] * d. Rows no level covers are left untouched (as the CPU twin).
// 16-byte vectorised and coalesced when d % 4 == 0 (scalar otherwise).
// level_w: DEVICE array of num_levels device pointers. paths: DEVICE (S, path_stride).
int memory_gather(float* fetched, const float* const* level_w, const MemoryLayoutDesc& L, const int32_t* paths,
                  int64_t path_stride, int64_t S, Stream s);
// One unique block of a batch: its level, node and offset of its gradient in dblocks.
struct BlockRef {
  int32_t level;
  int32_t node;
  int64_t offset;  // floats
};
// dblocks[u] += sum over slots s that fetched block u (in slot order) of its rows of dfetched[s].
// Deterministic: each output element is owned by one thread. blocks: DEVICE (U).
int memory_scatter_add(float* dblocks, const BlockRef* blocks, int64_t U, const MemoryLayoutDesc& L,
                       const float* dfetched, const int32_t* paths, int64_t path_stride, int64_t S, Stream s);
// Row-sparse AdamW: block u's weights/m/v are contiguous device ranges of n floats each.
struct SparseAdamBlock {
  float* w;
  float* m;
  float* v;
  const float* g;  // in dblocks
  int64_t n;
  float ibc1, ibc2;  // from this block's own step count (AdamWConsts' fields of that name)
};
// k.ibc1 / k.ibc2 are ignored (per block instead). blocks: DEVICE (U).
int memory_adamw(const SparseAdamBlock* blocks, int64_t U, const AdamWConsts& k, Stream s);

// ---- device model (twin: hm::AnchorModel in cpp/anchor_model.h) -------------------------------
// ModelDims / ModelMemory: cpp/contract.h (model_create copies mem.layer_to_mem, L entries).
// One batch, all arrays in DEVICE memory except groups_host (G) (copied by the model).
struct ModelBatch {
  const int32_t* tokens;     // (B*T)
  const int32_t* targets;    // (B*T), -1 = ignore
  const int32_t* doc_start;  // (B*T) or null
  const int32_t* pos;        // (B*T) positions (t - doc_start, or t), or null: the model computes them so
  int64_t B, T;
  const float* fetched;      // (S, Lm, 3, R, C) or null
  float* dfetched;           // same, ADDED to, or null
  const MemoryGroup* groups_host;
  int64_t G;
};
struct Model;  // opaque
// params / grads: DEVICE flat buffers in hm::anchor_layout order (caller-owned; grads may be null for a
// model that only runs model_forward_loss). Activations for max_batch * T rows are allocated here.
Model* model_create(const ModelDims& d, const ModelMemory& mem, int64_t max_batch, float* params, float* grads,
                    GemmMode mode, int* err);
void model_destroy(Model* m);
// Forward + backward, gradients ADDED into grads; *loss_host = mean loss (synchronises the stream;
// NaN and no gradient when no target is >= 0). Needs b.B * b.T <= max_batch * T and b.T <= T.
int model_forward_backward(Model* m, const ModelBatch& b, double* loss_host, Stream s);
int model_forward_loss(Model* m, const ModelBatch& b, double* loss_host, Stream s);

}  // namespace hmc

// ---- the dlopen entry point ---------------------------------------------------------------------
extern "C" {
struct hmc_device_info {
  int32_t device_count;     // 0 when no GPU; status says why
  int32_t status;           // cudaError_t of the first failing call (35 = no driver / too old)
  int32_t driver_version;   // e.g. 13000
  int32_t runtime_version;
  int32_t cc_major, cc_minor;
  int64_t free_bytes, total_bytes;
  char name[256];
  char status_text[256];
};
struct hmc_api {
  int32_t abi_version;
  int32_t (*device_info)(int32_t device, hmc_device_info* out);
  const char* (*error_string)(int32_t status);
  int32_t (*malloc)(void** ptr, size_t bytes);
  int32_t (*free)(void* ptr);
  int32_t (*memcpy_h2d)(void* dst, const void* src, size_t bytes, void* stream);
  int32_t (*memcpy_d2h)(void* dst, const void* src, size_t bytes, void* stream);
  int32_t (*stream_synchronize)(void* stream);
  int32_t (*stream_create)(void** stream);  // non-blocking stream
  int32_t (*stream_destroy)(void* stream);
  int32_t (*malloc_host)(void** ptr, size_t bytes);  // pinned host memory (staging of fetched blocks)
  int32_t (*free_host)(void* ptr);
  int32_t (*memset)(void* dst, int32_t value, size_t bytes, void* stream);
  // the device model and the dense optimizer (see namespace hmc above for semantics)
  void* (*model_create)(const hmc::ModelDims* d, const hmc::ModelMemory* mem, int64_t max_batch, float* params,
                        float* grads, int32_t gemm_mode, int32_t* err);
  void (*model_destroy)(void* model);
  int32_t (*model_forward_backward)(void* model, const hmc::ModelBatch* b, double* loss_host, void* stream);
  int32_t (*model_forward_loss)(void* model, const hmc::ModelBatch* b, double* loss_host, void* stream);
  int32_t (*adamw_update)(float* p, const float* g, float* m, float* v, int64_t n, const hmc::AdamWConsts* k,
                          void* stream);
  int32_t (*global_sumsq)(double* out_dev, const float* g, int64_t n, double* scratch, void* stream);
  int64_t (*global_norm_scratch_doubles)(int64_t n);
};
// Returns the table, or null if abi_version differs from the library's (the addon then refuses it).
__attribute__((visibility("default"))) const hmc_api* hmc_get_api(int32_t abi_version);
}
