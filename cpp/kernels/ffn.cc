#include "ffn.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/linear.h"
#include "parallel.h"
#include "kernels/vecmath.h"

namespace hm {

// Elementwise work is split in chunks of kGrain (a multiple of every vector width); below ~2 grains
// the pool's dispatch costs more than it saves.
static constexpr int64_t kGrain = 8192;

void swiglu_forward(float* h, const float* gate, const float* up, int64_t n) {
  parallel_for(n, [&](int64_t i0, int64_t i1) { silu_mul(h + i0, gate + i0, up + i0, i1 - i0); }, kGrain);
}

static void swiglu_backward_impl(float* dgate, float* dup, const float* dh, const float* gate, const float* up,
                                 int64_t n, bool accumulate) {
  parallel_for(n, [&](int64_t i0, int64_t i1) {
    silu_mul_backward(dgate + i0, dup + i0, dh + i0, gate + i0, up + i0, i1 - i0, accumulate);
  }, kGrain);
}

void swiglu_backward(float* dgate, float* dup, const float* dh, const float* gate, const float* up, int64_t n) {
  swiglu_backward_impl(dgate, dup, dh, gate, up, n, true);
}

void swiglu_backward_set(float* dgate, float* dup, const float* dh, const float* gate, const float* up, int64_t n) {
  swiglu_backward_impl(dgate, dup, dh, gate, up, n, false);
}

void ffn_forward(float* y, float* gate, float* up, float* hidden, const float* x, const float* w1, const float* w2,
                 const float* w3, int64_t N, int64_t C, int64_t F) {
  linear_forward(gate, x, w1, N, F, C);
  linear_forward(up, x, w2, N, F, C);
  swiglu_forward(hidden, gate, up, N * F);
  linear_forward(y, hidden, w3, N, C, F);
}

void ffn_backward(float* dx, float* dw1, float* dw2, float* dw3, const float* dy, const float* x, const float* gate,
                  const float* up, const float* w1, const float* w2, const float* w3, int64_t N, int64_t C,
                  int64_t F, float* h, float* dh, float* dg, float* du) {
  swiglu_forward(h, gate, up, N * F);  // recomputed rather than stored: saves N*F floats per layer
  linear_backward_weight(dw3, dy, h, N, C, F);
  // dh (N,F) = dy W3 ; dg, du written (not accumulated): no zeroing passes
  gemm(false, false, N, F, C, 1.f, dy, C, w3, F, 0.f, dh, F);
  swiglu_backward_set(dg, du, dh, gate, up, N * F);
  linear_backward_weight(dw1, dg, x, N, F, C);
  linear_backward_weight(dw2, du, x, N, F, C);
  linear_backward_input(dx, dg, w1, N, F, C);
  linear_backward_input(dx, du, w2, N, F, C);
}

void ffn_forward_fused(float* y, float* gu, float* hidden, const float* x, const float* w12, const float* w3,
                       int64_t N, int64_t C, int64_t F, bool accumulate_y) {
  linear_forward(gu, x, w12, N, 2 * F, C);
  const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(F, 1));
  parallel_for(N, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) silu_mul(hidden + n * F, gu + n * 2 * F, gu + n * 2 * F + F, F);
  }, grain);
  gemm(false, true, N, C, F, 1.f, hidden, F, w3, F, accumulate_y ? 1.f : 0.f, y, C);
}

void ffn_backward_fused(float* dx, float* dw12, float* dw3, const float* dy, const float* x, const float* gu,
                        const float* w12, const float* w3, int64_t N, int64_t C, int64_t F, float* h, float* dh,
                        float* dgu, bool accumulate_dx) {
  // h recomputed rather than stored (saves N*F floats per layer); so is sigmoid(gate) below:
  // with the vectorised exp that is cheaper than another pass through memory
  const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(F, 1));
  parallel_for(N, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) silu_mul(h + n * F, gu + n * 2 * F, gu + n * 2 * F + F, F);
  }, grain);
  linear_backward_weight(dw3, dy, h, N, C, F);
  gemm(false, false, N, F, C, 1.f, dy, C, w3, F, 0.f, dh, F);  // dh = dy W3
  parallel_for(N, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
      float* d = dgu + n * 2 * F;
      const float* g = gu + n * 2 * F;
      silu_mul_backward(d, d + F, dh + n * F, g, g + F, F, false);
    }
  }, grain);
  linear_backward_weight(dw12, dgu, x, N, 2 * F, C);  // [dW1; dW2] += dgu^T x
  gemm(false, false, N, C, 2 * F, 1.f, dgu, 2 * F, w12, C, accumulate_dx ? 1.f : 0.f, dx, C);  // dx (+)= dgu [W1; W2]
}

}  // namespace hm
