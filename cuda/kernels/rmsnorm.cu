// rmsnorm.cu — gain-only RMSNorm forward and backward (CPU twin: cpp/kernels/rmsnorm.cc).
//   rmsnorm_forward   out (N,C) = x * rstd * w ; rstd (N) = 1/sqrt(mean(x^2) + eps)   (sum of squares in double)
//   rmsnorm_backward  dx (N,C) += rstd * (w*dout - x * k), k = (float)(mean(w*dout*x)) * rstd^2 ; dw (C) += sum_n dout*x*rstd
// The float expressions use the twin's operation order with explicit round-to-nearest intrinsics
// (__fmul_rn, ...) so that nvcc does not fuse them into FMAs: the results then differ from the CPU
// only where a double row sum (summed in another order) rounds to a different float.
// dw is reduced without atomics: per-chunk partial sums over fixed row ranges into scratch, then
// one thread per channel adds the chunks in order (deterministic, independent of the GPU).
#include <cuda_runtime.h>

#include <cstdint>

#include "hiermem_cuda.h"

namespace hmc {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;

inline cudaStream_t as_stream(Stream s) { return static_cast<cudaStream_t>(s); }

// dw partials: rows per chunk grows with N so that there are at most ~512 chunks (bounded scratch
// and a short final reduction), but at least 16 rows per chunk.
inline int64_t dw_rows_per_chunk(int64_t N) {
  int64_t r = (N + 511) / 512;
  return r < 16 ? 16 : r;
}
inline int64_t dw_chunks(int64_t N) { return (N + dw_rows_per_chunk(N) - 1) / dw_rows_per_chunk(N); }

__device__ inline double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;  // every lane holds the same total (butterfly)
}

// x, out (N,C); rstd (N); w (C). One warp per row: lanes stride over C; the whole warp exits
// together when its row is past N (row is warp-uniform), so the shuffles never miss a lane.
__global__ void rmsnorm_forward_kernel(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t C,
                                       float eps) {
  const int64_t row = blockIdx.x * (int64_t)kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  const float* xr = x + row * C;
  double ss = 0;
  for (int64_t c = lane; c < C; c += 32) ss += (double)xr[c] * (double)xr[c];
  ss = warp_sum(ss);
  const float r = (float)(1.0 / sqrt(ss / (double)C + (double)eps));
  if (lane == 0) rstd[row] = r;
  float* o = out + row * C;
  for (int64_t c = lane; c < C; c += 32) o[c] = __fmul_rn(__fmul_rn(xr[c], r), w[c]);
}

// dx (N,C) += ... One warp per row, as the forward.
__global__ void rmsnorm_backward_dx_kernel(float* dx, const float* dout, const float* x, const float* w,
                                           const float* rstd, int64_t N, int64_t C) {
  const int64_t row = blockIdx.x * (int64_t)kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  const float* xr = x + row * C;
  const float* g = dout + row * C;
  const float r = rstd[row];
  double dot = 0;
  for (int64_t c = lane; c < C; c += 32) dot += (double)w[c] * (double)g[c] * (double)xr[c];
  dot = warp_sum(dot);
  const float k = __fmul_rn(__fmul_rn((float)(dot / (double)C), r), r);
  float* d = dx + row * C;
  for (int64_t c = lane; c < C; c += 32)
    d[c] = __fadd_rn(d[c], __fmul_rn(r, __fsub_rn(__fmul_rn(w[c], g[c]), __fmul_rn(xr[c], k))));
}

// partial (P, C): partial[p][c] = sum over rows n of chunk p (in order) of dout*x*rstd.
// Block = (chunk p, tile of kThreads channels); each thread owns one channel and walks the chunk's
// rows: coalesced loads along C, no inter-thread reduction.
__global__ void rmsnorm_backward_dw_partial_kernel(float* partial, const float* dout, const float* x,
                                                   const float* rstd, int64_t N, int64_t C, int64_t rows_per_chunk,
                                                   int64_t ctiles) {
  const int64_t p = blockIdx.x / ctiles, ct = blockIdx.x % ctiles;
  const int64_t c = ct * kThreads + threadIdx.x;
  if (c >= C) return;
  const int64_t n0 = p * rows_per_chunk;
  const int64_t n1 = n0 + rows_per_chunk < N ? n0 + rows_per_chunk : N;
  float acc = 0.f;
  for (int64_t n = n0; n < n1; n++) acc = __fadd_rn(acc, __fmul_rn(__fmul_rn(dout[n * C + c], x[n * C + c]), rstd[n]));
  partial[p * C + c] = acc;
}

// dw (C) += sum_p partial[p][c], p in order. Thread per channel.
__global__ void rmsnorm_backward_dw_final_kernel(float* dw, const float* partial, int64_t P, int64_t C) {
  const int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (c >= C) return;
  float acc = 0.f;
#pragma unroll 8
  for (int64_t p = 0; p < P; p++) acc += partial[p * C + c];
  dw[c] += acc;
}

}  // namespace

int rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t C, float eps,
                    Stream s) {
  if (N < 0 || C < 0) return (int)cudaErrorInvalidValue;
  if (N == 0 || C == 0) return 0;
  if (!out || !rstd || !x || !w) return (int)cudaErrorInvalidValue;
  const int64_t blocks = (N + kWarpsPerBlock - 1) / kWarpsPerBlock;
  if (blocks > 0x7fffffff) return (int)cudaErrorInvalidValue;
  rmsnorm_forward_kernel<<<(unsigned)blocks, kThreads, 0, as_stream(s)>>>(out, rstd, x, w, N, C, eps);
  return (int)cudaGetLastError();
}

int64_t rmsnorm_backward_scratch_floats(int64_t N, int64_t C) {
  if (N <= 0 || C <= 0) return 0;
  return dw_chunks(N) * C;
}

int rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd,
                     int64_t N, int64_t C, float* scratch, Stream s) {
  if (N < 0 || C < 0) return (int)cudaErrorInvalidValue;
  if (N == 0 || C == 0) return 0;
  if (!dx || !dw || !dout || !x || !w || !rstd || !scratch) return (int)cudaErrorInvalidValue;
  const int64_t row_blocks = (N + kWarpsPerBlock - 1) / kWarpsPerBlock;
  const int64_t rpc = dw_rows_per_chunk(N), P = dw_chunks(N);
  const int64_t ctiles = (C + kThreads - 1) / kThreads;
  if (row_blocks > 0x7fffffff || P * ctiles > 0x7fffffff) return (int)cudaErrorInvalidValue;
  cudaStream_t st = as_stream(s);
  rmsnorm_backward_dx_kernel<<<(unsigned)row_blocks, kThreads, 0, st>>>(dx, dout, x, w, rstd, N, C);
  rmsnorm_backward_dw_partial_kernel<<<(unsigned)(P * ctiles), kThreads, 0, st>>>(scratch, dout, x, rstd, N, C, rpc,
                                                                                  ctiles);
  rmsnorm_backward_dw_final_kernel<<<(unsigned)ctiles, kThreads, 0, st>>>(dw, scratch, P, C);
  return (int)cudaGetLastError();
}

}  // namespace hmc
