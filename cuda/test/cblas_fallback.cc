// cblas_fallback.cc — a naive, correct cblas_sgemm (+ a no-op openblas_set_num_threads) for the CPU
// twins of the CUDA harness and bench on a machine without OpenBLAS (the GPU test image has none and
// no package registry). CMake links it only when OpenBLAS is not found and only into
// hiermem_cuda_harness / hiermem_cuda_bench; the addon always uses OpenBLAS.
//
// Semantics are BLAS's: C = alpha * op(A) op(B) + beta * C for row- or column-major storage;
// beta = 0 never reads C (it may hold NaN); alpha = 0 or K = 0 only scales C. Each output element is
// a dot product summed in double in k order: slower than OpenBLAS but at least as accurate, so the
// harness tolerances (written for OpenBLAS's float accumulation) stay valid.
#include <cblas.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace {

// Row-major core: C (M,N) = alpha * op(A) (M,K) * op(B) (K,N) + beta * C.
// op(A)(i,p) = ta ? A[p*lda + i] : A[i*lda + p];  op(B)(p,j) = tb ? B[j*ldb + p] : B[p*ldb + j].
// Loop order i, p, j for the non-transposed B (unit stride over j in B and the accumulator row);
// for a transposed B each (i,j) is a unit-stride dot over p. acc is one row of doubles.
void sgemm_row_major(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                     const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  std::vector<double> acc((size_t)(N > 0 ? N : 1));
  for (int64_t i = 0; i < M; i++) {
    for (int64_t j = 0; j < N; j++) acc[(size_t)j] = 0.0;
    if (alpha != 0.f && K > 0) {
      if (!tb) {
        for (int64_t p = 0; p < K; p++) {
          const double a = ta ? (double)A[p * lda + i] : (double)A[i * lda + p];
          const float* brow = B + p * ldb;
          for (int64_t j = 0; j < N; j++) acc[(size_t)j] += a * (double)brow[j];
        }
      } else {
        for (int64_t j = 0; j < N; j++) {
          const float* bcol = B + j * ldb;  // op(B)(:, j) is row j of the stored (N,K) B
          double s = 0.0;
          if (!ta) {
            const float* arow = A + i * lda;
            for (int64_t p = 0; p < K; p++) s += (double)arow[p] * (double)bcol[p];
          } else {
            for (int64_t p = 0; p < K; p++) s += (double)A[p * lda + i] * (double)bcol[p];
          }
          acc[(size_t)j] = s;
        }
      }
    }
    float* crow = C + i * ldc;
    for (int64_t j = 0; j < N; j++) {
      const double prod = (double)alpha * acc[(size_t)j];
      crow[j] = beta == 0.f ? (float)prod : (float)(prod + (double)beta * (double)crow[j]);
    }
  }
}

}  // namespace

extern "C" void cblas_sgemm(const enum CBLAS_ORDER order, const enum CBLAS_TRANSPOSE trans_a,
                            const enum CBLAS_TRANSPOSE trans_b, const int M, const int N, const int K,
                            const float alpha, const float* A, const int lda, const float* B, const int ldb,
                            const float beta, float* C, const int ldc) {
  if (M <= 0 || N <= 0) return;
  const bool ta = trans_a != CblasNoTrans, tb = trans_b != CblasNoTrans;  // real data: ConjTrans = Trans
  if (order == CblasRowMajor) {
    sgemm_row_major(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    // column-major C (M,N) is row-major C^T (N,M) = op(B)^T op(A)^T: swap the operands and M, N
    sgemm_row_major(tb, ta, N, M, K, alpha, B, ldb, A, lda, beta, C, ldc);
  }
}

// OpenBLAS's thread-count knob; the fallback is single-threaded per call (hm::gemm splits the work).
extern "C" void openblas_set_num_threads(int) {}
