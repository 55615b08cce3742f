// gemm.cu — the dense GEMM of the CUDA backend (twin: hm::gemm in cpp/kernels/gemm.h).
// Row-major C (M,N) = alpha * op(A) (M,K) * op(B) (K,N) + beta * C, in three modes: FP32 (FMA on
// fp32), TF32 and BF16 (mma.sync tensor cores, fp32 accumulation, operands rounded while staged).
// The tile machinery is in gemm.cuh.
#include <cuda_runtime.h>

#include "gemm.cuh"
#include "hiermem_cuda.h"

namespace hmc {
namespace {

using namespace gemm_detail;

// One block per 128 x 128 tile of C: blockIdx.x = M tile, blockIdx.y = N tile; 256 threads, each
// owns 64 accumulators of its warp's 64 x 32 sub-tile (layout in gemm.cuh).
// TA / TB select how A and B are stored; the staging transposes so that one inner loop serves all.
template <GemmMode MODE, bool TA, bool TB>
__global__ void __launch_bounds__(NT) gemm_kernel(int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                                                  int64_t lda, bool a_vec, const float* B, int64_t ldb, bool b_vec,
                                                  float beta, float* C, int64_t ldc) {
  __shared__ __align__(16) unsigned char smem[Smem<MODE>::BYTES];
  const int64_t m0 = (int64_t)blockIdx.x * BM, n0 = (int64_t)blockIdx.y * BN;
  float acc[4][4][4];
  zero_acc(acc);
  // A not transposed: stored rows = M (k-contiguous); transposed: stored rows = K, columns = M.
  // B transposed: stored rows = N (k-contiguous); not transposed: stored rows = K, columns = N.
  block_product<MODE, !TA, TB>(acc, smem, Rows{A, lda, TA ? K : M}, m0, TA ? M : K, a_vec, Rows{B, ldb, TB ? N : K},
                               n0, TB ? K : N, b_vec, K);
  for_each_acc(acc, [&](int r, int c, float v) {
    const int64_t i = m0 + r, j = n0 + c;
    if (i < M && j < N) {
      float* p = C + i * ldc + j;
      *p = beta == 0.f ? alpha * v : fmaf(beta, *p, alpha * v);  // beta = 0 never reads C
    }
  });
}

template <GemmMode MODE>
void launch(bool ta, bool tb, dim3 grid, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
            bool a_vec, const float* B, int64_t ldb, bool b_vec, float beta, float* C, int64_t ldc, cudaStream_t s) {
  if (!ta && !tb)
    gemm_kernel<MODE, false, false><<<grid, NT, 0, s>>>(M, N, K, alpha, A, lda, a_vec, B, ldb, b_vec, beta, C, ldc);
  else if (!ta && tb)
    gemm_kernel<MODE, false, true><<<grid, NT, 0, s>>>(M, N, K, alpha, A, lda, a_vec, B, ldb, b_vec, beta, C, ldc);
  else if (ta && !tb)
    gemm_kernel<MODE, true, false><<<grid, NT, 0, s>>>(M, N, K, alpha, A, lda, a_vec, B, ldb, b_vec, beta, C, ldc);
  else
    gemm_kernel<MODE, true, true><<<grid, NT, 0, s>>>(M, N, K, alpha, A, lda, a_vec, B, ldb, b_vec, beta, C, ldc);
}

}  // namespace

int gemm(GemmMode mode, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
         int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc, Stream s) {
  if (M < 0 || N < 0 || K < 0) return (int)cudaErrorInvalidValue;
  if (mode != GemmMode::FP32 && mode != GemmMode::TF32 && mode != GemmMode::BF16) return (int)cudaErrorInvalidValue;
  if (M == 0 || N == 0) return 0;
  if (!C || ldc < N) return (int)cudaErrorInvalidValue;
  if (alpha == 0.f) K = 0;  // C = beta * C; A and B are not read (as BLAS)
  if (K > 0) {
    if (!A || !B) return (int)cudaErrorInvalidValue;
    if (lda < (trans_a ? M : K) || ldb < (trans_b ? K : N)) return (int)cudaErrorInvalidValue;
  }
  const int64_t gx = (M + BM - 1) / BM, gy = (N + BN - 1) / BN;
  if (gx > 0x7fffffff || gy > 65535) return (int)cudaErrorInvalidValue;
  const dim3 grid((unsigned)gx, (unsigned)gy);
  const bool a_vec = K > 0 && rows_vec(A, lda), b_vec = K > 0 && rows_vec(B, ldb);
  cudaStream_t st = (cudaStream_t)s;
  switch (mode) {
    case GemmMode::FP32:
      launch<GemmMode::FP32>(trans_a, trans_b, grid, M, N, K, alpha, A, lda, a_vec, B, ldb, b_vec, beta, C, ldc, st);
      break;
    case GemmMode::TF32:
      launch<GemmMode::TF32>(trans_a, trans_b, grid, M, N, K, alpha, A, lda, a_vec, B, ldb, b_vec, beta, C, ldc, st);
      break;
    case GemmMode::BF16:
      launch<GemmMode::BF16>(trans_a, trans_b, grid, M, N, K, alpha, A, lda, a_vec, B, ldb, b_vec, beta, C, ldc, st);
      break;
  }
  return (int)cudaGetLastError();
}

}  // namespace hmc
