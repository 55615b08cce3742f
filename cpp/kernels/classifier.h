// classifier.h — tied output projection + softmax cross-entropy, fused: the logits of a chunk of
// rows are computed, turned into losses and (optionally) into their gradient in place, and used
// for dx / dwte before the next chunk; the (N, V) logits never exist at once.
#pragma once
#include <cstdint>
namespace hm {
// losses (N) = logsumexp(x wte^T) - logit[target] (0 where target = -1).
// If dx (N,C) / dwte (V,C) are non-null, the gradient of grad_scale * sum(losses) is ADDED.
// scratch: chunk_rows * V floats, chunk_rows = classifier_chunk_rows(V).
void classifier_forward_backward(float* losses, float* dx, float* dwte, const float* x, const float* wte,
                                 const int32_t* targets, int64_t N, int64_t C, int64_t V, float grad_scale,
                                 float* scratch);
int64_t classifier_chunk_rows(int64_t N, int64_t V);
// logits (N,V) = x wte^T (generation path: no loss)
void classifier_logits(float* logits, const float* x, const float* wte, int64_t N, int64_t C, int64_t V);
}  // namespace hm
