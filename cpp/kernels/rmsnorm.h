// rmsnorm.h — gain-only RMSNorm (the OpenLM/DCLM convention, no bias).
#pragma once
#include <cstdint>
namespace hm {
// out (N,C) = x * rstd * w ; rstd (N) = 1/sqrt(mean(x^2) + eps); w (C).
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t C, float eps);
// dx (N,C) += rstd * (w*dout - x * rstd^2 * mean(w*dout*x)) ; dw (C) += sum_n dout*x*rstd.
void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd,
                      int64_t N, int64_t C);
}  // namespace hm
