// memory_layout.h — parsing of a memory spec object (binding/memory_layout.cc).
#pragma once
#include <napi.h>

#include "memory/layout.h"

namespace hmb {

// {k, memoryLayers, dModel, levels, generic, optimizer} -> MemoryLayout; E_CONFIG_INVALID when out of range.
hm::MemoryLayout parse_memory_layout(Napi::Env env, Napi::Value v);
// memoryBankTensors(spec): the bank's tensors in file order.
Napi::Value MemoryBankTensors(const Napi::CallbackInfo& info);

}  // namespace hmb
