// contract.h — the plain data shared by the CPU backend (cpp/), the CUDA backend (cuda/, across
// the dlopen boundary of hiermem_cuda.so), the addon (binding/) and the test fakes
// (test/fake-cuda.ts). One definition of each type, so that the twins cannot drift apart field by
// field: a layout change here is a CUDA ABI change (bump HMC_ABI_VERSION in cuda/hiermem_cuda.h).
//
// Only standard-layout, trivially copyable structs and inline host functions: nvcc compiles this
// into device code (AdamWConsts is a kernel argument) and no CUDA or Node header is needed.
#pragma once
#include <cmath>
#include <cstdint>

namespace hm {

// ---- model shape ---------------------------------------------------------------------------------
// Llama-3.1 frequency scaling of the rotary embedding (kind 1; 0 = none), as Hugging Face
// transformers' _compute_llama3_parameters: wavelengths longer than
// original_max_positions / low_freq_factor are divided by `factor`, shorter than
// original_max_positions / high_freq_factor kept, and those between interpolated smoothly.
struct RopeScaling {
  int32_t kind = 0;
  double factor = 1, low_freq_factor = 1, high_freq_factor = 4, original_max_positions = 8192;
};

// The anchor transformer's dimensions. No layer cap: per-layer data goes with pointers or vectors.
// The members after rope_base generalise it to the Llama family; their initialisers are today's
// anchor, so dims written as {V, C, L, H, hd, F, T, eps, base} keep meaning what they meant.
struct ModelDims {
  int64_t V, C, L, H, hd, F, T;  // vocab, d_model, layers, heads, head dim, ffn hidden, max seq len
  float norm_eps;
  double rope_base;
  int64_t Hkv = 0;              // key/value heads (grouped-query attention; H % Hkv == 0); 0 = H
  bool qk_norm = true;          // RMSNorm over the full q and k rows before RoPE
  bool qkv_bias = false;        // biases of the q/k/v projection (Qwen2)
  bool tie_embeddings = true;   // false: a separate output head lm_head (V, C)
  RopeScaling rope_scaling{};
  int64_t D() const { return H * hd; }            // width of the q rows (and of attention's output)
  int64_t KV() const { return Hkv > 0 ? Hkv : H; }  // key/value heads
  int64_t Dkv() const { return KV() * hd; }       // width of the k and v rows
  int64_t Wqkv() const { return D() + 2 * Dkv(); }  // rows of the stacked q/k/v projection
};

// FFN memories as a view: R fetched units in each of Lm memory layers; layer_to_mem has L entries
// (memory layer of each layer, -1 = none) or is null when R = 0. Whoever takes it copies the map.
struct ModelMemory {
  int64_t R = 0, Lm = 0;
  const int32_t* layer_to_mem = nullptr;
};

// Token rows [row0, row0 + rows) that all use fetched slot `slot` (hm::memory_groups builds them).
struct MemoryGroup {
  int64_t row0, rows;
  int64_t slot;
};

// Rotation frequency i of a head of hd (i < hd/2): base^(-2i/hd), then the Llama-3.1 scaling
// (kind 1). In double; the CPU table (cpp/kernels/rope.cc) and the CUDA model's both call this.
inline double rope_inv_freq_at(int64_t i, int64_t hd, double base, const RopeScaling& sc) {
  double f = std::pow(base, -2.0 * (double)i / (double)hd);
  if (sc.kind != 1) return f;
  const double two_pi = 6.283185307179586476925;
  const double low_wl = sc.original_max_positions / sc.low_freq_factor;    // longer: divided by factor
  const double high_wl = sc.original_max_positions / sc.high_freq_factor;  // shorter: kept
  const double wl = two_pi / f;
  if (wl > low_wl) return f / sc.factor;
  if (wl < high_wl) return f;
  const double smooth =
      (sc.original_max_positions / wl - sc.low_freq_factor) / (sc.high_freq_factor - sc.low_freq_factor);
  return (1 - smooth) * f / sc.factor + smooth * f;  // between: interpolated
}

// ---- AdamW -----------------------------------------------------------------------------------------
// The hyperparameters as the caller gives them.
struct AdamWHyper {
  double lr, beta1, beta2, eps;  // kept in double until adamw_consts casts the derived constants
  int64_t step;                  // 1-based, for bias correction
  double grad_scale;             // multiplies every gradient (clipping passes min(1, clip / norm))
};

// The float constants every AdamW kernel (CPU SIMD levels, CUDA dense and row-sparse) computes with:
//   g' = scale * g; m = b1 m + one_m_b1 g'; v = b2 v + (one_m_b2 g') g'
//   p -= lr * ((m * ibc1) / (sqrt(v * ibc2) + eps) + wd * p)
struct AdamWConsts {
  float b1, b2, one_m_b1, one_m_b2, ibc1, ibc2, lr, eps, wd, scale;
};

// Derived once, in double, then cast: 1 - beta in double differs from 1.f - (float)beta by an ulp
// for some betas, and the bias corrections 1 / (1 - beta^step) need double for large steps.
inline AdamWConsts adamw_consts(const AdamWHyper& h, float wd) {
  const double bc1 = 1.0 - std::pow(h.beta1, (double)h.step);
  const double bc2 = 1.0 - std::pow(h.beta2, (double)h.step);
  AdamWConsts k;
  k.b1 = (float)h.beta1;
  k.b2 = (float)h.beta2;
  k.one_m_b1 = (float)(1.0 - h.beta1);
  k.one_m_b2 = (float)(1.0 - h.beta2);
  k.ibc1 = (float)(1.0 / bc1);
  k.ibc2 = (float)(1.0 / bc2);
  k.lr = (float)h.lr;
  k.eps = (float)h.eps;
  k.wd = wd;
  k.scale = (float)h.grad_scale;
  return k;
}

}  // namespace hm
