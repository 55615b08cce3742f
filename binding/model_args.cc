// model_args.cc — the model config objects both model bindings take (the CPU NativeModel and the
// CUDA NativeCudaModel): one parser, so the two backends accept exactly the same configs.
#include "model_args.h"

#include <cmath>

#include "args.h"

namespace hmb {
using namespace hm;

AnchorDims parse_dims(Napi::Env env, Napi::Value v) {
  if (!v.IsObject()) fail(env, "E_INVALID_ARGUMENT", "dims must be an object");
  auto o = v.As<Napi::Object>();
  auto num = [&](const char* k, double lo, double hi, bool integer) {
    auto x = o.Get(k);
    if (!x.IsNumber()) fail(env, "E_CONFIG_INVALID", std::string(k) + " must be a number");
    double d = x.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || d < lo || d > hi || (integer && d != std::floor(d)))
      fail(env, "E_CONFIG_INVALID", std::string(k) + " = " + std::to_string(d) + " is out of range");
    return d;
  };
  AnchorDims d;
  d.V = (int64_t)num("vocabSize", 2, 1 << 24, true);
  d.C = (int64_t)num("dModel", 1, 1 << 16, true);
  d.L = (int64_t)num("nLayers", 1, 4096, true);
  d.H = (int64_t)num("nHeads", 1, 1024, true);
  d.hd = (int64_t)num("headDim", 2, 4096, true);
  d.F = (int64_t)num("ffnHidden", 1, 1 << 20, true);
  d.T = (int64_t)num("seqLen", 1, 1 << 20, true);
  d.norm_eps = (float)num("normEps", 0, 1, false);
  d.rope_base = num("ropeBase", 1.0001, 1e12, false);
  if (d.hd % 2) fail(env, "E_CONFIG_INVALID", "headDim must be even (rotary embeddings rotate pairs)");
  return d;
}

MemoryConfig parse_memory_config(Napi::Env env, Napi::Value v, int64_t L) {
  MemoryConfig mem;
  if (!v.IsObject()) return mem;
  // memory = { R, layerToMemory: Int32Array (L) } — FFN-memory units per memory layer
  auto o = v.As<Napi::Object>();
  auto rv = o.Get("R");
  double R = rv.IsNumber() ? rv.As<Napi::Number>().DoubleValue() : -1;
  if (!(R >= 1 && R <= (1 << 20) && R == std::floor(R))) fail(env, "E_CONFIG_INVALID", "memory.R must be an integer >= 1");
  mem.R = (int64_t)R;
  const int32_t* map = get_array<int32_t>(o.Get("layerToMemory"), env, "memory.layerToMemory", L);
  int32_t next = 0;
  for (int64_t l = 0; l < L; l++) {
    if (map[l] != -1 && map[l] != next)
      fail(env, "E_CONFIG_INVALID", "memory.layerToMemory must number the memory layers 0, 1, ... in order (-1 = none)");
    if (map[l] == next) next++;
    mem.layer_to_mem.push_back(map[l]);
  }
  if (next == 0) fail(env, "E_CONFIG_INVALID", "memory.layerToMemory selects no layer");
  mem.Lm = next;
  return mem;
}

}  // namespace hmb
