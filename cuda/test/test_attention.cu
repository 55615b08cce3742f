// test_attention.cu — hmc::attention_forward / attention_backward (cuda/kernels/attention.cu) against
// their CPU twins hm::attention_forward / attention_backward (cpp/kernels/attention.cc).
//
// Every case runs forward and backward on the same random inputs on both sides and compares out, lse
// and the += gradients dq, dk, dv (pre-filled with random values). Layouts: contiguous (separate q, k,
// v buffers, ld = H*hd) and interleaved (q, k, v side by side in one qkv buffer, ld = 3*H*hd + 3: odd,
// so rows are not 16-byte aligned, and 3 pad columns per row that nobody may touch). doc_start: null
// (plain causal) or packed documents of ragged lengths that cross the kernels' 32/64-row tiles.
//
// Tolerance (fp32 on both sides, different summation order: the CPU GEMM's k blocking and one softmax max on
// the CPU; our tiles, FMA chains and online-softmax rescaling on the GPU): rtol 1e-4, and atol
// 1e-5 * max(1, max|want|). The absolute part is scaled by the tensor's magnitude because an element's
// rounding error is a few ulp of the terms that were summed into it (which are of the tensor's scale),
// not of the element itself: a near-cancelling sum (an out entry close to 0, a gradient entry where
// P (dP - D) cancels) carries an error far above 1e-4 of its own value.
#include <cstring>

#include "harness.h"
#include "kernels/attention.h"

namespace {

constexpr float kSentinel = -777.25f;  // fills the pad columns of interleaved buffers

struct Case {
  int64_t B, T, H, hd;
  bool interleaved, packed;
  float qscale = 1.f;  // > 1: sharp softmax (large scores), tests the running max
  double rtol = 1e-4, atol_rel = 1e-5;
};

std::string label(const Case& c) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "B%lld_T%lld_H%lld_hd%lld_%s_%s%s", (long long)c.B, (long long)c.T, (long long)c.H,
                (long long)c.hd, c.interleaved ? "qkv" : "sep", c.packed ? "docs" : "causal",
                c.qscale != 1.f ? "_sharp" : "");
  return buf;
}

// Packed documents: lengths cycle through {1, 5, 40, 97} starting at a different place in each batch
// row (the last document is cut at T). doc_start holds positions inside the row, as the twin reads it.
std::vector<int32_t> make_doc_start(int64_t B, int64_t T) {
  static const int64_t lens[4] = {1, 5, 40, 97};
  std::vector<int32_t> ds((size_t)(B * T));
  for (int64_t b = 0; b < B; b++) {
    int64_t start = 0, li = b % 4;
    while (start < T) {
      const int64_t end = std::min(T, start + lens[li]);
      for (int64_t t = start; t < end; t++) ds[(size_t)(b * T + t)] = (int32_t)start;
      start = end;
      li = (li + 1) % 4;
    }
  }
  return ds;
}

// max |x| over the first `cols` columns of each row of a (rows, ld) buffer
double head_scale(const std::vector<float>& x, int64_t rows, int64_t ld, int64_t cols) {
  double m = 1.0;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) m = std::max(m, (double)std::fabs(x[(size_t)(r * ld + c)]));
  return m;
}

// true if every pad column [c0, ld) of every row still holds `want` bit for bit
bool pads_hold(const std::vector<float>& x, const std::vector<float>& want, int64_t rows, int64_t ld, int64_t c0) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = c0; c < ld; c++) {
      const size_t i = (size_t)(r * ld + c);
      if (std::memcmp(&x[i], &want[i], sizeof(float)) != 0) return false;
    }
  return true;
}

void run_case(hmt::Ctx& ctx, const Case& c, uint64_t seed, const std::vector<int32_t>* ds_override = nullptr) {
  const std::string L = label(c);
  const int64_t B = c.B, T = c.T, H = c.H, hd = c.hd, D = H * hd, N = B * T;
  const int64_t ld = c.interleaved ? 3 * D + 3 : D;
  // q, k, v offsets inside the one input buffer (and dq, dk, dv inside the gradient buffer)
  const int64_t qo = 0, ko = c.interleaved ? D : N * D, vo = c.interleaved ? 2 * D : 2 * N * D;
  const size_t qkv_n = (size_t)(c.interleaved ? N * ld : 3 * N * D), row_n = (size_t)(N * ld);

  hmdev::Rng rng(seed);
  std::vector<float> qkv = rng.normals(qkv_n);
  if (c.qscale != 1.f)
    for (int64_t n = 0; n < N; n++)
      for (int64_t j = 0; j < D; j++) qkv[(size_t)(qo + n * ld + j)] *= c.qscale;
  std::vector<float> dout = rng.normals(row_n);
  std::vector<float> dqkv0 = rng.normals(qkv_n);  // += target
  std::vector<int32_t> ds;
  if (ds_override) ds = *ds_override;
  else if (c.packed) ds = make_doc_start(B, T);
  const int32_t* ds_h = ds.empty() ? nullptr : ds.data();

  // ---- forward ----
  std::vector<float> out_cpu(row_n, kSentinel), lse_cpu((size_t)(B * H * T), 0.f);
  hm::attention_forward(out_cpu.data(), lse_cpu.data(), qkv.data() + qo, qkv.data() + ko, qkv.data() + vo, ds_h, B, T,
                        H, hd, ld);

  hmdev::DevBuf<float> d_qkv(qkv), d_out(std::vector<float>(row_n, kSentinel)), d_lse((size_t)(B * H * T));
  hmdev::DevBuf<int32_t> d_ds(ds);
  const int32_t* ds_d = ds.empty() ? nullptr : d_ds.p;
  HMC_CHECK(hmc::attention_forward(d_out.p, d_lse.p, d_qkv.p + qo, d_qkv.p + ko, d_qkv.p + vo, ds_d, B, T, H, hd, ld,
                                nullptr));
  std::vector<float> out_gpu = d_out.download(), lse_gpu = d_lse.download();
  const std::vector<float> lse_in = lse_cpu;  // the backward's input (before the -inf edit below)

  // rows without any key (only with a hand-made doc_start): lse = -inf on both sides; compare as 0
  for (size_t i = 0; i < lse_cpu.size(); i++)
    if (std::isinf(lse_cpu[i]) && lse_cpu[i] < 0) {
      ctx.expect(std::isinf(lse_gpu[i]) && lse_gpu[i] < 0, L + " lse of a query with no key is -inf");
      lse_cpu[i] = lse_gpu[i] = 0.f;
    }
  ctx.expect_close(L + " out", out_gpu, out_cpu, c.rtol, c.atol_rel * head_scale(out_cpu, N, ld, D));
  const int64_t nl = (int64_t)lse_cpu.size();
  ctx.expect_close(L + " lse", lse_gpu, lse_cpu, c.rtol, c.atol_rel * head_scale(lse_cpu, 1, nl, nl));
  if (c.interleaved)  // the forward writes only its H*hd columns of each out row
    ctx.expect(pads_hold(out_gpu, std::vector<float>(row_n, kSentinel), N, ld, D), L + " out pad columns untouched");

  // ---- backward (both sides start from the CPU's out and lse, so this checks the backward alone) ----
  std::vector<float> dqkv_cpu = dqkv0;
  hm::attention_backward(dqkv_cpu.data() + qo, dqkv_cpu.data() + ko, dqkv_cpu.data() + vo, dout.data(), qkv.data() + qo,
                         qkv.data() + ko, qkv.data() + vo, out_cpu.data(), lse_in.data(), ds_h, B, T, H, hd, ld);

  hmdev::DevBuf<float> d_dout(dout), d_outin(out_cpu), d_lsein(lse_in), d_dqkv(dqkv0);
  hmdev::DevBuf<float> d_scratch((size_t)hmc::attention_backward_scratch_floats(B, T, H));
  auto backward = [&]() {
    HMC_CHECK(hmc::attention_backward(d_dqkv.p + qo, d_dqkv.p + ko, d_dqkv.p + vo, d_dout.p, d_qkv.p + qo, d_qkv.p + ko,
                                   d_qkv.p + vo, d_outin.p, d_lsein.p, ds_d, B, T, H, hd, ld, d_scratch.p, nullptr));
  };
  backward();
  std::vector<float> dqkv_gpu = d_dqkv.download();
  const double gscale = [&] {
    double m = 1.0;
    for (float x : dqkv_cpu) m = std::max(m, (double)std::fabs(x));
    return m;
  }();
  // the three gradients compared separately (a wrong one is named); each is (N, D) at stride ld
  auto part = [&](const std::vector<float>& buf, int64_t off) {
    std::vector<float> p((size_t)(N * D));
    for (int64_t n = 0; n < N; n++)
      for (int64_t j = 0; j < D; j++) p[(size_t)(n * D + j)] = buf[(size_t)(off + n * ld + j)];
    return p;
  };
  const double gatol = c.atol_rel * gscale;
  ctx.expect_close(L + " dq", part(dqkv_gpu, qo), part(dqkv_cpu, qo), c.rtol, gatol);
  ctx.expect_close(L + " dk", part(dqkv_gpu, ko), part(dqkv_cpu, ko), c.rtol, gatol);
  ctx.expect_close(L + " dv", part(dqkv_gpu, vo), part(dqkv_cpu, vo), c.rtol, gatol);
  if (c.interleaved)  // the 3 pad columns after dv keep their pre-filled values bit for bit
    ctx.expect(pads_hold(dqkv_gpu, dqkv0, N, ld, 3 * D), L + " dqkv pad columns untouched");

  // deterministic: the same backward from the same pre-fill gives the same bits
  d_dqkv.upload(dqkv0);
  backward();
  ctx.expect_equal(L + " backward bitwise repeatable", d_dqkv.download(), dqkv_gpu);
}

// Shapes that catch tiling edges: a 1-token sequence, odd T and H, T not a multiple of any tile (33, 130,
// 257 = 4*64+1), hd 8..128 and a 12-head case.
const int64_t kShapes[][4] = {{1, 1, 1, 8}, {2, 7, 3, 16}, {1, 33, 2, 64}, {2, 130, 4, 32}, {1, 257, 2, 128}, {1, 64, 12, 64}};

void run_shapes(hmt::Ctx& ctx, bool interleaved, bool packed, uint64_t seed) {
  for (const auto& s : kShapes) {
    Case c{s[0], s[1], s[2], s[3], interleaved, packed};
    run_case(ctx, c, seed++);
  }
}

}  // namespace

HMT_TEST(attention_sep_causal) { run_shapes(ctx, false, false, 100); }
HMT_TEST(attention_sep_docs) { run_shapes(ctx, false, true, 200); }
HMT_TEST(attention_qkv_causal) { run_shapes(ctx, true, false, 300); }
HMT_TEST(attention_qkv_docs) { run_shapes(ctx, true, true, 400); }

// head dims off the templated sizes (the zero-padded generic path): tiny, odd, 24, 48, 100
HMT_TEST(attention_odd_hd) {
  uint64_t seed = 500;
  for (int64_t hd : {2, 5, 24, 48, 100}) {
    run_case(ctx, Case{2, 70, 2, hd, true, true}, seed++);
    run_case(ctx, Case{1, 19, 3, hd, false, false}, seed++);
  }
}

// Large scores (q scaled by 20: scores of std ~20, maxima ~60-80): exp without the running max would
// overflow or lose everything. An fp32 score s carries an absolute error ~|s| * 1e-7 and exp turns it
// into a relative error of p of the same size, so the tolerance is 10x looser than the default.
HMT_TEST(attention_sharp) {
  uint64_t seed = 600;
  for (bool inter : {false, true}) {
    Case c{2, 130, 4, 32, inter, true, 20.f, 1e-3, 1e-4};
    run_case(ctx, c, seed++);
    Case c2{1, 100, 2, 128, inter, false, 20.f, 1e-3, 1e-4};
    run_case(ctx, c2, seed++);
  }
}

// A query whose doc_start lies after it (cannot happen with real packed documents) has no key: both
// sides give out = 0, lse = -inf and no gradient from it. The rows around it are ordinary.
HMT_TEST(attention_query_without_keys) {
  const int64_t T = 20;
  std::vector<int32_t> ds((size_t)T, 0);
  for (int64_t t = 10; t < T; t++) ds[(size_t)t] = 10;
  ds[7] = 8;  // row 7: no key
  run_case(ctx, Case{1, T, 2, 16, false, true}, 700, &ds);
}

HMT_TEST(attention_arguments) {
  const int bad = (int)cudaErrorInvalidValue;
  hmdev::DevBuf<float> buf(4 * 8 * 2 * 16 * 3), lse(64), scratch(64);
  float* p = buf.p;
  // zero sizes are no-ops, even with null pointers
  ctx.expect(hmc::attention_forward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 8, 2, 16, 32, nullptr) == 0,
             "B = 0 is a no-op");
  ctx.expect(hmc::attention_backward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                     nullptr, 1, 0, 2, 16, 32, nullptr, nullptr) == 0,
             "T = 0 is a no-op");
  ctx.expect(hmc::attention_forward(p, lse.p, p, p, p, nullptr, -1, 8, 2, 16, 32, nullptr) == bad, "B < 0");
  ctx.expect(hmc::attention_forward(p, lse.p, p, p, p, nullptr, 1, 8, 2, 129, 258, nullptr) == bad, "hd > 128");
  ctx.expect(hmc::attention_forward(p, lse.p, p, p, p, nullptr, 1, 8, 2, 16, 31, nullptr) == bad, "ld < H*hd");
  ctx.expect(hmc::attention_forward(p, lse.p, nullptr, p, p, nullptr, 1, 8, 2, 16, 32, nullptr) == bad, "q null");
  ctx.expect(hmc::attention_backward(p, p, p, p, p, p, p, p, lse.p, nullptr, 1, 8, 2, 16, 32, nullptr, nullptr) == bad,
             "scratch null");
  ctx.expect(hmc::attention_backward_scratch_floats(2, 3, 4) == 24, "scratch floats = B*T*H");
  CUDA_CHECK(cudaDeviceSynchronize());
}
