// rmsnorm.h — gain-only RMSNorm (the OpenLM/DCLM convention, no bias).
#pragma once
#include <cstdint>
namespace hm {
// out (N,C) = x * rstd * w ; rstd (N) = 1/sqrt(mean(x^2) + eps); w (C).
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t C, float eps);
// dx (N,C) += rstd * (w*dout - x * rstd^2 * mean(w*dout*x)) ; dw (C) += sum_n dout*x*rstd.
// accumulate_dx = false writes dx instead (no zeroing pass needed); dw is always accumulated.
void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd,
                      int64_t N, int64_t C, bool accumulate_dx = true);

// Serial building blocks over rows [n0, n1) with row strides (the callers parallelise and fuse
// them with neighbouring row-wise work); same per-row arithmetic as the functions above.
void rmsnorm_forward_rows(float* out, int64_t ldo, float* rstd, const float* x, int64_t ldx, const float* w,
                          int64_t n0, int64_t n1, int64_t C, float eps);
void rmsnorm_backward_dx_rows(float* dx, int64_t lddx, const float* dout, int64_t ldg, const float* x, int64_t ldx,
                              const float* w, const float* rstd, int64_t n0, int64_t n1, int64_t C, bool accumulate);
// dw[c] += sum over all N rows, in row order, of dout[n,c] * x[n,c] * rstd[n], for c in [c0, c1).
void rmsnorm_backward_dw_cols(float* dw, const float* dout, int64_t ldg, const float* x, int64_t ldx,
                              const float* rstd, int64_t N, int64_t c0, int64_t c1);
}  // namespace hm
