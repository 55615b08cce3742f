// adamw.h — AdamW with decoupled weight decay, and the global gradient norm for clipping.
// AdamWHyper / AdamWConsts / adamw_consts live in contract.h, shared with the CUDA twin.
#pragma once
#include <cstdint>

#include "contract.h"

namespace hm {
// p, g, m, v (n); weight decay wd for this range.  p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p)
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, float wd, const AdamWHyper& h);
// sqrt(sum g^2), accumulated in float64 per fixed chunk then summed in chunk order.
double global_norm(const float* g, int64_t n);
}  // namespace hm
