// adamw.cuh — the AdamW element update shared by the dense (adamw.cu) and row-sparse (memory.cu)
// kernels: the CPU twin's float expression (cpp/kernels/vecmath.cc adamw_span) in that order, with
// round-to-nearest intrinsics (no FMA contraction) and IEEE division / sqrt, so with the same
// hm::AdamWConsts it reproduces the CPU's floats. ibc1 / ibc2: the bias corrections to use (the
// dense update passes k's, the sparse one each block's own).
#pragma once
#include <cuda_runtime.h>

#include "hiermem_cuda.h"

namespace hmc {

__device__ __forceinline__ void adamw_element(float* p, const float* g, float* m, float* v, int64_t i, float ibc1,
                                              float ibc2, const AdamWConsts& k) {
  const float gi = __fmul_rn(g[i], k.scale);
  const float mi = __fadd_rn(__fmul_rn(k.b1, m[i]), __fmul_rn(k.one_m_b1, gi));
  const float vi = __fadd_rn(__fmul_rn(k.b2, v[i]), __fmul_rn(__fmul_rn(k.one_m_b2, gi), gi));
  m[i] = mi;
  v[i] = vi;
  const float mhat = __fmul_rn(mi, ibc1), vhat = __fmul_rn(vi, ibc2);
  const float pi = p[i];
  p[i] = __fsub_rn(pi, __fmul_rn(k.lr, __fadd_rn(__fdiv_rn(mhat, __fadd_rn(__fsqrt_rn(vhat), k.eps)),
                                                 __fmul_rn(k.wd, pi))));
}

}  // namespace hmc
