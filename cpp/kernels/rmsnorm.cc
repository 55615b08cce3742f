#include "rmsnorm.h"

#include <cmath>

#include "parallel.h"

namespace hm {

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t C, float eps) {
  parallel_for(N, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
      const float* xr = x + n * C;
      double ss = 0;
      for (int64_t c = 0; c < C; c++) ss += (double)xr[c] * xr[c];
      float r = (float)(1.0 / std::sqrt(ss / (double)C + (double)eps));
      rstd[n] = r;
      float* o = out + n * C;
      for (int64_t c = 0; c < C; c++) o[c] = xr[c] * r * w[c];
    }
  }, 16);
}

void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd,
                      int64_t N, int64_t C) {
  // dx: independent rows.
  parallel_for(N, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
      const float* xr = x + n * C;
      const float* g = dout + n * C;
      float r = rstd[n];
      double dot = 0;
      for (int64_t c = 0; c < C; c++) dot += (double)w[c] * g[c] * xr[c];
      float k = (float)(dot / (double)C) * r * r;
      float* d = dx + n * C;
      for (int64_t c = 0; c < C; c++) d[c] += r * (w[c] * g[c] - xr[c] * k);
    }
  }, 16);
  // dw: each thread owns a column range and walks all rows in order (deterministic).
  parallel_for(C, [&](int64_t c0, int64_t c1) {
    for (int64_t n = 0; n < N; n++) {
      const float* xr = x + n * C;
      const float* g = dout + n * C;
      float r = rstd[n];
      for (int64_t c = c0; c < c1; c++) dw[c] += g[c] * xr[c] * r;
    }
  }, 16);
}

}  // namespace hm
