// harness_main.cu — runs the registered CUDA-vs-CPU tests. Usage: hiermem_cuda_harness [substring...] [-v]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "harness.h"
#include "kernels/gemm.h"

namespace hmt {

static std::vector<std::pair<std::string, TestFn>>& registry() {
  static std::vector<std::pair<std::string, TestFn>> r;
  return r;
}
Registrar::Registrar(const char* name, TestFn fn) { registry().emplace_back(name, fn); }

template <typename T>
static void compare(Ctx& c, const std::string& what, const std::vector<T>& got, const std::vector<T>& want,
                    double rtol, double atol) {
  c.checks++;
  if (got.size() != want.size()) {
    std::printf("  FAIL %s/%s: size %zu vs %zu\n", c.test.c_str(), what.c_str(), got.size(), want.size());
    c.failures++;
    return;
  }
  const hmdev::Validation v = hmdev::validate(got.data(), want.data(), got.size(), rtol, atol);
  if (v.bad) {
    std::printf("  FAIL %s/%s: %zu of %zu elements off; worst [%zu] got %.8g want %.8g (|err| %.3g, rtol %.1g atol %.1g)\n",
                c.test.c_str(), what.c_str(), v.bad, got.size(), v.worst_i, (double)got[v.worst_i],
                (double)want[v.worst_i], v.worst_abs, rtol, atol);
    c.failures++;
  } else if (c.verbose) {
    std::printf("  ok   %s/%s: n=%zu worst |err| %.3g (%.2f of tolerance)\n", c.test.c_str(), what.c_str(), got.size(),
                v.worst_abs, v.worst_ratio);
  }
}
void Ctx::expect_close(const std::string& what, const std::vector<float>& got, const std::vector<float>& want,
                       double rtol, double atol) { compare(*this, what, got, want, rtol, atol); }
void Ctx::expect_close(const std::string& what, const std::vector<double>& got, const std::vector<double>& want,
                       double rtol, double atol) { compare(*this, what, got, want, rtol, atol); }
void Ctx::expect_equal(const std::string& what, const std::vector<float>& got, const std::vector<float>& want) {
  checks++;
  if (got.size() != want.size() || std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) != 0) {
    const int before = failures;
    compare(*this, what + " (bitwise)", got, want, 0, 0);
    checks--;  // compare counted this check again
    if (failures == before) failures++;  // e.g. -0 vs +0 or two NaN payloads: equal values, other bits
  }
}
void Ctx::expect(bool ok, const std::string& what) {
  checks++;
  if (!ok) {
    std::printf("  FAIL %s: %s\n", test.c_str(), what.c_str());
    failures++;
  }
}

}  // namespace hmt

int main(int argc, char** argv) {
  std::vector<std::string> filters;
  bool verbose = false;
  for (int i = 1; i < argc; i++) {
    if (!std::strcmp(argv[i], "-v")) verbose = true;
    else filters.emplace_back(argv[i]);
  }
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    std::printf("hiermem_cuda_harness: SKIP, no CUDA device (%s)\n", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    return 77;
  }
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  std::printf("hiermem_cuda_harness: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  int passed = 0, failed = 0;
  for (auto& entry : hmt::registry()) {
    const std::string& name = entry.first;
    const hmt::TestFn fn = entry.second;
    if (!filters.empty() && std::none_of(filters.begin(), filters.end(),
                                         [&](const std::string& f) { return name.find(f) != std::string::npos; }))
      continue;
    hmt::Ctx ctx;
    ctx.test = name;
    ctx.verbose = verbose;
    try {
      fn(ctx);
    } catch (const std::exception& ex) {
      std::printf("  FAIL %s: exception: %s\n", name.c_str(), ex.what());
      ctx.failures++;
      cudaGetLastError();  // clear a sticky launch error so later tests can run
    }
    if (ctx.failures) failed++; else passed++;
    std::printf("%s %s (%d checks)\n", ctx.failures ? "FAIL" : "PASS", name.c_str(), ctx.checks);
  }
  std::printf("harness: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
