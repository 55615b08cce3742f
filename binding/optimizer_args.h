// optimizer_args.h — the AdamW arguments both optimizer bindings take (the CPU adamwStep in
// optimizer.cc and NativeCudaModel.adamwStep in cuda_model.cc): one parser, the same checks and messages.
#pragma once
#include <napi.h>

#include <cstdint>
#include <vector>

#include "contract.h"  // hm::AdamWHyper

namespace hmb {

// One (offset, length, weightDecay) triple of the segments Float64Array.
struct DecaySegment {
  int64_t offset, length;
  float wd;
};
// segments: Float64Array of triples, each inside a parameter buffer of n floats.
std::vector<DecaySegment> parse_decay_segments(Napi::Env env, Napi::Value v, int64_t n);

// hyper.{lr, beta1, beta2, eps, step}: finite, 0 <= beta < 1, eps > 0, step an integer >= 1.
// grad_scale is left at 1: each caller derives it (given, or from the clipping norm).
hm::AdamWHyper parse_adamw_hyper(Napi::Env env, Napi::Object h);
// hyper.<key> as a finite number (E_INVALID_ARGUMENT otherwise).
double hyper_number(Napi::Env env, Napi::Object h, const char* key);

}  // namespace hmb
