#include "rope.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/vecmath.h"
#include "parallel.h"

namespace hm {

std::vector<double> rope_inv_freq(int64_t hd, double base, const RopeScaling& sc) {
  std::vector<double> inv((size_t)(hd / 2));
  for (int64_t i = 0; i < hd / 2; i++) inv[(size_t)i] = rope_inv_freq_at(i, hd, base, sc);
  return inv;
}

void rope_table_build(RopeTable& t, const int32_t* pos, int64_t N, int64_t hd, double base, const RopeScaling& sc) {
  const int64_t half = hd / 2;
  const std::vector<double> inv = rope_inv_freq(hd, base, sc);
  // positions are usually 0..T-1 shared by every row, so the table is small and reused
  std::vector<int32_t> uniq(pos, pos + N);
  std::sort(uniq.begin(), uniq.end());
  uniq.erase(std::unique(uniq.begin(), uniq.end()), uniq.end());
  t.N = N;
  t.hd = hd;
  t.half = half;
  t.cs.resize(uniq.size() * half);
  t.sn.resize(uniq.size() * half);
  for (size_t u = 0; u < uniq.size(); u++)
    for (int64_t i = 0; i < half; i++) {
      t.cs[u * half + i] = (float)std::cos(uniq[u] * inv[(size_t)i]);
      t.sn[u * half + i] = (float)std::sin(uniq[u] * inv[(size_t)i]);
    }
  t.row.resize((size_t)N);
  for (int64_t n = 0; n < N; n++)
    t.row[(size_t)n] = (int32_t)(std::lower_bound(uniq.begin(), uniq.end(), pos[n]) - uniq.begin());
}

namespace {
HM_INLINE void rope_rows_body(float* x, int64_t ld, const RopeTable& t, int64_t n0, int64_t n1, int64_t H,
                              float sign) {
  const int64_t half = t.half, hd = t.hd;
  for (int64_t n = n0; n < n1; n++) {
    const float* c = t.cs.data() + (size_t)t.row[(size_t)n] * half;
    const float* s = t.sn.data() + (size_t)t.row[(size_t)n] * half;
    for (int64_t h = 0; h < H; h++) {
      float* __restrict v0 = x + n * ld + h * hd;
      float* __restrict v1 = v0 + half;
      for (int64_t i = 0; i < half; i++) {
        const float a = v0[i], b = v1[i], si = sign * s[i];
        v0[i] = a * c[i] - b * si;
        v1[i] = a * si + b * c[i];
      }
    }
  }
}
HM_TARGET_AVX512 void rope_rows_avx512(float* x, int64_t ld, const RopeTable& t, int64_t n0, int64_t n1, int64_t H,
                                       float sign) {
  rope_rows_body(x, ld, t, n0, n1, H, sign);
}
void rope_rows_generic(float* x, int64_t ld, const RopeTable& t, int64_t n0, int64_t n1, int64_t H, float sign) {
  rope_rows_body(x, ld, t, n0, n1, H, sign);
}
}  // namespace

void rope_apply_rows(float* x, int64_t ld, const RopeTable& t, int64_t n0, int64_t n1, int64_t H, float sign) {
  if (simd_level() == SimdLevel::avx512) rope_rows_avx512(x, ld, t, n0, n1, H, sign);
  else rope_rows_generic(x, ld, t, n0, n1, H, sign);
}

static void rope_apply(float* x, const int32_t* pos, int64_t N, int64_t H, int64_t hd, double base, float sign) {
  RopeTable t;
  rope_table_build(t, pos, N, hd, base);
  parallel_for(N, [&](int64_t n0, int64_t n1) { rope_apply_rows(x, H * hd, t, n0, n1, H, sign); }, 16);
}

void rope_forward(float* x, const int32_t* pos, int64_t N, int64_t H, int64_t hd, double base) {
  rope_apply(x, pos, N, H, hd, base, 1.f);
}
void rope_backward(float* dx, const int32_t* pos, int64_t N, int64_t H, int64_t hd, double base) {
  rope_apply(dx, pos, N, H, hd, base, -1.f);
}

}  // namespace hm
