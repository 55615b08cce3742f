#include "classifier.h"

#include <algorithm>
#include <cmath>

#include "kernels/vecmath.h"
#include "kernels/linear.h"
#include "parallel.h"

namespace hm {

int64_t classifier_chunk_rows(int64_t N, int64_t V) {
  // ~16 MB of logits per chunk keeps the working set bounded for large vocabularies.
  return std::max<int64_t>(1, std::min<int64_t>(N, (4 << 20) / std::max<int64_t>(V, 1)));
}

void classifier_logits(float* logits, const float* x, const float* wte, int64_t N, int64_t C, int64_t V) {
  linear_forward(logits, x, wte, N, V, C);
}

void classifier_forward_backward(float* losses, float* dx, float* dwte, const float* x, const float* wte,
                                 const int32_t* targets, int64_t N, int64_t C, int64_t V, float grad_scale,
                                 float* scratch) {
  const bool backward = dx != nullptr || dwte != nullptr;
  const int64_t chunk = classifier_chunk_rows(N, V);
  for (int64_t r0 = 0; r0 < N; r0 += chunk) {
    const int64_t rows = std::min(chunk, N - r0);
    float* logits = scratch;
    linear_forward(logits, x + r0 * C, wte, rows, V, C);
    parallel_for(rows, [&](int64_t a, int64_t b) {
      for (int64_t r = a; r < b; r++) {
        float* lr = logits + r * V;
        const int32_t t = targets[r0 + r];
        const float mx = max_of(lr, V);
        const float lt = t < 0 ? 0.f : lr[t];
        // lr[j] = exp(lr[j] - mx) (vectorised expf, <= 1 ulp), summed in float64
        const double sum = exp_shift_sum(lr, V, mx);
        const double lse = mx + std::log(sum);
        losses[r0 + r] = t < 0 ? 0.f : (float)(lse - lt);
        if (!backward) continue;
        if (t < 0) {
          for (int64_t j = 0; j < V; j++) lr[j] = 0.f;
          continue;
        }
        // d loss / d logit = softmax - onehot, scaled: softmax_j = exp(l_j - mx) / sum
        const float k = (float)((double)grad_scale / sum);
        for (int64_t j = 0; j < V; j++) lr[j] *= k;
        lr[t] -= grad_scale;
      }
    }, 4);
    if (dx) linear_backward_input(dx + r0 * C, logits, wte, rows, V, C);
    if (dwte) linear_backward_weight(dwte, logits, x + r0 * C, rows, V, C);
  }
}

}  // namespace hm
