#include "fma_peak.h"

#include "kernels/simd_intrin.h"

#include <chrono>
#include <vector>

#include "parallel.h"
#include "vecmath.h"

namespace hm {
namespace {

// acc = acc * m + a with m just below 1 and a tiny: the values converge to a / (1 - m) = 1, never
// overflow or go denormal (no slow paths), and the compiler cannot fold the chain away.
constexpr float kMul = 0.99999994f, kAdd = 5.9604645e-08f;

#if HM_X86
// AVX-512: 24 zmm chains (of 32 registers). Covers 4-cycle latency x 2 FMA pipes with margin
// (Zen 4 splits a zmm FMA over its two 256-bit pipes; Zen 5 / Intel server cores have two 512-bit).
constexpr int kChains512 = 24;
HM_TARGET_AVX512 float loop_avx512(int64_t iters, float m, float a) {
  __m512 acc[kChains512];
#pragma GCC unroll 24
  for (int j = 0; j < kChains512; j++) acc[j] = _mm512_set1_ps(1.f + 0.001f * (float)j);
  const __m512 vm = _mm512_set1_ps(m), va = _mm512_set1_ps(a);
  for (int64_t i = 0; i < iters; i++) {
#pragma GCC unroll 24
    for (int j = 0; j < kChains512; j++) acc[j] = _mm512_fmadd_ps(acc[j], vm, va);
  }
  __m512 s = acc[0];
#pragma GCC unroll 24
  for (int j = 1; j < kChains512; j++) s = _mm512_add_ps(s, acc[j]);
  return _mm512_reduce_add_ps(s);
}

// AVX2 + FMA: 12 ymm chains (of 16 registers; two hold the constants).
constexpr int kChains256 = 12;
HM_TARGET_AVX2 float loop_avx2(int64_t iters, float m, float a) {
  __m256 acc[kChains256];
#pragma GCC unroll 12
  for (int j = 0; j < kChains256; j++) acc[j] = _mm256_set1_ps(1.f + 0.001f * (float)j);
  const __m256 vm = _mm256_set1_ps(m), va = _mm256_set1_ps(a);
  for (int64_t i = 0; i < iters; i++) {
#pragma GCC unroll 12
    for (int j = 0; j < kChains256; j++) acc[j] = _mm256_fmadd_ps(acc[j], vm, va);
  }
  __m256 s = acc[0];
#pragma GCC unroll 12
  for (int j = 1; j < kChains256; j++) s = _mm256_add_ps(s, acc[j]);
  alignas(32) float out[8];
  _mm256_store_ps(out, s);
  float t = 0.f;
  for (float v : out) t += v;
  return t;
}

#endif  // HM_X86

// Portable: 48 scalar chains the compiler vectorises with the baseline instruction set (SSE2 on
// x86-64: 12 xmm vectors of 4, a multiply and an add per step) — what the generic GEMM kernel has.
constexpr int kLanesGeneric = 48;
float loop_generic(int64_t iters, float m, float a) {
  float acc[kLanesGeneric];
  for (int j = 0; j < kLanesGeneric; j++) acc[j] = 1.f + 0.001f * (float)j;
  for (int64_t i = 0; i < iters; i++)
    for (int j = 0; j < kLanesGeneric; j++) acc[j] = acc[j] * m + a;
  float t = 0.f;
  for (float v : acc) t += v;
  return t;
}

}  // namespace

FmaPeakResult fma_peak(int64_t iters) {
  FmaPeakResult r{};
  const SimdLevel level = simd_level();
  r.level = simd_level_name();
  switch (level) {
#if HM_X86
    case SimdLevel::avx512: r.lanes = 16; r.chains = kChains512; break;
    case SimdLevel::avx2: r.lanes = 8; r.chains = kChains256; break;
#endif
    default: r.lanes = 4; r.chains = kLanesGeneric / 4; break;
  }
  if (iters < 1) iters = 1;
  const int threads = num_threads();
  std::vector<float> sinks((size_t)threads, 0.f);
  // the factors come from memory at run time, so the loop cannot be evaluated at compile time
  volatile float vm = kMul, va = kAdd;
  const float m = vm, a = va;
  const auto t0 = std::chrono::steady_clock::now();
  parallel_for(threads, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; t++) {
      switch (level) {
#if HM_X86
        case SimdLevel::avx512: sinks[(size_t)t] = loop_avx512(iters, m, a); break;
        case SimdLevel::avx2: sinks[(size_t)t] = loop_avx2(iters, m, a); break;
#endif
        default: sinks[(size_t)t] = loop_generic(iters, m, a); break;
      }
    }
  }, 1);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.threads = (int)parallel_chunks(threads, 1);
  r.flops = 2.0 * (double)iters * (double)r.chains * (double)r.lanes * (double)r.threads;
  for (float s : sinks) r.sink += s;
  return r;
}

}  // namespace hm
