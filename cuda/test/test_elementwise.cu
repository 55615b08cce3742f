// test_elementwise.cu — embedding, rmsnorm, rope, swiglu, adamw and global_sumsq kernels against their
// CPU twins (cpp/kernels/{embedding,rmsnorm,rope,swiglu,adamw}.cc) on random inputs of ragged shapes.
// Outputs that the kernels ADD to are pre-filled with random values; outputs they overwrite are
// pre-filled with a sentinel so that an element the kernel forgets shows up as a mismatch.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "harness.h"
#include "kernels/adamw.h"
#include "kernels/embedding.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/ffn.h"

namespace {

std::string dims(std::initializer_list<int64_t> v) {
  std::string s;
  for (int64_t x : v) s += (s.empty() ? "" : "x") + std::to_string(x);
  return s;
}

// tokens in [0, V) with many repeats: a quarter of them from the 5 smallest ids
std::vector<int32_t> random_tokens(hmdev::Rng& rng, int64_t N, int64_t V) {
  std::vector<int32_t> t((size_t)N);
  for (auto& x : t) x = (int32_t)(rng.below(4) == 0 ? rng.below(5) : rng.below(V));
  return t;
}

constexpr float kSentinel = 12345.f;

}  // namespace

// Gather is a copy: bitwise. Catches wrong row/channel indexing, the float4 path mis-indexing and
// unwritten elements (sentinel). C = 64 also runs on a misaligned output (scalar fallback).
HMT_TEST(embedding_forward) {
  hmdev::Rng rng(101);
  const int64_t V = 259;
  for (int64_t N : {1, 7, 130, 1000})
    for (int64_t C : {13, 64, 257}) {
      const std::string tag = dims({N, C});
      auto tokens = random_tokens(rng, N, V);
      auto wte = rng.normals((size_t)(V * C));
      std::vector<float> want((size_t)(N * C));
      hm::embedding_forward(want.data(), tokens.data(), wte.data(), N, C);
      hmdev::DevBuf<int32_t> dtok(tokens);
      hmdev::DevBuf<float> dwte(wte), dout(std::vector<float>((size_t)(N * C), kSentinel));
      HMC_CHECK(hmc::embedding_forward(dout.p, dtok.p, dwte.p, N, C, nullptr));
      ctx.expect_equal("out " + tag, dout.download(), want);
      if (C % 4 == 0) {  // out + 1 float: not 16-byte aligned
        hmdev::DevBuf<float> dmis(std::vector<float>((size_t)(N * C + 1), kSentinel));
        HMC_CHECK(hmc::embedding_forward(dmis.p + 1, dtok.p, dwte.p, N, C, nullptr));
        auto got = dmis.download();
        ctx.expect(got[0] == kSentinel, "misaligned out: element before the output untouched " + tag);
        ctx.expect_equal("out misaligned " + tag, std::vector<float>(got.begin() + 1, got.end()), want);
      }
    }
}

// The sort must be the stable argsort (checked exactly), and the backward must reproduce the twin's
// sums bit for bit (same additions in the same order onto the same pre-filled dwte). Catches an
// unstable sort, a segment boundary off by one (a row added to the wrong token or twice), and
// overwriting instead of adding to dwte.
HMT_TEST(embedding_backward) {
  hmdev::Rng rng(102);
  const int64_t V = 259;
  for (int64_t N : {1, 7, 130, 1000})
    for (int64_t C : {13, 64, 257}) {
      const std::string tag = dims({N, C});
      auto tokens = random_tokens(rng, N, V);
      auto dout = rng.normals((size_t)(N * C));
      auto dwte0 = rng.normals((size_t)(V * C));
      std::vector<int32_t> want_order((size_t)N);
      std::iota(want_order.begin(), want_order.end(), 0);
      std::stable_sort(want_order.begin(), want_order.end(), [&](int32_t a, int32_t b) { return tokens[a] < tokens[b]; });
      auto want = dwte0;
      hm::embedding_backward(want.data(), dout.data(), tokens.data(), N, C);

      const size_t bytes = hmc::embedding_sort_scratch_bytes(N);
      ctx.expect(bytes > 0, "sort scratch size > 0 " + tag);
      hmdev::DevBuf<char> scratch(bytes);
      hmdev::DevBuf<int32_t> dtok(tokens), dorder((size_t)N);
      hmdev::DevBuf<float> ddout(dout), ddwte(dwte0);
      HMC_CHECK(hmc::embedding_sort_tokens(dorder.p, dtok.p, N, scratch.p, bytes, nullptr));
      auto order = dorder.download();
      ctx.expect(order == want_order, "order = stable argsort of tokens " + tag);
      HMC_CHECK(hmc::embedding_backward(ddwte.p, ddout.p, dtok.p, dorder.p, N, C, nullptr));
      ctx.expect_equal("dwte " + tag, ddwte.download(), want);
    }
}

// Rows scaled by 0.05..3 and eps = 1e-2 on some shapes so that eps's placement matters (eps outside
// the sqrt moves rstd by far more than the tolerance). rstd and out: the row sum of squares is in
// double on both sides (another order), so they differ at most by a float rounding: rtol 1e-6.
HMT_TEST(rmsnorm_forward) {
  hmdev::Rng rng(103);
  for (int64_t N : {1, 7, 130, 1000})
    for (int64_t C : {13, 64, 257}) {
      const std::string tag = dims({N, C});
      const float eps = C == 64 ? 1e-5f : 1e-2f;
      auto x = rng.normals((size_t)(N * C));
      for (int64_t n = 0; n < N; n++) {
        const float sc = 0.05f + 3.f * rng.uniform();
        for (int64_t c = 0; c < C; c++) x[(size_t)(n * C + c)] *= sc;
      }
      auto w = rng.normals((size_t)C);
      std::vector<float> out((size_t)(N * C)), rstd((size_t)N);
      hm::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, eps);
      hmdev::DevBuf<float> dx(x), dw(w), dout(std::vector<float>((size_t)(N * C), kSentinel)),
          drstd(std::vector<float>((size_t)N, kSentinel));
      HMC_CHECK(hmc::rmsnorm_forward(dout.p, drstd.p, dx.p, dw.p, N, C, eps, nullptr));
      ctx.expect_close("rstd " + tag, drstd.download(), rstd, 1e-6, 0);
      ctx.expect_close("out " + tag, dout.download(), out, 1e-6, 1e-7);
    }
}

// dx: the float expression is the twin's; only the double dot product's order differs (at most one
// float rounding of k): rtol 1e-5, atol 1e-6 for cancellation in w*dout - x*k.
// dw: the twin adds N float terms one by one into dw, we add chunk partials: both are float sums of
// the same terms, so the allowed difference scales with sum |terms| (a few float roundings of it):
// atol = 2e-6 * max_c (|dw0[c]| + sum_n |dout x rstd|). Dropping a single row's term is far larger.
// A second run from the same inputs must give the same bits (fixed-order reduction).
HMT_TEST(rmsnorm_backward) {
  hmdev::Rng rng(104);
  for (int64_t N : {1, 7, 130, 1000})
    for (int64_t C : {13, 64, 257}) {
      const std::string tag = dims({N, C});
      auto x = rng.normals((size_t)(N * C));
      auto w = rng.normals((size_t)C);
      auto dy = rng.normals((size_t)(N * C));
      auto dx0 = rng.normals((size_t)(N * C));
      auto dw0 = rng.normals((size_t)C);
      std::vector<float> out((size_t)(N * C)), rstd((size_t)N);
      hm::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5f);
      auto want_dx = dx0, want_dw = dw0;
      hm::rmsnorm_backward(want_dx.data(), want_dw.data(), dy.data(), x.data(), w.data(), rstd.data(), N, C);
      double scale = 0;
      for (int64_t c = 0; c < C; c++) {
        double a = std::fabs(dw0[(size_t)c]);
        for (int64_t n = 0; n < N; n++)
          a += std::fabs((double)dy[(size_t)(n * C + c)] * x[(size_t)(n * C + c)] * rstd[(size_t)n]);
        scale = std::max(scale, a);
      }
      const int64_t sf = hmc::rmsnorm_backward_scratch_floats(N, C);
      ctx.expect(sf > 0, "scratch floats > 0 " + tag);
      hmdev::DevBuf<float> dX(x), dW(w), dDY(dy), dR(rstd), dDX(dx0), dDW(dw0), scratch((size_t)sf);
      HMC_CHECK(hmc::rmsnorm_backward(dDX.p, dDW.p, dDY.p, dX.p, dW.p, dR.p, N, C, scratch.p, nullptr));
      auto got_dx = dDX.download(), got_dw = dDW.download();
      ctx.expect_close("dx " + tag, got_dx, want_dx, 1e-5, 1e-6);
      ctx.expect_close("dw " + tag, got_dw, want_dw, 1e-6, 2e-6 * scale);
      dDX.upload(dx0);
      dDW.upload(dw0);
      HMC_CHECK(hmc::rmsnorm_backward(dDX.p, dDW.p, dDY.p, dX.p, dW.p, dR.p, N, C, scratch.p, nullptr));
      ctx.expect_equal("dx rerun " + tag, dDX.download(), got_dx);
      ctx.expect_equal("dw rerun " + tag, dDW.download(), got_dw);
    }
}

// Strided rows (ld > H*hd): the twin has no ld, so it runs on a packed copy and the result is
// unpacked into the strided layout; the gap floats must come back untouched. cos/sin are rounded
// from double on both sides (rare 1-ulp differences): rtol 1e-6, atol 1e-6 on O(1) values. Catches
// a wrong pairing, angle formula (hd vs hd/2), sign of the backward, ld ignored, gap written.
HMT_TEST(rope) {
  hmdev::Rng rng(105);
  struct Case {
    int64_t N, H, hd, gap;
    double base;
  };
  const Case cases[] = {{1, 1, 2, 0, 1e4}, {7, 3, 6, 5, 1e4}, {130, 5, 10, 0, 5e5}, {1000, 4, 64, 3, 1e4},
                        {33, 2, 8, 1, 1e4}, {64, 3, 7, 2, 1e4}};
  for (const Case& cs : cases)
    for (int dir = 0; dir < 2; dir++) {
      const int64_t N = cs.N, H = cs.H, hd = cs.hd, ld = H * hd + cs.gap;
      const std::string tag = std::string(dir ? "backward " : "forward ") + dims({N, H, hd, ld});
      std::vector<int32_t> pos((size_t)N);
      for (int64_t n = 0; n < N; n++) pos[(size_t)n] = (int32_t)(n % 3 == 0 ? rng.below(4096) : n % 97);
      auto x = rng.normals((size_t)(N * ld));
      std::vector<float> packed((size_t)(N * H * hd));
      for (int64_t n = 0; n < N; n++)
        std::memcpy(&packed[(size_t)(n * H * hd)], &x[(size_t)(n * ld)], sizeof(float) * H * hd);
      if (dir == 0) hm::rope_forward(packed.data(), pos.data(), N, H, hd, cs.base);
      else hm::rope_backward(packed.data(), pos.data(), N, H, hd, cs.base);
      auto want = x;
      for (int64_t n = 0; n < N; n++)
        std::memcpy(&want[(size_t)(n * ld)], &packed[(size_t)(n * H * hd)], sizeof(float) * H * hd);
      hmdev::DevBuf<float> dx(x);
      hmdev::DevBuf<int32_t> dpos(pos);
      if (dir == 0) HMC_CHECK(hmc::rope_forward(dx.p, dpos.p, N, H, hd, ld, cs.base, nullptr));
      else HMC_CHECK(hmc::rope_backward(dx.p, dpos.p, N, H, hd, ld, cs.base, nullptr));
      ctx.expect_close(tag, dx.download(), want, 1e-6, 1e-6);
    }
}

// expf differs from the CPU's by an ulp or two, so s may differ by ~1 ulp (6e-8 near 1): h and dup
// have no cancellation (rtol 2e-6, atol 1e-6); in dgate, 1 - s cancels and the ulp of s is scaled
// by |dh * up * gate| (up to ~30 here), hence atol 1e-5 there. A wrong derivative is off by O(0.1).
// Gates up to ~±10 reach both saturated ends of the sigmoid.
HMT_TEST(swiglu) {
  hmdev::Rng rng(106);
  for (int64_t n : {1, 7, 1000, 4099}) {
    const std::string tag = dims({n});
    auto gate = rng.normals((size_t)n, 3.f), up = rng.normals((size_t)n), dh = rng.normals((size_t)n);
    auto dg0 = rng.normals((size_t)n), du0 = rng.normals((size_t)n);
    std::vector<float> h((size_t)n);
    hm::swiglu_forward(h.data(), gate.data(), up.data(), n);
    auto dg = dg0, du = du0;
    hm::swiglu_backward(dg.data(), du.data(), dh.data(), gate.data(), up.data(), n);
    hmdev::DevBuf<float> dG(gate), dU(up), dDH(dh), dH(std::vector<float>((size_t)n, kSentinel)), dDG(dg0), dDU(du0);
    HMC_CHECK(hmc::swiglu_forward(dH.p, dG.p, dU.p, n, nullptr));
    HMC_CHECK(hmc::swiglu_backward(dDG.p, dDU.p, dDH.p, dG.p, dU.p, n, nullptr));
    ctx.expect_close("h " + tag, dH.download(), h, 2e-6, 1e-6);
    ctx.expect_close("dgate " + tag, dDG.download(), dg, 2e-6, 1e-5);
    ctx.expect_close("dup " + tag, dDU.download(), du, 2e-6, 1e-6);
  }
}

// Hyperparameters are exact floats, so the twin's double-derived constants equal ours and every
// operation is the same IEEE float op in the same order: the results should be bit-identical.
// We allow ~2 ulp (rtol 2.5e-7) so that an unforeseen rounding detail does not fail the run, which
// still catches a wrong bias correction, a missing grad_scale or weight decay, or m/v not stored.
HMT_TEST(adamw_update) {
  hmdev::Rng rng(107);
  const float lr = 1e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, gs = 0.5f;
  for (int64_t n : {1, 7, 1000, 100003})
    for (float wd : {0.f, 0.1f})
      for (int64_t step : {1, 1000}) {
        const std::string tag = dims({n, step}) + (wd > 0 ? " wd" : "");
        auto p = rng.normals((size_t)n), g = rng.normals((size_t)n), m = rng.normals((size_t)n, 0.1f);
        auto v = rng.normals((size_t)n, 0.1f);
        for (auto& x : v) x = x * x;
        hm::AdamWHyper h{(double)lr, (double)b1, (double)b2, (double)eps, step, (double)gs};
        auto wp = p, wm = m, wv = v;
        hm::adamw_update(wp.data(), g.data(), wm.data(), wv.data(), n, wd, h);
        hmdev::DevBuf<float> dP(p), dG(g), dM(m), dV(v);
        HMC_CHECK(hmc::adamw_update(dP.p, dG.p, dM.p, dV.p, n, hm::adamw_consts(h, wd), nullptr));
        ctx.expect_close("p " + tag, dP.download(), wp, 2.5e-7, 1e-12);
        ctx.expect_close("m " + tag, dM.download(), wm, 2.5e-7, 1e-12);
        ctx.expect_close("v " + tag, dV.download(), wv, 2.5e-7, 1e-12);
      }
}

// Double sums in another order: sqrt(ours) vs hm::global_norm to 1e-12 relative. Reruns must be
// bit-identical; n = 0 must write 0.
HMT_TEST(global_sumsq) {
  hmdev::Rng rng(108);
  for (int64_t n : {0, 1, 7, 1000, (1 << 20) + 3, 5000011}) {
    const std::string tag = dims({n});
    auto g = rng.normals((size_t)n);
    const int64_t sd = hmc::global_norm_scratch_doubles(n);
    ctx.expect(sd >= 1, "scratch doubles >= 1 " + tag);
    hmdev::DevBuf<float> dG(g);
    hmdev::DevBuf<double> scratch((size_t)sd), out(std::vector<double>{7.0});
    HMC_CHECK(hmc::global_sumsq(out.p, dG.p, n, scratch.p, nullptr));
    const double first = out.download()[0];
    if (n == 0) {
      ctx.expect(first == 0.0, "sum of squares of nothing is 0");
      continue;
    }
    ctx.expect_close("norm " + tag, std::vector<double>{std::sqrt(first)},
                     std::vector<double>{hm::global_norm(g.data(), n)}, 1e-12, 0);
    HMC_CHECK(hmc::global_sumsq(out.p, dG.p, n, scratch.p, nullptr));
    ctx.expect(out.download()[0] == first, "rerun is bit-identical " + tag);
  }
}

// Argument checks: zero sizes are no-ops returning 0 (even with null pointers), inconsistent or
// negative sizes and missing pointers return cudaErrorInvalidValue.
HMT_TEST(elementwise_args) {
  const int inv = (int)cudaErrorInvalidValue;
  float* f = reinterpret_cast<float*>(16);  // never dereferenced: every call below returns before launching
  int32_t* i = reinterpret_cast<int32_t*>(16);
  ctx.expect(hmc::embedding_forward(nullptr, nullptr, nullptr, 0, 5, nullptr) == 0, "embedding N=0 no-op");
  ctx.expect(hmc::embedding_forward(nullptr, i, f, 3, 5, nullptr) == inv, "embedding null out");
  ctx.expect(hmc::embedding_forward(f, i, f, -1, 5, nullptr) == inv, "embedding N<0");
  ctx.expect(hmc::embedding_sort_tokens(i, i, 10, f, 1, nullptr) == inv, "sort scratch too small");
  ctx.expect(hmc::rmsnorm_forward(f, f, f, nullptr, 2, 3, 1e-5f, nullptr) == inv, "rmsnorm null w");
  ctx.expect(hmc::rmsnorm_backward(f, f, f, f, f, f, 2, 3, nullptr, nullptr) == inv, "rmsnorm null scratch");
  ctx.expect(hmc::rmsnorm_backward_scratch_floats(0, 3) == 0, "rmsnorm scratch N=0");
  ctx.expect(hmc::rope_forward(f, i, 2, 3, 4, 11, 1e4, nullptr) == inv, "rope ld < H*hd");
  ctx.expect(hmc::rope_backward(nullptr, nullptr, 0, 3, 4, 12, 1e4, nullptr) == 0, "rope N=0 no-op");
  ctx.expect(hmc::swiglu_backward(f, nullptr, f, f, f, 4, nullptr) == inv, "swiglu null dup");
  ctx.expect(hmc::adamw_update(f, f, f, f, -3, hm::AdamWConsts{}, nullptr) == inv, "adamw n<0");
  ctx.expect(hmc::global_sumsq(nullptr, f, 4, nullptr, nullptr) == inv, "sumsq null out");
}
