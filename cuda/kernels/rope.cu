// rope.cu — rotary position embedding, rotate-half pairing (i, i + hd/2) (CPU twin: cpp/kernels/rope.cc).
//   rope_forward   x (N, H, hd) rows with stride ld, in place: (a, b) -> (a cos - b sin, a sin + b cos)
//   rope_backward  the inverse rotation (sin negated) applied to a gradient
// angle(n, i) = pos[n] * base^(-2i/hd), computed in double and its cos / sin rounded to float, as
// the CPU twin's table; the rotation itself uses the twin's float operations with round-to-nearest
// intrinsics (no FMA contraction), so results agree with the CPU to the last bit except where the
// device's double sin/cos (<= 2 ulp in double) round to a different float (very rare).
// With an odd hd the last element of each head is left untouched, as in the twin.
#include <cuda_runtime.h>

#include <cstdint>

#include "hiermem_cuda.h"
#include "rope.cuh"

namespace hmc {
namespace {

constexpr int kThreads = 256;

inline cudaStream_t as_stream(Stream s) { return static_cast<cudaStream_t>(s); }

// Thread per (row n, pair i < half), grid-stride over N*half; each computes its angle once and
// rotates pair i of every head h. Consecutive threads take consecutive i of one row: coalesced.
__global__ void rope_kernel(float* x, const int32_t* pos, int64_t N, int64_t H, int64_t hd, int64_t ld, double base,
                            float sign) {
  const int64_t half = hd / 2;
  const int64_t total = N * half;
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = t / half, i = t - n * half;
    const double inv = pow(base, -2.0 * (double)i / (double)hd);
    rope_rotate_pair(x + n * ld, H, hd, i, (double)pos[n] * inv, sign);
  }
}

int rope_launch(float* x, const int32_t* pos, int64_t N, int64_t H, int64_t hd, int64_t ld, double base, float sign,
                Stream s) {
  if (N < 0 || H < 0 || hd < 0 || ld < 0) return (int)cudaErrorInvalidValue;
  if (N == 0 || H == 0 || hd < 2) return 0;  // hd < 2: no pair to rotate
  if (!x || !pos || ld < H * hd) return (int)cudaErrorInvalidValue;
  const int64_t total = N * (hd / 2);
  int64_t blocks = (total + kThreads - 1) / kThreads;
  if (blocks > (1 << 20)) blocks = 1 << 20;
  rope_kernel<<<(unsigned)blocks, kThreads, 0, as_stream(s)>>>(x, pos, N, H, hd, ld, base, sign);
  return (int)cudaGetLastError();
}

}  // namespace

int rope_forward(float* x, const int32_t* pos, int64_t N, int64_t H, int64_t hd, int64_t ld, double base, Stream s) {
  return rope_launch(x, pos, N, H, hd, ld, base, 1.f, s);
}

int rope_backward(float* dx, const int32_t* pos, int64_t N, int64_t H, int64_t hd, int64_t ld, double base,
                  Stream s) {
  return rope_launch(dx, pos, N, H, hd, ld, base, -1.f, s);
}

}  // namespace hmc
