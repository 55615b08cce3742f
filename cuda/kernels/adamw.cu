// adamw.cu — dense AdamW update and the global gradient sum of squares (CPU twin: cpp/kernels/adamw.cc).
//   adamw_update   p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p), m / v updated in place
//   global_sumsq   *out_dev = sum g^2 in double (the caller takes the sqrt: hm::global_norm returns it)
// The update is adamw_element (adamw.cuh): the twin's float expression, bit for bit, given the same
// hm::AdamWConsts (derived on the host by hm::adamw_consts, as the CPU does).
// The sum of squares is a fixed two-pass tree: P(n) blocks write partials to scratch, one block
// sums them; P depends only on n, so the result is bit-identical run to run and GPU to GPU.
#include <cuda_runtime.h>

#include <cstdint>

#include "adamw.cuh"
#include "hiermem_cuda.h"

namespace hmc {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxPartials = 1024;  // = threads of the final block

inline cudaStream_t as_stream(Stream s) { return static_cast<cudaStream_t>(s); }

// p, g, m, v (n): thread per element, grid-stride.
__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, int64_t n, AdamWConsts k) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    adamw_element(p, g, m, v, i, k.ibc1, k.ibc2, k);
}

// Fixed shared-memory tree over kThreads (or 1024) doubles; the caller's blockDim is a power of 2.
__device__ inline double block_sum(double v, double* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  return sh[0];
}

// pass 1: partial[b] = sum over i = b*kThreads + t + k*P*kThreads of g[i]^2 (P = gridDim.x blocks).
__global__ void sumsq_partial_kernel(double* partial, const float* g, int64_t n) {
  __shared__ double sh[kThreads];
  double acc = 0;
  for (int64_t i = blockIdx.x * (int64_t)kThreads + threadIdx.x; i < n; i += (int64_t)gridDim.x * kThreads) {
    const double x = (double)g[i];
    acc += x * x;  // exact product (24-bit mantissas), so FMA or not gives the same sum
  }
  const double total = block_sum(acc, sh);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

// pass 2: one block of kMaxPartials threads sums the P partials in a fixed tree.
__global__ void sumsq_final_kernel(double* out, const double* partial, int64_t P) {
  __shared__ double sh[kMaxPartials];
  const double v = threadIdx.x < P ? partial[threadIdx.x] : 0.0;
  const double total = block_sum(v, sh);
  if (threadIdx.x == 0) *out = total;
}

// number of pass-1 blocks: one per 8192 elements, at most kMaxPartials
inline int64_t sumsq_partials(int64_t n) {
  int64_t P = (n + 8191) / 8192;
  if (P > kMaxPartials) P = kMaxPartials;
  return P < 1 ? 1 : P;
}

}  // namespace

int adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWConsts& k, Stream s) {
  if (n < 0) return (int)cudaErrorInvalidValue;
  if (n == 0) return 0;
  if (!p || !g || !m || !v) return (int)cudaErrorInvalidValue;
  int64_t blocks = (n + kThreads - 1) / kThreads;
  if (blocks > (1 << 20)) blocks = 1 << 20;
  adamw_kernel<<<(unsigned)blocks, kThreads, 0, as_stream(s)>>>(p, g, m, v, n, k);
  return (int)cudaGetLastError();
}

int64_t global_norm_scratch_doubles(int64_t n) { return sumsq_partials(n < 0 ? 0 : n); }

int global_sumsq(double* out_dev, const float* g, int64_t n, double* scratch, Stream s) {
  if (n < 0 || !out_dev) return (int)cudaErrorInvalidValue;
  if (n == 0) return (int)cudaMemsetAsync(out_dev, 0, sizeof(double), as_stream(s));  // the sum of nothing
  if (!g || !scratch) return (int)cudaErrorInvalidValue;
  const int64_t P = sumsq_partials(n);
  sumsq_partial_kernel<<<(unsigned)P, kThreads, 0, as_stream(s)>>>(scratch, g, n);
  sumsq_final_kernel<<<1, kMaxPartials, 0, as_stream(s)>>>(out_dev, scratch, P);
  return (int)cudaGetLastError();
}

}  // namespace hmc
