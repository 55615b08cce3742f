// linear.h — the shapes of linear layers, on our GEMM (kernels/gemm.h: packing, SIMD micro-kernels,
// threads split output tiles only, so each element's sum order does not depend on the thread count).
// CPU-only: the CUDA twin of the GEMM is cuda/kernels/gemm.cu, and the device model calls it with
// transposition flags directly (no wrapper layer).
#pragma once
#include <cstdint>

#include "kernels/gemm.h"

namespace hm {

// Common shapes of linear layers (x: (M,K), W: (N,K)):
//   y = x W^T            -> linear_forward
//   dx += dy W           -> linear_backward_input
//   dW += dy^T x         -> linear_backward_weight
void linear_forward(float* y, const float* x, const float* w, int64_t M, int64_t N, int64_t K);
void linear_backward_input(float* dx, const float* dy, const float* w, int64_t M, int64_t N, int64_t K);
void linear_backward_weight(float* dw, const float* dy, const float* x, int64_t M, int64_t N, int64_t K);

}  // namespace hm
