// ffn_memory.cu — the FFN memory units (twin: cpp/kernels/ffn_memory.h). For every group of token
// rows sharing a fetched slot s (Wg_s, Wu_s, Wd_s: (R, C) rows of the slot's block):
//   gate_m = x Wg_s^T, up_m = x Wu_s^T (rows, R);  y[rows] += (silu(gate_m) * up_m) Wd_s.
//
// Groups live in device memory. Launches that work on token rows use a grid of
// ceil(N/128) + G row tiles (an upper bound of sum over groups of ceil(rows/128)); each block finds
// its (group, tile) by walking the group list (find_row_tile, O(G) per block; G is at most the
// batch's sequence count) and blocks past the last tile exit. No host copy of the groups is needed.
//
// Forward (one fused kernel): a block owns 128 rows of one group and a set of 128-column tiles of
// y; it walks R in chunks of 64 units: (1) gate/up (128 x 64 each) = x_rows [Wg;Wu]_chunk^T on the
// tensor cores (FMA in FP32 mode), SwiGLU in registers, the hidden h goes to SHARED memory only
// (gate_m / up_m are written to global for the backward); (2) for each of its column tiles,
// y_tile += h Wd_chunk, with h as the A operand straight from shared memory. y is read-modified-
// written once per 64-unit chunk by the one block that owns those rows and columns: deterministic,
// no atomics. When there are few row tiles, the C columns are split over CS blocks (grid.x) to fill
// the GPU; each of them recomputes the gate/up chunk (a factor CS on 2/3 of the flops, chosen only
// while rows alone leave SMs idle, CS <= ceil(C/128)); only the blocks with grid.x == 0 store
// gate_m / up_m.
//
// Backward (four grouped launches, no host loop over groups):
//   (a) dh = dy_rows Wd_s^T, consumed in the epilogue: h, dgate, dup to scratch
//   (b) dx_rows += [dgate dup] [Wg_s; Wu_s]      (one product with K = 2R: Wg, Wu are adjacent)
//   (c) dWd_s += h^T dy_rows                    (d) [dWg_s; dWu_s] += [dgate dup]^T x_rows
// In (c), (d) two groups may share a slot (non-adjacent sequences with one slot), so a block of
// grid.z = group z works only if z is the slot's FIRST group, and then sums over all the slot's
// groups in group order before one += into dW: no race, fixed order.
#include <cuda_runtime.h>

#include <algorithm>

#include "gemm.cuh"
#include "hiermem_cuda.h"

namespace hmc {
namespace {

using namespace gemm_detail;

constexpr int RC = 64;  // memory units per chunk of the fused forward (= 64 gate + 64 up B rows)

template <GemmMode MODE>
struct Hidden {  // the fused forward's shared hidden tile: [128 rows][RC units], k-contiguous
  using T = typename Cfg<MODE>::T;
  static constexpr int S = RC + Cfg<MODE>::PAD;  // 68 words / 72 bf16: conflict-free fragments
  static constexpr int BYTES = BM * S * (int)sizeof(T);
};

__device__ __forceinline__ bool group_ok(const MemoryGroup& g, int64_t N) {
  return g.rows > 0 && g.row0 >= 0 && g.row0 + g.rows <= N && g.slot >= 0;
}
// Row tile `tile` of the list of all groups' 128-row tiles (a tile never straddles two groups):
// its group, first row and row count. False past the last tile. Invalid groups are skipped.
__device__ __forceinline__ bool find_row_tile(const MemoryGroup* groups, int64_t G, int64_t N, int64_t tile,
                                              MemoryGroup& grp, int64_t& r0, int64_t& nrows) {
  for (int64_t j = 0; j < G; j++) {
    const MemoryGroup g = groups[j];
    if (!group_ok(g, N)) continue;
    const int64_t nt = (g.rows + BM - 1) / BM;
    if (tile < nt) {
      grp = g;
      r0 = g.row0 + tile * BM;
      nrows = g.rows - tile * BM < BM ? g.rows - tile * BM : BM;
      return true;
    }
    tile -= nt;
  }
  return false;
}

// Fused forward. grid = (CS column splits, row tiles); block = 256 threads; dynamic shared memory:
// Smem<MODE>::BYTES staging + Hidden<MODE>::BYTES. Thread ownership: mma fragment layout (gemm.cuh).
template <GemmMode MODE>
__global__ void __launch_bounds__(NT, 1)
    ffn_memory_forward_kernel(float* y, float* gate_m, float* up_m, const float* x, const float* layer_w,
                              int64_t slot_stride, const MemoryGroup* groups, int64_t G, int64_t N, int64_t C,
                              int64_t R, int CS, bool x_vec, bool w_vec) {
  using T = typename Cfg<MODE>::T;
  extern __shared__ __align__(16) unsigned char smem[];
  MemoryGroup grp;
  int64_t r0, nrows;
  if (!find_row_tile(groups, G, N, blockIdx.y, grp, r0, nrows)) return;  // uniform: before any barrier
  const int cs = blockIdx.x;
  T* hs = reinterpret_cast<T*>(smem + Smem<MODE>::BYTES);
  constexpr int SH = Hidden<MODE>::S;
  const float* wg = layer_w + grp.slot * slot_stride;
  const float* wu = wg + R * C;
  const float* wd = wg + 2 * R * C;
  const Rows xr{x + r0 * C, C, nrows};
  float acc[4][4][4];
  for (int64_t u0 = 0; u0 < R; u0 += RC) {
    // (1) gate/up of units u0 + [0, 64): rows past nrows and units past R come out as g = v = 0, h = 0
    zero_acc(acc);
    block_product<MODE, true, true>(acc, smem, xr, 0, C, x_vec, GateUpRows{wg, wu, C, u0, R}, 0, C, w_vec, C);
    for_each_gate_up(acc, [&](int r, int u, float g, float v) {
      st1<MODE>(hs + r * SH + u, g * sigmoid(g) * v);
      if (cs == 0 && r < nrows && u0 + u < R) {
        const int64_t o = (r0 + r) * R + u0 + u;
        gate_m[o] = g;
        up_m[o] = v;
      }
    });
    __syncthreads();  // hs complete before (2) reads it
    // (2) y[rows, n0 + 0..127] += h (128 x 64, shared) Wd[u0 + 0..63, n0 + 0..127]
    SmemA<MODE> ha{hs, SH};
    for (int64_t n0 = (int64_t)cs * BN; n0 < C; n0 += (int64_t)CS * BN) {
      zero_acc(acc);
      // Wd chunk stored (units = k rows, C columns): transposed while staged into the B buffer
      Staged<MODE, false, Rows> wdo{
          {}, reinterpret_cast<T*>(smem) + 2 * Smem<MODE>::TILE, Rows{wd + u0 * C, C, R - u0 < RC ? R - u0 : RC}, n0, C,
          w_vec};
      mainloop<MODE>(acc, ha, wdo, RC);  // units past R: h = 0 and Wd rows read as 0
      for_each_acc(acc, [&](int r, int c, float v) {
        const int64_t j = n0 + c;
        if (r < nrows && j < C) y[(r0 + r) * C + j] += v;
      });
    }
    // each mainloop ends with a barrier, so the next chunk may overwrite the staging buffers and hs
    // (if this block had no column tile, nothing read hs)
  }
}

// (a) dh (rows, R) = dy_rows Wd^T; epilogue: h, dgate, dup of the twin's swiglu_backward (written).
// grid = (ceil(R/128) unit tiles, row tiles). h (N,R), dgu (N,2R) = [dgate | dup] per row.
template <GemmMode MODE>
__global__ void __launch_bounds__(NT)
    ffn_memory_dh_kernel(float* h, float* dgu, const float* dy, const float* gate_m, const float* up_m,
                         const float* layer_w, int64_t slot_stride, const MemoryGroup* groups, int64_t G, int64_t N,
                         int64_t C, int64_t R, bool dy_vec, bool w_vec) {
  __shared__ __align__(16) unsigned char smem[Smem<MODE>::BYTES];
  MemoryGroup grp;
  int64_t r0, nrows;
  if (!find_row_tile(groups, G, N, blockIdx.y, grp, r0, nrows)) return;
  const int64_t n0 = (int64_t)blockIdx.x * BN;
  const float* wd = layer_w + grp.slot * slot_stride + 2 * R * C;
  float acc[4][4][4];
  zero_acc(acc);
  block_product<MODE, true, true>(acc, smem, Rows{dy + r0 * C, C, nrows}, 0, C, dy_vec, Rows{wd, C, R}, n0, C, w_vec,
                                  C);
  for_each_acc(acc, [&](int r, int c, float d) {
    const int64_t u = n0 + c;
    if (r < nrows && u < R) {
      const int64_t i = r0 + r;
      const float g = gate_m[i * R + u], v = up_m[i * R + u], s = sigmoid(g), silu = g * s;
      h[i * R + u] = silu * v;
      dgu[i * 2 * R + u] = d * v * (s * (1.f + g * (1.f - s)));
      dgu[i * 2 * R + R + u] = d * silu;
    }
  });
}

// (b) dx_rows (rows, C) += dgu_rows (rows, 2R) [Wg; Wu] (2R, C). grid = (ceil(C/128), row tiles).
template <GemmMode MODE>
__global__ void __launch_bounds__(NT)
    ffn_memory_dx_kernel(float* dx, const float* dgu, const float* layer_w, int64_t slot_stride,
                         const MemoryGroup* groups, int64_t G, int64_t N, int64_t C, int64_t R, bool a_vec,
                         bool w_vec) {
  __shared__ __align__(16) unsigned char smem[Smem<MODE>::BYTES];
  MemoryGroup grp;
  int64_t r0, nrows;
  if (!find_row_tile(groups, G, N, blockIdx.y, grp, r0, nrows)) return;
  const int64_t n0 = (int64_t)blockIdx.x * BN;
  const float* wg = layer_w + grp.slot * slot_stride;  // Wg rows then Wu rows: one (2R, C) matrix
  float acc[4][4][4];
  zero_acc(acc);
  block_product<MODE, true, false>(acc, smem, Rows{dgu + r0 * 2 * R, 2 * R, nrows}, 0, 2 * R, a_vec,
                                   Rows{wg, C, 2 * R}, n0, C, w_vec, 2 * R);
  for_each_acc(acc, [&](int r, int c, float v) {
    const int64_t j = n0 + c;
    if (r < nrows && j < C) dx[(r0 + r) * C + j] += v;
  });
}

// (c), (d) dW_s (Mw, C) += sum over the slot's groups of a_rows^T (Mw x rows) b_rows (rows x C);
// dW_s at dlayer_w + slot * slot_stride + out_off. grid = (ceil(Mw/128), ceil(C/128), G).
// Only the block of a slot's first group works (see the file comment); it sums its groups in order.
template <GemmMode MODE>
__global__ void __launch_bounds__(NT)
    ffn_memory_dw_kernel(float* dlayer_w, int64_t out_off, int64_t slot_stride, const float* a, int64_t lda,
                         int64_t Mw, const float* b, const MemoryGroup* groups, int64_t G, int64_t N, int64_t C,
                         bool a_vec, bool b_vec) {
  __shared__ __align__(16) unsigned char smem[Smem<MODE>::BYTES];
  const int64_t z = blockIdx.z;
  const MemoryGroup grp = groups[z];
  if (!group_ok(grp, N)) return;
  for (int64_t j = 0; j < z; j++) {
    const MemoryGroup o = groups[j];
    if (group_ok(o, N) && o.slot == grp.slot) return;  // an earlier block owns this slot
  }
  const int64_t m0 = (int64_t)blockIdx.x * BM, n0 = (int64_t)blockIdx.y * BN;
  float acc[4][4][4];
  zero_acc(acc);
  for (int64_t j = z; j < G; j++) {  // uniform over the block: barriers inside are safe
    const MemoryGroup gj = groups[j];
    if (!group_ok(gj, N) || gj.slot != grp.slot) continue;
    // A = a_rows stored (rows = k, Mw columns), B = b_rows stored (rows = k, C columns)
    block_product<MODE, false, false>(acc, smem, Rows{a + gj.row0 * lda, lda, gj.rows}, m0, Mw, a_vec,
                                      Rows{b + gj.row0 * C, C, gj.rows}, n0, C, b_vec, gj.rows);
  }
  float* dw = dlayer_w + grp.slot * slot_stride + out_off;
  for_each_acc(acc, [&](int r, int c, float v) {
    const int64_t i = m0 + r, j = n0 + c;
    if (i < Mw && j < C) dw[i * C + j] += v;
  });
}

bool valid_mode(GemmMode m) { return m == GemmMode::FP32 || m == GemmMode::TF32 || m == GemmMode::BF16; }

template <GemmMode MODE>
int forward_launch(float* y, float* gate_m, float* up_m, const float* x, const float* layer_w, int64_t slot_stride,
                   const MemoryGroup* groups, int64_t G, int64_t N, int64_t C, int64_t R, cudaStream_t st) {
  const int64_t row_tiles = (N + BM - 1) / BM + G;
  if (row_tiles > 65535) return (int)cudaErrorInvalidValue;
  // column splits: enough blocks for ~2 per SM while the rows alone give fewer
  int dev = 0, sms = 0;
  int e = (int)cudaGetDevice(&dev);
  if (!e) e = (int)cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (e) return e;
  const int64_t col_tiles = std::max<int64_t>(1, (C + BN - 1) / BN);
  const int64_t est_rows = (N + BM - 1) / BM;  // actual row tiles are at most this + G
  const int CS = (int)std::max<int64_t>(1, std::min<int64_t>(col_tiles, (2 * sms + est_rows - 1) / est_rows));
  const int bytes = Smem<MODE>::BYTES + Hidden<MODE>::BYTES;
  auto kernel = ffn_memory_forward_kernel<MODE>;
  if ((e = (int)cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes))) return e;
  const bool x_vec = rows_vec(x, C), w_vec = rows_vec(layer_w, C) && slot_stride % 4 == 0;
  kernel<<<dim3((unsigned)CS, (unsigned)row_tiles), NT, bytes, st>>>(y, gate_m, up_m, x, layer_w, slot_stride, groups, G,
                                                                     N, C, R, CS, x_vec, w_vec);
  return (int)cudaGetLastError();
}

template <GemmMode MODE>
int backward_launch(float* dx, float* dlayer_w, const float* dy, const float* x, const float* gate_m,
                    const float* up_m, const float* layer_w, int64_t slot_stride, const MemoryGroup* groups, int64_t G,
                    int64_t N, int64_t C, int64_t R, float* scratch, cudaStream_t st) {
  const int64_t row_tiles = (N + BM - 1) / BM + G;
  const int64_t r_tiles = (R + BN - 1) / BN, c_tiles = (C + BN - 1) / BN, r2_tiles = (2 * R + BM - 1) / BM;
  if (row_tiles > 65535 || G > 65535 || c_tiles > 65535) return (int)cudaErrorInvalidValue;
  float* h = scratch;           // (N, R)
  float* dgu = scratch + N * R;  // (N, 2R): [dgate | dup]
  const bool w_vec = rows_vec(layer_w, C) && slot_stride % 4 == 0;
  ffn_memory_dh_kernel<MODE><<<dim3((unsigned)r_tiles, (unsigned)row_tiles), NT, 0, st>>>(
      h, dgu, dy, gate_m, up_m, layer_w, slot_stride, groups, G, N, C, R, rows_vec(dy, C), w_vec);
  ffn_memory_dx_kernel<MODE><<<dim3((unsigned)c_tiles, (unsigned)row_tiles), NT, 0, st>>>(
      dx, dgu, layer_w, slot_stride, groups, G, N, C, R, rows_vec(dgu, 2 * R), w_vec);
  // dWd_s += h^T dy  (Wd at + 2RC in the slot)
  ffn_memory_dw_kernel<MODE><<<dim3((unsigned)r_tiles, (unsigned)c_tiles, (unsigned)G), NT, 0, st>>>(
      dlayer_w, 2 * R * C, slot_stride, h, R, R, dy, groups, G, N, C, rows_vec(h, R), rows_vec(dy, C));
  // [dWg_s; dWu_s] += [dgate dup]^T x  (Wg at + 0, Wu at + RC: one (2R, C) block)
  ffn_memory_dw_kernel<MODE><<<dim3((unsigned)r2_tiles, (unsigned)c_tiles, (unsigned)G), NT, 0, st>>>(
      dlayer_w, 0, slot_stride, dgu, 2 * R, 2 * R, x, groups, G, N, C, rows_vec(dgu, 2 * R), rows_vec(x, C));
  return (int)cudaGetLastError();
}

}  // namespace

int ffn_memory_forward(GemmMode mode, float* y, float* gate_m, float* up_m, const float* x, const float* layer_w,
                       int64_t slot_stride, const MemoryGroup* groups, int64_t G, int64_t N, int64_t C, int64_t R,
                       Stream s) {
  if (N < 0 || C < 0 || R < 0 || G < 0 || !valid_mode(mode)) return (int)cudaErrorInvalidValue;
  if (N == 0 || R == 0 || G == 0) return 0;
  if (!y || !gate_m || !up_m || !x || !layer_w || !groups || slot_stride < 3 * R * C) return (int)cudaErrorInvalidValue;
  cudaStream_t st = (cudaStream_t)s;
  switch (mode) {
    case GemmMode::FP32:
      return forward_launch<GemmMode::FP32>(y, gate_m, up_m, x, layer_w, slot_stride, groups, G, N, C, R, st);
    case GemmMode::TF32:
      return forward_launch<GemmMode::TF32>(y, gate_m, up_m, x, layer_w, slot_stride, groups, G, N, C, R, st);
    case GemmMode::BF16:
      return forward_launch<GemmMode::BF16>(y, gate_m, up_m, x, layer_w, slot_stride, groups, G, N, C, R, st);
  }
  return (int)cudaErrorInvalidValue;
}

int ffn_memory_backward(GemmMode mode, float* dx, float* dlayer_w, const float* dy, const float* x,
                        const float* gate_m, const float* up_m, const float* layer_w, int64_t slot_stride,
                        const MemoryGroup* groups, int64_t G, int64_t N, int64_t C, int64_t R, float* scratch,
                        Stream s) {
  if (N < 0 || C < 0 || R < 0 || G < 0 || !valid_mode(mode)) return (int)cudaErrorInvalidValue;
  if (N == 0 || C == 0 || R == 0 || G == 0) return 0;  // every gradient term is empty
  if (!dx || !dlayer_w || !dy || !x || !gate_m || !up_m || !layer_w || !groups || !scratch ||
      slot_stride < 3 * R * C)
    return (int)cudaErrorInvalidValue;
  cudaStream_t st = (cudaStream_t)s;
  switch (mode) {
    case GemmMode::FP32:
      return backward_launch<GemmMode::FP32>(dx, dlayer_w, dy, x, gate_m, up_m, layer_w, slot_stride, groups, G, N, C,
                                             R, scratch, st);
    case GemmMode::TF32:
      return backward_launch<GemmMode::TF32>(dx, dlayer_w, dy, x, gate_m, up_m, layer_w, slot_stride, groups, G, N, C,
                                             R, scratch, st);
    case GemmMode::BF16:
      return backward_launch<GemmMode::BF16>(dx, dlayer_w, dy, x, gate_m, up_m, layer_w, slot_stride, groups, G, N, C,
                                             R, scratch, st);
  }
  return (int)cudaErrorInvalidValue;
}

// h (N,R) and [dgate | dup] (N,2R); the twin's 4 N R is also enough
int64_t ffn_memory_backward_scratch_floats(int64_t N, int64_t R) { return 3 * N * R; }

}  // namespace hmc
