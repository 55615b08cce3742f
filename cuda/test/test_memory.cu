// test_memory.cu — memory_gather / memory_scatter_add / memory_adamw against the CPU twins in
// cpp/kernels/memory.cc, on a RAM bank (hm::MemoryBank::create_ram) whose levels are copied to the
// device. Layouts: k = 2..3, p = 2..3, ragged r (one with an empty level), with and without the
// generic block, d odd and d a multiple of 4, S = 1 up to 300 (> one 256-slot tile), paths with
// padding columns (path_stride > p), slots sharing blocks and generic slots.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "harness.h"
#include "kernels/memory.h"
#include "memory/bank.h"

namespace {

constexpr float kSentinel = -4321.f;

struct Case {
  int64_t k, Lm, d;
  std::vector<int64_t> r;  // p = r.size()
  bool generic;
  int64_t S, pad;  // slots; extra path columns (path_stride = p + pad)
};

const Case kCases[] = {
    {3, 2, 13, {3, 5, 2}, true, 9, 1},    // d odd: scalar path; padded paths
    {3, 2, 16, {3, 5, 2}, false, 9, 0},   // d % 4 == 0: float4 path; no generic
    {2, 1, 8, {4, 3}, true, 1, 0},        // S = 1: a lone generic slot
    {3, 2, 13, {3, 5, 2}, false, 1, 2},   // S = 1, no generic
    {3, 3, 12, {2, 0, 3}, true, 40, 2},   // an empty level
    {3, 2, 32, {4, 6}, true, 300, 1},     // blocks of > 1024 floats (2 chunks), S > 256 (2 slot tiles)
};

std::string tag_of(const Case& c) {
  std::string s = "k" + std::to_string(c.k) + " Lm" + std::to_string(c.Lm) + " d" + std::to_string(c.d) + " r";
  for (int64_t x : c.r) s += std::to_string(x) + ",";
  return s + (c.generic ? " generic" : "") + " S" + std::to_string(c.S) + " pad" + std::to_string(c.pad);
}

hm::MemoryLayout layout_of(const Case& c) {
  hm::MemoryLayout L;
  L.k = c.k;
  L.p = (int64_t)c.r.size();
  L.Lm = c.Lm;
  L.d = c.d;
  L.r = c.r;
  L.generic = c.generic;
  L.optimizer = true;
  return L;
}

hmc::MemoryLayoutDesc desc_of(const hm::MemoryLayout& L) {
  hmc::MemoryLayoutDesc D{};
  D.num_levels = (int32_t)L.num_levels();
  D.generic = L.generic ? 1 : 0;
  D.Lm = L.Lm;
  D.d = L.d;
  D.R = L.R();
  for (int64_t l = 0; l < L.num_levels(); l++) {
    D.rows[l] = L.has_level(l) ? L.rows(l) : 0;
    D.row_offset[l] = L.row_offset(l);
  }
  return D;
}

// Paths (S, p) for the twin and the same with `pad` extra columns for the kernels. A third of the
// slots repeat an earlier slot's path or a prefix of it (shared blocks), a fifth are generic (if
// the layout has the generic block); with S >= 3 at least one of each. S = 1 with the generic block
// is a lone generic slot; slot 0 is otherwise never generic.
void make_paths(hmdev::Rng& rng, const hm::MemoryLayout& L, int64_t S, int64_t pad, std::vector<int32_t>* packed,
                std::vector<int32_t>* padded) {
  const int64_t p = L.p, stride = p + pad;
  packed->assign((size_t)(S * p), 0);
  padded->assign((size_t)(S * stride), 0);
  for (int64_t s = 0; s < S; s++) {
    int32_t* ps = packed->data() + s * p;
    const bool force_generic = L.generic && ((S >= 3 && s == 1) || S == 1);  // S = 1 generic: the lone generic slot
    const bool force_repeat = S >= 3 && s == 2;
    if (force_generic || (L.generic && s > 0 && rng.below(5) == 0)) {
      for (int64_t l = 0; l < p; l++) ps[l] = -1;
    } else if (s > 0 && (force_repeat || rng.below(3) == 0)) {
      const int32_t* prev = packed->data() + rng.below(s) * p;
      if (prev[0] < 0) prev = packed->data();  // slot 0 is never generic: repeat it instead
      const int64_t keep = 1 + rng.below(p);   // share the first `keep` levels, branch below
      for (int64_t l = 0; l < p; l++)
        ps[l] = l < keep ? prev[l] : (int32_t)(ps[l - 1] * L.k + rng.below(L.k));
      if (force_repeat) std::copy(prev, prev + p, ps);
    } else {
      for (int64_t l = 0; l < p; l++) ps[l] = (int32_t)((l ? ps[l - 1] * L.k : 0) + rng.below(L.k));
    }
    int32_t* q = padded->data() + s * stride;
    std::copy(ps, ps + p, q);
    for (int64_t j = p; j < stride; j++) q[j] = (int32_t)rng.below(L.k);  // a plausible node: stride bugs show
  }
}

// The bank's level weight tensors (nodes, Lm, 3, rows, d) on the device, and the pointer table.
struct DeviceLevels {
  std::vector<std::unique_ptr<hmdev::DevBuf<float>>> bufs;
  std::unique_ptr<hmdev::DevBuf<float*>> table;
  DeviceLevels(const hm::MemoryBank& bank) {
    const hm::MemoryLayout& L = bank.layout();
    std::vector<float*> ptrs;
    for (int64_t l = 0; l < L.num_levels(); l++) {
      if (!L.has_level(l)) {
        bufs.emplace_back(nullptr);
        ptrs.push_back(nullptr);
        continue;
      }
      const float* w = bank.weight(l, 0);
      bufs.emplace_back(new hmdev::DevBuf<float>(std::vector<float>(w, w + L.nodes(l) * L.block_floats(l))));
      ptrs.push_back(bufs.back()->p);
    }
    table.reset(new hmdev::DevBuf<float*>(ptrs));
  }
  const float* const* ptr() const { return table->p; }
};

}  // namespace

// Gather is a copy: bitwise against the twin, on an output pre-filled with random values (every row
// of a slot is covered, so any missed or misplaced row differs). d % 4 == 0 layouts also run on a
// misaligned output (scalar fallback). Catches wrong level/row offsets, node stride, path stride,
// generic-slot handling and float4 indexing.
HMT_TEST(memory_gather) {
  hmdev::Rng rng(201);
  for (const Case& c : kCases) {
    const std::string tag = tag_of(c);
    const hm::MemoryLayout L = layout_of(c);
    std::string err;
    auto bank = hm::MemoryBank::create_ram(L, 77, &err);
    if (!bank) throw std::runtime_error("create_ram: " + err);
    std::vector<int32_t> packed, padded;
    make_paths(rng, L, c.S, c.pad, &packed, &padded);
    const int64_t nf = c.S * L.slot_floats();
    auto prefill = rng.normals((size_t)nf);
    auto want = prefill;
    // the bank initialises the blocks (as before every gather, CPU or CUDA); both kernels only copy
    const auto blocks = hm::memory_unique_blocks(L, packed.data(), c.S);
    const auto src = bank->prepare_gather(blocks);
    hm::memory_gather(want.data(), L, blocks, src.weights.data(), packed.data(), c.S);
    DeviceLevels lv(*bank);
    const hmc::MemoryLayoutDesc D = desc_of(L);
    hmdev::DevBuf<int32_t> dpaths(padded);
    hmdev::DevBuf<float> dfetched(prefill);
    HMC_CHECK(hmc::memory_gather(dfetched.p, lv.ptr(), D, dpaths.p, L.p + c.pad, c.S, nullptr));
    ctx.expect_equal("fetched " + tag, dfetched.download(), want);
    if (L.d % 4 == 0) {
      std::vector<float> pre1(1, kSentinel);
      pre1.insert(pre1.end(), prefill.begin(), prefill.end());
      hmdev::DevBuf<float> dmis(pre1);
      HMC_CHECK(hmc::memory_gather(dmis.p + 1, lv.ptr(), D, dpaths.p, L.p + c.pad, c.S, nullptr));
      auto got = dmis.download();
      ctx.expect(got[0] == kSentinel, "misaligned: float before the output untouched " + tag);
      ctx.expect_equal("fetched misaligned " + tag, std::vector<float>(got.begin() + 1, got.end()), want);
    }
  }
}

// Scatter-add is bitwise against the twin: each output float receives the same float additions in
// the same slot order onto the same pre-filled dblocks. The block list is also given reversed (with
// the same offsets): the result must not depend on its order. Catches a slot counted for the wrong
// block (generic vs tree level, node compare), wrong row offsets, a missed chunk or slot tile, and
// overwriting instead of adding.
HMT_TEST(memory_scatter_add) {
  hmdev::Rng rng(202);
  for (const Case& c : kCases) {
    const std::string tag = tag_of(c);
    const hm::MemoryLayout L = layout_of(c);
    std::vector<int32_t> packed, padded;
    make_paths(rng, L, c.S, c.pad, &packed, &padded);
    const auto blocks = hm::memory_unique_blocks(L, packed.data(), c.S);
    std::vector<hmc::BlockRef> refs;
    int64_t off = 0;
    for (const auto& b : blocks) {
      refs.push_back({(int32_t)b.first, (int32_t)b.second, off});
      off += L.block_floats(b.first);
    }
    ctx.expect(off == hm::memory_blocks_floats(L, blocks), "block offsets " + tag);
    auto dfetched = rng.normals((size_t)(c.S * L.slot_floats()));
    auto dblocks0 = rng.normals((size_t)off);
    auto want = dblocks0;
    hm::memory_scatter_add(want.data(), L, blocks, dfetched.data(), packed.data(), c.S);
    const hmc::MemoryLayoutDesc D = desc_of(L);
    hmdev::DevBuf<int32_t> dpaths(padded);
    hmdev::DevBuf<float> ddf(dfetched), ddb(dblocks0);
    hmdev::DevBuf<hmc::BlockRef> drefs(refs);
    HMC_CHECK(hmc::memory_scatter_add(ddb.p, drefs.p, (int64_t)refs.size(), D, ddf.p, dpaths.p, L.p + c.pad, c.S, nullptr));
    ctx.expect_equal("dblocks " + tag, ddb.download(), want);
    std::reverse(refs.begin(), refs.end());
    drefs.upload(refs);
    ddb.upload(dblocks0);
    HMC_CHECK(hmc::memory_scatter_add(ddb.p, drefs.p, (int64_t)refs.size(), D, ddf.p, dpaths.p, L.p + c.pad, c.S, nullptr));
    ctx.expect_equal("dblocks, blocks reversed " + tag, ddb.download(), want);
  }
}

// Row-sparse AdamW: each block gets a random earlier step count, random m and v; the twin increments
// the count and uses the new one for its bias corrections, so we pass inv_bc from step + 1 (computed
// in double as the twin does). Same float ops in the same order as the twin (see test_elementwise's
// adamw_update): ~2 ulp allowed. Catches per-block bias corrections mixed up between blocks, a
// wrong block pointer / length, and the shared hyperparameters misapplied.
HMT_TEST(memory_adamw) {
  hmdev::Rng rng(203);
  const float lr = 2e-3f, b1 = 0.9f, b2 = 0.99f, eps = 1e-8f, wd = 0.05f, gs = 0.75f;
  for (const Case& c : kCases) {
    const std::string tag = tag_of(c);
    const hm::MemoryLayout L = layout_of(c);
    std::string err;
    auto bank = hm::MemoryBank::create_ram(L, 78, &err);
    if (!bank) throw std::runtime_error("create_ram: " + err);
    std::vector<int32_t> packed, padded;
    make_paths(rng, L, c.S, c.pad, &packed, &padded);
    const auto blocks = hm::memory_unique_blocks(L, packed.data(), c.S);
    std::vector<int32_t> step0;
    std::vector<float> w0, m0, v0;
    for (const auto& b : blocks) {
      const int64_t l = b.first, node = b.second, n = L.block_floats(l);
      bank->ensure_initialized(l, node);
      int32_t& st = bank->steps(l)[node];
      st = (int32_t)rng.below(50);
      step0.push_back(st);
      float* m = bank->adam_m(l, node);
      float* v = bank->adam_v(l, node);
      for (int64_t i = 0; i < n; i++) {
        m[i] = 0.1f * rng.normal();
        const float x = 0.1f * rng.normal();
        v[i] = x * x;
      }
      const float* w = bank->weight(l, node);
      w0.insert(w0.end(), w, w + n);
      m0.insert(m0.end(), m, m + n);
      v0.insert(v0.end(), v, v + n);
    }
    const int64_t total = (int64_t)w0.size();
    auto g = rng.normals((size_t)total);
    hmdev::DevBuf<float> dw(w0), dm(m0), dv(v0), dg(g);
    std::vector<hmc::SparseAdamBlock> sb;
    int64_t off = 0;
    for (size_t u = 0; u < blocks.size(); u++) {
      const int64_t n = L.block_floats(blocks[u].first);
      const double step = (double)step0[u] + 1;
      sb.push_back({dw.p + off, dm.p + off, dv.p + off, dg.p + off, n,
                    (float)(1.0 / (1.0 - std::pow((double)b1, step))), (float)(1.0 / (1.0 - std::pow((double)b2, step)))});
      off += n;
    }
    hm::AdamWHyper h{(double)lr, (double)b1, (double)b2, (double)eps, 1, (double)gs};
    hm::memory_adamw(*bank, blocks, g.data(), wd, h);
    std::vector<float> ww, wm, wv;
    for (size_t u = 0; u < blocks.size(); u++) {
      const int64_t l = blocks[u].first, node = blocks[u].second, n = L.block_floats(l);
      ctx.expect(bank->steps(l)[node] == step0[u] + 1, "twin incremented the step count " + tag);
      ww.insert(ww.end(), bank->weight(l, node), bank->weight(l, node) + n);
      wm.insert(wm.end(), bank->adam_m(l, node), bank->adam_m(l, node) + n);
      wv.insert(wv.end(), bank->adam_v(l, node), bank->adam_v(l, node) + n);
    }
    hmdev::DevBuf<hmc::SparseAdamBlock> dsb(sb);
    hm::AdamWConsts a = hm::adamw_consts(h, wd);
    a.ibc1 = a.ibc2 = 0.f;  // must be ignored: per-block corrections instead (0 here would be caught)
    HMC_CHECK(hmc::memory_adamw(dsb.p, (int64_t)sb.size(), a, nullptr));
    ctx.expect_close("w " + tag, dw.download(), ww, 2.5e-7, 1e-12);
    ctx.expect_close("m " + tag, dm.download(), wm, 2.5e-7, 1e-12);
    ctx.expect_close("v " + tag, dv.download(), wv, 2.5e-7, 1e-12);
  }
}

// Argument checks of the memory entry points (none of these launch).
HMT_TEST(memory_args) {
  const int inv = (int)cudaErrorInvalidValue;
  hm::MemoryLayout L = layout_of(kCases[0]);
  hmc::MemoryLayoutDesc D = desc_of(L);
  float* f = reinterpret_cast<float*>(16);
  int32_t* i = reinterpret_cast<int32_t*>(16);
  const float* const* lw = reinterpret_cast<const float* const*>(16);
  ctx.expect(hmc::memory_gather(f, lw, D, i, L.p - 1, 4, nullptr) == inv, "gather path_stride < p");
  ctx.expect(hmc::memory_gather(nullptr, nullptr, D, nullptr, 3, 0, nullptr) == 0, "gather S=0 no-op");
  hmc::MemoryLayoutDesc bad = D;
  bad.row_offset[1] = D.R;  // level 1 would run past R
  ctx.expect(hmc::memory_gather(f, lw, bad, i, 3, 4, nullptr) == inv, "gather rows past R");
  bad = D;
  bad.num_levels = 0;
  ctx.expect(hmc::memory_scatter_add(f, nullptr, 0, bad, f, i, 3, 4, nullptr) == inv, "scatter num_levels 0");
  ctx.expect(hmc::memory_scatter_add(nullptr, nullptr, 0, D, nullptr, nullptr, 3, 4, nullptr) == 0, "scatter U=0 no-op");
  ctx.expect(hmc::memory_adamw(nullptr, 3, hm::AdamWConsts{}, nullptr) == inv, "adamw null blocks");
}
