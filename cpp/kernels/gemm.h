// gemm.h — our single-precision GEMM: every dense product of the CPU backend goes through it.
//
// Why our own and not a BLAS: a system BLAS is a system install the user may not have (a fresh
// machine has none), a static one was 25 of the addon's 26 MB, and the model's shapes (N or K of
// 128–1024, transposed operands in the backward pass) are where library kernels are weakest. The
// design is the Goto/BLIS one that ggml's and llm.c's CPU paths also follow: pack op(A) into
// MR-row micro-panels and op(B) into NR-column micro-panels per k block (transposition is handled
// once, in the packing), then a register-blocked micro-kernel computes each MR x NR tile of C.
//
// Micro-kernels: AVX-512F (12 x 32), AVX2+FMA (6 x 16) and portable C++ (4 x 16), chosen once at
// run time from the CPU's features (HIERMEM_SIMD=generic|avx2 forces a lower level, see vecmath.h).
// Products of at most 4 rows (a decode step's token) skip the packing and read B in place.
//
// Determinism: threads split only output tiles, never the k reduction, and every element's sum
// runs over k in the same order (k blocks of a fixed size, FMA chain inside a block) whichever
// thread computes it. Results are therefore bit-identical for any thread count on a given level.
// NaN and Inf in A or B reach C (no fast-math, no skipping of zero operands).
#pragma once
#include <cstdint>

namespace hm {

// Row-major C (M,N) = alpha * op(A) (M,K) * op(B) (K,N) + beta * C.
// op(A) = A (M,K, leading dim lda) or, if trans_a, A^T with A stored (K,M).
// op(B) = B (K,N, ldb) or, if trans_b, B^T with B stored (N,K).
// beta == 0: C is written without being read (it may hold NaN). K == 0: C = beta * C.
// Called inside a parallel region (a pool worker), it runs serially on that thread.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// The micro-kernel in use: "avx512", "avx2" or "generic".
const char* gemm_kernel_name();

}  // namespace hm
