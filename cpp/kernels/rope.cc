#include "rope.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "parallel.h"

namespace hm {

static void rope_apply(float* x, const int32_t* pos, int64_t N, int64_t H, int64_t hd, double base, float sign) {
  const int64_t half = hd / 2;
  int32_t maxpos = 0;
  for (int64_t n = 0; n < N; n++) maxpos = std::max(maxpos, pos[n]);
  // cos/sin table per (position, i), computed in double once per call.
  std::vector<float> cs((size_t)(maxpos + 1) * half), sn((size_t)(maxpos + 1) * half);
  for (int64_t i = 0; i < half; i++) {
    double inv = std::pow(base, -2.0 * (double)i / (double)hd);
    for (int32_t p = 0; p <= maxpos; p++) {
      cs[(size_t)p * half + i] = (float)std::cos(p * inv);
      sn[(size_t)p * half + i] = (float)std::sin(p * inv);
    }
  }
  parallel_for(N, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
      const float* c = cs.data() + (size_t)pos[n] * half;
      const float* s = sn.data() + (size_t)pos[n] * half;
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
