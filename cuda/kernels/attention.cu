// attention.cu — causal multi-head attention for the CUDA backend (forward and backward), flash-style.
// CPU twin: hm::attention_forward / hm::attention_backward in cpp/kernels/attention.{h,cc}.
//
// Layout (as the twin): q, k, v, out, dout, dq, dk, dv are (B, T, H*hd) with row stride ld floats
// (ld >= H*hd; head h of token (b, t) is the hd floats at (b*T + t)*ld + h*hd); lse is (B, H, T).
// scale = 1/sqrt(hd); S_ij = scale * q_i . k_j; query i attends keys j with lo_i <= j <= i, where
// lo_i = doc_start[b*T + i] (0 without doc_start; doc_start holds positions inside the row b).
// lse_i = max_j S_ij + log(sum_j exp(S_ij - max)) (natural log, scale included). A query with no key
// (doc_start[i] > i: cannot happen for real packed documents) gets out = 0 and lse = -inf, as the twin.
//
// All math is plain fp32 FMA on CUDA cores (the reference mode, like GemmMode::FP32): a tensor-core
// variant (tf32 / bf16 mma.sync, then wgmma on sm_90a) is a later step. Scores live in registers and
// shared memory one tile at a time; the (T, T) matrix never exists in global memory.
//
// Kernels (every CTA has 256 threads seen as a 16 x 16 grid: tx = tid % 16, ty = tid / 16; a warp is
// two ty rows, so a 16-lane half-warp holds all tx of one ty and row reductions are 16-lane shuffles):
//   attn_fwd_kernel      one CTA per (query tile of BR rows, head, batch), FlashAttention-2 forward.
//   attn_bwd_d_kernel    D = rowsum(dout * out) into scratch (B, H, T): one warp per (token, head).
//   attn_bwd_dkdv_kernel one CTA per (key tile of BC keys, head, batch): loops over query tiles,
//                        recomputes P, dP, dS and accumulates dK, dV in registers (owned: no atomics).
//   attn_bwd_dq_kernel   one CTA per (query tile, head, batch): loops over key tiles, recomputes P, dP,
//                        dS and accumulates dQ in registers. Splitting dQ from dK/dV doubles the
//                        recompute of S and dP but keeps every output owned by exactly one thread with
//                        a fixed summation order: deterministic without float atomics, and simple.
//
// Head dimension: the kernels are templated on a padded HD in {16, 32, 64, 128}; any hd in 1..128 runs
// on the smallest HD >= hd with the columns hd..HD-1 zero-filled in shared memory (they add nothing
// to the dot products and are never stored).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "hiermem_cuda.h"

namespace hmc {
namespace {

constexpr int kThreads = 256;  // 16 x 16

// Tile shapes per padded head dimension (BR query rows, BC keys), chosen so that each kernel's
// shared memory stays under ~80 KB (2 CTAs per SM on A100 and H100) and the per-thread register
// accumulators stay <= 32 (+ 16 score) floats. Multiples of 16 (the thread grid).
template <int HD>
struct FwdCfg {
  static constexpr int BR = 64, BC = (HD >= 128 ? 32 : 64);
};
template <int HD>
struct DkdvCfg {
  static constexpr int BR = 32, BC = (HD >= 128 ? 32 : 64);
};
template <int HD>
struct DqCfg {
  static constexpr int BR = (HD >= 128 ? 32 : 64), BC = 32;
};

// Shared-memory row strides. QS = HD + 1 (odd): in the score loops the 16 tx lanes of a half-warp read
// rows tx + 16j of K (or V) at the same column, and an odd stride puts them in 16 distinct banks.
// PS = BC + 16: the two ty rows of a warp write P[ty][tx + 16j] into disjoint bank halves.
template <int HD>
__host__ __device__ constexpr int row_stride() { return HD + 1; }
template <int BC>
__host__ __device__ constexpr int p_stride() { return BC + 16; }

constexpr size_t fwd_smem_floats(int HD, int BR, int BC) {
  return (size_t)BR * (HD + 1) + 2 * (size_t)BC * (HD + 1) + (size_t)BR * (BC + 16);
}
constexpr size_t dkdv_smem_floats(int HD, int BR, int BC) {
  return 2 * (size_t)BC * (HD + 1) + 2 * (size_t)BR * (HD + 1) + 2 * (size_t)BR * (BC + 16) + 2 * (size_t)BR;
}
constexpr size_t dq_smem_floats(int HD, int BR, int BC) {
  return 2 * (size_t)BR * (HD + 1) + 2 * (size_t)BC * (HD + 1) + (size_t)BR * (BC + 16) + 2 * (size_t)BR;
}

// Copies rows [r0, r0 + R) of one head (src points at token 0 of this batch row and head, row stride
// ld) into dst (R, HD+1); rows >= r_end and columns >= hd become 0. Coalesced along the columns.
template <int HD, int R>
__device__ __forceinline__ void load_rows(float* dst, const float* __restrict__ src, int64_t ld, int r0, int r_end,
                                          int hd) {
  for (int idx = threadIdx.x; idx < R * HD; idx += kThreads) {
    const int r = idx / HD, c = idx % HD, row = r0 + r;
    dst[r * row_stride<HD>() + c] = (row < r_end && c < hd) ? src[(int64_t)row * ld + c] : 0.f;
  }
}

// Sum / max over the 16 lanes of a half-warp (xor offsets < 16 never leave it). All 32 lanes call it.
__device__ __forceinline__ float half_warp_sum(float x) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
__device__ __forceinline__ float half_warp_max(float x) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

// First key any query of [q0, q1) may attend: min over the tile of max(doc_start, 0) (0 without
// doc_start). Shared-memory atomicMin on ints is order-independent, hence deterministic. Called by
// all threads (it contains barriers).
__device__ __forceinline__ int tile_first_key(const int32_t* ds, int q0, int q1, int* s_kmin) {
  if (!ds) return 0;
  if (threadIdx.x == 0) *s_kmin = q1;
  __syncthreads();
  if ((int)threadIdx.x < q1 - q0) atomicMin(s_kmin, max(ds[q0 + threadIdx.x], 0));
  __syncthreads();
  return *s_kmin;
}

// ---- forward ----------------------------------------------------------------------------------
// grid (ceil(T/BR), H, B), 256 threads. CTA: query rows [q0, q0+BR) of head h of batch row b (tiles
// in reverse order so that the longest causal rows start first). Thread (tx, ty) owns query rows
// r = ty + 16i (i < BR/16): their running max m, sum l and output accumulators for columns
// tx + 16c (c < HD/16); in the score phase it computes S for those rows and keys tx + 16j (j < BC/16).
// Per key tile: K, V -> smem; S = scale Q K^T (registers); online softmax (16-lane reductions);
// P -> smem; O = O * alpha + P V. Finally out = O / l, lse = m + log l.
template <int HD, int BR, int BC>
__global__ void __launch_bounds__(kThreads) attn_fwd_kernel(float* __restrict__ out, float* __restrict__ lse,
                                                            const float* __restrict__ q, const float* __restrict__ k,
                                                            const float* __restrict__ v,
                                                            const int32_t* __restrict__ doc_start, int T, int H, int hd,
                                                            int64_t ld, float scale) {
  constexpr int RI = BR / 16, CJ = BC / 16, OC = HD / 16, QS = row_stride<HD>(), PS = p_stride<BC>();
  extern __shared__ float smem[];
  float* Qs = smem;             // (BR, QS)
  float* Ks = Qs + BR * QS;     // (BC, QS)
  float* Vs = Ks + BC * QS;     // (BC, QS)
  float* Ps = Vs + BC * QS;     // (BR, PS)
  __shared__ int s_kmin;

  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * BR, q1 = min(q0 + BR, T);
  const int h = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int64_t base = b * T * ld + (int64_t)h * hd;  // token 0 of this row and head
  const int32_t* ds = doc_start ? doc_start + b * T : nullptr;

  load_rows<HD, BR>(Qs, q + base, ld, q0, q1, hd);
  const int kmin = tile_first_key(ds, q0, q1, &s_kmin);

  int qi[RI], lo[RI];  // query index and first allowed key of each owned row (qi >= T: padding row)
  float m[RI], l[RI], o[RI][OC];
#pragma unroll
  for (int i = 0; i < RI; i++) {
    qi[i] = q0 + ty + 16 * i;
    lo[i] = (ds && qi[i] < T) ? max(ds[qi[i]], 0) : 0;
    m[i] = -INFINITY;
    l[i] = 0.f;
#pragma unroll
    for (int c = 0; c < OC; c++) o[i][c] = 0.f;
  }

  // keys >= q1 are masked for every row of the tile, so the loop stops at q1 (and reads no key >= T)
  for (int kt0 = kmin; kt0 < q1; kt0 += BC) {
    load_rows<HD, BC>(Ks, k + base, ld, kt0, q1, hd);
    load_rows<HD, BC>(Vs, v + base, ld, kt0, q1, hd);
    __syncthreads();  // Q (first pass), K, V visible

    float s[RI][CJ];
#pragma unroll
    for (int i = 0; i < RI; i++)
#pragma unroll
      for (int j = 0; j < CJ; j++) s[i][j] = 0.f;
#pragma unroll 4
    for (int d = 0; d < HD; d++) {
      float a[RI], bk[CJ];
#pragma unroll
      for (int i = 0; i < RI; i++) a[i] = Qs[(ty + 16 * i) * QS + d];
#pragma unroll
      for (int j = 0; j < CJ; j++) bk[j] = Ks[(tx + 16 * j) * QS + d];
#pragma unroll
      for (int i = 0; i < RI; i++)
#pragma unroll
        for (int j = 0; j < CJ; j++) s[i][j] = fmaf(a[i], bk[j], s[i][j]);
    }

    // online softmax, row by row (every lane runs every shuffle: no divergence around them)
#pragma unroll
    for (int i = 0; i < RI; i++) {
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < CJ; j++) {
        const int kj = kt0 + tx + 16 * j;
        const bool ok = qi[i] < T && kj >= lo[i] && kj <= qi[i];
        s[i][j] = ok ? s[i][j] * scale : -INFINITY;
        mx = fmaxf(mx, s[i][j]);
      }
      mx = half_warp_max(mx);
      const float mnew = fmaxf(m[i], mx);
      const bool none = (mnew == -INFINITY);  // no allowed key for this row yet: keep everything 0
      const float alpha = none ? 1.f : expf(m[i] - mnew);  // m = -inf -> 0 (o, l are 0 anyway)
      float rs = 0.f;
#pragma unroll
      for (int j = 0; j < CJ; j++) {
        const float p = none ? 0.f : expf(s[i][j] - mnew);  // masked: exp(-inf) = 0
        rs += p;
        Ps[(ty + 16 * i) * PS + tx + 16 * j] = p;
      }
      rs = half_warp_sum(rs);
      l[i] = l[i] * alpha + rs;
      m[i] = mnew;
#pragma unroll
      for (int c = 0; c < OC; c++) o[i][c] *= alpha;
    }
    __syncthreads();  // P visible

    // O += P V: row ty + 16i, column tx + 16c
#pragma unroll 4
    for (int j = 0; j < BC; j++) {
      float vv[OC];
#pragma unroll
      for (int c = 0; c < OC; c++) vv[c] = Vs[j * QS + tx + 16 * c];
#pragma unroll
      for (int i = 0; i < RI; i++) {
        const float p = Ps[(ty + 16 * i) * PS + j];
#pragma unroll
        for (int c = 0; c < OC; c++) o[i][c] = fmaf(p, vv[c], o[i][c]);
      }
    }
    __syncthreads();  // everyone done with K, V, P before the next tile overwrites them
  }

  float* lse_bh = lse + (b * H + h) * T;
#pragma unroll
  for (int i = 0; i < RI; i++) {
    if (qi[i] >= T) continue;
    const float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;
    float* orow = out + base + (int64_t)qi[i] * ld;
#pragma unroll
    for (int c = 0; c < OC; c++) {
      const int col = tx + 16 * c;
      if (col < hd) orow[col] = o[i][c] * inv;
    }
    if (tx == 0) lse_bh[qi[i]] = l[i] > 0.f ? m[i] + logf(l[i]) : -INFINITY;
  }
}

// ---- backward: D = rowsum(dout * out) -----------------------------------------------------------
// One warp per (b, t, h) (n = (b*T + t)*H + h, so consecutive warps read consecutive memory); lanes
// stride over the hd columns; summed in double as the twin does. D (B, H, T).
__global__ void attn_bwd_d_kernel(float* __restrict__ D, const float* __restrict__ dout, const float* __restrict__ out,
                                  int64_t B, int T, int H, int hd, int64_t ld) {
  const int64_t n = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (n >= B * T * H) return;  // whole warps leave together (blockDim is a multiple of 32)
  const int h = (int)(n % H);
  const int64_t bt = n / H, b = bt / T, t = bt % T;
  const int64_t off = bt * ld + (int64_t)h * hd;
  double acc = 0.0;
  for (int c = lane; c < hd; c += 32) acc += (double)dout[off + c] * (double)out[off + c];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0) D[(b * H + h) * T + t] = (float)acc;
}

// ---- backward: dK, dV -----------------------------------------------------------------------------
// grid (ceil(T/BC), H, B), 256 threads. CTA: keys [k0, k0+BC) of head h of batch row b; K, V stay in
// smem. For each query tile [qt0, qt0+BR) that can see one of these keys (qt0 from the tile holding
// k0 to T; tiles where no (query, key) pair is allowed are skipped with a CTA-wide vote):
//   Q, dO, lse, D, lo -> smem; thread (tx, ty) computes for rows ty + 16i and keys tx + 16j
//   S = scale Q K^T, P = exp(S - lse) (masked), dP = dO V^T, dS = P (dP - D); P, dS -> smem;
//   then for keys ty + 16jj (jj < BC/16) and columns tx + 16c: dV += P^T dO, dK += dS^T Q.
// At the end dk += scale * dK, dv += dV (each element owned by one thread: no atomics).
// Both backward kernels recompute, per tile, S = Q K^T and dP = dO V^T for the rows ty + 16i and the
// keys tx + 16j this thread owns (shared-memory rows of stride row_stride<HD>(), summed over d in order).
template <int HD, int RI, int CJ>
__device__ __forceinline__ void scores_and_dp(float (&s)[RI][CJ], float (&dp)[RI][CJ], const float* Qs,
                                              const float* Gs, const float* Ks, const float* Vs, int tx, int ty) {
  constexpr int QS = row_stride<HD>();
#pragma unroll
  for (int i = 0; i < RI; i++)
#pragma unroll
    for (int j = 0; j < CJ; j++) s[i][j] = dp[i][j] = 0.f;
#pragma unroll 4
  for (int d = 0; d < HD; d++) {
    float a[RI], g[RI], bk[CJ], bv[CJ];
#pragma unroll
    for (int i = 0; i < RI; i++) {
      a[i] = Qs[(ty + 16 * i) * QS + d];
      g[i] = Gs[(ty + 16 * i) * QS + d];
    }
#pragma unroll
    for (int j = 0; j < CJ; j++) {
      bk[j] = Ks[(tx + 16 * j) * QS + d];
      bv[j] = Vs[(tx + 16 * j) * QS + d];
    }
#pragma unroll
    for (int i = 0; i < RI; i++)
#pragma unroll
      for (int j = 0; j < CJ; j++) {
        s[i][j] = fmaf(a[i], bk[j], s[i][j]);
        dp[i][j] = fmaf(g[i], bv[j], dp[i][j]);
      }
  }
}

template <int HD, int BR, int BC>
__global__ void __launch_bounds__(kThreads) attn_bwd_dkdv_kernel(
    float* __restrict__ dk, float* __restrict__ dv, const float* __restrict__ dout, const float* __restrict__ q,
    const float* __restrict__ k, const float* __restrict__ v, const float* __restrict__ lse,
    const float* __restrict__ Dsum, const int32_t* __restrict__ doc_start, int T, int H, int hd, int64_t ld,
    float scale) {
  constexpr int RI = BR / 16, CJ = BC / 16, OC = HD / 16, QS = row_stride<HD>(), PS = p_stride<BC>();
  extern __shared__ float smem[];
  float* Ks = smem;               // (BC, QS)
  float* Vs = Ks + BC * QS;       // (BC, QS)
  float* Qs = Vs + BC * QS;       // (BR, QS)
  float* Gs = Qs + BR * QS;       // (BR, QS) dO
  float* Ps = Gs + BR * QS;       // (BR, PS)
  float* Ss = Ps + BR * PS;       // (BR, PS) dS
  float* Ls = Ss + BR * PS;       // (BR) lse
  float* Dl = Ls + BR;            // (BR) D
  __shared__ int Lo[BR];          // first allowed key per query row of the tile

  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int k0 = blockIdx.x * BC, k1 = min(k0 + BC, T);
  const int h = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int64_t base = b * T * ld + (int64_t)h * hd;
  const int32_t* ds = doc_start ? doc_start + b * T : nullptr;
  const float* lse_bh = lse + (b * H + h) * T;
  const float* D_bh = Dsum + (b * H + h) * T;

  load_rows<HD, BC>(Ks, k + base, ld, k0, k1, hd);
  load_rows<HD, BC>(Vs, v + base, ld, k0, k1, hd);

  float dKa[CJ][OC], dVa[CJ][OC];
#pragma unroll
  for (int j = 0; j < CJ; j++)
#pragma unroll
    for (int c = 0; c < OC; c++) dKa[j][c] = dVa[j][c] = 0.f;

  for (int qt0 = (k0 / BR) * BR; qt0 < T; qt0 += BR) {
    const int qt1 = min(qt0 + BR, T);
    // vote: does a row of this tile see a key of [k0, k1)?  (also the barrier that ends the previous
    // iteration's reads of Qs/Gs/Ps/Ss)
    bool sees = false;
    if ((int)threadIdx.x < qt1 - qt0) {
      const int i = qt0 + threadIdx.x, lo = ds ? max(ds[i], 0) : 0;
      sees = i >= k0 && lo <= k1 - 1 && lo <= i;
    }
    if (!__syncthreads_or(sees)) continue;  // uniform across the CTA

    load_rows<HD, BR>(Qs, q + base, ld, qt0, qt1, hd);
    load_rows<HD, BR>(Gs, dout + base, ld, qt0, qt1, hd);
    if ((int)threadIdx.x < BR) {
      const int i = qt0 + threadIdx.x;
      const bool in = i < qt1;
      Ls[threadIdx.x] = in ? lse_bh[i] : 0.f;
      Dl[threadIdx.x] = in ? D_bh[i] : 0.f;
      Lo[threadIdx.x] = in ? (ds ? max(ds[i], 0) : 0) : INT32_MAX;  // padding row: nothing allowed
    }
    __syncthreads();

    float s[RI][CJ], dp[RI][CJ];
    scores_and_dp<HD, RI, CJ>(s, dp, Qs, Gs, Ks, Vs, tx, ty);
#pragma unroll
    for (int i = 0; i < RI; i++) {
      const int r = ty + 16 * i, qi = qt0 + r;
#pragma unroll
      for (int j = 0; j < CJ; j++) {
        const int kj = k0 + tx + 16 * j;
        const bool ok = kj >= Lo[r] && kj <= qi && qi < T;  // kj <= qi < T: kj is a real key
        const float p = ok ? expf(s[i][j] * scale - Ls[r]) : 0.f;
        Ps[r * PS + tx + 16 * j] = p;
        Ss[r * PS + tx + 16 * j] = p * (dp[i][j] - Dl[r]);
      }
    }
    __syncthreads();

    // dV += P^T dO, dK += dS^T Q: key ty + 16jj, column tx + 16c, summed over the tile's rows in order
#pragma unroll 2
    for (int r = 0; r < BR; r++) {
      float qv[OC], gv[OC];
#pragma unroll
      for (int c = 0; c < OC; c++) {
        qv[c] = Qs[r * QS + tx + 16 * c];
        gv[c] = Gs[r * QS + tx + 16 * c];
      }
#pragma unroll
      for (int j = 0; j < CJ; j++) {
        const float p = Ps[r * PS + ty + 16 * j], dsv = Ss[r * PS + ty + 16 * j];
#pragma unroll
        for (int c = 0; c < OC; c++) {
          dVa[j][c] = fmaf(p, gv[c], dVa[j][c]);
          dKa[j][c] = fmaf(dsv, qv[c], dKa[j][c]);
        }
      }
    }
    // the next iteration's __syncthreads_or orders these reads before the next loads
  }

#pragma unroll
  for (int j = 0; j < CJ; j++) {
    const int kj = k0 + ty + 16 * j;
    if (kj >= T) continue;
    float* dkrow = dk + base + (int64_t)kj * ld;
    float* dvrow = dv + base + (int64_t)kj * ld;
#pragma unroll
    for (int c = 0; c < OC; c++) {
      const int col = tx + 16 * c;
      if (col < hd) {
        dkrow[col] += scale * dKa[j][c];
        dvrow[col] += dVa[j][c];
      }
    }
  }
}

// ---- backward: dQ ---------------------------------------------------------------------------------
// grid (ceil(T/BR), H, B), 256 threads. CTA: query rows [q0, q0+BR) (reverse tile order); Q, dO, lse,
// D, lo stay in smem. For each key tile from the tile's first allowed key to q1: K, V -> smem; thread
// (tx, ty) computes S, P, dP, dS for rows ty + 16i, keys tx + 16j; dS -> smem; then for rows
// ty + 16i and columns tx + 16c: dQ += dS K. At the end dq += scale * dQ.
template <int HD, int BR, int BC>
__global__ void __launch_bounds__(kThreads) attn_bwd_dq_kernel(
    float* __restrict__ dq, const float* __restrict__ dout, const float* __restrict__ q, const float* __restrict__ k,
    const float* __restrict__ v, const float* __restrict__ lse, const float* __restrict__ Dsum,
    const int32_t* __restrict__ doc_start, int T, int H, int hd, int64_t ld, float scale) {
  constexpr int RI = BR / 16, CJ = BC / 16, OC = HD / 16, QS = row_stride<HD>(), PS = p_stride<BC>();
  extern __shared__ float smem[];
  float* Qs = smem;               // (BR, QS)
  float* Gs = Qs + BR * QS;       // (BR, QS) dO
  float* Ks = Gs + BR * QS;       // (BC, QS)
  float* Vs = Ks + BC * QS;       // (BC, QS)
  float* Ss = Vs + BC * QS;       // (BR, PS) dS
  float* Ls = Ss + BR * PS;       // (BR) lse
  float* Dl = Ls + BR;            // (BR) D
  __shared__ int Lo[BR];
  __shared__ int s_kmin;

  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * BR, q1 = min(q0 + BR, T);
  const int h = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int64_t base = b * T * ld + (int64_t)h * hd;
  const int32_t* ds = doc_start ? doc_start + b * T : nullptr;
  const float* lse_bh = lse + (b * H + h) * T;
  const float* D_bh = Dsum + (b * H + h) * T;

  load_rows<HD, BR>(Qs, q + base, ld, q0, q1, hd);
  load_rows<HD, BR>(Gs, dout + base, ld, q0, q1, hd);
  if ((int)threadIdx.x < BR) {
    const int i = q0 + threadIdx.x;
    const bool in = i < q1;
    Ls[threadIdx.x] = in ? lse_bh[i] : 0.f;
    Dl[threadIdx.x] = in ? D_bh[i] : 0.f;
    Lo[threadIdx.x] = in ? (ds ? max(ds[i], 0) : 0) : INT32_MAX;
  }
  const int kmin = tile_first_key(ds, q0, q1, &s_kmin);

  float dQa[RI][OC];
#pragma unroll
  for (int i = 0; i < RI; i++)
#pragma unroll
    for (int c = 0; c < OC; c++) dQa[i][c] = 0.f;

  for (int kt0 = kmin; kt0 < q1; kt0 += BC) {
    __syncthreads();  // previous tile's reads of Ks, Ss done (first pass: Q, dO, Ls, Dl, Lo written)
    load_rows<HD, BC>(Ks, k + base, ld, kt0, q1, hd);
    load_rows<HD, BC>(Vs, v + base, ld, kt0, q1, hd);
    __syncthreads();

    float s[RI][CJ], dp[RI][CJ];
    scores_and_dp<HD, RI, CJ>(s, dp, Qs, Gs, Ks, Vs, tx, ty);
#pragma unroll
    for (int i = 0; i < RI; i++) {
      const int r = ty + 16 * i, qi = q0 + r;
#pragma unroll
      for (int j = 0; j < CJ; j++) {
        const int kj = kt0 + tx + 16 * j;
        const bool ok = kj >= Lo[r] && kj <= qi && qi < T;
        const float p = ok ? expf(s[i][j] * scale - Ls[r]) : 0.f;
        Ss[r * PS + tx + 16 * j] = p * (dp[i][j] - Dl[r]);
      }
    }
    __syncthreads();

    // dQ += dS K: row ty + 16i, column tx + 16c, summed over the tile's keys in order
#pragma unroll 4
    for (int j = 0; j < BC; j++) {
      float kv[OC];
#pragma unroll
      for (int c = 0; c < OC; c++) kv[c] = Ks[j * QS + tx + 16 * c];
#pragma unroll
      for (int i = 0; i < RI; i++) {
        const float dsv = Ss[(ty + 16 * i) * PS + j];
#pragma unroll
        for (int c = 0; c < OC; c++) dQa[i][c] = fmaf(dsv, kv[c], dQa[i][c]);
      }
    }
  }

#pragma unroll
  for (int i = 0; i < RI; i++) {
    const int qi = q0 + ty + 16 * i;
    if (qi >= T) continue;
    float* dqrow = dq + base + (int64_t)qi * ld;
#pragma unroll
    for (int c = 0; c < OC; c++) {
      const int col = tx + 16 * c;
      if (col < hd) dqrow[col] += scale * dQa[i][c];
    }
  }
}

// ---- launchers ----------------------------------------------------------------------------------
// Opt-in to > 48 KB of dynamic shared memory (per kernel; cheap, no synchronisation).
template <typename K>
cudaError_t set_smem(K kernel, size_t bytes) {
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
}

template <int HD>
cudaError_t launch_fwd(float* out, float* lse, const float* q, const float* k, const float* v, const int32_t* ds,
                       int64_t B, int T, int H, int hd, int64_t ld, float scale, cudaStream_t st) {
  constexpr int BR = FwdCfg<HD>::BR, BC = FwdCfg<HD>::BC;
  const size_t smem = fwd_smem_floats(HD, BR, BC) * sizeof(float);
  auto kern = attn_fwd_kernel<HD, BR, BC>;
  cudaError_t e = set_smem(kern, smem);
  if (e != cudaSuccess) return e;
  const dim3 grid((unsigned)((T + BR - 1) / BR), (unsigned)H, (unsigned)B);
  kern<<<grid, kThreads, smem, st>>>(out, lse, q, k, v, ds, T, H, hd, ld, scale);
  return cudaGetLastError();
}

template <int HD>
cudaError_t launch_bwd(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                       const float* v, const float* lse, const float* D, const int32_t* ds, int64_t B, int T, int H,
                       int hd, int64_t ld, float scale, cudaStream_t st) {
  {
    constexpr int BR = DkdvCfg<HD>::BR, BC = DkdvCfg<HD>::BC;
    const size_t smem = dkdv_smem_floats(HD, BR, BC) * sizeof(float);
    auto kern = attn_bwd_dkdv_kernel<HD, BR, BC>;
    cudaError_t e = set_smem(kern, smem);
    if (e != cudaSuccess) return e;
    const dim3 grid((unsigned)((T + BC - 1) / BC), (unsigned)H, (unsigned)B);
    kern<<<grid, kThreads, smem, st>>>(dk, dv, dout, q, k, v, lse, D, ds, T, H, hd, ld, scale);
    e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  {
    constexpr int BR = DqCfg<HD>::BR, BC = DqCfg<HD>::BC;
    const size_t smem = dq_smem_floats(HD, BR, BC) * sizeof(float);
    auto kern = attn_bwd_dq_kernel<HD, BR, BC>;
    cudaError_t e = set_smem(kern, smem);
    if (e != cudaSuccess) return e;
    const dim3 grid((unsigned)((T + BR - 1) / BR), (unsigned)H, (unsigned)B);
    kern<<<grid, kThreads, smem, st>>>(dq, dout, q, k, v, lse, D, ds, T, H, hd, ld, scale);
    return cudaGetLastError();
  }
}

// Shared argument checks: negative -> invalid; zero-size -> *noop; limits of the grid / int indices.
int check_dims(int64_t B, int64_t T, int64_t H, int64_t hd, int64_t ld, bool* noop) {
  *noop = false;
  if (B < 0 || T < 0 || H < 0 || hd < 0 || ld < 0) return (int)cudaErrorInvalidValue;
  if (B == 0 || T == 0 || H == 0 || hd == 0) {
    *noop = true;
    return 0;
  }
  if (hd > 128 || ld < H * hd) return (int)cudaErrorInvalidValue;
  // grid.y = H, grid.z = B (<= 65535); T fits an int with room for a tile past the end
  if (H > 65535 || B > 65535 || T > (int64_t)INT32_MAX - 1024) return (int)cudaErrorInvalidValue;
  return 0;
}

}  // namespace

int attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                      const int32_t* doc_start, int64_t B, int64_t T, int64_t H, int64_t hd, int64_t ld, Stream s) {
  bool noop;
  if (int e = check_dims(B, T, H, hd, ld, &noop)) return e;
  if (noop) return 0;
  if (!out || !lse || !q || !k || !v) return (int)cudaErrorInvalidValue;
  const cudaStream_t st = (cudaStream_t)s;
  const float scale = 1.f / std::sqrt((float)hd);  // as the twin
  const int Ti = (int)T, Hi = (int)H, hdi = (int)hd;
  cudaError_t e;
  if (hd <= 16) e = launch_fwd<16>(out, lse, q, k, v, doc_start, B, Ti, Hi, hdi, ld, scale, st);
  else if (hd <= 32) e = launch_fwd<32>(out, lse, q, k, v, doc_start, B, Ti, Hi, hdi, ld, scale, st);
  else if (hd <= 64) e = launch_fwd<64>(out, lse, q, k, v, doc_start, B, Ti, Hi, hdi, ld, scale, st);
  else e = launch_fwd<128>(out, lse, q, k, v, doc_start, B, Ti, Hi, hdi, ld, scale, st);
  return (int)e;
}

int64_t attention_backward_scratch_floats(int64_t B, int64_t T, int64_t H) {
  if (B <= 0 || T <= 0 || H <= 0) return 0;
  return B * T * H;
}

int attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                       const float* v, const float* out, const float* lse, const int32_t* doc_start, int64_t B,
                       int64_t T, int64_t H, int64_t hd, int64_t ld, float* scratch, Stream s) {
  bool noop;
  if (int e = check_dims(B, T, H, hd, ld, &noop)) return e;
  if (noop) return 0;
  if (!dq || !dk || !dv || !dout || !q || !k || !v || !out || !lse || !scratch) return (int)cudaErrorInvalidValue;
  const cudaStream_t st = (cudaStream_t)s;
  const float scale = 1.f / std::sqrt((float)hd);
  const int Ti = (int)T, Hi = (int)H, hdi = (int)hd;

  // D = rowsum(dout * out) -> scratch (B, H, T); 8 warps per block
  const int64_t warps = B * T * H;
  const int64_t blocks = (warps + 7) / 8;
  if (blocks > INT32_MAX) return (int)cudaErrorInvalidValue;
  attn_bwd_d_kernel<<<(unsigned)blocks, 256, 0, st>>>(scratch, dout, out, B, Ti, Hi, hdi, ld);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return (int)e;

  if (hd <= 16) e = launch_bwd<16>(dq, dk, dv, dout, q, k, v, lse, scratch, doc_start, B, Ti, Hi, hdi, ld, scale, st);
  else if (hd <= 32) e = launch_bwd<32>(dq, dk, dv, dout, q, k, v, lse, scratch, doc_start, B, Ti, Hi, hdi, ld, scale, st);
  else if (hd <= 64) e = launch_bwd<64>(dq, dk, dv, dout, q, k, v, lse, scratch, doc_start, B, Ti, Hi, hdi, ld, scale, st);
  else e = launch_bwd<128>(dq, dk, dv, dout, q, k, v, lse, scratch, doc_start, B, Ti, Hi, hdi, ld, scale, st);
  return (int)e;
}

}  // namespace hmc
