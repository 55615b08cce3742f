#include "vecmath.h"

#include "kernels/simd_intrin.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

// Arithmetic written as separate multiplies and adds must stay that way (GCC would otherwise fuse
// the vector intrinsics' * and + into FMAs), so that every level computes the same operations;
// the exp polynomial asks for its FMAs explicitly.
#pragma GCC optimize("fp-contract=off")

namespace hm {

#define HM_AVX512 HM_TARGET_AVX512
#define HM_AVX2 HM_TARGET_AVX2

namespace {

SimdLevel detect_level() {
#if !HM_X86
  return SimdLevel::generic;
#else
  __builtin_cpu_init();
  SimdLevel l = SimdLevel::generic;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) l = SimdLevel::avx2;
  if (l == SimdLevel::avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw"))
    l = SimdLevel::avx512;
  if (const char* e = std::getenv("HIERMEM_SIMD")) {  // may only lower the level
    SimdLevel want = l;
    if (std::strcmp(e, "generic") == 0) want = SimdLevel::generic;
    else if (std::strcmp(e, "avx2") == 0) want = SimdLevel::avx2;
    if ((int)want < (int)l) l = want;
  }
  return l;
#endif
}

// Cody-Waite split of ln 2 and the polynomial of Sleef's expf_u10 (1.0 ulp).
constexpr float kLog2e = 1.442695040888963407359924681001892137f;
constexpr float kL2U = 0.693145751953125f;
constexpr float kL2L = 1.428606765330187045e-06f;
constexpr float kC0 = 0.000198527617612853646278381f;
constexpr float kC1 = 0.00139304355252534151077271f;
constexpr float kC2 = 0.00833336077630519866943359f;
constexpr float kC3 = 0.0416664853692054748535156f;
constexpr float kC4 = 0.166666671633720397949219f;
constexpr float kLo = -104.f;  // exp(x) rounds to 0 below
constexpr float kHi = 100.f;   // and to +inf above (the scaling overflows from 88.73 on)

#if HM_X86
// ---------------------------------------------------------------------------------------- AVX-512
HM_AVX512 HM_INLINE __m512 exp16(__m512 x) {
  const __m512 q = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 s = _mm512_fnmadd_ps(q, _mm512_set1_ps(kL2U), x);
  s = _mm512_fnmadd_ps(q, _mm512_set1_ps(kL2L), s);
  __m512 u = _mm512_set1_ps(kC0);
  u = _mm512_fmadd_ps(u, s, _mm512_set1_ps(kC1));
  u = _mm512_fmadd_ps(u, s, _mm512_set1_ps(kC2));
  u = _mm512_fmadd_ps(u, s, _mm512_set1_ps(kC3));
  u = _mm512_fmadd_ps(u, s, _mm512_set1_ps(kC4));
  u = _mm512_fmadd_ps(u, s, _mm512_set1_ps(0.5f));
  u = _mm512_add_ps(_mm512_set1_ps(1.f), _mm512_fmadd_ps(_mm512_mul_ps(s, s), u, s));
  u = _mm512_scalef_ps(u, q);  // u * 2^q, correctly rounded into the denormal range
  u = _mm512_mask_mov_ps(u, _mm512_cmp_ps_mask(x, _mm512_set1_ps(kLo), _CMP_LT_OQ), _mm512_setzero_ps());
  u = _mm512_mask_mov_ps(u, _mm512_cmp_ps_mask(x, _mm512_set1_ps(kHi), _CMP_GT_OQ),
                         _mm512_set1_ps(std::numeric_limits<float>::infinity()));
  return u;  // NaN in, NaN out (every step propagates it; both compares are false)
}

HM_AVX512 HM_INLINE __mmask16 tail16(int64_t rem) {
  return rem >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << rem) - 1);
}

HM_AVX512 HM_INLINE __m512 sigmoid16(__m512 g) {
  const __m512 one = _mm512_set1_ps(1.f);
  return _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), g))));
}

HM_AVX512 void silu_mul_avx512(float* h, const float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail16(n - i);
    const __m512 gv = _mm512_maskz_loadu_ps(m, g + i), uv = _mm512_maskz_loadu_ps(m, u + i);
    _mm512_mask_storeu_ps(h + i, m, _mm512_mul_ps(_mm512_mul_ps(gv, sigmoid16(gv)), uv));
  }
}

HM_AVX512 void silu_mul_backward_avx512(float* dg, float* du, const float* dh, const float* g, const float* u,
                                        int64_t n, bool acc) {
  const __m512 one = _mm512_set1_ps(1.f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail16(n - i);
    const __m512 gv = _mm512_maskz_loadu_ps(m, g + i), uv = _mm512_maskz_loadu_ps(m, u + i);
    const __m512 dhv = _mm512_maskz_loadu_ps(m, dh + i);
    const __m512 s = sigmoid16(gv);
    // same operation order as the scalar form: dh * (g s) ; (dh u) (s (1 + g (1 - s)))
    __m512 dup = _mm512_mul_ps(dhv, _mm512_mul_ps(gv, s));
    __m512 dgt = _mm512_mul_ps(_mm512_mul_ps(dhv, uv),
                               _mm512_mul_ps(s, _mm512_add_ps(one, _mm512_mul_ps(gv, _mm512_sub_ps(one, s)))));
    if (acc) {
      dup = _mm512_add_ps(_mm512_maskz_loadu_ps(m, du + i), dup);
      dgt = _mm512_add_ps(_mm512_maskz_loadu_ps(m, dg + i), dgt);
    }
    _mm512_mask_storeu_ps(du + i, m, dup);
    _mm512_mask_storeu_ps(dg + i, m, dgt);
  }
}

HM_AVX512 HM_INLINE double reduce16d(__m512d a, __m512d b) {
  alignas(64) double t[16];
  _mm512_store_pd(t, a);
  _mm512_store_pd(t + 8, b);
  double s = 0;
  for (int l = 0; l < 16; l++) s += t[l];
  return s;
}

template <bool kSum>
HM_AVX512 double exp_shift_avx512(float* x, int64_t n, float c) {
  const __m512 cv = _mm512_set1_ps(c);
  __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail16(n - i);
    __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), cv));
    _mm512_mask_storeu_ps(x + i, m, e);
    if (kSum) {
      e = _mm512_maskz_mov_ps(m, e);
      a0 = _mm512_add_pd(a0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
      a1 = _mm512_add_pd(a1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(e, 1)));
    }
  }
  return kSum ? reduce16d(a0, a1) : 0.0;
}

HM_AVX512 float max_avx512(const float* x, int64_t n) {
  const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 mx = ninf;
  for (int64_t i = 0; i < n; i += 16) mx = _mm512_max_ps(_mm512_mask_loadu_ps(ninf, tail16(n - i), x + i), mx);
  return _mm512_reduce_max_ps(mx);
}

// ------------------------------------------------------------------------------------------ AVX2
HM_AVX2 HM_INLINE __m256 exp8(__m256 x) {
  const __m256 q =
      _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 s = _mm256_fnmadd_ps(q, _mm256_set1_ps(kL2U), x);
  s = _mm256_fnmadd_ps(q, _mm256_set1_ps(kL2L), s);
  __m256 u = _mm256_set1_ps(kC0);
  u = _mm256_fmadd_ps(u, s, _mm256_set1_ps(kC1));
  u = _mm256_fmadd_ps(u, s, _mm256_set1_ps(kC2));
  u = _mm256_fmadd_ps(u, s, _mm256_set1_ps(kC3));
  u = _mm256_fmadd_ps(u, s, _mm256_set1_ps(kC4));
  u = _mm256_fmadd_ps(u, s, _mm256_set1_ps(0.5f));
  u = _mm256_add_ps(_mm256_set1_ps(1.f), _mm256_fmadd_ps(_mm256_mul_ps(s, s), u, s));
  // u * 2^q as u * 2^(q>>1) * 2^(q - q>>1): both factors are normal floats for |q| <= 150 (q is
  // clamped there; NaN becomes -150 but u is NaN then anyway)
  const __m256 qc = _mm256_min_ps(_mm256_max_ps(q, _mm256_set1_ps(-150.f)), _mm256_set1_ps(150.f));
  const __m256i qi = _mm256_cvtps_epi32(qc);
  const __m256i q1 = _mm256_srai_epi32(qi, 1), q2 = _mm256_sub_epi32(qi, q1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 p1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(q1, bias), 23));
  const __m256 p2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(q2, bias), 23));
  u = _mm256_mul_ps(_mm256_mul_ps(u, p1), p2);
  u = _mm256_blendv_ps(u, _mm256_setzero_ps(), _mm256_cmp_ps(x, _mm256_set1_ps(kLo), _CMP_LT_OQ));
  u = _mm256_blendv_ps(u, _mm256_set1_ps(std::numeric_limits<float>::infinity()),
                       _mm256_cmp_ps(x, _mm256_set1_ps(kHi), _CMP_GT_OQ));
  return u;
}

HM_AVX2 HM_INLINE __m256i tail8(int64_t rem) {
  const int r = rem >= 8 ? 8 : (int)rem;
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

HM_AVX2 HM_INLINE __m256 sigmoid8(__m256 g) {
  const __m256 one = _mm256_set1_ps(1.f);
  return _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), g))));
}

HM_AVX2 void silu_mul_avx2(float* h, const float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; i += 8) {
    const __m256i m = tail8(n - i);
    const __m256 gv = _mm256_maskload_ps(g + i, m), uv = _mm256_maskload_ps(u + i, m);
    _mm256_maskstore_ps(h + i, m, _mm256_mul_ps(_mm256_mul_ps(gv, sigmoid8(gv)), uv));
  }
}

HM_AVX2 void silu_mul_backward_avx2(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n,
                                    bool acc) {
  const __m256 one = _mm256_set1_ps(1.f);
  for (int64_t i = 0; i < n; i += 8) {
    const __m256i m = tail8(n - i);
    const __m256 gv = _mm256_maskload_ps(g + i, m), uv = _mm256_maskload_ps(u + i, m);
    const __m256 dhv = _mm256_maskload_ps(dh + i, m);
    const __m256 s = sigmoid8(gv);
    __m256 dup = _mm256_mul_ps(dhv, _mm256_mul_ps(gv, s));
    __m256 dgt = _mm256_mul_ps(_mm256_mul_ps(dhv, uv),
                               _mm256_mul_ps(s, _mm256_add_ps(one, _mm256_mul_ps(gv, _mm256_sub_ps(one, s)))));
    if (acc) {
      dup = _mm256_add_ps(_mm256_maskload_ps(du + i, m), dup);
      dgt = _mm256_add_ps(_mm256_maskload_ps(dg + i, m), dgt);
    }
    _mm256_maskstore_ps(du + i, m, dup);
    _mm256_maskstore_ps(dg + i, m, dgt);
  }
}

template <bool kSum>
HM_AVX2 double exp_shift_avx2(float* x, int64_t n, float c) {
  const __m256 cv = _mm256_set1_ps(c);
  __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
  for (int64_t i = 0; i < n; i += 8) {
    const __m256i m = tail8(n - i);
    __m256 e = exp8(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), cv));
    _mm256_maskstore_ps(x + i, m, e);
    if (kSum) {
      e = _mm256_and_ps(e, _mm256_castsi256_ps(m));
      a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
      a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
  }
  if (!kSum) return 0.0;
  alignas(32) double t[8];
  _mm256_store_pd(t, a0);
  _mm256_store_pd(t + 4, a1);
  double s = 0;
  for (int l = 0; l < 8; l++) s += t[l];
  return s;
}

HM_AVX2 float max_avx2(const float* x, int64_t n) {
  const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256 mx = ninf;
  for (int64_t i = 0; i < n; i += 8) {
    const __m256i m = tail8(n - i);
    mx = _mm256_max_ps(_mm256_blendv_ps(ninf, _mm256_maskload_ps(x + i, m), _mm256_castsi256_ps(m)), mx);
  }
  alignas(32) float t[8];
  _mm256_store_ps(t, mx);
  float r = t[0];
  for (int l = 1; l < 8; l++) r = std::max(r, t[l]);
  return r;
}

#endif  // HM_X86

// --------------------------------------------------------------------------------------- generic
inline float sigmoid1(float x) { return 1.f / (1.f + std::exp(-x)); }

void silu_mul_generic(float* h, const float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; i++) h[i] = g[i] * sigmoid1(g[i]) * u[i];
}
void silu_mul_backward_generic(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n,
                               bool acc) {
  for (int64_t i = 0; i < n; i++) {
    const float gi = g[i], s = sigmoid1(gi), silu = gi * s;
    const float a = dh[i] * silu, b = dh[i] * u[i] * (s * (1.f + gi * (1.f - s)));
    du[i] = acc ? du[i] + a : a;
    dg[i] = acc ? dg[i] + b : b;
  }
}
double exp_shift_generic(float* x, int64_t n, float c, bool sum) {
  double acc[16] = {0};
  for (int64_t i = 0; i < n; i++) {
    x[i] = std::exp(x[i] - c);
    acc[i & 15] += x[i];
  }
  double s = 0;
  if (sum)
    for (int l = 0; l < 16; l++) s += acc[l];
  return s;
}

// ------------------------------------------------------------------------------- float64 sums
// 16 lanes (element i goes to lane i % 16), then a fixed pairwise tree over the lanes (l += l + 8,
// l + 4, l + 2, l + 1). Products of two floats are exact in double and no step is contracted, so
// every level gives the same bits.
HM_INLINE double tree16(double* acc) {
  for (int w = 8; w >= 1; w /= 2)
    for (int l = 0; l < w; l++) acc[l] += acc[l + w];
  return acc[0];
}
template <int kTerms>
double sum_generic(const float* a, const float* b, const float* c, int64_t n) {
  double acc[16] = {0};
  for (int64_t i = 0; i < n; i++) {
    double t = (double)a[i] * (double)(kTerms >= 2 ? b[i] : a[i]);
    if (kTerms == 3) t = t * (double)c[i];
    acc[i & 15] += t;
  }
  return tree16(acc);
}
#if HM_X86
HM_AVX512 HM_INLINE double tree16_avx512(__m512d lo, __m512d hi) {
  const __m512d s = _mm512_add_pd(lo, hi);  // l += l + 8
  const __m256d s4 = _mm256_add_pd(_mm512_castpd512_pd256(s), _mm512_extractf64x4_pd(s, 1));  // l += l + 4
  const __m128d s2 = _mm_add_pd(_mm256_castpd256_pd128(s4), _mm256_extractf128_pd(s4, 1));    // l += l + 2
  return _mm_cvtsd_f64(_mm_add_sd(s2, _mm_unpackhi_pd(s2, s2)));                           // l += l + 1
}
// sum over i of a*a (kTerms 1), a*b (2) or (a*b)*c (3), each product in double
template <int kTerms>
HM_AVX512 double sum_avx512(const float* a, const float* b, const float* c, int64_t n) {
  __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail16(n - i);
    const __m512 av = _mm512_maskz_loadu_ps(m, a + i);
    const __m512 bv = kTerms >= 2 ? _mm512_maskz_loadu_ps(m, b + i) : av;
    __m512d tl = _mm512_mul_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(av)),
                               _mm512_cvtps_pd(_mm512_castps512_ps256(bv)));
    __m512d th = _mm512_mul_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(av, 1)),
                               _mm512_cvtps_pd(_mm512_extractf32x8_ps(bv, 1)));
    if (kTerms == 3) {
      const __m512 cv = _mm512_maskz_loadu_ps(m, c + i);
      tl = _mm512_mul_pd(tl, _mm512_cvtps_pd(_mm512_castps512_ps256(cv)));
      th = _mm512_mul_pd(th, _mm512_cvtps_pd(_mm512_extractf32x8_ps(cv, 1)));
    }
    lo = _mm512_add_pd(lo, tl);
    hi = _mm512_add_pd(hi, th);
  }
  return tree16_avx512(lo, hi);
}

#endif  // HM_X86

// ----------------------------------------------------------------------------------------- AdamW
// p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p): the scalar expression's operations in its order.
#if HM_X86
HM_AVX512 void adamw_avx512(float* p, const float* g, float* m, float* v, int64_t n, const AdamWConsts& k) {
  const __m512 b1 = _mm512_set1_ps(k.b1), b2 = _mm512_set1_ps(k.b2), o1 = _mm512_set1_ps(k.one_m_b1),
               o2 = _mm512_set1_ps(k.one_m_b2), i1 = _mm512_set1_ps(k.ibc1), i2 = _mm512_set1_ps(k.ibc2),
               lr = _mm512_set1_ps(k.lr), eps = _mm512_set1_ps(k.eps), wd = _mm512_set1_ps(k.wd),
               sc = _mm512_set1_ps(k.scale);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 msk = tail16(n - i);
    const __m512 gi = _mm512_mul_ps(_mm512_maskz_loadu_ps(msk, g + i), sc);
    const __m512 mi = _mm512_add_ps(_mm512_mul_ps(b1, _mm512_maskz_loadu_ps(msk, m + i)), _mm512_mul_ps(o1, gi));
    const __m512 vi =
        _mm512_add_ps(_mm512_mul_ps(b2, _mm512_maskz_loadu_ps(msk, v + i)), _mm512_mul_ps(_mm512_mul_ps(o2, gi), gi));
    _mm512_mask_storeu_ps(m + i, msk, mi);
    _mm512_mask_storeu_ps(v + i, msk, vi);
    const __m512 mhat = _mm512_mul_ps(mi, i1), vhat = _mm512_mul_ps(vi, i2);
    const __m512 pi = _mm512_maskz_loadu_ps(msk, p + i);
    const __m512 upd =
        _mm512_add_ps(_mm512_div_ps(mhat, _mm512_add_ps(_mm512_sqrt_ps(vhat), eps)), _mm512_mul_ps(wd, pi));
    _mm512_mask_storeu_ps(p + i, msk, _mm512_sub_ps(pi, _mm512_mul_ps(lr, upd)));
  }
}

HM_AVX2 void adamw_avx2(float* p, const float* g, float* m, float* v, int64_t n, const AdamWConsts& k) {
  const __m256 b1 = _mm256_set1_ps(k.b1), b2 = _mm256_set1_ps(k.b2), o1 = _mm256_set1_ps(k.one_m_b1),
               o2 = _mm256_set1_ps(k.one_m_b2), i1 = _mm256_set1_ps(k.ibc1), i2 = _mm256_set1_ps(k.ibc2),
               lr = _mm256_set1_ps(k.lr), eps = _mm256_set1_ps(k.eps), wd = _mm256_set1_ps(k.wd),
               sc = _mm256_set1_ps(k.scale);
  for (int64_t i = 0; i < n; i += 8) {
    const __m256i msk = tail8(n - i);
    const __m256 gi = _mm256_mul_ps(_mm256_maskload_ps(g + i, msk), sc);
    const __m256 mi = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_maskload_ps(m + i, msk)), _mm256_mul_ps(o1, gi));
    const __m256 vi =
        _mm256_add_ps(_mm256_mul_ps(b2, _mm256_maskload_ps(v + i, msk)), _mm256_mul_ps(_mm256_mul_ps(o2, gi), gi));
    _mm256_maskstore_ps(m + i, msk, mi);
    _mm256_maskstore_ps(v + i, msk, vi);
    const __m256 mhat = _mm256_mul_ps(mi, i1), vhat = _mm256_mul_ps(vi, i2);
    const __m256 pi = _mm256_maskload_ps(p + i, msk);
    const __m256 upd =
        _mm256_add_ps(_mm256_div_ps(mhat, _mm256_add_ps(_mm256_sqrt_ps(vhat), eps)), _mm256_mul_ps(wd, pi));
    _mm256_maskstore_ps(p + i, msk, _mm256_sub_ps(pi, _mm256_mul_ps(lr, upd)));
  }
}

#endif  // HM_X86

void adamw_generic(float* p, const float* g, float* m, float* v, int64_t n, const AdamWConsts& k) {
  for (int64_t i = 0; i < n; i++) {
    const float gi = g[i] * k.scale;
    const float mi = k.b1 * m[i] + k.one_m_b1 * gi;
    const float vi = k.b2 * v[i] + k.one_m_b2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float mhat = mi * k.ibc1, vhat = vi * k.ibc2;
    p[i] -= k.lr * (mhat / (std::sqrt(vhat) + k.eps) + k.wd * p[i]);
  }
}

}  // namespace

SimdLevel simd_level() {
  static const SimdLevel l = detect_level();
  return l;
}

const char* simd_level_name() {
  switch (simd_level()) {
#if HM_X86
    case SimdLevel::avx512: return "avx512";
    case SimdLevel::avx2: return "avx2";
#endif
    default: return "generic";
  }
}

void silu_mul(float* h, const float* g, const float* u, int64_t n) {
  if (n <= 0) return;
  switch (simd_level()) {
#if HM_X86
    case SimdLevel::avx512: return silu_mul_avx512(h, g, u, n);
    case SimdLevel::avx2: return silu_mul_avx2(h, g, u, n);
#endif
    default: return silu_mul_generic(h, g, u, n);
  }
}

void silu_mul_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n,
                       bool accumulate) {
  if (n <= 0) return;
  switch (simd_level()) {
#if HM_X86
    case SimdLevel::avx512: return silu_mul_backward_avx512(dg, du, dh, g, u, n, accumulate);
    case SimdLevel::avx2: return silu_mul_backward_avx2(dg, du, dh, g, u, n, accumulate);
#endif
    default: return silu_mul_backward_generic(dg, du, dh, g, u, n, accumulate);
  }
}

double exp_shift_sum(float* x, int64_t n, float c) {
  if (n <= 0) return 0.0;
  switch (simd_level()) {
#if HM_X86
    case SimdLevel::avx512: return exp_shift_avx512<true>(x, n, c);
    case SimdLevel::avx2: return exp_shift_avx2<true>(x, n, c);
#endif
    default: return exp_shift_generic(x, n, c, true);
  }
}

void exp_shift(float* x, int64_t n, float c) {
  if (n <= 0) return;
  switch (simd_level()) {
#if HM_X86
    case SimdLevel::avx512: exp_shift_avx512<false>(x, n, c); return;
    case SimdLevel::avx2: exp_shift_avx2<false>(x, n, c); return;
#endif
    default: exp_shift_generic(x, n, c, false); return;
  }
}

float max_of(const float* x, int64_t n) {
  switch (simd_level()) {
#if HM_X86
    case SimdLevel::avx512: return max_avx512(x, n);
    case SimdLevel::avx2: return max_avx2(x, n);
#endif
    default: {
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < n; j++) mx = std::max(mx, x[j]);
      return mx;
    }
  }
}

double sumsq_f64(const float* x, int64_t n) {
#if HM_X86
  if (simd_level() == SimdLevel::avx512) return sum_avx512<1>(x, nullptr, nullptr, n);
#endif
  return sum_generic<1>(x, nullptr, nullptr, n);
}

void adamw_span(float* p, const float* g, float* m, float* v, int64_t n, const AdamWConsts& k) {
  if (n <= 0) return;
  switch (simd_level()) {
#if HM_X86
    case SimdLevel::avx512: return adamw_avx512(p, g, m, v, n, k);
    case SimdLevel::avx2: return adamw_avx2(p, g, m, v, n, k);
#endif
    default: return adamw_generic(p, g, m, v, n, k);
  }
}

double dot_f64(const float* a, const float* b, int64_t n) {
#if HM_X86
  if (simd_level() == SimdLevel::avx512) return sum_avx512<2>(a, b, nullptr, n);
#endif
  return sum_generic<2>(a, b, nullptr, n);
}

double dot3_f64(const float* a, const float* b, const float* c, int64_t n) {
#if HM_X86
  if (simd_level() == SimdLevel::avx512) return sum_avx512<3>(a, b, c, n);
#endif
  return sum_generic<3>(a, b, c, n);
}

}  // namespace hm
