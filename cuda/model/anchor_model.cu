// anchor_model.cu — the device-resident training step of the anchor transformer (issue #8):
// hmc::Model, model_create / model_destroy / model_forward_backward / model_forward_loss.
// CPU twin: hm::AnchorModel in cpp/anchor_model.{h,cc}; this file mirrors it call by call (same layer
// order, same += gradient semantics, same loss mean and gradient scale), using only the kernels of
// cuda/hiermem_cuda.h. The only private kernels are glue: positions, the target count, the residual
// add and the deterministic loss sum.
//
// Per layer l (N = B*T token rows, D = H*hd, Dkv = Hkv*hd, G = H / Hkv):
//   ln1 = rmsnorm(x_in); q_raw, k_raw, v = ln1 Wq^T, ln1 Wk^T, ln1 Wv^T  (wqkv rows [0,D), [D,D+Dkv),
//   [D+Dkv,D+2Dkv)) (+ the bqkv slices with qkv_bias)
//   q, k = rope(rmsnorm(q_raw) over all D), rope(rmsnorm(k_raw)) (no norm without qk_norm; the
//   Llama-3.1 frequencies from a table with rope_scaling);  att = causal attention (doc_start); with
//   G > 1 (grouped-query attention) k and v are first repeated to H heads (Hugging Face's repeat_kv)
//   and the backward sums the repeated heads' dk, dv back per group (glue kernels below)
//   h_mid = x_in + att Wo^T; ln2 = rmsnorm(h_mid)
//   x_in[l+1] = (FFN(ln2) + FFN-memory(ln2) for grouped rows) + h_mid
// Fusions against the twin: gate/up is fused (ffn_forward's gate/up kernel reads ln2 once for both
// products, see ffn.cu). QKV is not: the CPU writes one (N, 3D) [q_raw | k_raw | v] product and
// reads it with strided row kernels (rmsnorm_*_rows; AttnStrides, v at another stride than q, k),
// while hmc::rmsnorm takes contiguous rows and hmc::attention one row stride for q, k, v and out.
// Fusing needs strided variants of both (an interface change); the three N = D products share
// A = ln1 and each fills the device at training shapes, so it waits for a GPU profile to justify it.
// then lnf = rmsnorm(x_final) and the classifier (tied to wte, or lm_head) + cross-entropy (targets -1 ignored);
// loss = sum(losses) / count(targets >= 0), gradient scale (float) 1 / count, as the CPU computes it.
//
// Activations (allocated once for max_batch * T rows, plain cudaMalloc), floats per token row:
//   per layer: 4C + 3D + 3Dkv + 2F + 4 + H  (+ 2R for a memory layer)
//   once:      4C + 3D + 3Dkv + 4 (+ 4D with G > 1; + 2 int32: pos, order), plus the scratch arena =
//              max over the kernels' scratch (dominated by ffn_backward's 4 * N * F floats, also used as
//              the forward hidden).
// Streams: everything runs on the caller's stream; one host wait mid-way (the target count, recorded
// right after the first kernels so the wait does not drain the queue) and one at the end (the loss).
// A Model is not safe to use from two threads at once.
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "hiermem_cuda.h"
#include "kernels/rope.cuh"

namespace hmc {

struct Model {
  struct LayerW {  // bqkv null without qkv_bias, q_norm / k_norm null without qk_norm
    float *attn_norm, *wqkv, *bqkv, *q_norm, *k_norm, *wo, *ffn_norm, *w1, *w2, *w3;
  };
  struct Acts {
    float *x_in, *ln1, *ln1_rstd, *q_raw, *k_raw, *q_rstd, *k_rstd, *q, *k, *v, *att, *lse, *h_mid, *ln2,
        *ln2_rstd, *gate, *up, *gate_m, *up_m;
  };
  ModelDims d;
  int64_t R = 0, Lm = 0;              // FFN memories (R = 0: none)
  std::vector<int32_t> layer_to_mem;  // (L) copied from ModelMemory; -1 = no memory in that layer
  GemmMode mode;
  int64_t max_batch, max_rows;  // max_rows = max_batch * d.T
  float *wte, *final_norm, *gwte, *gfinal_norm;
  float *head, *ghead;  // the classifier's weight (V, C) and its gradient: wte / gwte when tied, else lm_head
  std::vector<LayerW> p, g;
  std::vector<Acts> acts;
  float *x_final, *lnf, *lnf_rstd, *losses;
  float *dresid, *dln, *datt, *dq, *dk, *dv, *dq_raw, *dk_raw;
  float *kx = nullptr, *vx = nullptr, *dkx = nullptr, *dvx = nullptr;  // (N, D): k, v repeated to H heads (G > 1)
  double* rope_inv = nullptr;  // (hd / 2) rotation frequencies when rope_scaling is set (else the kernel's own)
  int32_t *pos, *order, *count_dev;
  double* sum_dev;
  MemoryGroup* groups_dev;      // (max_rows) — a valid group list has at most one group per row
  MemoryGroup* groups_pinned = nullptr;  // host staging of groups_host (pinned: the copy is truly async)
  int32_t* count_pinned = nullptr;
  double* sum_pinned = nullptr;
  cudaEvent_t count_ready = nullptr;
  void* scratch = nullptr;
  size_t scratch_bytes = 0;
  std::vector<void*> allocs;  // device allocations, freed by model_destroy
};

namespace {

// ---- private kernels (glue) and their launchers ----
constexpr int kReduceThreads = 1024;

// pos (N): pos[n] = t - doc_start[n] (or t), t = n % T — exactly hm::AnchorModel::forward.
// One thread per row.
__global__ void positions_kernel(int32_t* pos, const int32_t* doc_start, int64_t N, int64_t T) {
  const int64_t n = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const int32_t t = (int32_t)(n % T);
  pos[n] = doc_start ? t - doc_start[n] : t;
}

// count (1) = number of targets >= 0 among N. One block of kReduceThreads: strided per-thread counts,
// then a shared-memory tree (integers: the order does not matter, but it is fixed anyway).
__global__ void count_targets_kernel(int32_t* count, const int32_t* targets, int64_t N) {
  __shared__ int32_t part[kReduceThreads];
  int32_t c = 0;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) c += targets[i] >= 0;
  part[threadIdx.x] = c;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if ((int)threadIdx.x < stride) part[threadIdx.x] += part[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) *count = part[0];
}

// out (1) = sum of losses (N) in double. One block of kReduceThreads: thread i sums rows i, i+1024, ...
// in order, then a fixed tree: the result is the same on every run (deterministic).
__global__ void sum_losses_kernel(double* out, const float* losses, int64_t N) {
  __shared__ double part[kReduceThreads];
  double acc = 0;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) acc += (double)losses[i];
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if ((int)threadIdx.x < stride) part[threadIdx.x] += part[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = part[0];
}

// y (n) += x (n): the FFN residual (next += h_mid). Grid-stride, one element per thread per step.
__global__ void add_inplace_kernel(float* y, const float* x, int64_t n) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    y[i] += x[i];
}

// y (N, n) += b (n) on every row (the q/k/v biases). Grid-stride over the N * n elements.
__global__ void add_bias_kernel(float* y, const float* b, int64_t N, int64_t n) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < N * n; i += (int64_t)gridDim.x * blockDim.x)
    y[i] += b[i % n];
}

// db (n) += sum over the N rows of dy (N, n): thread per column, rows in order from a float 0, then
// one add into db — the CPU twin's bias_backward, bit for bit.
__global__ void bias_grad_kernel(float* db, const float* dy, int64_t N, int64_t n) {
  const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= n) return;
  float acc = 0.f;
  for (int64_t r = 0; r < N; r++) acc += dy[r * n + c];
  db[c] += acc;
}

// out (N, H*hd) = in (N, Hkv*hd) with query head h reading kv head h / G. Grid-stride.
__global__ void repeat_kv_kernel(float* out, const float* in, int64_t N, int64_t H, int64_t G, int64_t hd) {
  const int64_t D = H * hd, Dkv = D / G;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < N * D; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = i / D, r = i - n * D, h = r / hd, c = r - h * hd;
    out[i] = in[n * Dkv + (h / G) * hd + c];
  }
}

// out (N, Hkv*hd) = the sum over g = 0..G-1, in that order, of in's head hk * G + g (dk, dv of a group).
__global__ void sum_kv_groups_kernel(float* out, const float* in, int64_t N, int64_t Hkv, int64_t G, int64_t hd) {
  const int64_t Dkv = Hkv * hd, D = Dkv * G;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < N * Dkv; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = i / Dkv, r = i - n * Dkv, hk = r / hd, c = r - hk * hd;
    float acc = 0.f;
    for (int64_t g = 0; g < G; g++) acc += in[n * D + (hk * G + g) * hd + c];
    out[i] = acc;
  }
}

// hmc::rope_forward / rope_backward with the frequencies from a table (inv (hd/2), double: the
// Llama-3.1 scaled ones, hm::rope_inv_freq_at) instead of base^(-2i/hd); the same float rotation.
__global__ void rope_table_kernel(float* x, const int32_t* pos, const double* inv, int64_t N, int64_t H, int64_t hd,
                                  int64_t ld, float sign) {
  const int64_t half = hd / 2;
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < N * half; t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = t / half, i = t - n * half;
    rope_rotate_pair(x + n * ld, H, hd, i, (double)pos[n] * inv[i], sign);
  }
}

int grid_for(int64_t n, int threads) {
  int64_t blocks = (n + threads - 1) / threads;
  return (int)(blocks < 65535 * 16 ? (blocks < 1 ? 1 : blocks) : 65535 * 16);
}

int launch_positions(int32_t* pos, const int32_t* doc_start, int64_t N, int64_t T, cudaStream_t s) {
  positions_kernel<<<grid_for(N, 256), 256, 0, s>>>(pos, doc_start, N, T);
  return (int)cudaGetLastError();
}
int launch_count_targets(int32_t* count, const int32_t* targets, int64_t N, cudaStream_t s) {
  count_targets_kernel<<<1, kReduceThreads, 0, s>>>(count, targets, N);
  return (int)cudaGetLastError();
}
int launch_sum_losses(double* out, const float* losses, int64_t N, cudaStream_t s) {
  sum_losses_kernel<<<1, kReduceThreads, 0, s>>>(out, losses, N);
  return (int)cudaGetLastError();
}
int launch_add_inplace(float* y, const float* x, int64_t n, cudaStream_t s) {
  add_inplace_kernel<<<grid_for(n, 256), 256, 0, s>>>(y, x, n);
  return (int)cudaGetLastError();
}
int launch_add_bias(float* y, const float* b, int64_t N, int64_t n, cudaStream_t s) {
  add_bias_kernel<<<grid_for(N * n, 256), 256, 0, s>>>(y, b, N, n);
  return (int)cudaGetLastError();
}
int launch_bias_grad(float* db, const float* dy, int64_t N, int64_t n, cudaStream_t s) {
  bias_grad_kernel<<<grid_for(n, 128), 128, 0, s>>>(db, dy, N, n);
  return (int)cudaGetLastError();
}
int launch_repeat_kv(float* out, const float* in, int64_t N, int64_t H, int64_t G, int64_t hd, cudaStream_t s) {
  repeat_kv_kernel<<<grid_for(N * H * hd, 256), 256, 0, s>>>(out, in, N, H, G, hd);
  return (int)cudaGetLastError();
}
int launch_sum_kv_groups(float* out, const float* in, int64_t N, int64_t Hkv, int64_t G, int64_t hd, cudaStream_t s) {
  sum_kv_groups_kernel<<<grid_for(N * Hkv * hd, 256), 256, 0, s>>>(out, in, N, Hkv, G, hd);
  return (int)cudaGetLastError();
}
// RoPE of x (N, H heads of hd, row stride ld): the model's frequencies (table or base), sign +1 / -1.
int model_rope(const Model* m, float* x, const int32_t* pos, int64_t N, int64_t H, int64_t ld, float sign,
               cudaStream_t s) {
  const ModelDims& d = m->d;
  if (!m->rope_inv)
    return sign > 0 ? rope_forward(x, pos, N, H, d.hd, ld, d.rope_base, s)
                    : rope_backward(x, pos, N, H, d.hd, ld, d.rope_base, s);
  rope_table_kernel<<<grid_for(N * (d.hd / 2), 256), 256, 0, s>>>(x, pos, m->rope_inv, N, H, d.hd, ld, sign);
  return (int)cudaGetLastError();
}
// ---- end of private kernels ----

// Scratch bytes the kernels need for a batch of B sequences of T rows (the max over all uses: they run
// one after another on one stream, so one arena serves them all).
size_t scratch_need(const Model* m, int64_t B, int64_t T) {
  const int64_t N = B * T, C = m->d.C, D = m->d.H * m->d.hd, F = m->d.F, R = m->R;
  int64_t f = 4 * N * F;  // ffn_backward (and the forward's (N, F) hidden)
  auto up = [&](int64_t x) { if (x > f) f = x; };
  up(rmsnorm_backward_scratch_floats(N, C));
  up(rmsnorm_backward_scratch_floats(N, D));
  up(rmsnorm_backward_scratch_floats(N, m->d.Dkv()));
  up(attention_backward_scratch_floats(B, T, m->d.H));
  up(classifier_scratch_floats(N, m->d.V));
  if (R > 0) up(ffn_memory_backward_scratch_floats(N, R));
  size_t bytes = (size_t)f * sizeof(float);
  const size_t sort = embedding_sort_scratch_bytes(N);
  return sort > bytes ? sort : bytes;
}

// Grows the arena if this batch needs more than create sized (only where a kernel's scratch is not
// monotone in the batch shape). cudaFree synchronises, which is fine for this rare path.
int ensure_scratch(Model* m, size_t bytes, cudaStream_t s) {
  if (bytes <= m->scratch_bytes) return 0;
  cudaError_t e = cudaStreamSynchronize(s);
  if (e == cudaSuccess && m->scratch) e = cudaFree(m->scratch);
  m->scratch = nullptr;
  m->scratch_bytes = 0;
  if (e == cudaSuccess) e = cudaMalloc(&m->scratch, bytes);
  if (e != cudaSuccess) {
    m->scratch = nullptr;
    return (int)e;
  }
  m->scratch_bytes = bytes;
  return 0;
}

void free_all(Model* m) {
  for (void* p : m->allocs) cudaFree(p);
  m->allocs.clear();
  if (m->scratch) cudaFree(m->scratch);
  m->scratch = nullptr;
  if (m->groups_pinned) cudaFreeHost(m->groups_pinned);
  if (m->count_pinned) cudaFreeHost(m->count_pinned);
  if (m->sum_pinned) cudaFreeHost(m->sum_pinned);
  m->groups_pinned = nullptr;
  m->count_pinned = nullptr;
  m->sum_pinned = nullptr;
  if (m->count_ready) cudaEventDestroy(m->count_ready);
  m->count_ready = nullptr;
}

#define HMC_TRY(call)          \
  do {                         \
    int e_ = (int)(call);      \
    if (e_ != 0) return e_;    \
  } while (0)

// Everything up to lnf (twin: AnchorModel::forward). use_mem: the batch has fetched memories and groups
// (already on the device in m->groups_dev).
int forward(Model* m, const ModelBatch& b, const int32_t* pos, bool use_mem, cudaStream_t s) {
  const ModelDims& d = m->d;
  const int64_t N = b.B * b.T, C = d.C, D = d.H * d.hd, F = d.F, H = d.H, hd = d.hd;
  const int64_t Hkv = d.KV(), Dkv = d.Dkv(), G = H / Hkv;
  const int64_t R = m->R, slot_stride = m->Lm * 3 * R * C;
  const GemmMode mode = m->mode;
  float* hidden = (float*)m->scratch;  // (N, F) ffn hidden; the arena holds >= 4 N F floats
  HMC_TRY(embedding_forward(m->acts[0].x_in, b.tokens, m->wte, N, C, s));
  for (int64_t l = 0; l < d.L; l++) {
    const Model::Acts& a = m->acts[(size_t)l];
    const Model::LayerW& w = m->p[(size_t)l];
    HMC_TRY(rmsnorm_forward(a.ln1, a.ln1_rstd, a.x_in, w.attn_norm, N, C, d.norm_eps, s));
    // q_raw (N, D), k_raw / v (N, Dkv) = ln1 (N, C) W^T, W = rows of wqkv (D + 2 Dkv, C) (+ bias slices)
    HMC_TRY(gemm(mode, false, true, N, D, C, 1.f, a.ln1, C, w.wqkv, C, 0.f, a.q_raw, D, s));
    HMC_TRY(gemm(mode, false, true, N, Dkv, C, 1.f, a.ln1, C, w.wqkv + D * C, C, 0.f, a.k_raw, Dkv, s));
    HMC_TRY(gemm(mode, false, true, N, Dkv, C, 1.f, a.ln1, C, w.wqkv + (D + Dkv) * C, C, 0.f, a.v, Dkv, s));
    if (w.bqkv) {
      HMC_TRY(launch_add_bias(a.q_raw, w.bqkv, N, D, s));
      HMC_TRY(launch_add_bias(a.k_raw, w.bqkv + D, N, Dkv, s));
      HMC_TRY(launch_add_bias(a.v, w.bqkv + D + Dkv, N, Dkv, s));
    }
    // QK-norm over the full vector of each row (or a copy without it), then RoPE per head
    if (w.q_norm) {
      HMC_TRY(rmsnorm_forward(a.q, a.q_rstd, a.q_raw, w.q_norm, N, D, d.norm_eps, s));
      HMC_TRY(rmsnorm_forward(a.k, a.k_rstd, a.k_raw, w.k_norm, N, Dkv, d.norm_eps, s));
    } else {
      HMC_TRY(cudaMemcpyAsync(a.q, a.q_raw, sizeof(float) * N * D, cudaMemcpyDeviceToDevice, s));
      HMC_TRY(cudaMemcpyAsync(a.k, a.k_raw, sizeof(float) * N * Dkv, cudaMemcpyDeviceToDevice, s));
    }
    HMC_TRY(model_rope(m, a.q, pos, N, H, D, 1.f, s));
    HMC_TRY(model_rope(m, a.k, pos, N, Hkv, Dkv, 1.f, s));
    if (G > 1) {  // repeat_kv: every query head gets its group's k, v rows
      HMC_TRY(launch_repeat_kv(m->kx, a.k, N, H, G, hd, s));
      HMC_TRY(launch_repeat_kv(m->vx, a.v, N, H, G, hd, s));
    }
    HMC_TRY(attention_forward(a.att, a.lse, a.q, G > 1 ? m->kx : a.k, G > 1 ? m->vx : a.v, b.doc_start, b.B, b.T, H,
                              hd, D, s));
    // h_mid = x_in + att Wo^T  (Wo (C, D))
    HMC_TRY(cudaMemcpyAsync(a.h_mid, a.x_in, sizeof(float) * N * C, cudaMemcpyDeviceToDevice, s));
    HMC_TRY(gemm(mode, false, true, N, C, D, 1.f, a.att, D, w.wo, D, 1.f, a.h_mid, C, s));
    HMC_TRY(rmsnorm_forward(a.ln2, a.ln2_rstd, a.h_mid, w.ffn_norm, N, C, d.norm_eps, s));
    float* next = (l + 1 < d.L) ? m->acts[(size_t)l + 1].x_in : m->x_final;
    HMC_TRY(ffn_forward(mode, next, a.gate, a.up, hidden, a.ln2, w.w1, w.w2, w.w3, N, C, F, s));
    const int32_t j = m->R > 0 ? m->layer_to_mem[(size_t)l] : -1;
    if (j >= 0 && use_mem)
      HMC_TRY(ffn_memory_forward(mode, next, a.gate_m, a.up_m, a.ln2, b.fetched + (int64_t)j * 3 * R * C, slot_stride,
                                 m->groups_dev, b.G, N, C, R, s));
    HMC_TRY(launch_add_inplace(next, a.h_mid, N * C, s));
  }
  HMC_TRY(rmsnorm_forward(m->lnf, m->lnf_rstd, m->x_final, m->final_norm, N, C, d.norm_eps, s));
  return 0;
}

// Backward from dresid = d(x_final) (twin: AnchorModel::backward after its final-norm step).
int backward_layers(Model* m, const ModelBatch& b, const int32_t* pos, bool use_mem, cudaStream_t s) {
  const ModelDims& d = m->d;
  const int64_t N = b.B * b.T, C = d.C, D = d.H * d.hd, F = d.F, H = d.H, hd = d.hd;
  const int64_t Hkv = d.KV(), Dkv = d.Dkv(), G = H / Hkv;
  const int64_t R = m->R, slot_stride = m->Lm * 3 * R * C;
  const GemmMode mode = m->mode;
  float* fscratch = (float*)m->scratch;
  float* dresid = m->dresid;
  float* dln = m->dln;
  for (int64_t l = d.L - 1; l >= 0; l--) {
    const Model::Acts& a = m->acts[(size_t)l];
    const Model::LayerW& w = m->p[(size_t)l];
    const Model::LayerW& gw = m->g[(size_t)l];
    // out = h + FFN(norm2(h)) (+ memory units): dln = d(ln2)
    HMC_TRY(cudaMemsetAsync(dln, 0, sizeof(float) * N * C, s));
    HMC_TRY(ffn_backward(mode, dln, gw.w1, gw.w2, gw.w3, dresid, a.ln2, a.gate, a.up, w.w1, w.w2, w.w3, N, C, F,
                         fscratch, s));
    const int32_t j = m->R > 0 ? m->layer_to_mem[(size_t)l] : -1;
    if (j >= 0 && use_mem) {
      const int64_t off = (int64_t)j * 3 * R * C;
      HMC_TRY(ffn_memory_backward(mode, dln, b.dfetched + off, dresid, a.ln2, a.gate_m, a.up_m, b.fetched + off,
                                  slot_stride, m->groups_dev, b.G, N, C, R, fscratch, s));
    }
    // dresid (= d out) += norm2 backward  ->  d(h_mid)
    HMC_TRY(rmsnorm_backward(dresid, gw.ffn_norm, dln, a.h_mid, w.ffn_norm, a.ln2_rstd, N, C, fscratch, s));
    // h = x + att Wo^T: datt (N, D) = dresid (N, C) Wo (C, D); dWo (C, D) += dresid^T att
    HMC_TRY(gemm(mode, false, false, N, D, C, 1.f, dresid, C, w.wo, D, 0.f, m->datt, D, s));
    HMC_TRY(gemm(mode, true, false, C, D, N, 1.f, dresid, C, a.att, D, 1.f, gw.wo, D, s));
    HMC_TRY(cudaMemsetAsync(m->dq, 0, sizeof(float) * N * D, s));
    if (G > 1) {  // through the repeated heads (recomputed from the saved k, v), then summed per group
      HMC_TRY(launch_repeat_kv(m->kx, a.k, N, H, G, hd, s));
      HMC_TRY(launch_repeat_kv(m->vx, a.v, N, H, G, hd, s));
      HMC_TRY(cudaMemsetAsync(m->dkx, 0, sizeof(float) * N * D, s));
      HMC_TRY(cudaMemsetAsync(m->dvx, 0, sizeof(float) * N * D, s));
      HMC_TRY(attention_backward(m->dq, m->dkx, m->dvx, m->datt, a.q, m->kx, m->vx, a.att, a.lse, b.doc_start, b.B,
                                 b.T, H, hd, D, fscratch, s));
      HMC_TRY(launch_sum_kv_groups(m->dk, m->dkx, N, Hkv, G, hd, s));
      HMC_TRY(launch_sum_kv_groups(m->dv, m->dvx, N, Hkv, G, hd, s));
    } else {
      HMC_TRY(cudaMemsetAsync(m->dk, 0, sizeof(float) * N * D, s));
      HMC_TRY(cudaMemsetAsync(m->dv, 0, sizeof(float) * N * D, s));
      HMC_TRY(attention_backward(m->dq, m->dk, m->dv, m->datt, a.q, a.k, a.v, a.att, a.lse, b.doc_start, b.B, b.T, H,
                                 hd, D, fscratch, s));
    }
    HMC_TRY(model_rope(m, m->dq, pos, N, H, D, -1.f, s));
    HMC_TRY(model_rope(m, m->dk, pos, N, Hkv, Dkv, -1.f, s));
    const float* dq_raw = m->dq;  // without QK-norm q = rope(q_raw): the rotated-back gradient is d q_raw
    const float* dk_raw = m->dk;
    if (w.q_norm) {
      HMC_TRY(cudaMemsetAsync(m->dq_raw, 0, sizeof(float) * N * D, s));
      HMC_TRY(cudaMemsetAsync(m->dk_raw, 0, sizeof(float) * N * Dkv, s));
      HMC_TRY(rmsnorm_backward(m->dq_raw, gw.q_norm, m->dq, a.q_raw, w.q_norm, a.q_rstd, N, D, fscratch, s));
      HMC_TRY(rmsnorm_backward(m->dk_raw, gw.k_norm, m->dk, a.k_raw, w.k_norm, a.k_rstd, N, Dkv, fscratch, s));
      dq_raw = m->dq_raw;
      dk_raw = m->dk_raw;
    }
    if (gw.bqkv) {
      HMC_TRY(launch_bias_grad(gw.bqkv, dq_raw, N, D, s));
      HMC_TRY(launch_bias_grad(gw.bqkv + D, dk_raw, N, Dkv, s));
      HMC_TRY(launch_bias_grad(gw.bqkv + D + Dkv, m->dv, N, Dkv, s));
    }
    // dln (N, C) = dq_raw Wq + dk_raw Wk + dv Wv (first product overwrites: the CPU zeroes dln first)
    HMC_TRY(gemm(mode, false, false, N, C, D, 1.f, dq_raw, D, w.wqkv, C, 0.f, dln, C, s));
    HMC_TRY(gemm(mode, false, false, N, C, Dkv, 1.f, dk_raw, Dkv, w.wqkv + D * C, C, 1.f, dln, C, s));
    HMC_TRY(gemm(mode, false, false, N, C, Dkv, 1.f, m->dv, Dkv, w.wqkv + (D + Dkv) * C, C, 1.f, dln, C, s));
    // dwqkv rows (D + 2 Dkv, C) += d^T ln1
    HMC_TRY(gemm(mode, true, false, D, C, N, 1.f, dq_raw, D, a.ln1, C, 1.f, gw.wqkv, C, s));
    HMC_TRY(gemm(mode, true, false, Dkv, C, N, 1.f, dk_raw, Dkv, a.ln1, C, 1.f, gw.wqkv + D * C, C, s));
    HMC_TRY(gemm(mode, true, false, Dkv, C, N, 1.f, m->dv, Dkv, a.ln1, C, 1.f, gw.wqkv + (D + Dkv) * C, C, s));
    // dresid += norm1 backward -> d(x_in)
    HMC_TRY(rmsnorm_backward(dresid, gw.attn_norm, dln, a.x_in, w.attn_norm, a.ln1_rstd, N, C, fscratch, s));
  }
  HMC_TRY(embedding_sort_tokens(m->order, b.tokens, N, m->scratch, m->scratch_bytes, s));
  HMC_TRY(embedding_backward(m->gwte, dresid, b.tokens, m->order, N, C, s));
  return 0;
}

// The shared body of forward_backward / forward_loss.
int run(Model* m, const ModelBatch& b, double* loss_host, cudaStream_t s, bool backward) {
  const ModelDims& d = m->d;
  const int64_t N = b.B * b.T, C = d.C;
  // 1. the target count, first on the stream, so that waiting for it later does not drain the queue
  HMC_TRY(launch_count_targets(m->count_dev, b.targets, N, s));
  HMC_TRY(cudaMemcpyAsync(m->count_pinned, m->count_dev, sizeof(int32_t), cudaMemcpyDeviceToHost, s));
  HMC_TRY(cudaEventRecord(m->count_ready, s));
  // 2. positions (unless given) and the memory groups
  const int32_t* pos = b.pos;
  if (!pos) {
    HMC_TRY(launch_positions(m->pos, b.doc_start, N, b.T, s));
    pos = m->pos;
  }
  const bool use_mem = b.fetched && m->R > 0 && b.G > 0;
  if (use_mem) {
    std::memcpy(m->groups_pinned, b.groups_host, sizeof(MemoryGroup) * (size_t)b.G);
    HMC_TRY(cudaMemcpyAsync(m->groups_dev, m->groups_pinned, sizeof(MemoryGroup) * (size_t)b.G,
                            cudaMemcpyHostToDevice, s));
  }
  HMC_TRY(forward(m, b, pos, use_mem, s));
  // 3. loss scale from the count (twin: AnchorModel::loss_and_grad)
  HMC_TRY(cudaEventSynchronize(m->count_ready));
  const int32_t count = *m->count_pinned;
  if (count == 0) {  // no target: NaN, nothing differentiated (the CPU returns before the classifier)
    HMC_TRY(cudaStreamSynchronize(s));
    *loss_host = std::numeric_limits<double>::quiet_NaN();
    return 0;
  }
  const float scale = 1.f / (float)count;
  if (backward) HMC_TRY(cudaMemsetAsync(m->dln, 0, sizeof(float) * N * C, s));
  HMC_TRY(classifier_forward_backward(m->mode, m->losses, backward ? m->dln : nullptr, backward ? m->ghead : nullptr,
                                      m->lnf, m->head, b.targets, N, C, d.V, scale, (float*)m->scratch, s));
  HMC_TRY(launch_sum_losses(m->sum_dev, m->losses, N, s));
  HMC_TRY(cudaMemcpyAsync(m->sum_pinned, m->sum_dev, sizeof(double), cudaMemcpyDeviceToHost, s));
  if (backward) {
    // final norm: dresid = 0 + rmsnorm backward of dlnf (held in dln)
    HMC_TRY(cudaMemsetAsync(m->dresid, 0, sizeof(float) * N * C, s));
    HMC_TRY(rmsnorm_backward(m->dresid, m->gfinal_norm, m->dln, m->x_final, m->final_norm, m->lnf_rstd, N, C,
                             (float*)m->scratch, s));
    HMC_TRY(backward_layers(m, b, pos, use_mem, s));
  }
  HMC_TRY(cudaStreamSynchronize(s));
  *loss_host = *m->sum_pinned / (double)count;
  return 0;
}

int validate_batch(const Model* m, const ModelBatch& b, bool backward) {
  if (!b.tokens || !b.targets) return (int)cudaErrorInvalidValue;
  if (b.T > m->d.T || b.B * b.T > m->max_rows) return (int)cudaErrorInvalidValue;
  if (b.G < 0) return (int)cudaErrorInvalidValue;
  const int64_t N = b.B * b.T;
  if (b.fetched && m->R > 0 && b.G > 0) {
    if (!b.groups_host || b.G > N) return (int)cudaErrorInvalidValue;
    if (backward && !b.dfetched) return (int)cudaErrorInvalidValue;
    for (int64_t i = 0; i < b.G; i++) {
      const MemoryGroup& g = b.groups_host[i];
      if (g.row0 < 0 || g.rows < 1 || g.row0 + g.rows > N || g.slot < 0) return (int)cudaErrorInvalidValue;
    }
  }
  if (backward && (!m->gwte)) return (int)cudaErrorInvalidValue;
  return 0;
}

int entry(Model* m, const ModelBatch& b, double* loss_host, Stream stream, bool backward) {
  if (!m || !loss_host) return (int)cudaErrorInvalidValue;
  if (b.B < 0 || b.T < 0) return (int)cudaErrorInvalidValue;
  if (b.B == 0 || b.T == 0) {  // no rows: no target, as the CPU's count == 0
    *loss_host = std::numeric_limits<double>::quiet_NaN();
    return 0;
  }
  HMC_TRY(validate_batch(m, b, backward));
  cudaStream_t s = (cudaStream_t)stream;
  HMC_TRY(ensure_scratch(m, scratch_need(m, b.B, b.T), s));
  const int e = run(m, b, loss_host, s, backward);
  if (e != 0) {
    // drain what was queued so the pinned staging buffers are free for the next call; keep the first error
    cudaStreamSynchronize(s);
    cudaGetLastError();
  }
  return e;
}

}  // namespace

Model* model_create(const ModelDims& d, const ModelMemory& mem, int64_t max_batch, float* params, float* grads,
                    GemmMode mode, int* err) {
  auto fail = [&](int e) -> Model* {
    if (err) *err = e;
    return nullptr;
  };
  if (err) *err = 0;
  if (!params) return fail((int)cudaErrorInvalidValue);
  if (d.V < 1 || d.C < 1 || d.L < 1 || d.H < 1 || d.hd < 2 || d.hd % 2 || d.F < 1 || d.T < 1 ||
      max_batch < 1 || d.Hkv < 0 || d.H % d.KV() != 0 || d.rope_scaling.kind < 0 || d.rope_scaling.kind > 1)
    return fail((int)cudaErrorInvalidValue);
  if ((int)mode < 0 || (int)mode > 2) return fail((int)cudaErrorInvalidValue);
  if (mem.R < 0 || (mem.R > 0 && (mem.Lm < 1 || !mem.layer_to_mem))) return fail((int)cudaErrorInvalidValue);
  if (mem.R > 0)
    for (int64_t l = 0; l < d.L; l++)
      if (mem.layer_to_mem[l] < -1 || mem.layer_to_mem[l] >= mem.Lm) return fail((int)cudaErrorInvalidValue);

  Model* m = new Model();
  m->d = d;
  m->R = mem.R;
  m->Lm = mem.R > 0 ? mem.Lm : 0;
  if (mem.R > 0) m->layer_to_mem.assign(mem.layer_to_mem, mem.layer_to_mem + d.L);
  else m->layer_to_mem.assign((size_t)d.L, -1);
  m->mode = mode;
  m->max_batch = max_batch;
  m->max_rows = max_batch * d.T;
  const int64_t N = m->max_rows, C = d.C, D = d.H * d.hd, F = d.F, R = m->R, Dkv = d.Dkv(), G = d.H / d.KV();

  // parameter / gradient views in hm::anchor_layout order (mirrored here: hm's layout code is not
  // linked into this library)
  auto views = [&](float* base, float** wte, std::vector<Model::LayerW>& layers, float** fnorm, float** head) {
    int64_t off = 0;
    auto next = [&](int64_t n) {
      float* p = base ? base + off : nullptr;
      off += n;
      return p;
    };
    *wte = next(d.V * C);
    layers.resize((size_t)d.L);
    for (auto& lw : layers) {
      lw.attn_norm = next(C);
      lw.wqkv = next((D + 2 * Dkv) * C);
      lw.bqkv = d.qkv_bias ? next(D + 2 * Dkv) : nullptr;
      lw.q_norm = d.qk_norm ? next(D) : nullptr;
      lw.k_norm = d.qk_norm ? next(Dkv) : nullptr;
      lw.wo = next(C * D);
      lw.ffn_norm = next(C);
      lw.w1 = next(F * C);
      lw.w2 = next(F * C);
      lw.w3 = next(C * F);
    }
    *fnorm = next(C);
    *head = d.tie_embeddings ? *wte : next(d.V * C);
  };
  views(params, &m->wte, m->p, &m->final_norm, &m->head);
  views(grads, &m->gwte, m->g, &m->gfinal_norm, &m->ghead);

  cudaError_t e = cudaSuccess;
  auto alloc = [&](int64_t count, size_t elem) -> void* {
    if (e != cudaSuccess) return nullptr;
    void* p = nullptr;
    e = cudaMalloc(&p, (size_t)(count > 0 ? count : 1) * elem);
    if (e != cudaSuccess) return nullptr;
    m->allocs.push_back(p);
    return p;
  };
  auto f32 = [&](int64_t count) { return (float*)alloc(count, sizeof(float)); };
  m->acts.resize((size_t)d.L);
  for (int64_t l = 0; l < d.L; l++) {
    Model::Acts& a = m->acts[(size_t)l];
    a.x_in = f32(N * C);
    a.ln1 = f32(N * C);
    a.ln1_rstd = f32(N);
    a.q_raw = f32(N * D);
    a.k_raw = f32(N * Dkv);
    a.q_rstd = f32(N);
    a.k_rstd = f32(N);
    a.q = f32(N * D);
    a.k = f32(N * Dkv);
    a.v = f32(N * Dkv);
    a.att = f32(N * D);
    a.lse = f32(N * d.H);  // (B, H, T) for B * T <= N rows
    a.h_mid = f32(N * C);
    a.ln2 = f32(N * C);
    a.ln2_rstd = f32(N);
    a.gate = f32(N * F);
    a.up = f32(N * F);
    a.gate_m = a.up_m = nullptr;
    if (R > 0 && m->layer_to_mem[(size_t)l] >= 0) {
      a.gate_m = f32(N * R);
      a.up_m = f32(N * R);
    }
  }
  m->x_final = f32(N * C);
  m->lnf = f32(N * C);
  m->lnf_rstd = f32(N);
  m->losses = f32(N);
  m->dresid = f32(N * C);
  m->dln = f32(N * C);
  m->datt = f32(N * D);
  m->dq = f32(N * D);
  m->dk = f32(N * Dkv);
  m->dv = f32(N * Dkv);
  m->dq_raw = f32(N * D);
  m->dk_raw = f32(N * Dkv);
  if (G > 1) {
    m->kx = f32(N * D);
    m->vx = f32(N * D);
    m->dkx = f32(N * D);
    m->dvx = f32(N * D);
  }
  if (d.rope_scaling.kind == 1) {
    std::vector<double> inv((size_t)(d.hd / 2));
    for (int64_t i = 0; i < d.hd / 2; i++) inv[(size_t)i] = hm::rope_inv_freq_at(i, d.hd, d.rope_base, d.rope_scaling);
    m->rope_inv = (double*)alloc((int64_t)inv.size(), sizeof(double));
    if (e == cudaSuccess) e = cudaMemcpy(m->rope_inv, inv.data(), sizeof(double) * inv.size(), cudaMemcpyHostToDevice);
  }
  m->pos = (int32_t*)alloc(N, sizeof(int32_t));
  m->order = (int32_t*)alloc(N, sizeof(int32_t));
  m->count_dev = (int32_t*)alloc(1, sizeof(int32_t));
  m->sum_dev = (double*)alloc(1, sizeof(double));
  m->groups_dev = (MemoryGroup*)alloc(N, sizeof(MemoryGroup));
  if (e == cudaSuccess) e = cudaMallocHost((void**)&m->groups_pinned, sizeof(MemoryGroup) * (size_t)N);
  if (e == cudaSuccess) e = cudaMallocHost((void**)&m->count_pinned, sizeof(int32_t));
  if (e == cudaSuccess) e = cudaMallocHost((void**)&m->sum_pinned, sizeof(double));
  if (e == cudaSuccess) e = cudaEventCreateWithFlags(&m->count_ready, cudaEventDisableTiming);
  if (e == cudaSuccess) {
    const size_t bytes = scratch_need(m, max_batch, d.T);
    e = cudaMalloc(&m->scratch, bytes);
    if (e == cudaSuccess) m->scratch_bytes = bytes;
    else m->scratch = nullptr;
  }
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear a non-sticky allocation error
    free_all(m);
    delete m;
    return fail((int)e);
  }
  return m;
}

void model_destroy(Model* m) {
  if (!m) return;
  free_all(m);
  delete m;
}

int model_forward_backward(Model* m, const ModelBatch& b, double* loss_host, Stream s) {
  return entry(m, b, loss_host, s, true);
}

int model_forward_loss(Model* m, const ModelBatch& b, double* loss_host, Stream s) {
  return entry(m, b, loss_host, s, false);
}

}  // namespace hmc
