// swiglu.cu — the SwiGLU nonlinearity (CPU twin: hm::swiglu_forward / swiglu_backward in cpp/kernels/swiglu.cc).
//   swiglu_forward   h (n) = silu(gate) * up = gate * sigmoid(gate) * up
//   swiglu_backward  dup (n) += dh * silu(gate) ; dgate (n) += dh * up * s * (1 + gate * (1 - s)), s = sigmoid(gate)
// Elementwise, thread per element with a grid-stride loop (coalesced). expf here is CUDA's accurate
// expf (<= 2 ulp; no fast-math), so results agree with the CPU twin to a few ulp, not bitwise.
#include <cuda_runtime.h>

#include <cstdint>

#include "hiermem_cuda.h"

namespace hmc {
namespace {

constexpr int kThreads = 256;

inline cudaStream_t as_stream(Stream s) { return static_cast<cudaStream_t>(s); }

inline unsigned grid_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  if (b > (1 << 20)) b = 1 << 20;
  return (unsigned)(b < 1 ? 1 : b);
}

__device__ inline float sigmoidf_(float x) { return 1.f / (1.f + expf(-x)); }

__global__ void swiglu_forward_kernel(float* h, const float* gate, const float* up, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float g = gate[i];
    h[i] = g * sigmoidf_(g) * up[i];
  }
}

__global__ void swiglu_backward_kernel(float* dgate, float* dup, const float* dh, const float* gate, const float* up,
                                       int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float g = gate[i], s = sigmoidf_(g), silu = g * s, d = dh[i];
    dup[i] += d * silu;
    dgate[i] += d * up[i] * (s * (1.f + g * (1.f - s)));
  }
}

}  // namespace

int swiglu_forward(float* h, const float* gate, const float* up, int64_t n, Stream s) {
  if (n < 0) return (int)cudaErrorInvalidValue;
  if (n == 0) return 0;
  if (!h || !gate || !up) return (int)cudaErrorInvalidValue;
  swiglu_forward_kernel<<<grid_for(n), kThreads, 0, as_stream(s)>>>(h, gate, up, n);
  return (int)cudaGetLastError();
}

int swiglu_backward(float* dgate, float* dup, const float* dh, const float* gate, const float* up, int64_t n,
                    Stream s) {
  if (n < 0) return (int)cudaErrorInvalidValue;
  if (n == 0) return 0;
  if (!dgate || !dup || !dh || !gate || !up) return (int)cudaErrorInvalidValue;
  swiglu_backward_kernel<<<grid_for(n), kThreads, 0, as_stream(s)>>>(dgate, dup, dh, gate, up, n);
  return (int)cudaGetLastError();
}

}  // namespace hmc
