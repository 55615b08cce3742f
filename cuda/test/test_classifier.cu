// test_classifier.cu — hmc::classifier_forward_backward (cuda/kernels/classifier.cu) against
// hm::classifier_forward_backward (cpp/kernels/classifier.cc) in all three GEMM modes.
//
// Tolerances (rtol = hmt::gemm_rtol(mode)): losses: atol = 4 rtol rms(logits) — a loss is
// logsumexp minus one logit, so its error is at most about twice a logit's, and a logit is one
// product (see test_gemm.cu); dx, dwte: atol = 3 rtol rms(increment), as in test_ffn.cu.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "harness.h"
#include "kernels/classifier.h"

namespace {

const hmc::GemmMode kModes[] = {hmc::GemmMode::FP32, hmc::GemmMode::TF32, hmc::GemmMode::BF16};
const char* mode_name(hmc::GemmMode m) {
  return m == hmc::GemmMode::FP32 ? "fp32" : m == hmc::GemmMode::TF32 ? "tf32" : "bf16";
}
double rms_diff(const std::vector<float>& a, const std::vector<float>* b) {
  double s = 0;
  size_t n = 0;
  for (size_t i = 0; i < a.size(); i++) {
    const double d = (double)a[i] - (b ? (double)(*b)[i] : 0.0);
    if (d != 0.0) {
      s += d * d;
      n++;
    }
  }
  return n ? std::sqrt(s / (double)n) : 1e-30;
}

// One shape in every mode: forward + backward (dx, dwte pre-filled, ADDED to), then forward only.
void classifier_case(hmt::Ctx& ctx, hmdev::Rng& rng, int64_t N, int64_t C, int64_t V) {
  const std::string tag = std::to_string(N) + "x" + std::to_string(C) + "x" + std::to_string(V);
  auto x = rng.normals((size_t)(N * C));
  auto wte = rng.normals((size_t)(V * C), (float)(1.0 / std::sqrt((double)C)));  // logits ~ N(0, 1)
  std::vector<int32_t> targets((size_t)N);
  for (int64_t i = 0; i < N; i++) targets[(size_t)i] = rng.below(5) == 0 ? -1 : (int32_t)rng.below(V);
  if (N > 1) targets[(size_t)(N / 2)] = -1;        // at least one ignored row
  targets[0] = (int32_t)(V - 1);                    // and the last class
  const float grad_scale = 1.f / (float)N;
  auto dx0 = rng.normals((size_t)(N * C)), dwte0 = rng.normals((size_t)(V * C));

  std::vector<float> losses((size_t)N), dx = dx0, dwte = dwte0;
  std::vector<float> sc((size_t)(hm::classifier_chunk_rows(N, V) * V));
  hm::classifier_forward_backward(losses.data(), dx.data(), dwte.data(), x.data(), wte.data(), targets.data(), N, C, V,
                                  grad_scale, sc.data());
  std::vector<float> logits((size_t)(N * V));
  hm::classifier_logits(logits.data(), x.data(), wte.data(), N, C, V);
  const double s_logit = rms_diff(logits, nullptr);

  hmdev::DevBuf<float> dX(x), dW(wte);
  hmdev::DevBuf<int32_t> dT(targets);
  hmdev::DevBuf<float> dSc((size_t)hmc::classifier_scratch_floats(N, V));
  for (hmc::GemmMode mode : kModes) {
    const double rtol = hmt::gemm_rtol(mode);
    const std::string m = mode_name(mode);
    hmdev::DevBuf<float> dL(std::vector<float>((size_t)N, NAN)), dDX(dx0), dDW(dwte0);
    HMC_CHECK(hmc::classifier_forward_backward(mode, dL.p, dDX.p, dDW.p, dX.p, dW.p, dT.p, N, C, V, grad_scale, dSc.p,
                                            nullptr));
    auto gl = dL.download(), gdx = dDX.download();
    ctx.expect_close(m + " losses " + tag, gl, losses, rtol, 4 * rtol * s_logit);
    ctx.expect_close(m + " dx " + tag, gdx, dx, rtol, 3 * rtol * rms_diff(dx, &dx0));
    ctx.expect_close(m + " dwte " + tag, dDW.download(), dwte, rtol, 3 * rtol * rms_diff(dwte, &dwte0));
    bool ignored_ok = true;  // ignored rows: loss exactly 0, dx row untouched
    for (int64_t i = 0; i < N; i++)
      if (targets[(size_t)i] < 0)
        ignored_ok &= gl[(size_t)i] == 0.f &&
                      std::memcmp(&gdx[(size_t)(i * C)], &dx0[(size_t)(i * C)], sizeof(float) * C) == 0;
    ctx.expect(ignored_ok, m + " ignored targets: loss 0 and dx row untouched " + tag);

    hmdev::DevBuf<float> dL2(std::vector<float>((size_t)N, NAN));
    HMC_CHECK(hmc::classifier_forward_backward(mode, dL2.p, nullptr, nullptr, dX.p, dW.p, dT.p, N, C, V, grad_scale, dSc.p,
                                            nullptr));
    ctx.expect_close(m + " losses (forward only) " + tag, dL2.download(), losses, rtol, 4 * rtol * s_logit);
  }
}

}  // namespace

// V = 259 (not a multiple of any tile), 1 row, odd N and C; targets with -1 and the last class.
// Catches: wrong logsumexp / softmax gradient, the onehot at the wrong column, ignored rows
// contributing, dx / dwte transposes, += semantics, the forward-only path writing gradients.
HMT_TEST(classifier_forward_backward) {
  hmdev::Rng rng(9101);
  const int64_t shapes[][3] = {{1, 13, 259}, {67, 64, 259}, {130, 96, 259}};
  for (auto& s : shapes) classifier_case(ctx, rng, s[0], s[1], s[2]);
}

// More than 16 Mi logits: the GPU splits the rows into chunks (1022 + 78 rows at V = 16411) and
// dwte sums over chunks. Catches chunk offsets in x / dx / losses / targets and the dwte carry.
HMT_TEST(classifier_chunked) {
  hmdev::Rng rng(9102);
  classifier_case(ctx, rng, 1100, 16, 16411);
}
