// model_args.cc — the model config and batch objects both model bindings take (the CPU NativeModel
// and the CUDA NativeCudaModel): one parser, so the two backends accept exactly the same arguments.
#include "model_args.h"

#include <cmath>

#include "args.h"

namespace hmb {
using namespace hm;

ModelDims parse_dims(Napi::Env env, Napi::Value v) {
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
  ModelDims d;
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
  // the Llama-family fields: absent (undefined) = today's anchor
  auto given = [&](const char* k) { auto x = o.Get(k); return !x.IsUndefined(); };
  auto flag = [&](const char* k, bool dflt) {
    if (!given(k)) return dflt;
    auto x = o.Get(k);
    if (!x.IsBoolean()) fail(env, "E_CONFIG_INVALID", std::string(k) + " must be a boolean");
    return x.As<Napi::Boolean>().Value();
  };
  d.Hkv = given("nKvHeads") ? (int64_t)num("nKvHeads", 1, (double)d.H, true) : d.H;
  if (d.H % d.Hkv) fail(env, "E_CONFIG_INVALID", "nKvHeads must divide nHeads (grouped-query attention)");
  d.qk_norm = flag("qkNorm", true);
  d.qkv_bias = flag("qkvBias", false);
  d.tie_embeddings = flag("tieEmbeddings", true);
  auto rs = o.Get("ropeScaling");
  if (!rs.IsUndefined() && !rs.IsNull()) {
    if (!rs.IsObject()) fail(env, "E_CONFIG_INVALID", "ropeScaling must be null or an object");
    auto r = rs.As<Napi::Object>();
    auto type = r.Get("type");
    if (!type.IsString() || type.As<Napi::String>().Utf8Value() != "llama3")
      fail(env, "E_CONFIG_INVALID", "ropeScaling.type must be \"llama3\"");
    auto pos = [&](const char* k) {
      auto x = r.Get(k);
      const double v = x.IsNumber() ? x.As<Napi::Number>().DoubleValue() : NAN;
      if (!(std::isfinite(v) && v > 0))
        fail(env, "E_CONFIG_INVALID", std::string("ropeScaling.") + k + " must be a finite number > 0");
      return v;
    };
    d.rope_scaling.kind = 1;
    d.rope_scaling.factor = pos("factor");
    d.rope_scaling.low_freq_factor = pos("lowFreqFactor");
    d.rope_scaling.high_freq_factor = pos("highFreqFactor");
    d.rope_scaling.original_max_positions = pos("originalMaxPositions");
    if (d.rope_scaling.factor < 1) fail(env, "E_CONFIG_INVALID", "ropeScaling.factor must be >= 1");
    if (!(d.rope_scaling.high_freq_factor > d.rope_scaling.low_freq_factor))
      fail(env, "E_CONFIG_INVALID", "ropeScaling.highFreqFactor must exceed lowFreqFactor");
  }
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

BatchArgs parse_batch(Napi::Env env, Napi::Value v, const ModelDims& d, int64_t max_batch) {
  if (!v.IsObject()) fail(env, "E_INVALID_ARGUMENT", "batch must be an object");
  auto o = v.As<Napi::Object>();
  auto bv = o.Get("batchSize");
  if (!bv.IsNumber()) fail(env, "E_INVALID_ARGUMENT", "batch.batchSize must be a number");
  const double bd = bv.As<Napi::Number>().DoubleValue();
  if (!(bd >= 1 && bd <= (double)max_batch && bd == std::floor(bd)))
    fail(env, "E_INVALID_ARGUMENT", "batch.batchSize must be an integer in [1, " + std::to_string(max_batch) + "]");
  BatchArgs a;
  a.B = (int64_t)bd;
  a.T = d.T;
  const int64_t N = a.B * a.T;
  a.tokens = get_array<int32_t>(o.Get("tokens"), env, "batch.tokens", N);
  a.targets = get_array<int32_t>(o.Get("targets"), env, "batch.targets", N);
  auto ds = o.Get("docStart");
  a.doc_start = (ds.IsNull() || ds.IsUndefined()) ? nullptr : get_array<int32_t>(ds, env, "batch.docStart", N);
  check_tokens(env, "batch.tokens", a.tokens, N, d.V, false);
  check_tokens(env, "batch.targets", a.targets, N, d.V, true);
  check_doc_start(env, a.doc_start, a.B, a.T);
  a.keep = {o.Get("tokens"), o.Get("targets"), ds};
  a.memory = o.Get("memory");
  return a;
}

bool parse_memory_batch(Napi::Env env, Napi::Value v, int64_t B, const ModelDims& d, const MemoryConfig& mem,
                        bool need_grad, MemoryBatchArgs* out, std::vector<Napi::Value>& keep) {
  if (v.IsNull() || v.IsUndefined()) return false;
  if (mem.R == 0) fail(env, "E_CONFIG_INVALID", "this model was created without memory layers");
  if (!v.IsObject()) fail(env, "E_INVALID_ARGUMENT", "memory must be an object");
  auto o = v.As<Napi::Object>();
  auto ns = o.Get("numSlots");
  const double S = ns.IsNumber() ? ns.As<Napi::Number>().DoubleValue() : -1;
  if (!(S >= 1 && S <= (double)B && S == std::floor(S)))
    fail(env, "E_INVALID_ARGUMENT", "memory.numSlots must be an integer in [1, batchSize]");
  MemoryBatchArgs m;
  m.num_slots = (int64_t)S;
  m.fetched_floats = elems(env, "memory.fetched", {m.num_slots, mem.Lm, 3, mem.R, d.C});
  m.fetched = get_array<float>(o.Get("fetched"), env, "memory.fetched", m.fetched_floats);
  auto dv = o.Get("dfetched");
  m.dfetched = (dv.IsNull() || dv.IsUndefined()) ? nullptr : get_array<float>(dv, env, "memory.dfetched", m.fetched_floats);
  if (need_grad && !m.dfetched) fail(env, "E_INVALID_ARGUMENT", "memory.dfetched is required for forwardBackward");
  m.seq_slot = get_array<int32_t>(o.Get("seqSlot"), env, "memory.seqSlot", B);
  for (int64_t b = 0; b < B; b++)
    if (m.seq_slot[b] < -1 || m.seq_slot[b] >= m.num_slots)
      fail(env, "E_INVALID_ARGUMENT", "memory.seqSlot[" + std::to_string(b) + "] = " + std::to_string(m.seq_slot[b]) +
                                          " is outside [-1, numSlots)");
  keep.push_back(o.Get("fetched"));
  keep.push_back(dv);
  keep.push_back(o.Get("seqSlot"));
  *out = m;
  return true;
}

}  // namespace hmb
