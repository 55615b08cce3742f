// model_args.h — parsing of the model config and batch objects shared by the CPU and CUDA model
// bindings (model.cc, cuda_model.cc): one parser, so both backends accept exactly the same
// arguments and reject the rest with the same codes and messages.
#pragma once
#include <napi.h>

#include <cstdint>
#include <vector>

#include "anchor_model.h"

namespace hmb {
// dims = { vocabSize, dModel, nLayers, nHeads, headDim, ffnHidden, seqLen, normEps, ropeBase,
//          nKvHeads?, qkNorm?, qkvBias?, tieEmbeddings?, ropeScaling? } (absent: today's anchor)
hm::ModelDims parse_dims(Napi::Env env, Napi::Value v);
// memory = { R, layerToMemory: Int32Array (L) } or anything else for "no memory layers"
hm::MemoryConfig parse_memory_config(Napi::Env env, Napi::Value v, int64_t L);

// batch = { batchSize in [1, max_batch], tokens, targets: Int32Array (batchSize * d.T),
//           docStart?: Int32Array (same) | null, memory? } with tokens in [0, V), targets in
// [-1, V) and a valid docStart. The arrays stay JS-owned: `keep` lists them for async calls.
struct BatchArgs {
  int64_t B = 0, T = 0;
  const int32_t* tokens = nullptr;
  const int32_t* targets = nullptr;
  const int32_t* doc_start = nullptr;  // null: no packing
  Napi::Value memory;                  // batch.memory as given (parse_memory_batch)
  std::vector<Napi::Value> keep;
};
BatchArgs parse_batch(Napi::Env env, Napi::Value v, const hm::ModelDims& d, int64_t max_batch);

// memory = { fetched: Float32Array (numSlots * Lm*3*R*C), dfetched: same or null, seqSlot:
// Int32Array (B) in [-1, numSlots), numSlots in [1, B] }. dfetched is required when need_grad.
// Returns false for null / undefined (no memory); a model without memory layers (mem.R = 0)
// refuses any other value. Appends the arrays to `keep`.
struct MemoryBatchArgs {
  int64_t num_slots = 0, fetched_floats = 0;
  const float* fetched = nullptr;
  float* dfetched = nullptr;
  const int32_t* seq_slot = nullptr;
};
bool parse_memory_batch(Napi::Env env, Napi::Value v, int64_t B, const hm::ModelDims& d, const hm::MemoryConfig& mem,
                        bool need_grad, MemoryBatchArgs* out, std::vector<Napi::Value>& keep);
}  // namespace hmb
