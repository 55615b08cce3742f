#include "linear.h"

namespace hm {

void linear_forward(float* y, const float* x, const float* w, int64_t M, int64_t N, int64_t K) {
  gemm(false, true, M, N, K, 1.f, x, K, w, K, 0.f, y, N);
}
void linear_backward_input(float* dx, const float* dy, const float* w, int64_t M, int64_t N, int64_t K) {
  gemm(false, false, M, K, N, 1.f, dy, N, w, K, 1.f, dx, K);
}
void linear_backward_weight(float* dw, const float* dy, const float* x, int64_t M, int64_t N, int64_t K) {
  gemm(true, false, N, K, M, 1.f, dy, N, x, K, 1.f, dw, K);
}

}  // namespace hm
