#include "swiglu.h"

#include <cmath>
#include <cstring>

#include "matmul.h"
#include "parallel.h"

namespace hm {

static inline float sigmoidf(float x) { return 1.f / (1.f + std::exp(-x)); }

void swiglu_forward(float* h, const float* gate, const float* up, int64_t n) {
  parallel_for(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      float g = gate[i];
      h[i] = g * sigmoidf(g) * up[i];
    }
  }, 4096);
}

void swiglu_backward(float* dgate, float* dup, const float* dh, const float* gate, const float* up, int64_t n) {
  parallel_for(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      float g = gate[i], s = sigmoidf(g), silu = g * s;
      dup[i] += dh[i] * silu;
      dgate[i] += dh[i] * up[i] * (s * (1.f + g * (1.f - s)));
    }
  }, 4096);
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
  std::memset(dh, 0, sizeof(float) * N * F);
  linear_backward_input(dh, dy, w3, N, C, F);
  std::memset(dg, 0, sizeof(float) * N * F);
  std::memset(du, 0, sizeof(float) * N * F);
  swiglu_backward(dg, du, dh, gate, up, N * F);
  linear_backward_weight(dw1, dg, x, N, F, C);
  linear_backward_weight(dw2, du, x, N, F, C);
  linear_backward_input(dx, dg, w1, N, F, C);
  linear_backward_input(dx, du, w2, N, F, C);
}

}  // namespace hm
