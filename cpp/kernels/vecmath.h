// vecmath.h — SIMD helpers of the CPU kernels: a vectorised expf and the elementwise / reduction
// loops built on it (SwiGLU, softmax rows, float64-accumulated sums).
//
// The build stays portable x86-64: each helper is compiled several times (AVX-512, AVX2+FMA and the
// baseline) with function-level target attributes and picked once at run time from the CPU's
// features (HIERMEM_SIMD=generic|avx2|avx512 forces a lower level, e.g. to test the fallbacks).
// Determinism: every result depends only on the inputs, n and the chosen level, never on how a
// range is split across threads or on an element's position within a vector (tails are computed by
// the same masked vector code), so reruns at a given thread count are bit-identical.
//
// exp: Cody-Waite reduction x = q ln2 + s with |s| <= ln2/2, degree-7 polynomial (Sleef's expf_u10
// coefficients), result scaled by 2^q: within 1 ulp of the exact value over the normal range;
// exp(-inf) = 0, exp(+inf) = +inf, exp(NaN) = NaN, overflow to +inf and underflow to 0/denormals as
// expf. The generic level uses std::exp.
#pragma once
#include <cstdint>

#include "contract.h"

// Function-level targets for multi-versioned loops: an always-inline body (HM_INLINE) compiled
// into an HM_TARGET_AVX512 (optionally HM_TARGET_AVX2) wrapper and a plain one, picked with
// simd_level(). Such auto-vectorised wrappers may contract a * b + c into an FMA: deterministic,
// but not the same bits as the plain wrapper.
// On other architectures (aarch64) the x86 levels do not exist: simd_level() is always generic,
// the wrappers compile as plain functions and intrinsic code sits behind HM_X86.
#if defined(__x86_64__) || defined(__i386__)
#define HM_X86 1
#define HM_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,prefer-vector-width=512")))
#define HM_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define HM_X86 0
#define HM_TARGET_AVX512
#define HM_TARGET_AVX2
#endif
#define HM_INLINE inline __attribute__((always_inline))

namespace hm {

enum class SimdLevel { generic = 0, avx2 = 1, avx512 = 2 };
SimdLevel simd_level();  // cached after the first call
const char* simd_level_name();

// h = silu(g) * u = g * sigmoid(g) * u
void silu_mul(float* h, const float* g, const float* u, int64_t n);
// dg (+)= dh * u * s * (1 + g * (1 - s)), du (+)= dh * g * s with s = sigmoid(g); accumulate: += else =
void silu_mul_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n,
                       bool accumulate);
// x[j] = exp(x[j] - c); returns the sum of the new x[j] accumulated in float64.
double exp_shift_sum(float* x, int64_t n, float c);
// x[j] = exp(x[j] - c)
void exp_shift(float* x, int64_t n, float c);
// max over x[0..n) (n >= 1; NaN-propagation unspecified beyond "a NaN input gives a NaN softmax")
float max_of(const float* x, int64_t n);
// sum x[j]^2, sum a[j]*b[j] and sum (a[j]*b[j])*c[j] in float64: 16 lanes (j % 16) reduced by a
// fixed pairwise tree; no contraction, so the same bits at every level.
double sumsq_f64(const float* x, int64_t n);
double dot3_f64(const float* a, const float* b, const float* c, int64_t n);
double dot_f64(const float* a, const float* b, int64_t n);

// AdamW on a range; the constants from adamw_consts (contract.h). Every level computes exactly the
// scalar expression's operations (no contraction), so all levels give the same bits.
void adamw_span(float* p, const float* g, float* m, float* v, int64_t n, const AdamWConsts& k);

}  // namespace hm
