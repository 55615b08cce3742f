// classifier.cu — tied output projection + softmax cross-entropy (twin: cpp/kernels/classifier.h).
// Chunked over rows so that the (N, V) logits never exist at once: per chunk,
//   logits (rows, V) = x_chunk wte^T                       (hmc::gemm, into scratch)
//   per row: logsumexp, loss, and in place dlogits = (softmax - onehot) * grad_scale (0 if ignored)
//   dx_chunk += dlogits wte ; dwte += dlogits^T x_chunk   (hmc::gemm, beta = 1)
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "hiermem_cuda.h"

namespace hmc {
namespace {

constexpr int CE_THREADS = 256;

// block-wide max / sum over CE_THREADS threads; every thread gets the result. `red` holds 32 floats;
// the leading barrier makes back-to-back calls safe.
__device__ float block_max(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  float r = red[0];
  for (int w = 1; w < CE_THREADS / 32; w++) r = fmaxf(r, red[w]);
  return r;
}
__device__ float block_sum(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  float r = red[0];
  for (int w = 1; w < CE_THREADS / 32; w++) r += red[w];  // fixed order: deterministic
  return r;
}

// One block per row of the chunk (grid = rows); threads stride over V.
// losses (rows) = lse - logit[target] (0 where target is -1); if backward, the row of logits is
// replaced by (softmax - onehot) * scale, or by zeros for an ignored row (as the twin).
// A target outside [-1, V) is treated as ignored rather than read out of bounds.
__global__ void __launch_bounds__(CE_THREADS) ce_rows_kernel(float* losses, float* logits, const int32_t* targets,
                                                             int64_t V, float scale, bool backward) {
  __shared__ float red[32];
  float* lr = logits + (int64_t)blockIdx.x * V;
  const int32_t t = targets[blockIdx.x];
  const bool valid = t >= 0 && (int64_t)t < V;
  const float lt = valid ? lr[t] : 0.f;  // read before anyone overwrites the row (barriers below)
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < V; j += CE_THREADS) mx = fmaxf(mx, lr[j]);
  mx = block_max(mx, red);
  float sum = 0.f;
  for (int64_t j = threadIdx.x; j < V; j += CE_THREADS) sum += expf(lr[j] - mx);
  sum = block_sum(sum, red);
  const float lse = mx + logf(sum);
  if (threadIdx.x == 0) losses[blockIdx.x] = valid ? lse - lt : 0.f;
  if (!backward) return;
  for (int64_t j = threadIdx.x; j < V; j += CE_THREADS)
    lr[j] = valid ? expf(lr[j] - lse) * scale - (j == t ? scale : 0.f) : 0.f;
}

int64_t chunk_rows(int64_t N, int64_t V) {
  // <= 16 Mi floats (64 MB) of logits per chunk
  return std::max<int64_t>(1, std::min<int64_t>(N, (int64_t(16) << 20) / std::max<int64_t>(V, 1)));
}

}  // namespace

int64_t classifier_scratch_floats(int64_t N, int64_t V) {
  if (N <= 0 || V <= 0) return 0;
  return chunk_rows(N, V) * V;
}

int classifier_forward_backward(GemmMode mode, float* losses, float* dx, float* dwte, const float* x,
                                const float* wte, const int32_t* targets, int64_t N, int64_t C, int64_t V,
                                float grad_scale, float* scratch, Stream s) {
  if (N < 0 || C < 0 || V < 0) return (int)cudaErrorInvalidValue;
  if (N == 0) return 0;
  if (V == 0 || !losses || !x || !wte || !targets || !scratch) return (int)cudaErrorInvalidValue;
  const bool backward = dx != nullptr || dwte != nullptr;
  const int64_t chunk = chunk_rows(N, V);
  cudaStream_t st = (cudaStream_t)s;
  for (int64_t r0 = 0; r0 < N; r0 += chunk) {
    const int64_t rows = std::min(chunk, N - r0);
    int e = gemm(mode, false, true, rows, V, C, 1.f, x + r0 * C, C, wte, C, 0.f, scratch, V, s);
    if (e) return e;
    ce_rows_kernel<<<(unsigned)rows, CE_THREADS, 0, st>>>(losses + r0, scratch, targets + r0, V, grad_scale, backward);
    if ((e = (int)cudaGetLastError())) return e;
    if (dx && (e = gemm(mode, false, false, rows, C, V, 1.f, scratch, V, wte, C, 1.f, dx + r0 * C, C, s))) return e;
    if (dwte && (e = gemm(mode, true, false, V, C, rows, 1.f, scratch, V, x + r0 * C, C, 1.f, dwte, C, s))) return e;
  }
  return 0;
}

}  // namespace hmc
