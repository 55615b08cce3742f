// harness.h — the CUDA kernels' test harness (llm.c's way): each test runs a CUDA kernel and its CPU
// twin from cpp/ on the same random inputs and compares. Built with nvcc as hiermem_cuda_harness;
// runs on the GPU machine, which has no Node.js. Exit 0 = all passed, 1 = a failure, 77 = no GPU.
// Check macros, Rng, DevBuf and validate come from cuda/common.h (shared with the bench).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common.h"
#include "hiermem_cuda.h"

namespace hmt {

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
