// memory_layout.cc — the memory spec at the N-API boundary: parsed and checked once into a
// MemoryLayout, and the bank's tensor table (names, shapes, byte ranges) for the TypeScript side.
#include "memory_layout.h"

#include <cmath>
#include <string>

#include "args.h"

namespace hmb {
using namespace hm;

MemoryLayout parse_memory_layout(Napi::Env env, Napi::Value v) {
  if (!v.IsObject()) fail(env, "E_INVALID_ARGUMENT", "memory spec must be an object");
  auto o = v.As<Napi::Object>();
  auto integer = [&](const char* key, int64_t lo, int64_t hi) {
    auto x = o.Get(key);
    double d = x.IsNumber() ? x.As<Napi::Number>().DoubleValue() : NAN;
    if (!std::isfinite(d) || d != std::floor(d) || d < (double)lo || d > (double)hi)
      fail(env, "E_CONFIG_INVALID", std::string("memory spec: ") + key + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return (int64_t)d;
  };
  MemoryLayout L;
  L.k = integer("k", 2, 1 << 16);
  L.Lm = integer("memoryLayers", 1, 4096);
  L.d = integer("dModel", 1, 1 << 16);
  auto levels = o.Get("levels");
  if (!levels.IsArray()) fail(env, "E_CONFIG_INVALID", "memory spec: levels must be an array of block multipliers r_l");
  auto arr = levels.As<Napi::Array>();
  L.p = arr.Length();
  if (L.p < 1 || L.p > 16) fail(env, "E_CONFIG_INVALID", "memory spec: need 1 to 16 levels");
  double nodes = 1;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value x = arr.Get(i);
    double d = x.IsNumber() ? x.As<Napi::Number>().DoubleValue() : NAN;
    if (!std::isfinite(d) || d != std::floor(d) || d < 0 || d > (1 << 20))
      fail(env, "E_CONFIG_INVALID", "memory spec: levels[" + std::to_string(i) + "] must be an integer r_l >= 0");
    L.r.push_back((int64_t)d);
    nodes *= (double)L.k;
    if (nodes > 2147483647.0) fail(env, "E_CONFIG_INVALID", "memory spec: k^p exceeds 2^31 nodes");
  }
  if (L.R() == 0) fail(env, "E_CONFIG_INVALID", "memory spec: every level has r_l = 0 (no memory)");
  L.generic = o.Get("generic").ToBoolean();
  L.optimizer = o.Get("optimizer").ToBoolean();
  double bytes = 0;
  for (int64_t l = 0; l <= L.p; l++) if (L.has_level(l)) bytes += 4.0 * (double)L.nodes(l) * (double)L.block_floats(l);
  if (bytes > 9.0e18 / 4) fail(env, "E_CONFIG_INVALID", "memory spec: bank size overflows");
  return L;
}

Napi::Value MemoryBankTensors(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  auto L = parse_memory_layout(env, info[0]);
  auto ts = bank_tensors(L);
  auto arr = Napi::Array::New(env, ts.size());
  for (size_t i = 0; i < ts.size(); i++) {
    auto o = Napi::Object::New(env);
    o.Set("name", ts[i].name);
    o.Set("dtype", ts[i].is_f32 ? "F32" : "I32");
    auto shape = Napi::Array::New(env, ts[i].shape.size());
    for (size_t j = 0; j < ts[i].shape.size(); j++) shape.Set((uint32_t)j, Napi::Number::New(env, (double)ts[i].shape[j]));
    o.Set("shape", shape);
    o.Set("level", Napi::Number::New(env, (double)ts[i].level));
    o.Set("byteOffset", Napi::Number::New(env, (double)ts[i].byte_offset));
    o.Set("byteSize", Napi::Number::New(env, (double)ts[i].byte_size));
    arr.Set((uint32_t)i, o);
  }
  return arr;
}

}  // namespace hmb
