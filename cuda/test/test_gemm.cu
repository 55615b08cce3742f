// test_gemm.cu — hmc::gemm (cuda/kernels/gemm.cu) against hm::gemm (cpp/kernels/gemm.h) in all three
// modes, all four transpose combinations, ragged shapes, alpha/beta, padded and misaligned leading
// dimensions; plus a throughput line per mode at transformer shapes.
//
// Tolerance (every product test in this directory uses the same idea): |got - want| <=
// atol + rtol |want| with rtol = hmt::gemm_rtol(mode) and
//   atol = rtol * (sqrt(K) * rms(op(A)) * rms(op(B)) * |alpha| + |beta| * rms(C)).
// Why: rounding each operand to the mode's precision (unit roundoff u: 2^-24 fp32, 2^-11 tf32,
// 2^-8 bf16) perturbs each of the K products by ~u |a b|; those errors have random signs, so the
// error of an output grows like sqrt(K) u rms(a) rms(b), not like its (possibly cancelling) value.
// rtol is ~10 u for tf32 / bf16, so the bound sits ~10 standard deviations above rounding noise,
// while a dropped, duplicated or misplaced k-tile (>= 4 terms: error >= 2 sqrt(K)-scaled units of
// ~rms(a) rms(b)) or a wrong element is far outside it. The FP32 mode (rtol 1e-4, only summation-
// order differences) pins indexing errors down to a single term.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "harness.h"
#include "kernels/linear.h"

namespace {

const hmc::GemmMode kModes[] = {hmc::GemmMode::FP32, hmc::GemmMode::TF32, hmc::GemmMode::BF16};
const char* mode_name(hmc::GemmMode m) {
  return m == hmc::GemmMode::FP32 ? "fp32" : m == hmc::GemmMode::TF32 ? "tf32" : "bf16";
}

double rms_region(const std::vector<float>& v, int64_t off, int64_t rows, int64_t cols, int64_t ld) {
  double s = 0;
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < cols; j++) s += (double)v[off + i * ld + j] * v[off + i * ld + j];
  return rows * cols > 0 ? std::sqrt(s / (double)(rows * cols)) : 0.0;
}

struct Case {
  int64_t M, N, K;
  float alpha, beta;
  int64_t pad_a = 0, pad_b = 0, pad_c = 0;  // leading dimension = columns + pad
  int64_t off_a = 0;                        // A starts this many floats into its buffer (misalignment)
  bool nan_a = false;                       // A full of NaN (only with alpha = 0)
};

// Runs one case in every mode. C is pre-filled with random values (beta != 0) or NaN (beta = 0: the
// kernel must not read it); the padding columns of C must come back bit-identical.
void run_case(hmt::Ctx& ctx, hmdev::Rng& rng, bool ta, bool tb, const Case& c) {
  const int64_t M = c.M, N = c.N, K = c.K;
  const int64_t ar = ta ? K : M, ac = ta ? M : K, lda = ac + c.pad_a;
  const int64_t br = tb ? N : K, bc = tb ? K : N, ldb = bc + c.pad_b;
  const int64_t ldc = N + c.pad_c;
  std::vector<float> A = rng.normals((size_t)std::max<int64_t>(1, c.off_a + ar * lda));
  if (c.nan_a) std::fill(A.begin(), A.end(), NAN);
  std::vector<float> B = rng.normals((size_t)std::max<int64_t>(1, br * ldb));
  std::vector<float> C0 = rng.normals((size_t)std::max<int64_t>(1, M * ldc));
  std::vector<float> Cin = C0;
  if (c.beta == 0.f)
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < ldc; j++) Cin[i * ldc + j] = NAN;

  // reference: hm::gemm, except where BLAS semantics are easier to state directly
  std::vector<float> want = C0;
  if (c.alpha == 0.f || K == 0) {
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) want[i * ldc + j] = c.beta == 0.f ? 0.f : c.beta * C0[i * ldc + j];
  } else {
    if (c.beta == 0.f)
      for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) want[i * ldc + j] = 0.f;
    hm::gemm(ta, tb, M, N, K, c.alpha, A.data() + c.off_a, lda, B.data(), ldb, c.beta, want.data(), ldc);
  }
  std::vector<float> want_r((size_t)(M * N));
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) want_r[i * N + j] = want[i * ldc + j];

  const double sa = c.nan_a ? 0 : rms_region(A, c.off_a, ar, ac, lda), sb = rms_region(B, 0, br, bc, ldb);
  const double sc = rms_region(C0, 0, M, N, ldc);
  const std::string tag = std::string(ta ? "T" : "N") + (tb ? "T" : "N") + " " + std::to_string(M) + "x" +
                          std::to_string(N) + "x" + std::to_string(K) + " a" + std::to_string(c.alpha) + " b" +
                          std::to_string(c.beta) + " pads " + std::to_string(c.pad_a) + "," + std::to_string(c.pad_b) +
                          "," + std::to_string(c.pad_c) + " off " + std::to_string(c.off_a);

  hmdev::DevBuf<float> dA(A), dB(B);
  for (hmc::GemmMode mode : kModes) {
    const double rtol = hmt::gemm_rtol(mode);
    const double atol = rtol * (std::sqrt((double)K) * sa * sb * std::fabs(c.alpha) + std::fabs(c.beta) * sc) + 1e-30;
    hmdev::DevBuf<float> dC(Cin);
    HMC_CHECK(hmc::gemm(mode, ta, tb, M, N, K, c.alpha, dA.p + c.off_a, lda, dB.p, ldb, c.beta, dC.p, ldc, nullptr));
    std::vector<float> got = dC.download(), got_r((size_t)(M * N));
    bool pads_same = true;
    for (int64_t i = 0; i < M; i++) {
      for (int64_t j = 0; j < N; j++) got_r[i * N + j] = got[i * ldc + j];
      if (c.pad_c && std::memcmp(&got[i * ldc + N], &Cin[i * ldc + N], sizeof(float) * c.pad_c) != 0) pads_same = false;
    }
    ctx.expect_close(std::string(mode_name(mode)) + " C " + tag, got_r, want_r, rtol, atol);
    ctx.expect(pads_same, std::string(mode_name(mode)) + " padding columns of C untouched " + tag);
  }
}

}  // namespace

// Shapes from 1x1x1 to sizes that are not multiples of any tile (128 x 128 x 16/32), in all four
// transpose combinations. Catches: wrong transposed staging (each combo), ragged-edge bounds
// (7x13x5, 333x129x1000), a wrong fragment layout per mode (every output), reading C when beta = 0
// (NaN pre-fill), alpha/beta misuse, ignoring lda/ldb/ldc (padded cases; pads 3/5/2 also force the
// scalar load path, tight 64/768 strides the 16-byte path).
HMT_TEST(gemm_shapes_transposes) {
  hmdev::Rng rng(7001);
  const int64_t shapes[][3] = {{1, 1, 1}, {7, 13, 5}, {130, 257, 64}, {256, 768, 768}, {333, 129, 1000}};
  for (auto& s : shapes)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) {
        run_case(ctx, rng, ta, tb, Case{s[0], s[1], s[2], 1.f, 0.f});
        run_case(ctx, rng, ta, tb, Case{s[0], s[1], s[2], 0.75f, -1.25f, 3, 5, 2});
      }
}

// The 16-byte path with lda > columns (pads of 4 keep rows aligned), a misaligned A base with an
// aligned lda (must fall back to scalar loads, else a misaligned-address fault), alpha = 0 with A full
// of NaN (A must not be read: C = beta C), and K = 0 (C = beta C; beta = 0 writes zeros over NaN).
HMT_TEST(gemm_leading_dims_and_edge_cases) {
  hmdev::Rng rng(7002);
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      run_case(ctx, rng, ta, tb, Case{256, 136, 200, 1.f, 1.f, 4, 8, 4});
      Case mis{130, 257, 64, 1.f, 0.5f, 4, 0, 0};
      mis.off_a = 1;
      run_case(ctx, rng, ta, tb, mis);
      Case a0{67, 45, 33, 0.f, 0.5f};
      a0.nan_a = true;
      run_case(ctx, rng, ta, tb, a0);
      run_case(ctx, rng, ta, tb, Case{19, 23, 0, 1.f, 0.f, 0, 0, 1});
      run_case(ctx, rng, ta, tb, Case{19, 23, 0, 1.f, 2.f});
    }
  // invalid arguments are refused, zero-size is a no-op
  ctx.expect(hmc::gemm(hmc::GemmMode::FP32, false, false, -1, 1, 1, 1.f, nullptr, 1, nullptr, 1, 0.f, nullptr, 1,
                       nullptr) == (int)cudaErrorInvalidValue,
             "negative M refused");
  ctx.expect(hmc::gemm(hmc::GemmMode::FP32, false, false, 0, 5, 5, 1.f, nullptr, 5, nullptr, 5, 0.f, nullptr, 5,
                       nullptr) == 0,
             "M = 0 is a no-op");
  hmdev::DevBuf<float> d(64);
  ctx.expect(hmc::gemm(hmc::GemmMode::TF32, false, false, 4, 4, 8, 1.f, d.p, 4, d.p, 4, 0.f, d.p, 4, nullptr) ==
                 (int)cudaErrorInvalidValue,
             "lda < K refused");
}

// Throughput at transformer shapes (forward x W^T, backward dy W, weight grad dy^T x), printed per
// mode as TFLOP/s; 16 sampled outputs per run checked against a double-precision dot product.
HMT_TEST(gemm_throughput) {
  struct Shape {
    bool ta, tb;
    int64_t M, N, K;
    const char* what;
  } shapes[] = {{false, true, 8192, 3072, 768, "x W^T"},
                {false, false, 8192, 768, 3072, "dy W"},
                {true, false, 3072, 768, 8192, "dy^T x"}};
  hmdev::Rng rng(7003);
  for (const Shape& sh : shapes) {
    const int64_t ar = sh.ta ? sh.K : sh.M, ac = sh.ta ? sh.M : sh.K;
    const int64_t br = sh.tb ? sh.N : sh.K, bc = sh.tb ? sh.K : sh.N;
    std::vector<float> A((size_t)(ar * ac)), B((size_t)(br * bc));
    for (auto& v : A) v = rng.uniform() - 0.5f;  // uniform: cheap to generate at this size
    for (auto& v : B) v = rng.uniform() - 0.5f;
    hmdev::DevBuf<float> dA(A), dB(B), dC((size_t)(sh.M * sh.N));
    for (hmc::GemmMode mode : kModes) {
      auto run = [&] {
        HMC_CHECK(hmc::gemm(mode, sh.ta, sh.tb, sh.M, sh.N, sh.K, 1.f, dA.p, ac, dB.p, bc, 0.f, dC.p, sh.N, nullptr));
      };
      run();  // warm-up
      cudaEvent_t e0, e1;
      CUDA_CHECK(cudaEventCreate(&e0));
      CUDA_CHECK(cudaEventCreate(&e1));
      const int reps = 5;
      CUDA_CHECK(cudaEventRecord(e0));
      for (int r = 0; r < reps; r++) run();
      CUDA_CHECK(cudaEventRecord(e1));
      CUDA_CHECK(cudaEventSynchronize(e1));
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
      cudaEventDestroy(e0);
      cudaEventDestroy(e1);
      const double tflops = 2.0 * sh.M * sh.N * sh.K * reps / (ms * 1e-3) / 1e12;
      std::printf("  gemm_throughput %s %-7s M=%lld N=%lld K=%lld: %.3f ms, %.1f TFLOP/s\n", mode_name(mode), sh.what,
                  (long long)sh.M, (long long)sh.N, (long long)sh.K, ms / reps, tflops);
      std::vector<float> C = dC.download();
      std::vector<float> got, want;
      for (int s = 0; s < 16; s++) {
        const int64_t i = rng.below(sh.M), j = rng.below(sh.N);
        double d = 0;
        for (int64_t p = 0; p < sh.K; p++)
          d += (double)(sh.ta ? A[p * ac + i] : A[i * ac + p]) * (sh.tb ? B[j * bc + p] : B[p * bc + j]);
        got.push_back(C[i * sh.N + j]);
        want.push_back((float)d);
      }
      const double rtol = hmt::gemm_rtol(mode);
      ctx.expect_close(std::string(mode_name(mode)) + " sampled " + sh.what, got, want, rtol,
                       rtol * std::sqrt((double)sh.K) / 12.0);  // rms(a) rms(b) = 1/12 for U(-0.5, 0.5)
    }
  }
}
