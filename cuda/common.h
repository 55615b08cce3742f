// common.h — what the CUDA development tools share (llm.c's dev/cuda/common.h): the kernel
// harness (cuda/test) and the benchmark (cuda/bench) both include it. Host-side code only:
//   CUDA_CHECK / HMC_CHECK   throw std::runtime_error on a failing runtime call / hmc:: entry point
//   Rng                      deterministic host inputs (splitmix64 -> uniform, normal, below)
//   DevBuf<T>                a zeroed device buffer, freed on scope exit; upload / download
//   validate                 |got - want| <= atol + rtol |want| per element, with the worst one
//   Event, Stream, time_calls, Stats, now_ms   timing with CUDA events (median of samples)
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#define CUDA_CHECK(call)                                                                                   \
  do {                                                                                                     \
    cudaError_t e_ = (call);                                                                               \
    if (e_ != cudaSuccess) throw std::runtime_error(std::string(#call) + ": " + cudaGetErrorString(e_));   \
  } while (0)
// an hmc:: entry point, which returns 0 or a cudaError_t value
#define HMC_CHECK(call)                                                                                    \
  do {                                                                                                     \
    int e_ = (call);                                                                                       \
    if (e_ != 0)                                                                                           \
      throw std::runtime_error(std::string(#call) + " returned " + std::to_string(e_) + " (" +            \
                               cudaGetErrorString((cudaError_t)e_) + ")");                                \
  } while (0)

namespace hmdev {

// Deterministic inputs: splitmix64 -> uniform / normal floats.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  float uniform() { return (float)((next() >> 40) * (1.0 / 16777216.0)); }  // [0, 1)
  float normal() {
    float u1 = uniform() + 1e-7f, u2 = uniform();
    return std::sqrt(-2.f * std::log(u1)) * std::cos(6.2831853f * u2);
  }
  int64_t below(int64_t n) { return (int64_t)(next() % (uint64_t)n); }
  std::vector<float> normals(size_t n, float scale = 1.f) {
    std::vector<float> v(n);
    for (auto& x : v) x = normal() * scale;
    return v;
  }
};

// A zeroed device buffer of n elements (at least one is allocated), freed on scope exit. The
// constructor waits for its memset, so work on any stream (the bench's non-blocking one
// included) sees the zeros.
template <typename T>
struct DevBuf {
  T* p = nullptr;
  size_t n = 0;
  DevBuf() = default;
  explicit DevBuf(size_t count) : n(count) {
    CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(count, 1) * sizeof(T)));
    CUDA_CHECK(cudaMemset(p, 0, std::max<size_t>(count, 1) * sizeof(T)));
    CUDA_CHECK(cudaDeviceSynchronize());
  }
  explicit DevBuf(const std::vector<T>& h) : DevBuf(h.size()) { upload(h); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  ~DevBuf() {
    if (p) cudaFree(p);
  }
  size_t bytes() const { return n * sizeof(T); }
  // synchronous copies on the legacy stream (tests); the bench orders its own on its stream
  void upload(const std::vector<T>& h) { CUDA_CHECK(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice)); }
  std::vector<T> download() const {
    std::vector<T> h(n);
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

// Element-wise comparison |got - want| <= atol + rtol * |want| (NaN counts as bad): how many are
// off and the worst element by its share of the tolerance.
struct Validation {
  size_t bad = 0, worst_i = 0;
  double worst_ratio = 0, worst_abs = 0;
};
template <typename T>
Validation validate(const T* got, const T* want, size_t n, double rtol, double atol) {
  Validation v;
  for (size_t i = 0; i < n; i++) {
    const double g = (double)got[i], w = (double)want[i];
    const double err = std::fabs(g - w);
    const double ratio = err / (atol + rtol * std::fabs(w));  // 0 / 0 (exact match at zero tolerance) is NaN
    const bool ok = ratio <= 1.0 || (err == 0 && g == w);
    if (!ok) v.bad++;
    const double r = ok && !(ratio <= 1.0) ? 0.0 : (std::isnan(ratio) ? INFINITY : ratio);
    if (!(r <= v.worst_ratio)) {
      v.worst_ratio = r;
      v.worst_i = i;
      v.worst_abs = err;
    }
  }
  return v;
}

// ---- timing ---------------------------------------------------------------------------------------
struct Event {
  cudaEvent_t e = nullptr;
  Event() { CUDA_CHECK(cudaEventCreate(&e)); }
  ~Event() { cudaEventDestroy(e); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  operator cudaEvent_t() const { return e; }
};
// a non-blocking stream (does not synchronise with the legacy default stream)
struct Stream {
  cudaStream_t s = nullptr;
  Stream() { CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
  ~Stream() { cudaStreamDestroy(s); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  operator cudaStream_t() const { return s; }
};

inline double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
inline double elapsed_ms(cudaEvent_t a, cudaEvent_t b) {
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  return (double)ms;
}

struct Stats {
  double med = NAN, lo = NAN, hi = NAN;
  int n = 0;
};
inline Stats stats_of(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  s.med = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  s.lo = v.front();
  s.hi = v.back();
  s.n = (int)n;
  return s;
}

// Per-call milliseconds of fn (which enqueues work on s and throws on error): `warm` untimed calls,
// then `samples` samples of `inner` back-to-back calls between two events; inner is calibrated from
// one timed call so that a sample lasts about target_ms (1..1000 calls: launch latency amortised).
inline Stats time_calls(const std::function<void()>& fn, cudaStream_t s, int warm, int samples, double target_ms = 2.0) {
  Event a, b;
  for (int i = 0; i < warm; i++) fn();
  CUDA_CHECK(cudaStreamSynchronize(s));
  CUDA_CHECK(cudaEventRecord(a, s));
  fn();
  CUDA_CHECK(cudaEventRecord(b, s));
  CUDA_CHECK(cudaEventSynchronize(b));
  const double first = elapsed_ms(a, b);
  const int inner = (int)std::min(1000.0, std::max(1.0, std::ceil(target_ms / std::max(first, 1e-3))));
  std::vector<double> v;
  for (int k = 0; k < samples; k++) {
    CUDA_CHECK(cudaEventRecord(a, s));
    for (int i = 0; i < inner; i++) fn();
    CUDA_CHECK(cudaEventRecord(b, s));
    CUDA_CHECK(cudaEventSynchronize(b));
    v.push_back(elapsed_ms(a, b) / inner);
  }
  CUDA_CHECK(cudaGetLastError());
  return stats_of(v);
}

}  // namespace hmdev
