#include "rmsnorm.h"

#include <cmath>

#include "kernels/vecmath.h"
#include "parallel.h"

namespace hm {

namespace {

HM_INLINE void fwd_body(float* out, int64_t ldo, float* rstd, const float* x, int64_t ldx, const float* w, int64_t n0,
                        int64_t n1, int64_t C, float eps) {
  for (int64_t n = n0; n < n1; n++) {
    const float* xr = x + n * ldx;
    const double ss = sumsq_f64(xr, C);
    const float r = (float)(1.0 / std::sqrt(ss / (double)C + (double)eps));
    rstd[n] = r;
    float* o = out + n * ldo;
    for (int64_t c = 0; c < C; c++) o[c] = xr[c] * r * w[c];
  }
}

HM_INLINE void dx_body(float* dx, int64_t lddx, const float* dout, int64_t ldg, const float* x, int64_t ldx,
                       const float* w, const float* rstd, int64_t n0, int64_t n1, int64_t C, bool acc) {
  for (int64_t n = n0; n < n1; n++) {
    const float* xr = x + n * ldx;
    const float* g = dout + n * ldg;
    const float r = rstd[n];
    const double dot = dot3_f64(w, g, xr, C);
    const float k = (float)(dot / (double)C) * r * r;
    float* d = dx + n * lddx;
    if (acc) {
      for (int64_t c = 0; c < C; c++) d[c] += r * (w[c] * g[c] - xr[c] * k);
    } else {
      for (int64_t c = 0; c < C; c++) d[c] = r * (w[c] * g[c] - xr[c] * k);
    }
  }
}

HM_INLINE void dw_body(float* dw, const float* dout, int64_t ldg, const float* x, int64_t ldx, const float* rstd,
                       int64_t N, int64_t c0, int64_t c1) {
  for (int64_t n = 0; n < N; n++) {
    const float* xr = x + n * ldx;
    const float* g = dout + n * ldg;
    const float r = rstd[n];
    for (int64_t c = c0; c < c1; c++) dw[c] += g[c] * xr[c] * r;
  }
}

HM_TARGET_AVX512 void fwd_avx512(float* out, int64_t ldo, float* rstd, const float* x, int64_t ldx, const float* w,
                                 int64_t n0, int64_t n1, int64_t C, float eps) {
  fwd_body(out, ldo, rstd, x, ldx, w, n0, n1, C, eps);
}
void fwd_generic(float* out, int64_t ldo, float* rstd, const float* x, int64_t ldx, const float* w, int64_t n0,
                 int64_t n1, int64_t C, float eps) {
  fwd_body(out, ldo, rstd, x, ldx, w, n0, n1, C, eps);
}
HM_TARGET_AVX512 void dx_avx512(float* dx, int64_t lddx, const float* dout, int64_t ldg, const float* x, int64_t ldx,
                                const float* w, const float* rstd, int64_t n0, int64_t n1, int64_t C, bool acc) {
  dx_body(dx, lddx, dout, ldg, x, ldx, w, rstd, n0, n1, C, acc);
}
void dx_generic(float* dx, int64_t lddx, const float* dout, int64_t ldg, const float* x, int64_t ldx, const float* w,
                const float* rstd, int64_t n0, int64_t n1, int64_t C, bool acc) {
  dx_body(dx, lddx, dout, ldg, x, ldx, w, rstd, n0, n1, C, acc);
}
HM_TARGET_AVX512 void dw_avx512(float* dw, const float* dout, int64_t ldg, const float* x, int64_t ldx,
                                const float* rstd, int64_t N, int64_t c0, int64_t c1) {
  dw_body(dw, dout, ldg, x, ldx, rstd, N, c0, c1);
}
void dw_generic(float* dw, const float* dout, int64_t ldg, const float* x, int64_t ldx, const float* rstd, int64_t N,
                int64_t c0, int64_t c1) {
  dw_body(dw, dout, ldg, x, ldx, rstd, N, c0, c1);
}

}  // namespace

void rmsnorm_forward_rows(float* out, int64_t ldo, float* rstd, const float* x, int64_t ldx, const float* w,
                          int64_t n0, int64_t n1, int64_t C, float eps) {
  if (simd_level() == SimdLevel::avx512) fwd_avx512(out, ldo, rstd, x, ldx, w, n0, n1, C, eps);
  else fwd_generic(out, ldo, rstd, x, ldx, w, n0, n1, C, eps);
}

void rmsnorm_backward_dx_rows(float* dx, int64_t lddx, const float* dout, int64_t ldg, const float* x, int64_t ldx,
                              const float* w, const float* rstd, int64_t n0, int64_t n1, int64_t C, bool accumulate) {
  if (simd_level() == SimdLevel::avx512) dx_avx512(dx, lddx, dout, ldg, x, ldx, w, rstd, n0, n1, C, accumulate);
  else dx_generic(dx, lddx, dout, ldg, x, ldx, w, rstd, n0, n1, C, accumulate);
}

void rmsnorm_backward_dw_cols(float* dw, const float* dout, int64_t ldg, const float* x, int64_t ldx,
                              const float* rstd, int64_t N, int64_t c0, int64_t c1) {
  if (simd_level() == SimdLevel::avx512) dw_avx512(dw, dout, ldg, x, ldx, rstd, N, c0, c1);
  else dw_generic(dw, dout, ldg, x, ldx, rstd, N, c0, c1);
}

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t C, float eps) {
  parallel_for(N, [&](int64_t n0, int64_t n1) { rmsnorm_forward_rows(out, C, rstd, x, C, w, n0, n1, C, eps); }, 16);
}

void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd,
                      int64_t N, int64_t C, bool accumulate_dx) {
  // dx: independent rows.
  parallel_for(N, [&](int64_t n0, int64_t n1) {
    rmsnorm_backward_dx_rows(dx, C, dout, C, x, C, w, rstd, n0, n1, C, accumulate_dx);
  }, 16);
  // dw: each thread owns a column range and walks all rows in order (deterministic).
  parallel_for(C, [&](int64_t c0, int64_t c1) { rmsnorm_backward_dw_cols(dw, dout, C, x, C, rstd, N, c0, c1); }, 16);
}

}  // namespace hm
