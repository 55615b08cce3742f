// embedding.h — token embedding lookup.
#pragma once
#include <cstdint>
namespace hm {
// out (N,C) = wte[tokens[n]] ; wte (V,C); tokens already range-checked by the caller.
void embedding_forward(float* out, const int32_t* tokens, const float* wte, int64_t N, int64_t C);
// dwte (V,C) += sum over n with tokens[n] = v of dout[n]. Parallel over channels, so each
// element is summed in token order whatever the thread count (deterministic).
void embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int64_t N, int64_t C);
}  // namespace hm
