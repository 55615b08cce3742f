// memory.h — the block-sparse memory kernels (our contribution, hence hand-written):
//   gather       bank blocks of a batch's paths -> one contiguous fetched buffer per slot
//   scatter_add  fetched-buffer gradients -> one compact gradient per unique (level, node) block
//   adamw        row-sparse (lazy) AdamW on exactly those blocks, each with its own step count
// Only blocks named by the batch's paths are read or written; the rest of the bank is untouched.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "kernels/adamw.h"
#include "memory/bank.h"

namespace hm {

// paths (S, p): node index per level, or paths[s*p] == -1 for a slot that uses the generic block.
// Returns the unique blocks the slots fetch, sorted (level, node); levels with r = 0 are skipped.
std::vector<BlockId> memory_unique_blocks(const MemoryLayout& L, const int32_t* paths, int64_t S);

// fetched (S, Lm, 3, R, d): slot s gets, for every level l, block (l, paths[s][l]) in rows
// [row_offset(l), row_offset(l) + r_l) of each (layer, gate|up|down). A pure copy, as its CUDA twin:
// `blocks` are the paths' blocks (memory_unique_blocks) and src[u] the weights of blocks[u], from
// MemoryBank::prepare_gather, which does the lazy initialisation.
void memory_gather(float* fetched, const MemoryLayout& L, const std::vector<BlockId>& blocks, const float* const* src,
                   const int32_t* paths, int64_t S);

// dblocks: the blocks' gradients back to back, block u at offset sum_{v<u} block_floats(level_v).
// dblocks[u] += sum over slots s that fetched block u of the matching rows of dfetched[s].
// Each block is owned by one task and sums slots in order: deterministic.
void memory_scatter_add(float* dblocks, const MemoryLayout& L, const std::vector<BlockId>& blocks,
                        const float* dfetched, const int32_t* paths, int64_t S);
int64_t memory_blocks_floats(const MemoryLayout& L, const std::vector<BlockId>& blocks);

// AdamW on each listed block (weights, m, v in the bank); the block's step count is incremented
// first and used for its bias correction (hyper.step is ignored). Decoupled weight decay wd.
void memory_adamw(MemoryBank& bank, const std::vector<BlockId>& blocks, const float* dblocks, float wd,
                  const AdamWHyper& hyper);

}  // namespace hm
