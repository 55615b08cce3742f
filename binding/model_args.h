// model_args.h — parsing of the model config objects shared by the CPU and CUDA model bindings.
#pragma once
#include <napi.h>

#include "anchor_model.h"

namespace hmb {
// dims = { vocabSize, dModel, nLayers, nHeads, headDim, ffnHidden, seqLen, normEps, ropeBase }
hm::AnchorDims parse_dims(Napi::Env env, Napi::Value v);
// memory = { R, layerToMemory: Int32Array (L) } or anything else for "no memory layers"
hm::MemoryConfig parse_memory_config(Napi::Env env, Napi::Value v, int64_t L);
}  // namespace hmb
