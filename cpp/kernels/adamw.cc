#include "adamw.h"

#include <cmath>
#include <vector>

#include "kernels/vecmath.h"
#include "parallel.h"

namespace hm {

void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, float wd, const AdamWHyper& h) {
  const AdamWConsts k = adamw_consts(h, wd);
  parallel_for(n, [&](int64_t i0, int64_t i1) { adamw_span(p + i0, g + i0, m + i0, v + i0, i1 - i0, k); }, 16384);
}

double global_norm(const float* g, int64_t n) {
  const int64_t grain = 4096;
  const int64_t chunks = parallel_chunks(n, grain);
  std::vector<double> part((size_t)std::max<int64_t>(chunks, 1), 0.0);
  parallel_for(n, [&](int64_t i0, int64_t i1) {
    const double acc = sumsq_f64(g + i0, i1 - i0);
    // find our chunk index: chunks are contiguous, recompute it from i0
    for (int64_t c = 0; c < chunks; c++) {
      int64_t b, e;
      parallel_chunk_range(n, grain, chunks, c, &b, &e);
      if (b == i0) { part[(size_t)c] = acc; break; }
    }
  }, grain);
  double total = 0;
  for (double x : part) total += x;
  return std::sqrt(total);
}

}  // namespace hm
