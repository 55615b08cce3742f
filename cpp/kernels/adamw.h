// adamw.h — AdamW with decoupled weight decay, and the global gradient norm for clipping.
#pragma once
#include <cstdint>
namespace hm {
struct AdamWHyper {
  double lr, beta1, beta2, eps;  // kept in double until the kernel casts the derived constants
  int64_t step;                   // 1-based, for bias correction
  double grad_scale;   // multiplies every gradient (clipping passes min(1, clip / norm))
};
// p, g, m, v (n); weight decay wd for this range.  p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p)
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, float wd, const AdamWHyper& h);
// sqrt(sum g^2), accumulated in float64 per fixed chunk then summed in chunk order.
double global_norm(const float* g, int64_t n);
}  // namespace hm
