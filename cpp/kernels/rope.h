// rope.h — rotary position embedding, rotate-half pairing (i, i + hd/2) as in GPT-NeoX/OpenLM.
#pragma once
#include <cstdint>
namespace hm {
// In place on x (N, H, hd) with row n at position pos[n]; angle(i) = pos * base^(-2i/hd).
void rope_forward(float* x, const int32_t* pos, int64_t N, int64_t H, int64_t hd, double base);
// In place: applies the transposed (inverse) rotation to a gradient (N, H, hd).
void rope_backward(float* dx, const int32_t* pos, int64_t N, int64_t H, int64_t hd, double base);
}  // namespace hm
