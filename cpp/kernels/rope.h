// rope.h — rotary position embedding, rotate-half pairing (i, i + hd/2) as in GPT-NeoX/OpenLM.
#pragma once
#include <cstdint>
#include <vector>

#include "contract.h"  // RopeScaling
namespace hm {
// The rotation frequencies (half = hd/2), in double: base^(-2i/hd), then the Llama-3.1 scaling
// when scaling.kind == 1 (Hugging Face transformers' _compute_llama3_parameters).
std::vector<double> rope_inv_freq(int64_t hd, double base, const RopeScaling& scaling = {});
// In place on x (N, H, hd) with row n at position pos[n]; angle(i) = pos * base^(-2i/hd).
void rope_forward(float* x, const int32_t* pos, int64_t N, int64_t H, int64_t hd, double base);
// In place: applies the transposed (inverse) rotation to a gradient (N, H, hd).
void rope_backward(float* dx, const int32_t* pos, int64_t N, int64_t H, int64_t hd, double base);

// The cos/sin table of a batch's positions (computed in double, stored as float), built once and
// shared by q, k and their gradients. row[n]: the table row of position pos[n].
struct RopeTable {
  int64_t N = 0, hd = 0, half = 0;
  std::vector<int32_t> row;
  std::vector<float> cs, sn;  // (distinct positions, half)
};
void rope_table_build(RopeTable& t, const int32_t* pos, int64_t N, int64_t hd, double base,
                      const RopeScaling& scaling = {});
// Rotates rows [n0, n1) of x (row n at x + n * ld, H heads of hd) in place; sign +1 forward,
// -1 the inverse (backward). Serial: the caller parallelises.
void rope_apply_rows(float* x, int64_t ld, const RopeTable& t, int64_t n0, int64_t n1, int64_t H, float sign);
}  // namespace hm
