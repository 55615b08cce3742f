#include "kernels/memory.h"

#include <algorithm>
#include <cstring>

#include "parallel.h"

namespace hm {

std::vector<BlockId> memory_unique_blocks(const MemoryLayout& L, const int32_t* paths, int64_t S) {
  std::vector<BlockId> out;
  for (int64_t s = 0; s < S; s++) {
    const int32_t* ps = paths + s * L.p;
    if (ps[0] < 0) {
      out.emplace_back(L.p, 0);
      continue;
    }
    for (int64_t l = 0; l < L.p; l++)
      if (L.has_level(l)) out.emplace_back(l, ps[l]);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

int64_t memory_blocks_floats(const MemoryLayout& L, const std::vector<BlockId>& blocks) {
  int64_t n = 0;
  for (const auto& b : blocks) n += L.block_floats(b.first);
  return n;
}

// Copies block `src` ([Lm][3][rows][d]) into rows [row0, row0 + rows) of a slot ([Lm][3][R][d]).
static void place_block(float* slot, const float* src, const MemoryLayout& L, int64_t rows, int64_t row0) {
  const int64_t R = L.R(), d = L.d;
  for (int64_t m = 0; m < L.Lm * 3; m++)
    std::memcpy(slot + (m * R + row0) * d, src + m * rows * d, sizeof(float) * rows * d);
}

void memory_gather(float* fetched, const MemoryLayout& L, const std::vector<BlockId>& blocks, const float* const* src,
                   const int32_t* paths, int64_t S) {
  const int64_t levels = L.p;
  parallel_for(S * (levels + 1), [&](int64_t a, int64_t b) {
    for (int64_t task = a; task < b; task++) {
      const int64_t s = task / (levels + 1), l = task % (levels + 1);
      const int32_t* ps = paths + s * L.p;
      const bool generic = ps[0] < 0;
      // a slot is either the generic block (task l == p) or one block per level (tasks l < p)
      if (generic != (l == levels) || !L.has_level(l)) continue;
      const BlockId id(l, generic ? 0 : ps[l]);
      const size_t u = (size_t)(std::lower_bound(blocks.begin(), blocks.end(), id) - blocks.begin());  // always found
      place_block(fetched + s * L.slot_floats(), src[u], L, L.rows(l), L.row_offset(l));
    }
  });
}

void memory_scatter_add(float* dblocks, const MemoryLayout& L, const std::vector<BlockId>& blocks,
                        const float* dfetched, const int32_t* paths, int64_t S) {
  std::vector<int64_t> offsets(blocks.size());
  int64_t off = 0;
  for (size_t u = 0; u < blocks.size(); u++) {
    offsets[u] = off;
    off += L.block_floats(blocks[u].first);
  }
  const int64_t R = L.R(), d = L.d;
  parallel_for((int64_t)blocks.size(), [&](int64_t a, int64_t b) {
    for (int64_t u = a; u < b; u++) {
      const int64_t l = blocks[(size_t)u].first, node = blocks[(size_t)u].second;
      const int64_t rows = L.rows(l), row0 = L.row_offset(l);
      float* dst = dblocks + offsets[(size_t)u];
      for (int64_t s = 0; s < S; s++) {
        const int32_t* ps = paths + s * L.p;
        const bool uses = l == L.p ? ps[0] < 0 : (ps[0] >= 0 && ps[l] == node);
        if (!uses) continue;
        const float* slot = dfetched + s * L.slot_floats();
        for (int64_t m = 0; m < L.Lm * 3; m++) {
          const float* g = slot + (m * R + row0) * d;
          float* o = dst + m * rows * d;
          for (int64_t i = 0; i < rows * d; i++) o[i] += g[i];
        }
      }
    }
  });
}

void memory_adamw(MemoryBank& bank, const std::vector<BlockId>& blocks, const float* dblocks, float wd,
                  const AdamWHyper& hyper) {
  const MemoryLayout& L = bank.layout();
  std::vector<int64_t> offsets(blocks.size());
  int64_t off = 0;
  for (size_t u = 0; u < blocks.size(); u++) {
    offsets[u] = off;
    off += L.block_floats(blocks[u].first);
  }
  // Blocks are few and large: update them one after another, each with all threads.
  for (size_t u = 0; u < blocks.size(); u++) {
    const int64_t l = blocks[u].first, node = blocks[u].second;
    bank.ensure_initialized(l, node);
    int32_t& step = bank.steps(l)[node];
    step += 1;
    AdamWHyper h = hyper;
    h.step = step;
    adamw_update(bank.weight(l, node), dblocks + offsets[u], bank.adam_m(l, node), bank.adam_v(l, node),
                 L.block_floats(l), wd, h);
  }
}

}  // namespace hm
