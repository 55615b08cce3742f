// memory.cu — the block-sparse memory kernels on device-resident bank levels (CPU twin: cpp/kernels/memory.cc).
//   memory_gather       bank blocks named by the paths -> fetched (S, Lm, 3, R, d)
//   memory_scatter_add  dfetched -> one gradient per unique block, summed over slots in slot order
//   memory_adamw        AdamW on each listed block with its own bias corrections
// Gather is a pure copy, as its twin: never-trained blocks are initialised by the bank
// (hm::MemoryBank::prepare_gather) before their levels reach the device or a gather reads them.
// Layout (cpp/memory/layout.h, authoritative): a block of level l is [Lm][3][rows_l][d]; a slot is
// [Lm][3][R][d] with level l's rows at row_offset_l. A slot whose path starts with a negative node
// uses only the generic block (level p = num_levels-1 when L.generic, node 0, rows R at offset 0).
// Scatter-add is bit-identical to the twin: one thread owns each output float and adds the slots'
// rows in slot order onto the old value, the twin's exact sequence of float additions.
#include <cuda_runtime.h>

#include <cstdint>

#include "adamw.cuh"
#include "hiermem_cuda.h"

namespace hmc {
namespace {

constexpr int kThreads = 256;
constexpr int kScatterPerThread = 4;                          // output floats per thread
constexpr int kScatterChunk = kThreads * kScatterPerThread;   // output floats per (block u, chunk)
constexpr int kSlotTile = kThreads;                           // slots whose "uses" flags are staged at once

inline cudaStream_t as_stream(Stream s) { return static_cast<cudaStream_t>(s); }

// Host-side check of the flattened layout; sets *p_levels (tree levels p) and *max_rows.
bool layout_ok(const MemoryLayoutDesc& L, int64_t* p_levels, int64_t* max_rows) {
  if (L.num_levels < 1 || L.num_levels > 17 || (L.generic != 0 && L.generic != 1)) return false;
  if (L.Lm < 0 || L.d < 0 || L.R < 0) return false;
  int64_t mr = 0;
  for (int l = 0; l < L.num_levels; l++) {
    if (L.rows[l] < 0 || L.row_offset[l] < 0 || L.row_offset[l] + L.rows[l] > L.R) return false;
    if (L.rows[l] > mr) mr = L.rows[l];
  }
  *p_levels = L.num_levels - L.generic;
  *max_rows = mr;
  return true;
}

// fetched (S, Lm, 3, R, d). One task = (slot s, level l, matrix m in Lm*3): copy the block's
// rows_l*d contiguous floats of matrix m to the slot's rows [row_offset_l, +rows_l) of matrix m,
// which are contiguous too. Thread block per task (grid-stride over tasks); the block's threads
// stride over the chunk, float4 when d % 4 == 0 and both ends are 16-byte aligned. Tasks a slot
// does not use (other levels of a generic slot, the generic level of a tree slot, empty levels)
// exit at once; the test is block-uniform.
__global__ void memory_gather_kernel(float* fetched, const float* const* level_w, MemoryLayoutDesc L,
                                     const int32_t* paths, int64_t path_stride, int64_t S) {
  const int64_t NL = L.num_levels, M = L.Lm * 3, p = NL - L.generic;
  const int64_t tasks = S * NL * M, slot_floats = M * L.R * L.d;
  for (int64_t task = blockIdx.x; task < tasks; task += gridDim.x) {
    const int64_t m = task % M, sl = task / M, l = sl % NL, s = sl / NL;
    const int32_t* ps = paths + s * path_stride;
    const bool generic_slot = ps[0] < 0;
    int64_t node;
    if (generic_slot) {
      if (!(L.generic && l == NL - 1)) continue;
      node = 0;
    } else {
      if (l >= p) continue;
      node = ps[l];
      if (node < 0) continue;  // malformed path (the caller validates): write nothing
    }
    const int64_t rows = L.rows[l];
    if (rows == 0) continue;
    const int64_t count = rows * L.d;
    const float* src = level_w[l] + node * (M * count) + m * count;
    float* dst = fetched + s * slot_floats + (m * L.R + L.row_offset[l]) * L.d;
    const bool vec = L.d % 4 == 0 && (reinterpret_cast<uintptr_t>(src) % 16) == 0 &&
                     (reinterpret_cast<uintptr_t>(dst) % 16) == 0;
    if (vec) {
      const float4* s4 = reinterpret_cast<const float4*>(src);
      float4* d4 = reinterpret_cast<float4*>(dst);
      for (int64_t i = threadIdx.x; i < count / 4; i += blockDim.x) d4[i] = s4[i];
    } else {
      for (int64_t i = threadIdx.x; i < count; i += blockDim.x) dst[i] = src[i];
    }
  }
}

// dblocks: block u's gradient ([Lm][3][rows_l][d]) at blocks[u].offset. One task = (block u, chunk
// of kScatterChunk of its floats); a thread owns kScatterPerThread floats (strided by kThreads so
// that a warp touches consecutive addresses) and keeps their running sums in registers. Slots are
// visited in tiles of kSlotTile: each thread evaluates "slot uses block u" for one slot into shared
// memory, then every thread walks the tile's flags in slot order and adds the rows of the slots that
// use the block. All branches on u, chunk and flags are block-uniform, so the barriers are safe.
__global__ void memory_scatter_add_kernel(float* dblocks, const BlockRef* blocks, int64_t U, MemoryLayoutDesc L,
                                          const float* dfetched, const int32_t* paths, int64_t path_stride,
                                          int64_t S, int64_t chunks_per_block) {
  __shared__ unsigned char uses[kSlotTile];
  const int64_t NL = L.num_levels, M = L.Lm * 3, p = NL - L.generic;
  const int64_t slot_floats = M * L.R * L.d;
  const int64_t tasks = U * chunks_per_block;
  for (int64_t task = blockIdx.x; task < tasks; task += gridDim.x) {
    const int64_t u = task / chunks_per_block, chunk = task % chunks_per_block;
    const BlockRef ref = blocks[u];
    const int64_t l = ref.level;
    if (l < 0 || l >= NL || L.rows[l] == 0) continue;
    const bool generic_level = L.generic && l == NL - 1;
    if (!generic_level && l >= p) continue;
    const int64_t rows = L.rows[l], row0 = L.row_offset[l], per_m = rows * L.d;
    const int64_t bf = M * per_m;
    const int64_t e0 = chunk * kScatterChunk;
    if (e0 >= bf) continue;
    float* dst = dblocks + ref.offset;
    float acc[kScatterPerThread];
    int64_t src_off[kScatterPerThread];  // offset of the element inside a slot of dfetched
#pragma unroll
    for (int k = 0; k < kScatterPerThread; k++) {
      const int64_t e = e0 + threadIdx.x + (int64_t)k * kThreads;
      const int64_t m = e / per_m, rem = e - m * per_m;
      src_off[k] = (m * L.R + row0) * L.d + rem;
      acc[k] = e < bf ? dst[e] : 0.f;
    }
    for (int64_t s0 = 0; s0 < S; s0 += kSlotTile) {
      __syncthreads();  // the previous tile's flags have been read by everyone
      const int64_t s = s0 + threadIdx.x;
      bool use = false;
      if (s < S) {
        const int32_t* ps = paths + s * path_stride;
        use = generic_level ? ps[0] < 0 : (ps[0] >= 0 && ps[l] == ref.node);
      }
      uses[threadIdx.x] = use ? 1 : 0;
      __syncthreads();
      const int64_t n = S - s0 < kSlotTile ? S - s0 : kSlotTile;
      for (int64_t j = 0; j < n; j++) {
        if (!uses[j]) continue;
        const float* g = dfetched + (s0 + j) * slot_floats;
#pragma unroll
        for (int k = 0; k < kScatterPerThread; k++)
          if (e0 + threadIdx.x + (int64_t)k * kThreads < bf) acc[k] += g[src_off[k]];
      }
    }
#pragma unroll
    for (int k = 0; k < kScatterPerThread; k++) {
      const int64_t e = e0 + threadIdx.x + (int64_t)k * kThreads;
      if (e < bf) dst[e] = acc[k];
    }
  }
}

// blocks (U): grid (gx, gy); block row y handles blocks u = y, y + gridDim.y, ...; within one block
// the gx thread blocks grid-stride over its n floats. adamw_element (adamw.cuh), as adamw.cu.
__global__ void memory_adamw_kernel(const SparseAdamBlock* blocks, int64_t U, AdamWConsts k) {
  for (int64_t u = blockIdx.y; u < U; u += gridDim.y) {
    const SparseAdamBlock b = blocks[u];
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < b.n; i += (int64_t)gridDim.x * blockDim.x)
      adamw_element(b.w, b.g, b.m, b.v, i, b.ibc1, b.ibc2, k);
  }
}

}  // namespace

int memory_gather(float* fetched, const float* const* level_w, const MemoryLayoutDesc& L, const int32_t* paths,
                  int64_t path_stride, int64_t S, Stream s) {
  int64_t p = 0, max_rows = 0;
  if (S < 0 || !layout_ok(L, &p, &max_rows)) return (int)cudaErrorInvalidValue;
  if (S == 0 || L.Lm == 0 || L.d == 0 || L.R == 0) return 0;
  if (!fetched || !level_w || !paths || path_stride < (p > 1 ? p : 1)) return (int)cudaErrorInvalidValue;
  int64_t tasks = S * L.num_levels * L.Lm * 3;
  if (tasks > (1 << 22)) tasks = 1 << 22;  // grid-stride beyond
  memory_gather_kernel<<<(unsigned)tasks, kThreads, 0, as_stream(s)>>>(fetched, level_w, L, paths, path_stride, S);
  return (int)cudaGetLastError();
}

int memory_scatter_add(float* dblocks, const BlockRef* blocks, int64_t U, const MemoryLayoutDesc& L,
                       const float* dfetched, const int32_t* paths, int64_t path_stride, int64_t S, Stream s) {
  int64_t p = 0, max_rows = 0;
  if (U < 0 || S < 0 || !layout_ok(L, &p, &max_rows)) return (int)cudaErrorInvalidValue;
  if (U == 0 || L.Lm == 0 || L.d == 0 || max_rows == 0) return 0;
  if (!dblocks || !blocks) return (int)cudaErrorInvalidValue;
  if (S > 0 && (!dfetched || !paths || path_stride < (p > 1 ? p : 1))) return (int)cudaErrorInvalidValue;
  if (S == 0) return 0;  // dblocks += an empty sum
  const int64_t max_block_floats = L.Lm * 3 * max_rows * L.d;
  const int64_t chunks = (max_block_floats + kScatterChunk - 1) / kScatterChunk;
  int64_t tasks = U * chunks;
  if (tasks > (1 << 22)) tasks = 1 << 22;
  memory_scatter_add_kernel<<<(unsigned)tasks, kThreads, 0, as_stream(s)>>>(dblocks, blocks, U, L, dfetched, paths,
                                                                           path_stride, S, chunks);
  return (int)cudaGetLastError();
}

int memory_adamw(const SparseAdamBlock* blocks, int64_t U, const AdamWConsts& k, Stream s) {
  if (U < 0) return (int)cudaErrorInvalidValue;
  if (U == 0) return 0;
  if (!blocks) return (int)cudaErrorInvalidValue;
  // ~2048 thread blocks in all, at least one per unique block and at most 1024 per block
  const int64_t gy = U < 65535 ? U : 65535;
  int64_t gx = (2048 + gy - 1) / gy;
  if (gx > 1024) gx = 1024;
  memory_adamw_kernel<<<dim3((unsigned)gx, (unsigned)gy), kThreads, 0, as_stream(s)>>>(blocks, U, k);
  return (int)cudaGetLastError();
}

}  // namespace hmc
