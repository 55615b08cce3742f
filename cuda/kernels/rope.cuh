// rope.cuh — the rotation of one pair (i, i + hd/2) in every head of a row, shared by rope.cu
// (angles from base^(-2i/hd)) and model/anchor_model.cu (angles from a table of scaled
// frequencies): the angle's cos / sin computed in double and rounded to float, then the CPU twin's
// float operations with round-to-nearest intrinsics (no FMA contraction).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace hmc {

// Rotates pair i of each of the H heads of `row` (head stride hd) by `angle`; sign -1: the inverse.
__device__ __forceinline__ void rope_rotate_pair(float* row, int64_t H, int64_t hd, int64_t i, double angle, float sign) {
  const int64_t half = hd / 2;
  double sd, cd;
  sincos(angle, &sd, &cd);
  const float c = (float)cd, si = sign * (float)sd;
  for (int64_t h = 0; h < H; h++) {
    float* v = row + h * hd;
    const float a = v[i], b = v[i + half];
    v[i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, si));
    v[i + half] = __fadd_rn(__fmul_rn(a, si), __fmul_rn(b, c));
  }
}

}  // namespace hmc
