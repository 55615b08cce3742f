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
// The anchor transformer's dimensions. No layer cap: per-layer data goes with pointers or vectors.
struct ModelDims {
  int64_t V, C, L, H, hd, F, T;  // vocab, d_model, layers, heads, head dim, ffn hidden, max seq len
  float norm_eps;
  double rope_base;
  int64_t D() const { return H * hd; }
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
