// test_model.cu — the device model (hmc::model_*, cuda/model/anchor_model.cu) against its CPU twin
// hm::AnchorModel: whole training steps of a tiny transformer (V=259, C=64, L=2, H=4, hd=16, F=176,
// T=33, B=3; ragged sizes on purpose) with packed documents, ignored targets, and FFN memories in
// both memory-layer maps; and two Llama-family variants (GQA, no QK-norm, untied head, llama3 RoPE;
// one kv head with q/k/v biases). Compares the loss, every gradient tensor and dfetched after one
// forward+backward, then the losses of 3 AdamW steps run on both sides, then TF32 / BF16 losses.
//
// Parameters: there is no C++ initialiser (the TS one is lib/model/init.ts), so random normals:
// wte * 0.15, matrices * 0.1, norm gains 1 + 0.1 * normal. Larger than the usual 0.02 on purpose:
// with 0.02 every block is nearly the identity and the loss ~ log V whatever the blocks compute, so a
// planted bug in a block would move the loss by less than its tolerance; and gains != 1 make a
// kernel that ignores the gain (or the gain's gradient) visible.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "anchor_model.h"
#include "harness.h"
#include "kernels/adamw.h"
#include "kernels/ffn_memory.h"

namespace {

using hmdev::DevBuf;

// Which FFN-memory configuration a problem uses.
enum class Mem { None, BothLayers, SecondLayer };

struct Problem {
  hm::ModelDims d;
  int64_t B, T, max_batch;
  std::vector<float> params;
  std::vector<int32_t> tokens, targets, doc_start, pos;  // doc_start empty = no packing (null)
  bool pass_pos = false;                                 // give the model pos, or let it compute them
  hm::MemoryConfig mem;
  int64_t S = 0;
  std::vector<int32_t> seq_slot;
  std::vector<float> fetched;
  int64_t P() const { return hm::anchor_param_count(d); }
  int64_t N() const { return B * T; }
  int64_t fetched_floats() const { return S * mem.Lm * 3 * mem.R * d.C; }
  int64_t slot_floats() const { return mem.Lm * 3 * mem.R * d.C; }
};

// dims: the anchor's by default; the Llama-family problems below pass their own (same V, C, L, T, F).
Problem make_problem(uint64_t seed, Mem memv, bool docs, bool pass_pos, int64_t max_batch,
                     const hm::ModelDims* dims = nullptr) {
  hmdev::Rng rng(seed);
  Problem p;
  p.d = dims ? *dims : hm::ModelDims{259, 64, 2, 4, 16, 176, 33, 1e-5f, 10000.0};
  p.B = 3;
  p.T = 33;
  p.max_batch = max_batch;
  p.pass_pos = pass_pos;
  p.params.resize((size_t)p.P());
  for (const auto& s : hm::anchor_layout(p.d)) {
    const bool gain = s.name.find("norm") != std::string::npos;
    const float scale = s.name == "tok_embeddings.weight" ? 0.15f : 0.1f;
    for (int64_t i = 0; i < s.size; i++)
      p.params[(size_t)(s.offset + i)] = gain ? 1.f + 0.1f * rng.normal() : scale * rng.normal();
  }
  const int64_t N = p.N(), T = p.T;
  p.tokens.resize((size_t)N);
  p.targets.resize((size_t)N);
  for (int64_t n = 0; n < N; n++) {
    p.tokens[(size_t)n] = (int32_t)rng.below(p.d.V);
    p.targets[(size_t)n] = rng.uniform() < 0.1f ? -1 : (int32_t)rng.below(p.d.V);
  }
  // repeated tokens: the deterministic embedding backward sums several rows into one wte row
  p.tokens[5] = p.tokens[50] = p.tokens[98] = 7;
  p.targets[3] = p.targets[60] = 7;
  if (docs) {
    // seq 0: documents at t = 0, 7, 20; seq 1: one document; seq 2: 1-token documents at 0 and 32
    const std::vector<std::vector<int32_t>> starts = {{0, 7, 20}, {0}, {0, 1, 32}};
    p.doc_start.resize((size_t)N);
    for (int64_t b = 0; b < p.B; b++) {
      const auto& st = starts[(size_t)b];
      for (int64_t t = 0; t < T; t++) {
        int32_t ds = 0;
        for (int32_t s : st) if (s <= t) ds = s;
        p.doc_start[(size_t)(b * T + t)] = ds;
        // the last token of a document predicts nothing (as the data pipeline does)
        const bool last = t == T - 1 || std::find(st.begin(), st.end(), (int32_t)t + 1) != st.end();
        if (last) p.targets[(size_t)(b * T + t)] = -1;
      }
    }
  }
  p.pos.resize((size_t)N);
  for (int64_t n = 0; n < N; n++)
    p.pos[(size_t)n] = (int32_t)(n % T) - (p.doc_start.empty() ? 0 : p.doc_start[(size_t)n]);
  if (memv != Mem::None) {
    p.mem.R = 12;
    if (memv == Mem::BothLayers) {
      p.mem.Lm = 2;
      p.mem.layer_to_mem = {0, 1};
      p.S = 2;
      p.seq_slot = {1, -1, 1};  // slot 0 unused; two non-adjacent sequences share slot 1 (two groups)
    } else {
      p.mem.Lm = 1;
      p.mem.layer_to_mem = {-1, 0};
      p.S = 2;
      p.seq_slot = {0, 0, -1};  // adjacent sequences share slot 0 (one group of 2T rows); slot 1 unused
    }
    p.fetched = rng.normals((size_t)p.fetched_floats(), 0.1f);
  }
  return p;
}

// Both sides of one problem: CPU twin and device model over identical parameters and gradient prefill.
struct Pair {
  const Problem& p;
  hmc::GemmMode mode;
  // CPU
  std::vector<float> cp, cg, cm, cv, cdf;
  std::unique_ptr<hm::AnchorModel> cpu;
  hm::MemoryBatch cmb{};
  hm::Batch cb{};
  // GPU
  DevBuf<float> gp, gg, gm, gv, gfetched, gdf;
  DevBuf<int32_t> gtokens, gtargets, gdoc, gpos;
  std::vector<hmc::MemoryGroup> groups;
  hmc::Model* model = nullptr;
  hmc::ModelBatch gb{};
  std::vector<float> grad_prefill, df_prefill;

  Pair(const Problem& pr, hmc::GemmMode md, uint64_t seed)
      : p(pr), mode(md), cp(pr.params), cg((size_t)pr.P()), cm((size_t)pr.P(), 0.f), cv((size_t)pr.P(), 0.f),
        gp(pr.params), gg((size_t)pr.P()), gm((size_t)pr.P()), gv((size_t)pr.P()),
        gfetched(pr.fetched.size()), gdf((size_t)pr.fetched_floats()), gtokens(pr.tokens), gtargets(pr.targets),
        gdoc(pr.doc_start.size()), gpos(pr.pos) {
    if (!pr.fetched.empty()) gfetched.upload(pr.fetched);  // (DevBuf of an empty vector: 1 element, no copy)
    if (!pr.doc_start.empty()) gdoc.upload(pr.doc_start);
    hmdev::Rng rng(seed);
    // gradients are ADDED: both sides start from the same random prefill
    grad_prefill = rng.normals((size_t)p.P(), 0.01f);
    df_prefill = rng.normals((size_t)p.fetched_floats(), 0.01f);
    cg = grad_prefill;
    gg.upload(grad_prefill);
    cdf = df_prefill;
    if (!df_prefill.empty()) gdf.upload(df_prefill);
    cpu = std::make_unique<hm::AnchorModel>(p.d, cp.data(), cg.data(), p.max_batch, p.mem);
    const bool has_mem = p.mem.R > 0;
    cmb = hm::MemoryBatch{p.fetched.data(), cdf.data(), p.seq_slot.data(), p.S};
    cb = hm::Batch{p.tokens.data(), p.targets.data(), p.doc_start.empty() ? nullptr : p.doc_start.data(), p.B, p.T,
                   has_mem ? &cmb : nullptr};

    int err = -1;
    model = hmc::model_create(p.d, p.mem.view(), p.max_batch, gp.p, gg.p, mode, &err);
    if (!model || err != 0) throw std::runtime_error("model_create failed: " + std::to_string(err));
    if (has_mem) groups = hm::memory_groups(p.seq_slot.data(), p.B, p.T);
    gb = hmc::ModelBatch{gtokens.p, gtargets.p, p.doc_start.empty() ? nullptr : gdoc.p, p.pass_pos ? gpos.p : nullptr,
                         p.B, p.T, has_mem ? gfetched.p : nullptr, has_mem ? gdf.p : nullptr,
                         groups.data(), (int64_t)groups.size()};
  }
  ~Pair() { hmc::model_destroy(model); }

  double gpu_fb() {
    double loss = -1;
    HMC_CHECK(hmc::model_forward_backward(model, gb, &loss, nullptr));
    return loss;
  }
  double gpu_loss() {
    double loss = -1;
    HMC_CHECK(hmc::model_forward_loss(model, gb, &loss, nullptr));
    return loss;
  }
  void zero_grads() {
    std::fill(cg.begin(), cg.end(), 0.f);
    CUDA_CHECK(cudaMemset(gg.p, 0, sizeof(float) * (size_t)p.P()));
  }
  // one AdamW step on both sides, per tensor (weight decay only where the layout says so)
  void adamw(int64_t step) {
    const double lr = 1e-3, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
    const hm::AdamWHyper h{lr, b1, b2, eps, step, 1.0};
    for (const auto& s : hm::anchor_layout(p.d)) {
      const float w = s.decay ? (float)wd : 0.f;
      hm::adamw_update(cp.data() + s.offset, cg.data() + s.offset, cm.data() + s.offset, cv.data() + s.offset, s.size,
                       w, h);
      HMC_CHECK(hmc::adamw_update(gp.p + s.offset, gg.p + s.offset, gm.p + s.offset, gv.p + s.offset, s.size,
                               hm::adamw_consts(h, w), nullptr));
    }
    CUDA_CHECK(cudaDeviceSynchronize());
  }
};

double max_abs_delta(const std::vector<float>& a, const std::vector<float>& base, size_t i0, size_t n) {
  double m = 0;
  for (size_t i = i0; i < i0 + n; i++) m = std::max(m, std::fabs((double)a[i] - (double)base[i]));
  return m;
}

std::vector<float> sub(const std::vector<float>& v, size_t i0, size_t n) {
  return std::vector<float>(v.begin() + (ptrdiff_t)i0, v.begin() + (ptrdiff_t)(i0 + n));
}

// Every gradient tensor: |got - want| <= 1e-3 * max_i |want_i - prefill_i| (the tensor's gradient scale).
// Why not per element: fp32 sums run in another order than the CPU's (GEMM tiles, attention and norm
// reductions), so each element carries ~1e-6 of the magnitude of its partial sums — which is the
// tensor's scale, not the element's own (possibly cancelled, near-zero) value. 1e-3 leaves headroom
// for growth through two layers of backward; a wrong index, a missing term or '=' for '+=' is off by
// O(scale) (or by the 0.01 prefill) and fails.
void compare_grads(hmt::Ctx& ctx, const std::string& tag, const Pair& pr, const std::vector<float>& got) {
  for (const auto& s : hm::anchor_layout(pr.p.d)) {
    const double scale = max_abs_delta(pr.cg, pr.grad_prefill, (size_t)s.offset, (size_t)s.size);
    ctx.expect(scale > 0, tag + " " + s.name + ": CPU gradient is zero (test setup)");
    ctx.expect_close(tag + " d" + s.name, sub(got, (size_t)s.offset, (size_t)s.size),
                     sub(pr.cg, (size_t)s.offset, (size_t)s.size), 0.0, 1e-3 * scale);
  }
}

// dfetched per slot: slots no sequence uses must keep the prefill bit for bit (no stray writes); used
// slots compare like the gradients (same reasoning), and so do their unused memory layers (exact 0 delta).
void compare_dfetched(hmt::Ctx& ctx, const std::string& tag, const Pair& pr, const std::vector<float>& got) {
  const Problem& p = pr.p;
  const size_t sf = (size_t)p.slot_floats();
  for (int64_t s = 0; s < p.S; s++) {
    const bool used = std::find(p.seq_slot.begin(), p.seq_slot.end(), (int32_t)s) != p.seq_slot.end();
    const std::string what = tag + " dfetched slot " + std::to_string(s);
    if (!used) {
      ctx.expect_equal(what + " (unused, untouched)", sub(got, (size_t)s * sf, sf), sub(pr.df_prefill, (size_t)s * sf, sf));
      continue;
    }
    const double scale = max_abs_delta(pr.cdf, pr.df_prefill, (size_t)s * sf, sf);
    ctx.expect(scale > 0, what + ": CPU dfetched is zero (test setup)");
    ctx.expect_close(what, sub(got, (size_t)s * sf, sf), sub(pr.cdf, (size_t)s * sf, sf), 0.0, 1e-3 * scale);
  }
}

bool all_finite(const std::vector<float>& v) {
  for (float x : v) if (!std::isfinite(x)) return false;
  return true;
}

// FP32: loss (rtol 1e-5: fp32 logits differ by ~1e-6 relative, the mean is summed in double on both
// sides), every gradient, dfetched; forward_loss agrees and leaves the gradients alone; then 3 AdamW
// steps on both sides with the loss of each step compared at rtol 1e-4 (parameters drift apart by the
// rounding of the updates; Adam's sign-like first steps amplify near-zero gradient noise, but only
// on elements whose gradient, hence whose effect on the loss, is ~0).
void check_fp32(hmt::Ctx& ctx, const std::string& tag, const Problem& p, bool steps) {
  Pair pr(p, hmc::GemmMode::FP32, 1234);
  const double want = pr.cpu->forward_backward(pr.cb);
  const double got = pr.gpu_fb();
  ctx.expect_close(tag + " loss", std::vector<double>{got}, std::vector<double>{want}, 1e-5, 0.0);
  const std::vector<float> g1 = pr.gg.download();
  compare_grads(ctx, tag, pr, g1);
  if (p.mem.R > 0) compare_dfetched(ctx, tag, pr, pr.gdf.download());

  // forward_loss: the same loss, and not a single gradient bit changes
  const double want_fl = pr.cpu->forward_loss(pr.cb);
  const double got_fl = pr.gpu_loss();
  ctx.expect_close(tag + " forward_loss", std::vector<double>{got_fl}, std::vector<double>{want_fl}, 1e-5, 0.0);
  ctx.expect_close(tag + " forward_loss == forward_backward loss", std::vector<double>{got_fl},
                   std::vector<double>{got}, 1e-12, 0.0);
  ctx.expect_equal(tag + " grads untouched by forward_loss", pr.gg.download(), g1);

  if (!steps) return;
  // determinism: a second step from zeroed gradients gives the same bits (no float atomics anywhere)
  pr.zero_grads();
  const double l_a = pr.gpu_fb();
  const std::vector<float> ga = pr.gg.download();
  pr.zero_grads();
  const double l_b = pr.gpu_fb();
  ctx.expect(l_a == l_b, tag + " loss is bitwise reproducible");
  ctx.expect_equal(tag + " gradients are bitwise reproducible", pr.gg.download(), ga);

  double first = 0, last = 0;
  for (int64_t step = 1; step <= 3; step++) {
    pr.zero_grads();
    const double lc = pr.cpu->forward_backward(pr.cb);
    const double lg = pr.gpu_fb();
    ctx.expect_close(tag + " adamw step " + std::to_string(step) + " loss", std::vector<double>{lg},
                     std::vector<double>{lc}, 1e-4, 0.0);
    if (step == 1) first = lc;
    pr.adamw(step);
  }
  last = pr.cpu->forward_loss(pr.cb);
  ctx.expect_close(tag + " loss after 3 adamw steps", std::vector<double>{pr.gpu_loss()}, std::vector<double>{last},
                   1e-4, 0.0);
  ctx.expect(last < first, tag + " 3 AdamW steps lower the loss (test setup)");
}

}  // namespace

HMT_TEST(model_fp32_packed_docs_no_memory) {
  // doc_start packing, pos given by the caller, max_batch 4 > B
  check_fp32(ctx, "nomem", make_problem(11, Mem::None, true, true, 4), true);
}

HMT_TEST(model_fp32_memory_both_layers) {
  // layer_to_mem {0,1} (Lm 2: slot stride != one layer's block), seq_slot {1,-1,1}; no doc_start,
  // positions computed by the model; max_batch == B
  check_fp32(ctx, "mem01", make_problem(22, Mem::BothLayers, false, false, 3), true);
}

HMT_TEST(model_fp32_memory_second_layer) {
  // layer_to_mem {-1,0}, seq_slot {0,0,-1} (one merged group), doc_start packing, positions computed
  check_fp32(ctx, "mem-10", make_problem(33, Mem::SecondLayer, true, false, 3), true);
}

// The Llama family: grouped-query attention (4 query heads on 2 kv heads: the repeat_kv path), no
// QK-norm, an untied head and the Llama-3.1 RoPE frequencies (hd 16, base 10, original 32: all three
// frequency bands); then one kv head (G = 4) with Qwen2 q/k/v biases and QK-norm over the kv row.
hm::ModelDims llama_dims() {
  hm::ModelDims d{259, 64, 2, 4, 16, 176, 33, 1e-6f, 10.0};
  d.Hkv = 2;
  d.qk_norm = false;
  d.tie_embeddings = false;
  d.rope_scaling.kind = 1;
  d.rope_scaling.factor = 4;
  d.rope_scaling.low_freq_factor = 1;
  d.rope_scaling.high_freq_factor = 4;
  d.rope_scaling.original_max_positions = 32;
  return d;
}
hm::ModelDims mqa_bias_dims() {
  hm::ModelDims d{259, 64, 2, 4, 16, 176, 33, 1e-5f, 10000.0};
  d.Hkv = 1;
  d.qkv_bias = true;
  return d;
}

HMT_TEST(model_fp32_llama_gqa_untied_rope_scaling) {
  const hm::ModelDims d = llama_dims();
  check_fp32(ctx, "llama", make_problem(66, Mem::SecondLayer, true, false, 3, &d), true);
}

HMT_TEST(model_fp32_mqa_qkv_bias) {
  const hm::ModelDims d = mqa_bias_dims();
  check_fp32(ctx, "mqa-bias", make_problem(77, Mem::BothLayers, true, true, 4, &d), true);
}

HMT_TEST(model_tf32_bf16_loss) {
  // Tensor-core modes against the FP32 CPU loss, loose (tf32 keeps 10 mantissa bits, bf16 7; the loss
  // is an average, so these catch gross errors in those paths, not rounding).
  const Problem p = make_problem(44, Mem::BothLayers, true, false, 3);
  const struct { hmc::GemmMode mode; double rtol; const char* name; } modes[] = {
      {hmc::GemmMode::TF32, 2e-2, "tf32"}, {hmc::GemmMode::BF16, 5e-2, "bf16"}};
  for (const auto& m : modes) {
    Pair pr(p, m.mode, 99);
    const double want = pr.cpu->forward_backward(pr.cb);
    const double got = pr.gpu_fb();
    ctx.expect_close(std::string(m.name) + " loss", std::vector<double>{got}, std::vector<double>{want}, m.rtol, 0.0);
    ctx.expect(all_finite(pr.gg.download()), std::string(m.name) + " gradients finite");
    ctx.expect(all_finite(pr.gdf.download()), std::string(m.name) + " dfetched finite");
    ctx.expect_close(std::string(m.name) + " forward_loss", std::vector<double>{pr.gpu_loss()},
                     std::vector<double>{want}, m.rtol, 0.0);
  }
}

HMT_TEST(model_no_targets_and_bad_args) {
  // all targets ignored: NaN loss, like the CPU, and no gradient touched
  Problem p = make_problem(55, Mem::BothLayers, true, false, 3);
  std::fill(p.targets.begin(), p.targets.end(), -1);
  Pair pr(p, hmc::GemmMode::FP32, 7);
  const double want = pr.cpu->forward_backward(pr.cb);
  const double got = pr.gpu_fb();
  ctx.expect(std::isnan(want) && std::isnan(got), "no target: NaN loss on both sides");
  ctx.expect_equal("no target: grads untouched", pr.gg.download(), pr.grad_prefill);
  ctx.expect_equal("no target: dfetched untouched", pr.gdf.download(), pr.df_prefill);
  ctx.expect(std::isnan(pr.gpu_loss()), "no target: forward_loss NaN");

  // argument checks: each returns cudaErrorInvalidValue without launching anything
  const int inval = (int)cudaErrorInvalidValue;
  double loss = 0;
  hmc::ModelBatch b = pr.gb;
  b.B = 4;  // 4 * 33 rows > max_batch 3 * T
  ctx.expect(hmc::model_forward_backward(pr.model, b, &loss, nullptr) == inval, "B*T > max rows rejected");
  b = pr.gb;
  b.T = 34;
  b.B = 1;
  ctx.expect(hmc::model_forward_loss(pr.model, b, &loss, nullptr) == inval, "T > dims.T rejected");
  b = pr.gb;
  b.dfetched = nullptr;
  ctx.expect(hmc::model_forward_backward(pr.model, b, &loss, nullptr) == inval, "memory without dfetched rejected");
  b = pr.gb;
  std::vector<hmc::MemoryGroup> bad = {{90, 20, 0}};  // rows past N
  b.groups_host = bad.data();
  b.G = 1;
  ctx.expect(hmc::model_forward_backward(pr.model, b, &loss, nullptr) == inval, "group past N rejected");
  b = pr.gb;
  b.B = 0;
  ctx.expect(hmc::model_forward_backward(pr.model, b, &loss, nullptr) == 0 && std::isnan(loss), "B = 0: no-op, NaN");
  hmc::ModelDims dd{259, 64, 0, 4, 16, 176, 33, 1e-5f, 10000.0};
  hmc::ModelMemory mm;
  int err = 0;
  ctx.expect(hmc::model_create(dd, mm, 3, pr.gp.p, pr.gg.p, hmc::GemmMode::FP32, &err) == nullptr && err == inval,
             "model_create with L = 0 rejected");
  dd.L = 2;
  dd.hd = 15;  // RoPE pairs (i, i + hd/2): hd must be even
  ctx.expect(hmc::model_create(dd, mm, 3, pr.gp.p, pr.gg.p, hmc::GemmMode::FP32, &err) == nullptr && err == inval,
             "model_create with odd hd rejected");
  // the grads still hold the prefill: none of the rejected calls wrote anything
  ctx.expect_equal("rejected calls touch nothing", pr.gg.download(), pr.grad_prefill);
}
