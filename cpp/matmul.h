// matmul.h — the one door to BLAS. Dense products are borrowed from OpenBLAS (pinned to one
// thread); we split the output over our own pool so there is never oversubscription and the
// summation order of each output element does not depend on the thread count.
#pragma once
#include <cstdint>

namespace hm {

// Row-major C (M,N) = alpha * op(A) (M,K) * op(B) (K,N) + beta * C.
// op(A) = A (M,K, leading dim lda) or, if trans_a, A^T with A stored (K,M).
// op(B) = B (K,N, ldb) or, if trans_b, B^T with B stored (N,K).
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// Common shapes of linear layers (x: (M,K), W: (N,K)):
//   y = x W^T            -> linear_forward
//   dx += dy W           -> linear_backward_input
//   dW += dy^T x         -> linear_backward_weight
void linear_forward(float* y, const float* x, const float* w, int64_t M, int64_t N, int64_t K);
void linear_backward_input(float* dx, const float* dy, const float* w, int64_t M, int64_t N, int64_t K);
void linear_backward_weight(float* dw, const float* dy, const float* x, int64_t M, int64_t N, int64_t K);

void blas_init();  // pins OpenBLAS to one thread; called once at addon load

}  // namespace hm
