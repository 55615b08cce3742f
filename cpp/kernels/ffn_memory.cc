#include "kernels/ffn_memory.h"

#include <cstring>

#include "kernels/ffn.h"
#include "kernels/linear.h"

namespace hm {

std::vector<MemoryGroup> memory_groups(const int32_t* seq_slot, int64_t B, int64_t T) {
  std::vector<MemoryGroup> g;
  for (int64_t b = 0; b < B; b++) {
    if (seq_slot[b] < 0) continue;  // this sequence fetched no memory
    if (!g.empty() && g.back().slot == seq_slot[b] && g.back().row0 + g.back().rows == b * T) {
      g.back().rows += T;
    } else {
      g.push_back({b * T, T, seq_slot[b]});
    }
  }
  return g;
}

void ffn_memory_forward(float* y, float* gate_m, float* up_m, float* hidden, const float* x, const float* layer_w,
                        int64_t slot_stride, const std::vector<MemoryGroup>& groups, int64_t C, int64_t R) {
  for (const auto& g : groups) {
    const float* w = layer_w + g.slot * slot_stride;
    const float *wg = w, *wu = w + R * C, *wd = w + 2 * R * C;
    const int64_t n = g.rows;
    float *gm = gate_m + g.row0 * R, *um = up_m + g.row0 * R, *h = hidden + g.row0 * R;
    linear_forward(gm, x + g.row0 * C, wg, n, R, C);
    linear_forward(um, x + g.row0 * C, wu, n, R, C);
    swiglu_forward(h, gm, um, n * R);
    // y (n, C) += h (n, R) · Wd (R, C)
    gemm(false, false, n, C, R, 1.f, h, R, wd, C, 1.f, y + g.row0 * C, C);
  }
}

void ffn_memory_backward(float* dx, float* dlayer_w, const float* dy, const float* x, const float* gate_m,
                         const float* up_m, const float* layer_w, int64_t slot_stride,
                         const std::vector<MemoryGroup>& groups, int64_t C, int64_t R, float* scratch) {
  for (const auto& g : groups) {
    const int64_t n = g.rows;
    const float* w = layer_w + g.slot * slot_stride;
    float* dw = dlayer_w + g.slot * slot_stride;
    const float *wg = w, *wu = w + R * C, *wd = w + 2 * R * C;
    float *dwg = dw, *dwu = dw + R * C, *dwd = dw + 2 * R * C;
    const float *gm = gate_m + g.row0 * R, *um = up_m + g.row0 * R;
    const float *xr = x + g.row0 * C, *dyr = dy + g.row0 * C;
    float *h = scratch, *dh = scratch + n * R, *dg = scratch + 2 * n * R, *du = scratch + 3 * n * R;
    swiglu_forward(h, gm, um, n * R);
    // dWd (R, C) += h^T dy ; dh (n, R) = dy Wd^T
    gemm(true, false, R, C, n, 1.f, h, R, dyr, C, 1.f, dwd, C);
    gemm(false, true, n, R, C, 1.f, dyr, C, wd, C, 0.f, dh, R);
    swiglu_backward_set(dg, du, dh, gm, um, n * R);
    linear_backward_weight(dwg, dg, xr, n, R, C);
    linear_backward_weight(dwu, du, xr, n, R, C);
    linear_backward_input(dx + g.row0 * C, dg, wg, n, R, C);
    linear_backward_input(dx + g.row0 * C, du, wu, n, R, C);
  }
}

}  // namespace hm
