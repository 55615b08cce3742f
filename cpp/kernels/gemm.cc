#include "gemm.h"

#include "kernels/simd_intrin.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "parallel.h"
#include "vecmath.h"

// The epilogue's alpha * acc + beta * c stays a multiply and an add (no contraction into an FMA),
// the same two roundings at every level.
#pragma GCC optimize("fp-contract=off")

namespace hm {
namespace {

// k block: an A micro-panel (MR x kKC) and a B micro-panel (kKC x NR, 32 KB at NR = 32) stay in
// L1/L2 while a tile is computed. A fixed constant, so the split of the k sum never depends on
// the shape of a call's thread partition.
constexpr int64_t kKC = 384;
// A micro-panels computed against one B micro-panel before moving to the next (the A block of
// kMCPanels * MR rows stays in L2 and the B micro-panel in L1).
constexpr int64_t kMCPanels = 8;
// Products smaller than this (M*N*K) run on the calling thread: a parallel region costs a few
// microseconds, as much as the whole product below this size.
constexpr int64_t kParallelWork = INT64_C(1) << 18;

// 64-byte-aligned scratch that grows and is reused across calls; one per calling thread (two async
// workers may multiply at once), shared with the pool's workers for the duration of a call.
class PackBuffer {
 public:
  ~PackBuffer() { std::free(p_); }
  float* get(size_t n) {
    if (n > cap_) {
      std::free(p_);
      p_ = nullptr;
      cap_ = 0;
      const size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
      p_ = static_cast<float*>(std::aligned_alloc(64, bytes));
      if (!p_) throw std::bad_alloc();
      cap_ = n;
    }
    return p_;
  }

 private:
  float* p_ = nullptr;
  size_t cap_ = 0;
};
thread_local PackBuffer tl_apack, tl_bpack;

struct Problem {
  bool ta, tb;
  int64_t M, N, K;
  float alpha;
  const float* A;
  int64_t lda;
  const float* B;
  int64_t ldb;
  float beta;
  float* C;
  int64_t ldc;
};

// op(A) rows [i0, i0 + mr), k in [k0, k0 + kc) -> out[k * MR + r], rows past mr zero.
template <int MR>
void pack_a_panel(const Problem& p, int64_t i0, int64_t mr, int64_t k0, int64_t kc, float* out) {
  if (p.ta) {  // op(A)(i, k) = A[k * lda + i]: the panel's rows are contiguous in each row of A
    for (int64_t k = 0; k < kc; k++) {
      const float* src = p.A + (k0 + k) * p.lda + i0;
      float* dst = out + k * MR;
      for (int64_t r = 0; r < mr; r++) dst[r] = src[r];
      for (int64_t r = mr; r < MR; r++) dst[r] = 0.f;
    }
  } else {
    for (int64_t r = 0; r < mr; r++) {
      const float* src = p.A + (i0 + r) * p.lda + k0;
      for (int64_t k = 0; k < kc; k++) out[k * MR + r] = src[k];
    }
    for (int64_t r = mr; r < MR; r++)
      for (int64_t k = 0; k < kc; k++) out[k * MR + r] = 0.f;
  }
}

// op(B) columns [j0, j0 + nr), k in [k0, k0 + kc) -> out[k * NR + c], columns past nr zero.
template <int NR>
void pack_b_panel(const Problem& p, int64_t j0, int64_t nr, int64_t k0, int64_t kc, float* out) {
  if (p.tb) {  // op(B)(k, j) = B[j * ldb + k]
    for (int64_t c = 0; c < nr; c++) {
      const float* src = p.B + (j0 + c) * p.ldb + k0;
      for (int64_t k = 0; k < kc; k++) out[k * NR + c] = src[k];
    }
    for (int64_t c = nr; c < NR; c++)
      for (int64_t k = 0; k < kc; k++) out[k * NR + c] = 0.f;
  } else {
    for (int64_t k = 0; k < kc; k++) {
      const float* src = p.B + (k0 + k) * p.ldb + j0;
      float* dst = out + k * NR;
      std::memcpy(dst, src, (size_t)nr * sizeof(float));
      for (int64_t c = nr; c < NR; c++) dst[c] = 0.f;
    }
  }
}

// ---------------------------------------------------------------------------------- micro-kernels
// C tile (m <= MR rows, n <= NR columns, leading dim ldc) = alpha * sum_k a[k][r] b[k][c] + beta * C;
// beta == 0 never reads C. a: packed MR x kc (k-major), b: packed kc x NR (k-major, 64-byte aligned).

#if HM_X86
// AVX-512: 12 rows x 2 vectors of 16 = 24 accumulators, 2 B loads and one broadcast per row and k.
HM_TARGET_AVX512 void kernel_avx512(int64_t kc, const float* __restrict a, const float* __restrict b, float* c,
                                    int64_t ldc, float alpha, float beta, int64_t m, int64_t n) {
  constexpr int MR = 12;
  __m512 acc0[MR], acc1[MR];
#pragma GCC unroll 12
  for (int r = 0; r < MR; r++) acc0[r] = acc1[r] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; k++) {
    const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++) {
      const __m512 ar = _mm512_set1_ps(a[r]);
      acc0[r] = _mm512_fmadd_ps(ar, b0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(ar, b1, acc1[r]);
    }
    a += MR;
    b += 32;
  }
  const __mmask16 m0 = n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
  const __mmask16 m1 = n >= 32 ? (__mmask16)0xffff : n > 16 ? (__mmask16)((1u << (n - 16)) - 1) : (__mmask16)0;
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 12
  for (int r = 0; r < MR; r++) {
    if (r < m) {
      float* cr = c + r * ldc;
      __m512 v0 = _mm512_mul_ps(va, acc0[r]), v1 = _mm512_mul_ps(va, acc1[r]);
      if (beta != 0.f) {
        v0 = _mm512_add_ps(v0, _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m0, cr)));
        v1 = _mm512_add_ps(v1, _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m1, cr + 16)));
      }
      _mm512_mask_storeu_ps(cr, m0, v0);
      _mm512_mask_storeu_ps(cr + 16, m1, v1);
    }
  }
}

// AVX2 + FMA: 6 rows x 2 vectors of 8 = 12 accumulators of the 16 ymm registers.
HM_TARGET_AVX2 void kernel_avx2(int64_t kc, const float* __restrict a, const float* __restrict b, float* c, int64_t ldc,
                                float alpha, float beta, int64_t m, int64_t n) {
  constexpr int MR = 6;
  __m256 acc0[MR], acc1[MR];
#pragma GCC unroll 6
  for (int r = 0; r < MR; r++) acc0[r] = acc1[r] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; k++) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
      const __m256 ar = _mm256_broadcast_ss(a + r);
      acc0[r] = _mm256_fmadd_ps(ar, b0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(ar, b1, acc1[r]);
    }
    a += MR;
    b += 16;
  }
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), lane);
  const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n - 8), lane);
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#pragma GCC unroll 6
  for (int r = 0; r < MR; r++) {
    if (r < m) {
      float* cr = c + r * ldc;
      __m256 v0 = _mm256_mul_ps(va, acc0[r]), v1 = _mm256_mul_ps(va, acc1[r]);
      if (beta != 0.f) {
        v0 = _mm256_add_ps(v0, _mm256_mul_ps(vb, _mm256_maskload_ps(cr, m0)));
        v1 = _mm256_add_ps(v1, _mm256_mul_ps(vb, _mm256_maskload_ps(cr + 8, m1)));
      }
      _mm256_maskstore_ps(cr, m0, v0);
      _mm256_maskstore_ps(cr + 8, m1, v1);
    }
  }
}

#endif  // HM_X86

// Portable C++ (any x86-64 or aarch64 compiler): 4 x 16 accumulators the compiler keeps in
// registers and vectorises with the baseline instruction set.
void kernel_generic(int64_t kc, const float* __restrict a, const float* __restrict b, float* c, int64_t ldc,
                    float alpha, float beta, int64_t m, int64_t n) {
  constexpr int MR = 4, NR = 16;
  float acc[MR][NR] = {};
  for (int64_t k = 0; k < kc; k++) {
    for (int r = 0; r < MR; r++) {
      const float ar = a[r];
      for (int j = 0; j < NR; j++) acc[r][j] += ar * b[j];
    }
    a += MR;
    b += NR;
  }
  for (int64_t r = 0; r < m; r++) {
    float* cr = c + r * ldc;
    for (int64_t j = 0; j < n; j++) {
      const float v = alpha * acc[r][j];
      cr[j] = beta != 0.f ? v + beta * cr[j] : v;
    }
  }
}

using Kernel = void (*)(int64_t, const float*, const float*, float*, int64_t, float, float, int64_t, int64_t);

// ---------------------------------------------------------------------------------------- driver
// One parallel region per product, no barrier inside: each thread owns a contiguous range of row
// panels (or of column panels when there are too few row panels to go round) and, for each k block,
// packs the B panels it needs (kc x its columns, kept in L2/L3) and then, kMCPanels at a time, the A
// panels of its rows (kept in L2), computing every tile of its range against the whole k block.
// A thread that owns rows packs all of B itself: that repeats K x N copies per thread against
// 2 x rows x N x K flops, under 1% from 64 rows per thread on, and saves the two pool barriers per k
// block a shared pack would need (a barrier costs far more when a core is shared with other work).
template <int MR, int NR>
void gemm_range(const Problem& p, Kernel kernel, int64_t pm0, int64_t pm1, int64_t pn0, int64_t pn1) {
  const int64_t kc_max = std::min(p.K, kKC);
  float* ap = tl_apack.get((size_t)(kMCPanels * MR * kc_max));
  float* bp = tl_bpack.get((size_t)((pn1 - pn0) * NR * kc_max));
  for (int64_t k0 = 0; k0 < p.K; k0 += kKC) {
    const int64_t kc = std::min(kKC, p.K - k0);
    const float beta = k0 == 0 ? p.beta : 1.f;  // later k blocks accumulate onto the first
    for (int64_t q = pn0; q < pn1; q++)
      pack_b_panel<NR>(p, q * NR, std::min<int64_t>(NR, p.N - q * NR), k0, kc, bp + (q - pn0) * NR * kc);
    for (int64_t ib = pm0; ib < pm1; ib += kMCPanels) {
      const int64_t ie = std::min(pm1, ib + kMCPanels);
      for (int64_t i = ib; i < ie; i++)
        pack_a_panel<MR>(p, i * MR, std::min<int64_t>(MR, p.M - i * MR), k0, kc, ap + (i - ib) * MR * kc);
      for (int64_t q = pn0; q < pn1; q++) {
        const int64_t j0 = q * NR, nr = std::min<int64_t>(NR, p.N - j0);
        for (int64_t i = ib; i < ie; i++) {
          const int64_t i0 = i * MR;
          kernel(kc, ap + (i - ib) * MR * kc, bp + (q - pn0) * NR * kc, p.C + i0 * p.ldc + j0, p.ldc, p.alpha, beta,
                 std::min<int64_t>(MR, p.M - i0), nr);
        }
      }
    }
  }
}

template <int MR, int NR>
void gemm_packed(const Problem& p, Kernel kernel) {
  const int64_t mp = (p.M + MR - 1) / MR, np = (p.N + NR - 1) / NR;
  const bool parallel = !in_parallel_region() && num_threads() > 1 && p.M * p.N * p.K >= kParallelWork;
  if (!parallel) return gemm_range<MR, NR>(p, kernel, 0, mp, 0, np);
  if (mp >= 4 * num_threads() || mp >= np)
    parallel_for(mp, [&](int64_t a, int64_t b) { gemm_range<MR, NR>(p, kernel, a, b, 0, np); });
  else
    parallel_for(np, [&](int64_t a, int64_t b) { gemm_range<MR, NR>(p, kernel, 0, mp, a, b); });
}

// ------------------------------------------------------------------------------- few rows of C
// M <= kSmallM (a decode step multiplies one token's row by each weight matrix): packing B would
// copy the whole matrix to use it once, doubling the memory traffic of a product that is bound by
// it. These read the operands in place, split over columns; each element's sum runs over k in a
// fixed order (64 lanes, then a fixed tree for the dot form), independent of the split.
constexpr int64_t kSmallM = 4;
constexpr int kLanes = 64;

template <bool kFma>
HM_INLINE float madd(float a, float b, float c) {
  if constexpr (kFma) return __builtin_fmaf(a, b, c);
  else return a * b + c;
}

// dot(x, y) over n: 64 independent lanes (the compiler keeps them in vector registers), then a
// pairwise tree over the lanes.
template <bool kFma>
HM_INLINE float dot_lanes(const float* __restrict x, const float* __restrict y, int64_t n) {
  float acc[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (int l = 0; l < kLanes; l++) acc[l] = madd<kFma>(x[k + l], y[k + l], acc[l]);
  for (int l = 0; k < n; k++, l++) acc[l] = madd<kFma>(x[k], y[k], acc[l]);
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int l = 0; l < w; l++) acc[l] += acc[l + w];
  return acc[0];
}

// Columns [j0, j1) of C for every row. scratch: K floats (a transposed A row) + (j1 - j0) floats.
template <bool kFma>
HM_INLINE void small_m_body(const Problem& p, int64_t j0, int64_t j1, float* scratch) {
  // rows of op(A), contiguous: in place, or gathered once when A is transposed
  const float* rows[kSmallM];
  for (int64_t i = 0; i < p.M; i++) {
    if (p.ta) {
      float* r = scratch + i * p.K;
      for (int64_t k = 0; k < p.K; k++) r[k] = p.A[k * p.lda + i];
      rows[i] = r;
    } else {
      rows[i] = p.A + i * p.lda;
    }
  }
  if (p.tb) {  // C[i][j] = dot(op(A) row i, B row j): each B row read from memory once, used M times
    for (int64_t j = j0; j < j1; j++)
      for (int64_t i = 0; i < p.M; i++) {
        float* c = p.C + i * p.ldc + j;
        const float v = p.alpha * dot_lanes<kFma>(rows[i], p.B + j * p.ldb, p.K);
        *c = p.beta != 0.f ? v + p.beta * *c : v;
      }
    return;
  }
  // C[i][j0:j1] = sum_k a_ik B[k][j0:j1], all rows at once: each row of B streamed once
  float* acc = scratch + (p.ta ? p.M * p.K : 0);
  const int64_t w = j1 - j0;
  for (int64_t t = 0; t < p.M * w; t++) acc[t] = 0.f;
  for (int64_t k = 0; k < p.K; k++) {
    const float* b = p.B + k * p.ldb + j0;
    for (int64_t i = 0; i < p.M; i++) {
      const float ak = rows[i][k];
      float* ai = acc + i * w;
      for (int64_t j = 0; j < w; j++) ai[j] = madd<kFma>(ak, b[j], ai[j]);
    }
  }
  for (int64_t i = 0; i < p.M; i++) {
    float* c = p.C + i * p.ldc + j0;
    for (int64_t j = 0; j < w; j++) {
      const float v = p.alpha * acc[i * w + j];
      c[j] = p.beta != 0.f ? v + p.beta * c[j] : v;
    }
  }
}

HM_TARGET_AVX512 void small_m_avx512(const Problem& p, int64_t j0, int64_t j1, float* s) { small_m_body<true>(p, j0, j1, s); }
HM_TARGET_AVX2 void small_m_avx2(const Problem& p, int64_t j0, int64_t j1, float* s) { small_m_body<true>(p, j0, j1, s); }
void small_m_generic(const Problem& p, int64_t j0, int64_t j1, float* s) { small_m_body<false>(p, j0, j1, s); }

void gemm_small_m(const Problem& p) {
  const SimdLevel level = simd_level();
  auto run = [&](int64_t j0, int64_t j1) {
    float* s = tl_apack.get((size_t)(p.M * (p.K + (j1 - j0))));
    if (level == SimdLevel::avx512) small_m_avx512(p, j0, j1, s);
    else if (level == SimdLevel::avx2) small_m_avx2(p, j0, j1, s);
    else small_m_generic(p, j0, j1, s);
  };
  if (in_parallel_region() || num_threads() == 1 || p.M * p.N * p.K < kParallelWork) run(0, p.N);
  else parallel_for(p.N, run, 64);
}

// C = beta * C (beta == 0 writes zeros without reading): the whole product when K == 0 or alpha == 0.
void scale_c(const Problem& p) {
  for (int64_t i = 0; i < p.M; i++) {
    float* c = p.C + i * p.ldc;
    if (p.beta == 0.f) std::memset(c, 0, (size_t)p.N * sizeof(float));
    else if (p.beta != 1.f)
      for (int64_t j = 0; j < p.N; j++) c[j] = p.beta * c[j];
  }
}

}  // namespace

const char* gemm_kernel_name() { return simd_level_name(); }

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
          int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  const Problem p{ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc};
  if (K <= 0 || alpha == 0.f) {
    scale_c(p);
    return;
  }
  if (M <= kSmallM) return gemm_small_m(p);
  switch (simd_level()) {
#if HM_X86
    case SimdLevel::avx512: gemm_packed<12, 32>(p, kernel_avx512); break;
    case SimdLevel::avx2: gemm_packed<6, 16>(p, kernel_avx2); break;
#endif
    default: gemm_packed<4, 16>(p, kernel_generic); break;
  }
}

}  // namespace hm
