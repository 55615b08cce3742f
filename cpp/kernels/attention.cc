#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <vector>

#include "kernels/vecmath.h"
#include "kernels/linear.h"
#include "parallel.h"

#include "kernels/simd_intrin.h"

namespace hm {

static constexpr int64_t kQueryTile = 64;

namespace {
// Which part of C (m x n) = alpha A (m x k) B (k x n) a row block [r0, r0 + MR) needs (coff: the
// query-minus-key offset of row/column 0, i.e. i0 - k0):
enum class Causal {
  none,
  cols,     // row r needs only columns j <= r + coff (scores): later columns are NOT written
  k_end,    // row r's A row is zero beyond p > r + coff (P V, dS K)
  k_begin,  // row r (a key) gets nothing from p < r - coff (P^T dO, dS^T Q)
};
}  // namespace

#if HM_X86
// ---- AVX-512 tile products ------------------------------------------------------------------------
// The products of one query tile are small (64 x 128 x 32 for the 0.5M model): through the general
// GEMM each one pays the packing overhead and computes the masked (causal) half of the diagonal
// block. These register-blocked kernels read the operands in place and skip the blocks
// that causality zeroes. Per output element the sum runs over k in order (FMA), independent of
// threads.
namespace {


// acc[MR][NV] += A(r, p) * B(p, 0:16 NV) for p in [kb, ke); A(r, p) = A[r * ars + p * aps]; then
// C = alpha acc (+ C if acc). NV = 1 serves a last column chunk of <= 16.
template <int MR, int NV>
HM_TARGET_AVX512 void tile_mk(int64_t kb, int64_t ke, const float* A, int64_t ars, int64_t aps, const float* B,
                              int64_t ldb, float* C, int64_t ldc, __mmask16 m0, __mmask16 m1, float alpha,
                              bool acc) {
  __m512 c0[MR], c1[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++) c0[r] = c1[r] = _mm512_setzero_ps();
  for (int64_t p = kb; p < ke; p++) {
    const float* bp = B + p * ldb;
    const __m512 b0 = _mm512_maskz_loadu_ps(m0, bp);
    const __m512 b1 = NV == 2 ? _mm512_maskz_loadu_ps(m1, bp + 16) : _mm512_setzero_ps();
    const float* ap = A + p * aps;
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
      const __m512 a = _mm512_set1_ps(ap[r * ars]);
      c0[r] = _mm512_fmadd_ps(a, b0, c0[r]);
      if (NV == 2) c1[r] = _mm512_fmadd_ps(a, b1, c1[r]);
    }
  }
  const __m512 al = _mm512_set1_ps(alpha);
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++) {
    float* cr = C + r * ldc;
    __m512 v0 = _mm512_mul_ps(c0[r], al);
    if (acc) v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, cr), v0);
    _mm512_mask_storeu_ps(cr, m0, v0);
    if (NV == 2) {
      __m512 v1 = _mm512_mul_ps(c1[r], al);
      if (acc) v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, cr + 16), v1);
      _mm512_mask_storeu_ps(cr + 16, m1, v1);
    }
  }
}

template <int NV>
HM_TARGET_AVX512 void tile_mk_rows(int mr, int64_t kb, int64_t ke, const float* a, int64_t ars, int64_t aps,
                                   const float* b, int64_t ldb, float* c, int64_t ldc, __mmask16 m0, __mmask16 m1,
                                   float alpha, bool acc) {
  switch (mr) {
    case 8: return tile_mk<8, NV>(kb, ke, a, ars, aps, b, ldb, c, ldc, m0, m1, alpha, acc);
    case 7: return tile_mk<7, NV>(kb, ke, a, ars, aps, b, ldb, c, ldc, m0, m1, alpha, acc);
    case 6: return tile_mk<6, NV>(kb, ke, a, ars, aps, b, ldb, c, ldc, m0, m1, alpha, acc);
    case 5: return tile_mk<5, NV>(kb, ke, a, ars, aps, b, ldb, c, ldc, m0, m1, alpha, acc);
    case 4: return tile_mk<4, NV>(kb, ke, a, ars, aps, b, ldb, c, ldc, m0, m1, alpha, acc);
    case 3: return tile_mk<3, NV>(kb, ke, a, ars, aps, b, ldb, c, ldc, m0, m1, alpha, acc);
    case 2: return tile_mk<2, NV>(kb, ke, a, ars, aps, b, ldb, c, ldc, m0, m1, alpha, acc);
    default: return tile_mk<1, NV>(kb, ke, a, ars, aps, b, ldb, c, ldc, m0, m1, alpha, acc);
  }
}

HM_TARGET_AVX512 inline __mmask16 lanes(int64_t n) {
  return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

// C (m x n, ldc) = alpha A B (+ C if acc), A(r, p) = A[r * ars + p * aps], B (k x n, ldb).
HM_TARGET_AVX512 void tile_gemm(int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t ars,
                                int64_t aps, const float* B, int64_t ldb, float* C, int64_t ldc, bool acc,
                                Causal causal, int64_t coff) {
  constexpr int64_t MR = 8;
  // column chunks outermost: a 32-column slice of B (k x 32) stays in L1 across the row blocks
  for (int64_t j = 0; j < n; j += 32) {
    for (int64_t r0 = 0; r0 < m; r0 += MR) {
      const int mr = (int)std::min<int64_t>(MR, m - r0);
      int64_t n_end = n, kb = 0, ke = k;
      if (causal == Causal::cols) n_end = std::min(n, r0 + mr + coff);
      else if (causal == Causal::k_end) ke = std::min(k, r0 + mr + coff);
      else if (causal == Causal::k_begin) kb = std::max<int64_t>(0, r0 - coff);
      if (ke < kb) ke = kb;
      if (j >= n_end) continue;
      const float* a = A + r0 * ars;
      float* c = C + r0 * ldc + j;
      const float* bj = B + j;
      const __mmask16 m0 = lanes(n_end - j), m1 = lanes(n_end - j - 16);
      if (n_end - j > 16) tile_mk_rows<2>(mr, kb, ke, a, ars, aps, bj, ldb, c, ldc, m0, m1, alpha, acc);
      else tile_mk_rows<1>(mr, kb, ke, a, ars, aps, bj, ldb, c, ldc, m0, m1, alpha, acc);
    }
  }
}

// 16 x 16 block transpose: dst[c * ldd + j] = src[j * lds + c] for j, c < 16
HM_TARGET_AVX512 inline void transpose16(float* dst, int64_t ldd, const float* src, int64_t lds) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * lds);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; i++) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 8; i++) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
  }
  for (int i = 0; i < 16; i++) _mm512_storeu_ps(dst + i * ldd, r[i]);
}

// xt (hd x ldt) = the transpose of rows [0, T) of x (row stride ld), columns [0, hd)
HM_TARGET_AVX512 void transpose_rows(float* xt, int64_t ldt, const float* x, int64_t ld, int64_t T, int64_t hd) {
  const int64_t T16 = T / 16 * 16, H16 = hd / 16 * 16;
  for (int64_t j0 = 0; j0 < T16; j0 += 16)
    for (int64_t c0 = 0; c0 < H16; c0 += 16) transpose16(xt + c0 * ldt + j0, ldt, x + j0 * ld + c0, ld);
  for (int64_t c = H16; c < hd; c++)
    for (int64_t j = 0; j < T16; j++) xt[c * ldt + j] = x[j * ld + c];
  for (int64_t c = 0; c < hd; c++)
    for (int64_t j = T16; j < T; j++) xt[c * ldt + j] = x[j * ld + c];
}

}  // namespace
#else
// Other architectures: simd_level() is generic, so the vector path (vec below) is never taken;
// these never-called stand-ins keep one code path for the generic GEMM calls.
namespace {
[[noreturn]] void no_vector_path() { std::abort(); }
void tile_gemm(int64_t, int64_t, int64_t, float, const float*, int64_t, int64_t, const float*, int64_t, float*,
               int64_t, bool, Causal, int64_t) { no_vector_path(); }
void transpose_rows(float*, int64_t, const float*, int64_t, int64_t, int64_t) { no_vector_path(); }
}  // namespace
#endif  // HM_X86

// Key range [k0, k1) needed by queries [i0, i1) of one row.
static void key_range(const int32_t* ds, int64_t i0, int64_t i1, int64_t* k0, int64_t* k1) {
  int64_t lo = 0;
  if (ds) {
    lo = i1;
    for (int64_t i = i0; i < i1; i++) lo = std::min<int64_t>(lo, ds[i]);
  }
  *k0 = lo;
  *k1 = i1;
}

void attention_forward_strided(float* out, float* lse, const float* q, const float* k, const float* v,
                               const int32_t* doc_start, int64_t B, int64_t T, int64_t H, int64_t hd,
                               const AttnStrides& ld, int64_t Hkv) {
  const float scale = 1.f / std::sqrt((float)hd);
  const bool vec = simd_level() == SimdLevel::avx512;
  const int64_t Tp = (T + 15) / 16 * 16;
  if (Hkv <= 0) Hkv = H;
  const int64_t G = H / Hkv;  // query heads per key/value head
  // one task per (sequence, kv head): its keys are transposed once for the G query heads that share them
  parallel_for(B * Hkv, [&](int64_t t0, int64_t t1) {
    std::vector<float> s((size_t)kQueryTile * T), kt(vec ? (size_t)(hd * Tp) : 0);
    for (int64_t task = t0; task < t1; task++) {
      const int64_t b = task / Hkv, hk = task % Hkv;
      const float* kb = k + b * T * ld.k + hk * hd;
      const float* vb = v + b * T * ld.v + hk * hd;
      const int32_t* ds = doc_start ? doc_start + b * T : nullptr;
      if (vec) transpose_rows(kt.data(), Tp, kb, ld.k, T, hd);
      for (int64_t h = hk * G; h < (hk + 1) * G; h++) {
        const float* qb = q + b * T * ld.q + h * hd;
        float* ob = out + b * T * ld.o + h * hd;
        float* lb = lse + (b * H + h) * T;
        for (int64_t i0 = 0; i0 < T; i0 += kQueryTile) {
          const int64_t i1 = std::min(T, i0 + kQueryTile), tq = i1 - i0;
          int64_t k0, k1;
          key_range(ds, i0, i1, &k0, &k1);
          const int64_t nk = k1 - k0;
          // s (tq, nk) = scale * Q_tile K_range^T (the vector path leaves columns past the causal
          // limit of each row unwritten; the softmax below only reads [lo, hi] and fills the rest)
          if (vec)
            tile_gemm(tq, nk, hd, scale, qb + i0 * ld.q, ld.q, 1, kt.data() + k0, Tp, s.data(), nk, false, Causal::cols,
                      i0 - k0);
          else
            gemm(false, true, tq, nk, hd, scale, qb + i0 * ld.q, ld.q, kb + k0 * ld.k, ld.k, 0.f, s.data(), nk);
          for (int64_t r = 0; r < tq; r++) {
            const int64_t i = i0 + r;
            const int64_t lo = (ds ? ds[i] : 0) - k0, hi = i - k0;  // allowed columns [lo, hi]
            float* sr = s.data() + r * nk;
            const int64_t w = hi - lo + 1;
            const float mx = max_of(sr + lo, w);
            std::fill(sr, sr + lo, 0.f);
            std::fill(sr + hi + 1, sr + nk, 0.f);
            const double sum = exp_shift_sum(sr + lo, w, mx);
            const float inv = (float)(1.0 / sum);
            for (int64_t j = lo; j <= hi; j++) sr[j] *= inv;
            lb[i] = mx + (float)std::log(sum);
          }
          // O_tile (tq, hd) = P V_range
          if (vec)
            tile_gemm(tq, hd, nk, 1.f, s.data(), nk, 1, vb + k0 * ld.v, ld.v, ob + i0 * ld.o, ld.o, false,
                      Causal::k_end, i0 - k0);
          else
            gemm(false, false, tq, hd, nk, 1.f, s.data(), nk, vb + k0 * ld.v, ld.v, 0.f, ob + i0 * ld.o, ld.o);
        }
      }  // query heads of this kv head
    }
  });
}

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const int32_t* doc_start, int64_t B, int64_t T, int64_t H, int64_t hd, int64_t ld) {
  attention_forward_strided(out, lse, q, k, v, doc_start, B, T, H, hd, AttnStrides{ld, ld, ld, ld});
}

// One query tile of the backward on the vector path: rows [0, tq) of the tile are queries
// i0 + r, columns [0, nk) keys k0 + j, coff = i0 - k0; pointers already offset to the tile.
HM_TARGET_AVX512 static void attention_backward_tile_avx512(
    float* p, float* dp, float* di, const float* q, const float* k, const float* kt, const float* vt, int64_t Tp,
    const float* dout, const float* out, const float* lse, const int32_t* ds, float* dq, float* dk, float* dv,
    const AttnStrides& ld, int64_t tq, int64_t nk, int64_t k0, int64_t coff, int64_t hd, float scale,
    bool accumulate) {
  // P = exp(scale Q K^T - lse) on the allowed columns [lo, hi] of each row, 0 elsewhere
  tile_gemm(tq, nk, hd, scale, q, ld.q, 1, kt, Tp, p, nk, false, Causal::cols, coff);
  // dP = dO V^T (columns past each row's causal limit stay unwritten)
  tile_gemm(tq, nk, hd, 1.f, dout, ld.o, 1, vt, Tp, dp, nk, false, Causal::cols, coff);
  for (int64_t r = 0; r < tq; r++) {
    const int64_t lo = (ds ? ds[r] : 0) - k0, hi = r + coff;
    float* pr = p + r * nk;
    float* dr = dp + r * nk;
    std::fill(pr, pr + lo, 0.f);
    std::fill(pr + hi + 1, pr + nk, 0.f);
    exp_shift(pr + lo, hi - lo + 1, lse[r]);
    di[r] = (float)dot_f64(dout + r * ld.o, out + r * ld.o, hd);  // D_i = dO_i . O_i
    // dS = P * (dP - D), in dp; 0 past the causal limit (dp holds stale values there)
    const float dd = di[r];
    for (int64_t j = 0; j <= hi; j++) dr[j] = pr[j] * (dr[j] - dd);
    std::fill(dr + hi + 1, dr + nk, 0.f);
  }
  // dV_range += P^T dO ; dK_range += scale dS^T Q ; dQ (+)= scale dS K_range
  tile_gemm(nk, hd, tq, 1.f, p, 1, nk, dout, ld.o, dv, ld.v, true, Causal::k_begin, coff);
  tile_gemm(nk, hd, tq, scale, dp, 1, nk, q, ld.q, dk, ld.k, true, Causal::k_begin, coff);
  tile_gemm(tq, hd, nk, scale, dp, nk, 1, k, ld.k, dq, ld.q, accumulate, Causal::k_end, coff);
}

void attention_backward_strided(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                                const float* v, const float* out, const float* lse, const int32_t* doc_start,
                                int64_t B, int64_t T, int64_t H, int64_t hd, const AttnStrides& ld, bool accumulate,
                                int64_t Hkv) {
  const float scale = 1.f / std::sqrt((float)hd);
  const bool vec = simd_level() == SimdLevel::avx512;
  const int64_t Tp = (T + 15) / 16 * 16;
  if (Hkv <= 0) Hkv = H;
  const int64_t G = H / Hkv;
  // one task per (sequence, kv head): dK and dV of a kv head sum over its G query heads, in head
  // order, inside one task (no two threads write the same rows)
  parallel_for(B * Hkv, [&](int64_t t0, int64_t t1) {
    std::vector<float> p((size_t)kQueryTile * T), dp((size_t)kQueryTile * T), di(kQueryTile);
    std::vector<float> kt(vec ? (size_t)(hd * Tp) : 0), vt(vec ? (size_t)(hd * Tp) : 0);
    for (int64_t task = t0; task < t1; task++) {
      const int64_t b = task / Hkv, hk = task % Hkv;
      const float *kb = k + b * T * ld.k + hk * hd, *vb = v + b * T * ld.v + hk * hd;
      float *dkb = dk + b * T * ld.k + hk * hd, *dvb = dv + b * T * ld.v + hk * hd;
      const int32_t* ds = doc_start ? doc_start + b * T : nullptr;
      if (!accumulate) {  // dK, dV sum over query tiles: start them at zero (dQ rows are written once)
        for (int64_t j = 0; j < T; j++) {
          std::fill(dkb + j * ld.k, dkb + j * ld.k + hd, 0.f);
          std::fill(dvb + j * ld.v, dvb + j * ld.v + hd, 0.f);
        }
      }
      if (vec) {
        transpose_rows(kt.data(), Tp, kb, ld.k, T, hd);
        transpose_rows(vt.data(), Tp, vb, ld.v, T, hd);
      }
      for (int64_t h = hk * G; h < (hk + 1) * G; h++) {
        const float* qb = q + b * T * ld.q + h * hd;
        const float *ob = out + b * T * ld.o + h * hd, *gb = dout + b * T * ld.o + h * hd;
        float* dqb = dq + b * T * ld.q + h * hd;
        const float* lb = lse + (b * H + h) * T;
        for (int64_t i0 = 0; i0 < T; i0 += kQueryTile) {
          const int64_t i1 = std::min(T, i0 + kQueryTile), tq = i1 - i0;
          int64_t k0, k1;
          key_range(ds, i0, i1, &k0, &k1);
          const int64_t nk = k1 - k0, coff = i0 - k0;
          if (vec) {
            attention_backward_tile_avx512(p.data(), dp.data(), di.data(), qb + i0 * ld.q, kb + k0 * ld.k,
                                           kt.data() + k0, vt.data() + k0, Tp, gb + i0 * ld.o, ob + i0 * ld.o,
                                           lb + i0, ds ? ds + i0 : nullptr, dqb + i0 * ld.q, dkb + k0 * ld.k,
                                           dvb + k0 * ld.v, ld, tq, nk, k0, coff, hd, scale, accumulate);
            continue;
          }
          gemm(false, true, tq, nk, hd, scale, qb + i0 * ld.q, ld.q, kb + k0 * ld.k, ld.k, 0.f, p.data(), nk);
          for (int64_t r = 0; r < tq; r++) {
            const int64_t i = i0 + r;
            const int64_t lo = (ds ? ds[i] : 0) - k0, hi = i - k0;
            float* pr = p.data() + r * nk;
            std::fill(pr, pr + lo, 0.f);
            std::fill(pr + hi + 1, pr + nk, 0.f);
            exp_shift(pr + lo, hi - lo + 1, lb[i]);
            double d = 0;  // D_i = dO_i . O_i
            for (int64_t c = 0; c < hd; c++) d += (double)gb[i * ld.o + c] * ob[i * ld.o + c];
            di[r] = (float)d;
          }
          // dV_range += P^T dO_tile
          gemm(true, false, nk, hd, tq, 1.f, p.data(), nk, gb + i0 * ld.o, ld.o, 1.f, dvb + k0 * ld.v, ld.v);
          // dP = dO_tile V_range^T
          gemm(false, true, tq, nk, hd, 1.f, gb + i0 * ld.o, ld.o, vb + k0 * ld.v, ld.v, 0.f, dp.data(), nk);
          // dS = P * (dP - D)   (stored in dp)
          for (int64_t r = 0; r < tq; r++) {
            float* pr = p.data() + r * nk;
            float* dr = dp.data() + r * nk;
            for (int64_t j = 0; j < nk; j++) dr[j] = pr[j] * (dr[j] - di[r]);
          }
          // dQ_tile += scale dS K_range ; dK_range += scale dS^T Q_tile
          gemm(false, false, tq, hd, nk, scale, dp.data(), nk, kb + k0 * ld.k, ld.k, accumulate ? 1.f : 0.f,
               dqb + i0 * ld.q, ld.q);
          gemm(true, false, nk, hd, tq, scale, dp.data(), nk, qb + i0 * ld.q, ld.q, 1.f, dkb + k0 * ld.k, ld.k);
        }
      }  // query heads of this kv head
    }
  });
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, const int32_t* doc_start, int64_t B,
                        int64_t T, int64_t H, int64_t hd, int64_t ld) {
  attention_backward_strided(dq, dk, dv, dout, q, k, v, out, lse, doc_start, B, T, H, hd, AttnStrides{ld, ld, ld, ld},
                             true);
}

void attention_decode(float* out, const float* q, const float* kcache, const float* vcache, int64_t n, int64_t H,
                      int64_t hd, int64_t Hkv) {
  const float scale = 1.f / std::sqrt((float)hd);
  if (Hkv <= 0) Hkv = H;
  const int64_t ld = Hkv * hd, G = H / Hkv;
  auto heads = [&](int64_t h0, int64_t h1) {
    std::vector<float> s((size_t)n);
    for (int64_t h = h0; h < h1; h++) {
      const float* qh = q + h * hd;
      const int64_t hk = h / G;  // the kv head this query head reads
      // s (n) = scale * K_hk q_h
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < n; j++) {
        const float* kj = kcache + j * ld + hk * hd;
        float dot = 0.f;
        for (int64_t c = 0; c < hd; c++) dot += qh[c] * kj[c];
        s[(size_t)j] = scale * dot;
        mx = std::max(mx, s[(size_t)j]);
      }
      double sum = 0;
      for (int64_t j = 0; j < n; j++) {
        s[(size_t)j] = std::exp(s[(size_t)j] - mx);
        sum += s[(size_t)j];
      }
      const float inv = (float)(1.0 / sum);
      // out_h (hd) = sum_j p_j v_j
      float* oh = out + h * hd;
      std::fill(oh, oh + hd, 0.f);
      for (int64_t j = 0; j < n; j++) {
        const float p = s[(size_t)j] * inv;
        const float* vj = vcache + j * ld + hk * hd;
        for (int64_t c = 0; c < hd; c++) oh[c] += p * vj[c];
      }
    }
  };
  // the pool only pays off once the cache is long: n * H * hd multiply-adds, twice
  if (n * H * hd < (1 << 15)) heads(0, H);
  else parallel_for(H, heads);
}

}  // namespace hm
