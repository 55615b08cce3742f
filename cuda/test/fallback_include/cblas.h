// cblas.h — the minimal CBLAS subset hiermem's CPU code uses (cblas_sgemm, openblas_set_num_threads),
// for builds of the CUDA harness/bench on a machine without OpenBLAS (CMake's HIERMEM_BLAS_FALLBACK;
// the GPU test image has no package registry). Implemented naively in cuda/test/cblas_fallback.cc.
// Enum values are the reference CBLAS ones, so code written against OpenBLAS's header compiles unchanged.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

typedef enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 } CBLAS_ORDER;
typedef enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112, CblasConjTrans = 113 } CBLAS_TRANSPOSE;
typedef CBLAS_ORDER CBLAS_LAYOUT;

void cblas_sgemm(const enum CBLAS_ORDER order, const enum CBLAS_TRANSPOSE trans_a, const enum CBLAS_TRANSPOSE trans_b,
                 const int M, const int N, const int K, const float alpha, const float* A, const int lda,
                 const float* B, const int ldb, const float beta, float* C, const int ldc);
void openblas_set_num_threads(int num_threads);

#ifdef __cplusplus
}
#endif
