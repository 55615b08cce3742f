// ffn.h — the SwiGLU nonlinearity h = silu(gate) * up, and the anchor FFN built on it.
#pragma once
#include <cstdint>
namespace hm {
// h (n) = silu(gate) * up
void swiglu_forward(float* h, const float* gate, const float* up, int64_t n);
// dgate, dup (n) += ...
void swiglu_backward(float* dgate, float* dup, const float* dh, const float* gate, const float* up, int64_t n);
// dgate, dup (n) = ... (written, not accumulated: no zeroing pass needed)
void swiglu_backward_set(float* dgate, float* dup, const float* dh, const float* gate, const float* up, int64_t n);

// y (N,C) = W3 (silu(W1 x) * (W2 x)); W1, W2 (F,C); W3 (C,F). gate, up (N,F) are written for backward;
// hidden (N,F) is scratch.
void ffn_forward(float* y, float* gate, float* up, float* hidden, const float* x, const float* w1, const float* w2,
                 const float* w3, int64_t N, int64_t C, int64_t F);
// dx (N,C), dw1, dw2 (F,C), dw3 (C,F) += ... ; scratch_h, scratch_dh (N,F) and scratch_dg, scratch_du (N,F).
void ffn_backward(float* dx, float* dw1, float* dw2, float* dw3, const float* dy, const float* x, const float* gate,
                  const float* up, const float* w1, const float* w2, const float* w3, int64_t N, int64_t C,
                  int64_t F, float* scratch_h, float* scratch_dh, float* scratch_dg, float* scratch_du);

// The same FFN with the gate and up projections as one GEMM: w12 = [W1; W2] (2F, C), i.e. w1 with
// w2 stored right after it (the parameter layout); gu (N, 2F) holds gate (columns [0, F)) and up
// (columns [F, 2F)) of each row. hidden (N, F) is scratch. accumulate_y: y += instead of y =.
void ffn_forward_fused(float* y, float* gu, float* hidden, const float* x, const float* w12, const float* w3,
                       int64_t N, int64_t C, int64_t F, bool accumulate_y = false);
// dx (N,C) (+)= ..., dw12 (2F,C), dw3 (C,F) += ...; scratch h, dh (N,F) and dgu (N,2F).
void ffn_backward_fused(float* dx, float* dw12, float* dw3, const float* dy, const float* x, const float* gu,
                        const float* w12, const float* w3, int64_t N, int64_t C, int64_t F, float* h, float* dh,
                        float* dgu, bool accumulate_dx);
}  // namespace hm
