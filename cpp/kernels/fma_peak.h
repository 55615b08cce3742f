// fma_peak.h — the machine's fp32 multiply-add peak, measured: the ceiling the GEMM bench rows
// are read against (bench/limits.ts, limits.fmaPeakGflops).
//
// A register-bound loop: every pool thread runs many independent accumulator chains
// acc = acc * m + a (no loads, no stores) at the SIMD level the addon chose for its GEMM
// (simd_level(): AVX-512 zmm, AVX2+FMA ymm, or the portable baseline, where the compiler's
// vectorised multiply and add stand in for an FMA). Enough chains cover the FMA latency times the
// number of FMA pipes on any x86-64 core of the last decade, so the loop runs at the issue rate.
#pragma once
#include <cstdint>

namespace hm {

struct FmaPeakResult {
  double flops;     // floating-point operations done, over all threads (an FMA lane counts 2)
  double seconds;   // wall time of the parallel region
  int threads;      // pool threads that ran the loop
  int lanes;        // fp32 lanes per vector at the chosen level (16, 8, or 4 for the baseline)
  int chains;       // independent accumulator vectors per thread
  const char* level;  // "avx512", "avx2" or "generic"
  float sink;       // the accumulators' sum (keeps the loop observable)
};

// Runs `iters` iterations of the loop on every thread of the pool (one chunk per thread).
FmaPeakResult fma_peak(int64_t iters);

}  // namespace hm
