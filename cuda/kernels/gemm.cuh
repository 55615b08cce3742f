// gemm.cuh — device-side tile machinery shared by the dense-product kernels (gemm.cu, ffn.cu,
// ffn_memory.cu). CPU twin of what is built from it: hm::gemm in cpp/kernels/gemm.h.
//
// Defines (namespace hmc::gemm_detail, all inline / templates):
//   Cfg<MODE>        per-mode shared-memory element type and k-tile (FP32/TF32: fp32 words, BK 16;
//                    BF16: bf16, BK 32)
//   Rows, GateUpRows row-pointer functors: how an operand's stored rows are found in global memory
//   TileLoader       global -> registers -> shared memory for one 128 x BK operand tile (converts
//                    to tf32 / bf16 while storing; transposes when the operand is stored the other way)
//   Staged, SmemA    the two operand kinds of the main loop (staged from global / resident in smem)
//   warp_tile_mma    one warp's 64 x 32 tile over one k-tile (FP32 FMA, mma.sync tf32 or bf16)
//   mainloop         register-prefetch double-buffered k loop of a 128 x 128 block tile
//   block_product    mainloop over two global operands; for_each_acc / for_each_gate_up: epilogues
//
// Block tile: 128 x 128 outputs, 256 threads = 8 warps arranged 2 (M) x 4 (N), warp tile 64 x 32 =
// 4 x 4 fragments of 16 x 8. Every mode keeps the accumulators in the mma.sync m16n8 C-fragment
// layout (lane = 4 g + t owns rows g, g+8 and columns 2t, 2t+1 of each fragment), so that the
// epilogues are mode-independent; the FP32 mode computes exactly those elements with FMAs.
//
// Shared memory holds every operand tile "k-contiguous": tile[o][k] with row stride BK + PAD, the
// layout mma.sync's row.col operands want (A rows = M, B rows = N). The padding makes the fragment
// loads bank-conflict free (row stride = 4 words mod 32). Operands stored k-contiguous in global
// memory (A not transposed, B transposed) are copied with 16-byte loads; the others are transposed
// while staging (lanes cover 8 rows x 16 k so the scalar shared stores hit 32 distinct banks).
//
// Why not cp.async: the operands are converted (fp32 -> tf32 / bf16) and possibly transposed on
// the way into shared memory, which cp.async cannot do; a register-staged double buffer (load the
// next k-tile into registers before the current tile's math, store it after) hides the global
// latency as well at this tile size. Next steps for sm_90a (not done): wgmma from shared memory with
// TMA (cp.async.bulk.tensor) multi-stage pipelines and bf16/tf32 operands pre-converted once per
// step (the weights change once per optimizer step), 128 x 256 tiles per warpgroup pair, and a
// persistent tile scheduler. That is what it takes to approach cuBLAS on H100; mma.sync tops out at
// roughly 60% of Hopper's dense tensor throughput.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "hiermem_cuda.h"

namespace hmc {
namespace gemm_detail {

constexpr int NT = 256;            // threads per block
constexpr int BM = 128, BN = 128;  // block tile (outputs)
constexpr int OT = 128;            // rows ("outer" extent) of a staged operand tile

template <GemmMode MODE>
struct Cfg;
template <>
struct Cfg<GemmMode::FP32> {
  using T = float;
  static constexpr int BK = 16, PAD = 4;
};
template <>
struct Cfg<GemmMode::TF32> {
  using T = float;  // tf32 values stored in fp32 words (low 13 mantissa bits zero)
  static constexpr int BK = 16, PAD = 4;
};
template <>
struct Cfg<GemmMode::BF16> {
  using T = __nv_bfloat16;
  static constexpr int BK = 32, PAD = 8;  // row stride 40 bf16 = 20 words: conflict-free fragments
};

// Shared memory of the staged main loop: A double buffer then B double buffer, OT x (BK + PAD) each.
template <GemmMode MODE>
struct Smem {
  using T = typename Cfg<MODE>::T;
  static constexpr int S = Cfg<MODE>::BK + Cfg<MODE>::PAD;  // row stride (elements)
  static constexpr int TILE = OT * S;                       // elements of one tile
  static constexpr int BYTES = 4 * TILE * (int)sizeof(T);   // 40960 for every mode
};

__device__ __forceinline__ float to_tf32(float x) {
  uint32_t u;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(u) : "f"(x));
  return __uint_as_float(u);
}
__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

// store 1 / 4 consecutive values into shared memory in the mode's operand format
template <GemmMode MODE>
__device__ __forceinline__ void st1(typename Cfg<MODE>::T* dst, float v) {
  if constexpr (MODE == GemmMode::BF16) *dst = __float2bfloat16_rn(v);
  else if constexpr (MODE == GemmMode::TF32) *dst = to_tf32(v);
  else *dst = v;
}
template <GemmMode MODE>
__device__ __forceinline__ void st4(typename Cfg<MODE>::T* dst, float4 v) {  // dst 16-byte (bf16: 8-byte) aligned
  if constexpr (MODE == GemmMode::BF16) {
    __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
    uint2 u;
    u.x = *reinterpret_cast<uint32_t*>(&lo);
    u.y = *reinterpret_cast<uint32_t*>(&hi);
    *reinterpret_cast<uint2*>(dst) = u;
  } else {
    if constexpr (MODE == GemmMode::TF32) v = make_float4(to_tf32(v.x), to_tf32(v.y), to_tf32(v.z), to_tf32(v.w));
    *reinterpret_cast<float4*>(dst) = v;
  }
}

// ---- where an operand's stored rows are ---------------------------------------------------------
// A functor maps a stored row index to its first element, or nullptr when the row is out of range
// (its elements then read as 0). Rows of a plain row-major matrix: row r at p + r * ld, r < n.
struct Rows {
  const float* p;
  int64_t ld, n;
  __device__ __forceinline__ const float* operator()(int64_t r) const { return r < n ? p + r * ld : nullptr; }
};
// The B operand of a gate/up tile: its 128 rows interleave 16-row blocks of two (R, ld) weight
// matrices so that warp wn (B rows [32 wn, 32 wn + 32)) gets gate rows r0 + 16 wn + [0, 16) in its
// fragments 0, 1 and the up rows of the same units in fragments 2, 3: the SwiGLU of a unit then
// happens inside one thread (see for_each_gate_up).
struct GateUpRows {
  const float* wg;
  const float* wu;
  int64_t ld, r0, rend;  // units r0 + [0, 64) of this tile; rows >= rend are out of range
  __device__ __forceinline__ const float* operator()(int64_t n) const {
    const int64_t r = r0 + 16 * (n / 32) + (n % 16);
    if (r >= rend) return nullptr;
    return (((n / 16) & 1) ? wu : wg) + r * ld;
  }
};

// ---- global -> shared staging of one OT x BK operand tile ---------------------------------------
// KC: the operand is stored k-contiguous in global memory (stored row = outer index o, column = k);
// otherwise stored row = k and column = o. Either way the tile lands in shared memory as [o][k].
// Each thread moves VPT groups of 4 elements that are consecutive in global memory: a 16-byte load
// when `vec` (all stored rows 16-byte aligned) and the 4 are in range, else 4 checked scalar loads.
template <GemmMode MODE, bool KC>
struct TileLoader {
  using T = typename Cfg<MODE>::T;
  static constexpr int BK = Cfg<MODE>::BK;
  static constexpr int VPT = OT * BK / 4 / NT;
  static_assert(VPT * 4 * NT == OT * BK, "tile must split evenly over the threads");
  static_assert(KC || BK % 16 == 0, "transposing loader covers 16 k per warp");
  float4 r[VPT];

  // tile coordinates (o, k) of group i of this thread; the 4 elements are (o, k..k+3) if KC else (o..o+3, k)
  __device__ __forceinline__ static void coords(int i, int& o, int& k) {
    const int v = (int)threadIdx.x + i * NT;
    if (KC) {  // a warp reads 4 rows x 32 consecutive floats (128-byte segments)
      o = v / (BK / 4);
      k = 4 * (v % (BK / 4));
    } else {  // a warp reads 16 k-rows x 8 consecutive floats (32-byte sectors, fully used)
      const int lane = v & 31, c = v >> 5;
      o = 8 * (c % (OT / 8)) + 4 * (lane & 1);
      k = 16 * (c / (OT / 8)) + (lane >> 1);
    }
  }
  // o0: tile origin along o; k0: along k; col_end: bound of the stored column index (K if KC else O)
  template <class RowsT>
  __device__ __forceinline__ void fetch(const RowsT& rows, int64_t o0, int64_t k0, int64_t col_end, bool vec) {
#pragma unroll
    for (int i = 0; i < VPT; i++) {
      int o, k;
      coords(i, o, k);
      const int64_t srow = KC ? o0 + o : k0 + k;
      const int64_t col = KC ? k0 + k : o0 + o;  // a multiple of 4: o0, k0 are tile origins
      const float* p = rows(srow);
      if (p && vec && col + 3 < col_end) {
        r[i] = __ldg(reinterpret_cast<const float4*>(p + col));
      } else {
        r[i].x = (p && col + 0 < col_end) ? __ldg(p + col + 0) : 0.f;
        r[i].y = (p && col + 1 < col_end) ? __ldg(p + col + 1) : 0.f;
        r[i].z = (p && col + 2 < col_end) ? __ldg(p + col + 2) : 0.f;
        r[i].w = (p && col + 3 < col_end) ? __ldg(p + col + 3) : 0.f;
      }
    }
  }
  __device__ __forceinline__ void stash(T* sm) const {  // sm: [OT][S]
    constexpr int S = Smem<MODE>::S;
#pragma unroll
    for (int i = 0; i < VPT; i++) {
      int o, k;
      coords(i, o, k);
      if (KC) {
        st4<MODE>(sm + o * S + k, r[i]);
      } else {
        st1<MODE>(sm + (o + 0) * S + k, r[i].x);
        st1<MODE>(sm + (o + 1) * S + k, r[i].y);
        st1<MODE>(sm + (o + 2) * S + k, r[i].z);
        st1<MODE>(sm + (o + 3) * S + k, r[i].w);
      }
    }
  }
};

// An operand staged from global memory through a shared double buffer (sm: 2 tiles).
template <GemmMode MODE, bool KC, class RowsT>
struct Staged {
  using T = typename Cfg<MODE>::T;
  TileLoader<MODE, KC> ld;
  T* sm;
  RowsT rows;
  int64_t o0, col_end;
  bool vec;
  static constexpr int stride = Smem<MODE>::S;
  __device__ __forceinline__ void fetch(int kt) { ld.fetch(rows, o0, (int64_t)kt * Cfg<MODE>::BK, col_end, vec); }
  __device__ __forceinline__ void stash(int buf) const { ld.stash(sm + buf * Smem<MODE>::TILE); }
  __device__ __forceinline__ const T* tile(int buf, int) const { return sm + buf * Smem<MODE>::TILE; }
};
// An A operand already resident in shared memory as [128][stride] (k-contiguous), e.g. the SwiGLU
// hidden of the fused memory FFN; already converted to the mode's format.
template <GemmMode MODE>
struct SmemA {
  using T = typename Cfg<MODE>::T;
  const T* sm;
  int stride;
  __device__ __forceinline__ void fetch(int) {}
  __device__ __forceinline__ void stash(int) const {}
  __device__ __forceinline__ const T* tile(int, int kt) const { return sm + kt * Cfg<MODE>::BK; }
};

// ---- one warp's 64 x 32 tile over one k-tile --------------------------------------------------
// As: the warp's first A row ([64][sa], k-contiguous), Bs: its first B row ([32][sb]).
// acc[mi][ni][c]: fragment (mi, ni) = rows 16 mi + [0, 16), cols 8 ni + [0, 8) of the warp tile.
__device__ __forceinline__ void fma4(float& c, const float4& a, const float4& b) {
  c = fmaf(a.x, b.x, c);
  c = fmaf(a.y, b.y, c);
  c = fmaf(a.z, b.z, c);
  c = fmaf(a.w, b.w, c);
}
__device__ __forceinline__ void mma_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ uint32_t ld32(const __nv_bfloat16* p) { return *reinterpret_cast<const uint32_t*>(p); }

template <GemmMode MODE>
__device__ __forceinline__ void warp_tile_mma(float (&acc)[4][4][4], const typename Cfg<MODE>::T* As, int sa,
                                              const typename Cfg<MODE>::T* Bs, int sb) {
  constexpr int BK = Cfg<MODE>::BK;
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  if constexpr (MODE == GemmMode::FP32) {
    // the C-fragment elements by FMA: a 16-byte load gives 4 k of one row (sa, sb multiples of 4)
#pragma unroll
    for (int k = 0; k < BK; k += 4) {
      float4 a[4][2], b[4][2];
#pragma unroll
      for (int mi = 0; mi < 4; mi++) {
        a[mi][0] = *reinterpret_cast<const float4*>(As + (16 * mi + g) * sa + k);
        a[mi][1] = *reinterpret_cast<const float4*>(As + (16 * mi + g + 8) * sa + k);
      }
#pragma unroll
      for (int ni = 0; ni < 4; ni++) {
        b[ni][0] = *reinterpret_cast<const float4*>(Bs + (8 * ni + 2 * t) * sb + k);
        b[ni][1] = *reinterpret_cast<const float4*>(Bs + (8 * ni + 2 * t + 1) * sb + k);
      }
#pragma unroll
      for (int mi = 0; mi < 4; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++) {
          fma4(acc[mi][ni][0], a[mi][0], b[ni][0]);
          fma4(acc[mi][ni][1], a[mi][0], b[ni][1]);
          fma4(acc[mi][ni][2], a[mi][1], b[ni][0]);
          fma4(acc[mi][ni][3], a[mi][1], b[ni][1]);
        }
    }
  } else if constexpr (MODE == GemmMode::TF32) {
    // m16n8k8: A a0 (g, t) a1 (g+8, t) a2 (g, t+4) a3 (g+8, t+4); B b0 (k t, n g) b1 (k t+4, n g)
#pragma unroll
    for (int k = 0; k < BK; k += 8) {
      uint32_t a[4][4], b[4][2];
#pragma unroll
      for (int mi = 0; mi < 4; mi++) {
        const float* p = As + (16 * mi + g) * sa + k + t;
        a[mi][0] = __float_as_uint(p[0]);
        a[mi][1] = __float_as_uint(p[8 * sa]);
        a[mi][2] = __float_as_uint(p[4]);
        a[mi][3] = __float_as_uint(p[8 * sa + 4]);
      }
#pragma unroll
      for (int ni = 0; ni < 4; ni++) {
        const float* q = Bs + (8 * ni + g) * sb + k + t;
        b[ni][0] = __float_as_uint(q[0]);
        b[ni][1] = __float_as_uint(q[4]);
      }
#pragma unroll
      for (int mi = 0; mi < 4; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++) mma_tf32(acc[mi][ni], a[mi], b[ni]);
    }
  } else {
    // m16n8k16 bf16 (pairs along k): A a0 (g, 2t..) a1 (g+8, 2t..) a2 (g, 2t+8..) a3 (g+8, 2t+8..);
    // B b0 (k 2t.., n g) b1 (k 2t+8.., n g). The lower k sits in the lower half of each register.
#pragma unroll
    for (int k = 0; k < BK; k += 16) {
      uint32_t a[4][4], b[4][2];
#pragma unroll
      for (int mi = 0; mi < 4; mi++) {
        const __nv_bfloat16* p = As + (16 * mi + g) * sa + k + 2 * t;
        a[mi][0] = ld32(p);
        a[mi][1] = ld32(p + 8 * sa);
        a[mi][2] = ld32(p + 8);
        a[mi][3] = ld32(p + 8 * sa + 8);
      }
#pragma unroll
      for (int ni = 0; ni < 4; ni++) {
        const __nv_bfloat16* q = Bs + (8 * ni + g) * sb + k + 2 * t;
        b[ni][0] = ld32(q);
        b[ni][1] = ld32(q + 8);
      }
#pragma unroll
      for (int mi = 0; mi < 4; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++) mma_bf16(acc[mi][ni], a[mi], b[ni]);
    }
  }
}

// ---- the block's k loop ---------------------------------------------------------------------------
// acc += A-tile (128 x K) * B-tile (128 x K)^T, k-tiles of BK (zero-padded past K).
// Double buffer with one barrier per k-tile: tile kt+1 is loaded into registers before the math on
// tile kt and stored into the other buffer after it; the barrier at the end of iteration kt orders
// those stores before iteration kt+1's reads and iteration kt's reads before iteration kt+1's
// stores. The loop ends with a barrier, so the caller may reuse the shared memory right away.
// The caller must make sure no thread still reads the staging buffers when this starts.
template <GemmMode MODE, class OpA, class OpB>
__device__ __forceinline__ void mainloop(float (&acc)[4][4][4], OpA& a, OpB& b, int64_t K) {
  constexpr int BK = Cfg<MODE>::BK;
  const int nk = (int)((K + BK - 1) / BK);
  if (nk <= 0) return;  // uniform over the block
  const int warp = threadIdx.x >> 5, wm = warp >> 2, wn = warp & 3;
  a.fetch(0);
  b.fetch(0);
  a.stash(0);
  b.stash(0);
  __syncthreads();
  for (int kt = 0; kt < nk; kt++) {
    const int cur = kt & 1;
    const bool more = kt + 1 < nk;
    if (more) {
      a.fetch(kt + 1);
      b.fetch(kt + 1);
    }
    warp_tile_mma<MODE>(acc, a.tile(cur, kt) + 64 * wm * a.stride, a.stride, b.tile(cur, kt) + 32 * wn * b.stride,
                        b.stride);
    if (more) {
      a.stash(cur ^ 1);
      b.stash(cur ^ 1);
    }
    __syncthreads();
  }
}

__device__ __forceinline__ void zero_acc(float (&acc)[4][4][4]) {
#pragma unroll
  for (int mi = 0; mi < 4; mi++)
#pragma unroll
    for (int ni = 0; ni < 4; ni++)
#pragma unroll
      for (int c = 0; c < 4; c++) acc[mi][ni][c] = 0.f;
}

// acc = A (rows via ra, AKC = stored k-contiguous) x B^T (rows via rb) over K; smem: Smem<MODE>::BYTES.
// a_o0 / b_o0: the tile's origin along M / N; a_end / b_end: bound of the stored column index
// (K for a k-contiguous operand, else M / N). Row bounds live in the functors.
template <GemmMode MODE, bool AKC, bool BKC, class RA, class RB>
__device__ __forceinline__ void block_product(float (&acc)[4][4][4], unsigned char* smem, const RA& ra, int64_t a_o0,
                                              int64_t a_end, bool a_vec, const RB& rb, int64_t b_o0, int64_t b_end,
                                              bool b_vec, int64_t K) {
  using T = typename Cfg<MODE>::T;
  T* s = reinterpret_cast<T*>(smem);
  Staged<MODE, AKC, RA> A{{}, s, ra, a_o0, a_end, a_vec};
  Staged<MODE, BKC, RB> B{{}, s + 2 * Smem<MODE>::TILE, rb, b_o0, b_end, b_vec};
  mainloop<MODE>(acc, A, B, K);
}

// f(row, col, value) for every accumulator of this thread; row, col within the 128 x 128 block tile
template <class F>
__device__ __forceinline__ void for_each_acc(const float (&acc)[4][4][4], F&& f) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int r0 = 64 * (warp >> 2), c0 = 32 * (warp & 3);
#pragma unroll
  for (int mi = 0; mi < 4; mi++)
#pragma unroll
    for (int ni = 0; ni < 4; ni++)
#pragma unroll
      for (int c = 0; c < 4; c++) f(r0 + 16 * mi + g + 8 * (c >> 1), c0 + 8 * ni + 2 * t + (c & 1), acc[mi][ni][c]);
}
// For a tile whose B operand was GateUpRows: f(row, unit, gate, up) with unit in [0, 64) of the
// tile's units (fragments 0, 1 of a warp hold gate, fragments 2, 3 the up values of the same units).
template <class F>
__device__ __forceinline__ void for_each_gate_up(const float (&acc)[4][4][4], F&& f) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int r0 = 64 * (warp >> 2), u0 = 16 * (warp & 3);
#pragma unroll
  for (int mi = 0; mi < 4; mi++)
#pragma unroll
    for (int ni = 0; ni < 2; ni++)
#pragma unroll
      for (int c = 0; c < 4; c++)
        f(r0 + 16 * mi + g + 8 * (c >> 1), u0 + 8 * ni + 2 * t + (c & 1), acc[mi][ni][c], acc[mi][ni + 2][c]);
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }
// all rows p + r * ld start 16-byte aligned
inline bool rows_vec(const float* p, int64_t ld) { return aligned16(p) && ld % 4 == 0; }

}  // namespace gemm_detail
}  // namespace hmc
