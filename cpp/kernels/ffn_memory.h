// ffn_memory.h — the fetched memory units of the FFN (paper §2.3): for every group of token rows
// that share a memory slot, R extra SwiGLU units read from that slot's fetched block:
//   y[rows] += Wd_s^T · (silu(Wg_s x) ⊙ (Wu_s x))      Wg_s, Wu_s, Wd_s: (R, C) rows of the slot
// Together with the anchor FFN writing the same y this is exactly one SwiGLU of width F + R, but
// no concatenated weight matrix is ever built: each group is one product per matrix (a grouped
// GEMM over the batch's paths).
#pragma once
#include <cstdint>
#include <vector>

#include "contract.h"  // MemoryGroup

namespace hm {

// Consecutive sequences (T rows each) with the same slot form one group.
std::vector<MemoryGroup> memory_groups(const int32_t* seq_slot, int64_t B, int64_t T);

// layer_w: the slot-0 block of this layer inside the fetched buffer; slot s is at + s * slot_stride;
// within it gate rows at +0, up rows at +R*C, down rows at +2*R*C.
// gate_m, up_m (N, R) are written for the rows of every group (rows of sequences without memory are
// left as they were); y (N, C) is ADDED to; hidden is (N, R) scratch.
void ffn_memory_forward(float* y, float* gate_m, float* up_m, float* hidden, const float* x, const float* layer_w,
                        int64_t slot_stride, const std::vector<MemoryGroup>& groups, int64_t C, int64_t R);
// dx (N, C) += ...; dlayer_w (same layout as layer_w, in the dfetched buffer) += ...
// scratch: 4 * N * R floats.
void ffn_memory_backward(float* dx, float* dlayer_w, const float* dy, const float* x, const float* gate_m,
                         const float* up_m, const float* layer_w, int64_t slot_stride,
                         const std::vector<MemoryGroup>& groups, int64_t C, int64_t R, float* scratch);

}  // namespace hm
