#include "matmul.h"

#include <cblas.h>

#include "parallel.h"

extern "C" void openblas_set_num_threads(int);
// weak: OpenBLAS exports it; another BLAS (e.g. the CUDA harness's naive fallback) may not
extern "C" int blas_thread_shutdown_(void) __attribute__((weak));

namespace hm {

// OpenBLAS runs single-threaded (our pool splits the products). Its idle server threads, started
// when the library loaded, are stopped too: they poll with sched_yield in bursts and would take CPU
// time from our own threads. With one thread set, OpenBLAS never hands them work again.
void blas_init() {
  openblas_set_num_threads(1);
  if (blas_thread_shutdown_) blas_thread_shutdown_();
}

static void gemm_serial(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                        int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {  // BLAS would still scale C by beta; do it ourselves to be explicit
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
    return;
  }
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M, (int)N,
              (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const int64_t work = M * N * K;
  if (in_parallel_region() || num_threads() == 1 || work < (1 << 18)) {
    gemm_serial(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  // Split the larger output dimension; each chunk is an independent sub-GEMM with the full K.
  if (M >= N) {
    parallel_for(M, [&](int64_t i0, int64_t i1) {
      const float* a = ta ? A + i0 : A + i0 * lda;
      gemm_serial(ta, tb, i1 - i0, N, K, alpha, a, lda, B, ldb, beta, C + i0 * ldc, ldc);
    }, 16);
  } else {
    parallel_for(N, [&](int64_t j0, int64_t j1) {
      const float* b = tb ? B + j0 * ldb : B + j0;
      gemm_serial(ta, tb, M, j1 - j0, K, alpha, A, lda, b, ldb, beta, C + j0, ldc);
    }, 16);
  }
}

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
