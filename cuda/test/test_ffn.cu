// test_ffn.cu — the anchor SwiGLU FFN (cuda/kernels/ffn.cu) and the FFN memory units
// (cuda/kernels/ffn_memory.cu) against hm::ffn_forward / ffn_backward (cpp/kernels/ffn.cc) and
// hm::ffn_memory_forward / backward (cpp/kernels/ffn_memory.cc), in all three GEMM modes.
//
// Tolerance: rtol = hmt::gemm_rtol(mode) and atol = 3 rtol * rms(the reference's increment), where the
// increment is the output minus its pre-fill (or the output itself where it is overwritten). The
// weights are scaled by 1/sqrt(fan-in) so every intermediate is O(1); a chain of two or three
// products then carries a few roundings of u (see test_gemm.cu) relative to the typical output
// magnitude, well below 3 rtol = ~25 u, while any misplaced row, unit or tile gives an error of the
// order of the rms itself.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "harness.h"
#include "kernels/ffn_memory.h"
#include "kernels/ffn.h"

namespace {

const hmc::GemmMode kModes[] = {hmc::GemmMode::FP32, hmc::GemmMode::TF32, hmc::GemmMode::BF16};
const char* mode_name(hmc::GemmMode m) {
  return m == hmc::GemmMode::FP32 ? "fp32" : m == hmc::GemmMode::TF32 ? "tf32" : "bf16";
}
std::string dims(std::initializer_list<int64_t> v) {
  std::string s;
  for (int64_t x : v) s += (s.empty() ? "" : "x") + std::to_string(x);
  return s;
}
// rms of want - base over the elements where they differ (base = nullptr: rms of want)
double rms_inc(const std::vector<float>& want, const std::vector<float>* base) {
  double s = 0;
  size_t n = 0;
  for (size_t i = 0; i < want.size(); i++) {
    const double d = (double)want[i] - (base ? (double)(*base)[i] : 0.0);
    if (d != 0.0) {
      s += d * d;
      n++;
    }
  }
  return n ? std::sqrt(s / (double)n) : 1e-30;
}
void check(hmt::Ctx& ctx, hmc::GemmMode mode, const std::string& what, const std::vector<float>& got,
           const std::vector<float>& want, const std::vector<float>* base) {
  const double rtol = hmt::gemm_rtol(mode);
  ctx.expect_close(std::string(mode_name(mode)) + " " + what, got, want, rtol, 3 * rtol * rms_inc(want, base));
}
std::vector<float> scaled_normals(hmdev::Rng& rng, size_t n, double fan_in) {
  return rng.normals(n, (float)(1.0 / std::sqrt(fan_in)));
}
constexpr float kSentinel = 12345.f;

}  // namespace

// Forward (y, gate, up, hidden written over a sentinel) and backward (dx, dW1, dW2, dW3 added to
// random pre-fills) for ragged N, C, F: 1 row, odd C = 13, F not a multiple of the 64-unit gate/up
// tile or the 128-wide tiles. Catches: gate/up interleave mistakes (gate and up swapped or from the
// wrong unit), SwiGLU forward/backward formula errors, a missed row/unit tile, += vs = semantics.
HMT_TEST(ffn_forward_backward) {
  hmdev::Rng rng(8101);
  const int64_t shapes[][3] = {{1, 13, 7}, {37, 64, 96}, {130, 128, 300}, {257, 96, 384}};
  for (auto& sh : shapes) {
    const int64_t N = sh[0], C = sh[1], F = sh[2];
    const std::string tag = dims({N, C, F});
    auto x = rng.normals((size_t)(N * C));
    auto w1 = scaled_normals(rng, (size_t)(F * C), (double)C), w2 = scaled_normals(rng, (size_t)(F * C), (double)C);
    auto w3 = scaled_normals(rng, (size_t)(C * F), (double)F);
    auto dy = rng.normals((size_t)(N * C));
    auto dx0 = rng.normals((size_t)(N * C)), dw10 = rng.normals((size_t)(F * C)), dw20 = rng.normals((size_t)(F * C)),
         dw30 = rng.normals((size_t)(C * F));
    std::vector<float> y((size_t)(N * C)), gate((size_t)(N * F)), up((size_t)(N * F)), hidden((size_t)(N * F));
    hm::ffn_forward(y.data(), gate.data(), up.data(), hidden.data(), x.data(), w1.data(), w2.data(), w3.data(), N, C, F);
    std::vector<float> dx = dx0, dw1 = dw10, dw2 = dw20, dw3 = dw30, sc((size_t)(4 * N * F));
    hm::ffn_backward(dx.data(), dw1.data(), dw2.data(), dw3.data(), dy.data(), x.data(), gate.data(), up.data(),
                     w1.data(), w2.data(), w3.data(), N, C, F, sc.data(), sc.data() + N * F, sc.data() + 2 * N * F,
                     sc.data() + 3 * N * F);

    hmdev::DevBuf<float> dX(x), dW1(w1), dW2(w2), dW3(w3), dDY(dy), dGateIn(gate), dUpIn(up);
    for (hmc::GemmMode mode : kModes) {
      const std::vector<float> sent_nc((size_t)(N * C), kSentinel), sent_nf((size_t)(N * F), kSentinel);
      hmdev::DevBuf<float> dY(sent_nc), dG(sent_nf), dU(sent_nf), dH(sent_nf);
      HMC_CHECK(hmc::ffn_forward(mode, dY.p, dG.p, dU.p, dH.p, dX.p, dW1.p, dW2.p, dW3.p, N, C, F, nullptr));
      check(ctx, mode, "y " + tag, dY.download(), y, nullptr);
      check(ctx, mode, "gate " + tag, dG.download(), gate, nullptr);
      check(ctx, mode, "up " + tag, dU.download(), up, nullptr);
      check(ctx, mode, "hidden " + tag, dH.download(), hidden, nullptr);

      // backward from the reference's gate/up, so only the backward itself is compared
      hmdev::DevBuf<float> dDX(dx0), dDW1(dw10), dDW2(dw20), dDW3(dw30), dSc((size_t)(4 * N * F));
      HMC_CHECK(hmc::ffn_backward(mode, dDX.p, dDW1.p, dDW2.p, dDW3.p, dDY.p, dX.p, dGateIn.p, dUpIn.p, dW1.p, dW2.p,
                               dW3.p, N, C, F, dSc.p, nullptr));
      check(ctx, mode, "dx " + tag, dDX.download(), dx, &dx0);
      check(ctx, mode, "dw1 " + tag, dDW1.download(), dw1, &dw10);
      check(ctx, mode, "dw2 " + tag, dDW2.download(), dw2, &dw20);
      check(ctx, mode, "dw3 " + tag, dDW3.download(), dw3, &dw30);
    }
  }
}

namespace {

// One ffn_memory case: rows laid out as gaps (no memory) and groups; S slots, slot 3 never used.
// Checks forward (y +=, gate_m / up_m written on group rows) and backward (dx +=, dlayer_w +=), and
// that rows without memory, the unused slot and the padding between slots stay bit-identical.
void memory_case(hmt::Ctx& ctx, hmdev::Rng& rng, const std::vector<hm::MemoryGroup>& groups, int64_t N, int64_t C,
                 int64_t R, const std::vector<hmc::GemmMode>& modes) {
  const int64_t S = 4, pad = C % 4 == 0 ? 4 : 1;  // C % 4 == 0: 16-byte rows (vector loads); else odd strides
  const int64_t slot_stride = 3 * R * C + pad;
  const std::string tag = dims({N, C, R});
  std::vector<char> has_mem((size_t)N, 0);
  for (auto& g : groups)
    for (int64_t r = g.row0; r < g.row0 + g.rows; r++) has_mem[(size_t)r] = 1;

  std::vector<float> lw((size_t)(S * slot_stride));
  for (int64_t s = 0; s < S; s++)
    for (int64_t i = 0; i < slot_stride; i++)
      lw[(size_t)(s * slot_stride + i)] = rng.normal() / std::sqrt((float)(i < 2 * R * C ? C : R));
  auto x = rng.normals((size_t)(N * C)), dy = rng.normals((size_t)(N * C));
  auto y0 = rng.normals((size_t)(N * C)), gm0 = rng.normals((size_t)(N * R)), um0 = rng.normals((size_t)(N * R));
  auto dx0 = rng.normals((size_t)(N * C)), dlw0 = rng.normals((size_t)(S * slot_stride));

  std::vector<float> y = y0, gm = gm0, um = um0, hidden((size_t)(N * R));
  hm::ffn_memory_forward(y.data(), gm.data(), um.data(), hidden.data(), x.data(), lw.data(), slot_stride, groups, C, R);
  std::vector<float> dx = dx0, dlw = dlw0, sc((size_t)(4 * N * R));
  hm::ffn_memory_backward(dx.data(), dlw.data(), dy.data(), x.data(), gm.data(), um.data(), lw.data(), slot_stride,
                          groups, C, R, sc.data());

  const std::vector<hm::MemoryGroup>& hg = groups;  // the same type on both sides (contract.h)
  hmdev::DevBuf<hm::MemoryGroup> dGroups(hg);
  hmdev::DevBuf<float> dX(x), dDY(dy), dLW(lw), dGM(gm), dUM(um);
  const int64_t G = (int64_t)hg.size();
  // gate_m / up_m: overwritten on group rows, so the tolerance scale is that of the group rows
  std::vector<float> gm_grp, um_grp;
  for (int64_t r = 0; r < N; r++)
    if (has_mem[(size_t)r])
      for (int64_t u = 0; u < R; u++) {
        gm_grp.push_back(gm[(size_t)(r * R + u)]);
        um_grp.push_back(um[(size_t)(r * R + u)]);
      }
  for (hmc::GemmMode mode : modes) {
    const double rtol = hmt::gemm_rtol(mode);
    hmdev::DevBuf<float> dY(y0), dG(gm0), dU(um0);
    HMC_CHECK(hmc::ffn_memory_forward(mode, dY.p, dG.p, dU.p, dX.p, dLW.p, slot_stride, dGroups.p, G, N, C, R, nullptr));
    auto gy = dY.download(), gg = dG.download(), gu = dU.download();
    check(ctx, mode, "mem y " + tag, gy, y, &y0);
    ctx.expect_close(std::string(mode_name(mode)) + " mem gate_m " + tag, gg, gm, rtol, 3 * rtol * rms_inc(gm_grp, nullptr));
    ctx.expect_close(std::string(mode_name(mode)) + " mem up_m " + tag, gu, um, rtol, 3 * rtol * rms_inc(um_grp, nullptr));
    bool untouched = true;
    for (int64_t r = 0; r < N; r++)
      if (!has_mem[(size_t)r]) {
        untouched &= std::memcmp(&gy[(size_t)(r * C)], &y0[(size_t)(r * C)], sizeof(float) * C) == 0;
        untouched &= std::memcmp(&gg[(size_t)(r * R)], &gm0[(size_t)(r * R)], sizeof(float) * R) == 0;
        untouched &= std::memcmp(&gu[(size_t)(r * R)], &um0[(size_t)(r * R)], sizeof(float) * R) == 0;
      }
    ctx.expect(untouched, std::string(mode_name(mode)) + " mem forward: rows without memory untouched " + tag);

    hmdev::DevBuf<float> dDX(dx0), dDLW(dlw0), dSc((size_t)hmc::ffn_memory_backward_scratch_floats(N, R));
    HMC_CHECK(hmc::ffn_memory_backward(mode, dDX.p, dDLW.p, dDY.p, dX.p, dGM.p, dUM.p, dLW.p, slot_stride, dGroups.p, G, N,
                                    C, R, dSc.p, nullptr));
    auto gdx = dDX.download(), gdlw = dDLW.download();
    check(ctx, mode, "mem dx " + tag, gdx, dx, &dx0);
    // each of the three (R, C) blocks of each slot on its own scale (dWd and dWg/dWu differ)
    for (int64_t s = 0; s < 3; s++)
      for (int64_t b = 0; b < 3; b++) {
        const size_t o = (size_t)(s * slot_stride + b * R * C), n = (size_t)(R * C);
        std::vector<float> g(gdlw.begin() + o, gdlw.begin() + o + n), w(dlw.begin() + o, dlw.begin() + o + n),
            w0(dlw0.begin() + o, dlw0.begin() + o + n);
        check(ctx, mode, "mem dW slot " + std::to_string(s) + " block " + std::to_string(b) + " " + tag, g, w, &w0);
      }
    untouched = true;
    for (int64_t r = 0; r < N; r++)
      if (!has_mem[(size_t)r])
        untouched &= std::memcmp(&gdx[(size_t)(r * C)], &dx0[(size_t)(r * C)], sizeof(float) * C) == 0;
    for (int64_t s = 0; s < S; s++) {  // padding after each slot's 3RC floats, and all of slot 3
      const size_t o = (size_t)(s * slot_stride + (s == 3 ? 0 : 3 * R * C)), e = (size_t)((s + 1) * slot_stride);
      untouched &= std::memcmp(&gdlw[o], &dlw0[o], sizeof(float) * (e - o)) == 0;
    }
    ctx.expect(untouched, std::string(mode_name(mode)) + " mem backward: rows without memory, unused slot untouched " + tag);
  }
}

}  // namespace

// Ragged groups of 1, 7, 64 and 130 rows between rows without memory; slot 2 used by two
// non-adjacent groups (its dW must be the sum of both, no lost update); R in {3, 64, 96} (3: one
// partial unit chunk; 96: a full and a partial chunk of 64), C in {13, 128, 300} (13: scalar loads,
// 300: three column tiles, split over blocks). Catches: wrong group/tile lookup, a group's rows
// leaking into gap rows, unit-chunk tails, the shared-slot race, gate/up/down block offsets.
HMT_TEST(ffn_memory_forward_backward) {
  hmdev::Rng rng(8201);
  // rows: gap 3 | 1 row slot 2 | 7 rows slot 0 | gap 5 | 64 rows slot 2 | 130 rows slot 1 | gap 2
  const std::vector<hm::MemoryGroup> groups = {{3, 1, 2}, {4, 7, 0}, {16, 64, 2}, {80, 130, 1}};
  const int64_t N = 212;
  const std::vector<hmc::GemmMode> modes(std::begin(kModes), std::end(kModes));
  for (int64_t R : {3, 64, 96})
    for (int64_t C : {13, 128, 300}) memory_case(ctx, rng, groups, N, C, R, modes);
}

// Many rows (> 128 row tiles), so the fused forward gives each block several column tiles of y
// (the strided column loop) with fewer column splits than tiles; R = 3 keeps the reference cheap.
// Also: G = 0 and N = 0 are no-ops.
HMT_TEST(ffn_memory_many_rows) {
  hmdev::Rng rng(8202);
  const std::vector<hm::MemoryGroup> groups = {{0, 6000, 1}, {6100, 9000, 0}, {15100, 2200, 1}};
  const std::vector<hmc::GemmMode> modes(std::begin(kModes), std::end(kModes));
  memory_case(ctx, rng, groups, 17400, 260, 3, modes);
  ctx.expect(hmc::ffn_memory_forward(hmc::GemmMode::FP32, nullptr, nullptr, nullptr, nullptr, nullptr, 0, nullptr, 0,
                                     10, 8, 4, nullptr) == 0,
             "G = 0 is a no-op");
  ctx.expect(hmc::ffn_memory_backward(hmc::GemmMode::FP32, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                      0, nullptr, 3, 0, 8, 4, nullptr, nullptr) == 0,
             "N = 0 is a no-op");
}
