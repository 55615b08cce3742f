#include "classifier.h"

#include <algorithm>
#include <cmath>

#include "matmul.h"
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
        float mx = lr[0];
        for (int64_t j = 1; j < V; j++) mx = std::max(mx, lr[j]);
        double sum = 0;
        for (int64_t j = 0; j < V; j++) sum += std::exp((double)(lr[j] - mx));
        const double lse = mx + std::log(sum);
        losses[r0 + r] = t < 0 ? 0.f : (float)(lse - lr[t]);
        if (!backward) continue;
        if (t < 0) {
          for (int64_t j = 0; j < V; j++) lr[j] = 0.f;
          continue;
        }
        // d loss / d logit = softmax - onehot, scaled
        for (int64_t j = 0; j < V; j++) lr[j] = (float)std::exp((double)lr[j] - lse) * grad_scale;
        lr[t] -= grad_scale;
      }
    }, 4);
    if (dx) linear_backward_input(dx + r0 * C, logits, wte, rows, V, C);
    if (dwte) linear_backward_weight(dwte, logits, x + r0 * C, rows, V, C);
  }
}

}  // namespace hm
