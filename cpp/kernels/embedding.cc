#include "embedding.h"

#include <cstring>

#include "parallel.h"

namespace hm {

void embedding_forward(float* out, const int32_t* tokens, const float* wte, int64_t N, int64_t C) {
  parallel_for(N, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) std::memcpy(out + n * C, wte + (int64_t)tokens[n] * C, sizeof(float) * C);
  }, 64);
}

void embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int64_t N, int64_t C) {
  parallel_for(C, [&](int64_t c0, int64_t c1) {
    for (int64_t n = 0; n < N; n++) {
      float* d = dwte + (int64_t)tokens[n] * C;
      const float* g = dout + n * C;
      for (int64_t c = c0; c < c1; c++) d[c] += g[c];
    }
  }, 16);
}

}  // namespace hm
