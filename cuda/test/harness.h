// harness.h — the CUDA kernels' test harness (llm.c's way): each test runs a CUDA kernel and its CPU
// twin from cpp/ on the same random inputs and compares. Built with nvcc as hiermem_cuda_harness;
// runs on the GPU machine, which has no Node.js. Exit 0 = all passed, 1 = a failure, 77 = no GPU.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "hiermem_cuda.h"

namespace hmt {

#define HMT_CUDA(call)                                                                              \
  do {                                                                                              \
    cudaError_t e_ = (call);                                                                        \
    if (e_ != cudaSuccess) throw std::runtime_error(std::string(#call) + ": " + cudaGetErrorString(e_)); \
  } while (0)
// a kernel entry point returning 0 or a cudaError_t
#define HMT_OK(call)                                                                                \
  do {                                                                                              \
    int e_ = (call);                                                                                \
    if (e_ != 0) throw std::runtime_error(std::string(#call) + " returned " + std::to_string(e_) + " (" + \
                                          cudaGetErrorString((cudaError_t)e_) + ")");               \
  } while (0)

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

// A device copy of a host vector, freed on scope exit.
template <typename T>
struct DevBuf {
  T* p = nullptr;
  size_t n = 0;
  DevBuf() = default;
  explicit DevBuf(size_t count) : n(count) {
    HMT_CUDA(cudaMalloc(&p, std::max<size_t>(count, 1) * sizeof(T)));
    HMT_CUDA(cudaMemset(p, 0, std::max<size_t>(count, 1) * sizeof(T)));
  }
  explicit DevBuf(const std::vector<T>& h) : DevBuf(h.size()) { upload(h); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  ~DevBuf() { if (p) cudaFree(p); }
  void upload(const std::vector<T>& h) { HMT_CUDA(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice)); }
  std::vector<T> download() const {
    std::vector<T> h(n);
    HMT_CUDA(cudaDeviceSynchronize());
    HMT_CUDA(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

// Comparison: |got - want| <= atol + rtol * |want| for every element; reports the worst element.
struct Ctx {
  std::string test;
  int failures = 0, checks = 0;
  bool verbose = false;
  void expect_close(const std::string& what, const std::vector<float>& got, const std::vector<float>& want,
                    double rtol, double atol);
  void expect_close(const std::string& what, const std::vector<double>& got, const std::vector<double>& want,
                    double rtol, double atol);
  void expect_equal(const std::string& what, const std::vector<float>& got, const std::vector<float>& want);
  void expect(bool ok, const std::string& what);
};

using TestFn = void (*)(Ctx&);
struct Registrar {
  Registrar(const char* name, TestFn fn);
};
#define HMT_TEST(fn_name)                                   \
  static void fn_name(hmt::Ctx& ctx);                       \
  static hmt::Registrar registrar_##fn_name(#fn_name, fn_name); \
  static void fn_name(hmt::Ctx& ctx)

// Tolerances per GEMM mode, used by every test that goes through a product (documented in README):
// fp32 accumulates in a different order than our CPU GEMM; tf32 keeps 10 mantissa bits, bf16 7.
inline double gemm_rtol(hmc::GemmMode m) { return m == hmc::GemmMode::FP32 ? 1e-4 : m == hmc::GemmMode::TF32 ? 5e-3 : 3e-2; }

}  // namespace hmt
