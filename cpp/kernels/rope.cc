#include "rope.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "parallel.h"

namespace hm {

static void rope_apply(float* x, const int32_t* pos, int64_t N, int64_t H, int64_t hd, double base, float sign) {
  const int64_t half = hd / 2;
  std::vector<double> inv((size_t)half);
  for (int64_t i = 0; i < half; i++) inv[(size_t)i] = std::pow(base, -2.0 * (double)i / (double)hd);
  // cos/sin table over the positions present (computed in double): positions are usually
  // 0..T-1 shared by every row, so the table is small and reused; rows index it via slot[n].
  std::vector<int32_t> uniq(pos, pos + N);
  std::sort(uniq.begin(), uniq.end());
  uniq.erase(std::unique(uniq.begin(), uniq.end()), uniq.end());
  std::vector<float> cs(uniq.size() * half), sn(uniq.size() * half);
  for (size_t u = 0; u < uniq.size(); u++)
    for (int64_t i = 0; i < half; i++) {
      cs[u * half + i] = (float)std::cos(uniq[u] * inv[(size_t)i]);
      sn[u * half + i] = (float)std::sin(uniq[u] * inv[(size_t)i]);
    }
  parallel_for(N, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
      const size_t u = (size_t)(std::lower_bound(uniq.begin(), uniq.end(), pos[n]) - uniq.begin());
      const float* c = cs.data() + u * half;
      const float* s = sn.data() + u * half;
      for (int64_t h = 0; h < H; h++) {
        float* v = x + (n * H + h) * hd;
        for (int64_t i = 0; i < half; i++) {
          float a = v[i], b = v[i + half], si = sign * s[i];
          v[i] = a * c[i] - b * si;
          v[i + half] = a * si + b * c[i];
        }
      }
    }
  }, 16);
}

void rope_forward(float* x, const int32_t* pos, int64_t N, int64_t H, int64_t hd, double base) {
  rope_apply(x, pos, N, H, hd, base, 1.f);
}
void rope_backward(float* dx, const int32_t* pos, int64_t N, int64_t H, int64_t hd, double base) {
  rope_apply(dx, pos, N, H, hd, base, -1.f);
}

}  // namespace hm
