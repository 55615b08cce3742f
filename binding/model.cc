// model.cc — the NativeModel object: owns an hm::AnchorModel over JS-owned parameter/gradient
// buffers; forward/backward run synchronously or as AsyncWorkers. One call at a time per model:
// a second call while one is running is rejected with E_BUSY (never a data race).
// NativeKVCache: the K/V cache of one generated sequence, made by NativeModel.kvCacheCreate() and
// usable only with that model (prefill / decodeStep).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>

#include "anchor_model.h"
#include "args.h"
#include "binding.h"
#include "model_args.h"
#include "kernels/classifier.h"

namespace hmb {
using namespace hm;


// Parameters (float64 arithmetic: no overflow for any dims parse_dims accepts); the same count as
// anchor_param_count, before anything is allocated.
static double param_count(const ModelDims& d) {
  const double V = (double)d.V, C = (double)d.C, L = (double)d.L, D = (double)d.H * (double)d.hd, F = (double)d.F;
  const double Dkv = (double)d.KV() * (double)d.hd, W = D + 2 * Dkv;
  const double layer = 2 * C + W * C + (d.qkv_bias ? W : 0) + (d.qk_norm ? D + Dkv : 0) + C * D + 3 * F * C;
  return V * C + L * layer + C + (d.tie_embeddings ? 0 : V * C);
}

// Bytes of the activation buffers an AnchorModel allocates for max_batch rows (see its constructor).
static double activation_bytes(const ModelDims& d, int64_t max_batch, int64_t R, int64_t Lm) {
  const double B = (double)max_batch, N = B * (double)d.T, C = (double)d.C, D = (double)d.H * (double)d.hd, F = (double)d.F;
  const double NR = N * (double)R;
  const double Dkv = (double)d.KV() * (double)d.hd;  // qkv (N, D + 2 Dkv), q (N, D), k (N, Dkv), att (N, D)
  const double per_layer = 4 * N * C + 4 * N + N * (3 * D + 3 * Dkv) + B * (double)d.H * (double)d.T + 2 * N * F;
  const double chunk = (double)classifier_chunk_rows(std::min<int64_t>(max_batch * d.T, INT64_C(1) << 40), d.V);
  return 4 * ((double)d.L * per_layer + 2 * NR * (double)Lm + 2 * N * C + 3 * N + chunk * (double)d.V + 2 * N + N * F +
              (NR > 0 ? 5 * NR : 0));
}

static Napi::Value AnchorLayout(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  auto d = parse_dims(env, info[0]);
  // parameters and their gradients, 4 bytes each
  check_fits_in_memory(env, "the model's " + std::to_string((int64_t)param_count(d)) + " parameters and their gradients", 8 * param_count(d));
  auto slots = anchor_layout(d);
  auto arr = Napi::Array::New(env, slots.size());
  for (size_t i = 0; i < slots.size(); i++) {
    auto o = Napi::Object::New(env);
    o.Set("name", slots[i].name);
    auto shape = Napi::Array::New(env, slots[i].shape.size());
    for (size_t j = 0; j < slots[i].shape.size(); j++) shape.Set((uint32_t)j, Napi::Number::New(env, (double)slots[i].shape[j]));
    o.Set("shape", shape);
    o.Set("offset", Napi::Number::New(env, (double)slots[i].offset));
    o.Set("size", Napi::Number::New(env, (double)slots[i].size));
    o.Set("decay", Napi::Boolean::New(env, slots[i].decay));
    arr.Set((uint32_t)i, o);
  }
  return arr;
}

// The buffers behind a NativeKVCache; model_id ties them to the NativeModel that made them.
struct KVState {
  uint64_t model_id = 0;
  KVCache cache;
};

// lib/native.ts wraps every object the addon returns in a Proxy (error mapping), and napi_unwrap
// cannot see through a Proxy, so the model finds a cache's state through this non-enumerable,
// read-only property instead: an External (type-tagged, so nothing else can pose as one) that
// co-owns the state.
static constexpr const char* kKVHandle = "__hiermemKVCache";
static const napi_type_tag kKVTag = {0x6b7663616368652dULL, 0x686965726d656d31ULL};
using KVHandle = std::shared_ptr<KVState>;

class NativeKVCache : public Napi::ObjectWrap<NativeKVCache> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeKVCache",
                       {InstanceAccessor<&NativeKVCache::Length>("length"),
                        InstanceAccessor<&NativeKVCache::Capacity>("capacity")});
  }
  // Constructed empty; NativeModel.kvCacheCreate attaches the state. An empty one (made from JS
  // via cache.constructor) has no handle and is refused by prefill / decodeStep.
  NativeKVCache(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeKVCache>(info) {}

  static Napi::Object Create(Napi::Env env, Napi::FunctionReference& ctor, KVHandle state) {
    Napi::Object obj = ctor.New({});
    Unwrap(obj)->state_ = state;
    auto ext = Napi::External<KVHandle>::New(env, new KVHandle(std::move(state)), [](Napi::Env, KVHandle* p) { delete p; });
    ext.TypeTag(&kKVTag);
    obj.DefineProperty(Napi::PropertyDescriptor::Value(kKVHandle, ext, napi_default));
    return obj;
  }

 private:
  Napi::Value Length(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), state_ ? (double)state_->cache.len : 0);
  }
  Napi::Value Capacity(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), state_ ? (double)state_->cache.T : 0);
  }
  KVHandle state_;
};

// Per-env constructors (napi instance data): the model class and the cache class.
struct ModelClasses {
  Napi::FunctionReference model, kv_cache;
};

class NativeModel : public Napi::ObjectWrap<NativeModel> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeModel",
                       {InstanceMethod<&NativeModel::ForwardBackward>("forwardBackward"),
                        InstanceMethod<&NativeModel::ForwardBackwardAsync>("forwardBackwardAsync"),
                        InstanceMethod<&NativeModel::ForwardLoss>("forwardLoss"),
                        InstanceMethod<&NativeModel::ForwardLossAsync>("forwardLossAsync"),
                        InstanceMethod<&NativeModel::LastLogits>("lastLogits"),
                        InstanceMethod<&NativeModel::KVCacheCreate>("kvCacheCreate"),
                        InstanceMethod<&NativeModel::Prefill>("prefill"),
                        InstanceMethod<&NativeModel::DecodeStep>("decodeStep"),
                        InstanceAccessor<&NativeModel::Busy>("busy")});
  }

  NativeModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeModel>(info) {
    auto env = info.Env();
    auto d = parse_dims(env, info[0]);
    const int64_t n = anchor_param_count(d);
    float* params = get_array<float>(info, 1, "params", n);
    float* grads = get_array<float>(info, 2, "grads", n);
    int64_t max_batch = get_int(info, 3, "maxBatch", 1, 1 << 20);
    MemoryConfig mem = parse_memory_config(env, info.Length() > 4 ? info[4] : env.Undefined(), d.L);
    check_fits_in_memory(env, "the activations of maxBatch " + std::to_string(max_batch) + " x seqLen " + std::to_string(d.T),
                         activation_bytes(d, max_batch, mem.R, mem.Lm));
    params_ref_ = Napi::Persistent(info[1].As<Napi::Object>());
    grads_ref_ = Napi::Persistent(info[2].As<Napi::Object>());
    try {
      model_ = std::make_unique<AnchorModel>(d, params, grads, max_batch, mem);
    } catch (const std::exception& e) {  // bad_alloc / length_error: never let it terminate the process
      fail(env, "E_CONFIG_INVALID", std::string("cannot allocate the model's activations: ") + e.what());
    }
  }

 private:
  // A parsed batch: the CPU model's view of the JS arrays, and what an async call keeps alive.
  struct ParsedBatch {
    Batch batch;
    std::shared_ptr<MemoryBatch> memory;
    std::vector<Napi::Value> keep;
  };

  // memory (model_args.h parse_memory_batch) as the CPU model's MemoryBatch, or null for none.
  std::shared_ptr<MemoryBatch> parse_memory(Napi::Env env, Napi::Value v, int64_t B, bool need_grad, std::vector<Napi::Value>& keep) {
    MemoryBatchArgs ma;
    if (!parse_memory_batch(env, v, B, model_->dims(), model_->memory_config(), need_grad, &ma, keep)) return nullptr;
    return std::make_shared<MemoryBatch>(MemoryBatch{ma.fetched, ma.dfetched, ma.seq_slot, ma.num_slots});
  }

  void check_idle(Napi::Env env) {
    if (busy_) fail(env, "E_BUSY", "this model is already running an asynchronous call; await it first");
    // The parameter buffers must still be attached (a transferred buffer would leave us dangling).
    if (params_ref_.Value().As<Napi::TypedArray>().ArrayBuffer().IsDetached() ||
        grads_ref_.Value().As<Napi::TypedArray>().ArrayBuffer().IsDetached())
      fail(env, "E_DISPOSED", "the model's parameter buffers were detached");
  }

  ParsedBatch parse_batch(const Napi::CallbackInfo& info, bool need_grad) {
    auto env = info.Env();
    check_idle(env);
    BatchArgs ba = hmb::parse_batch(env, info[0], model_->dims(), model_->max_batch());
    ParsedBatch a;
    a.batch = Batch{ba.tokens, ba.targets, ba.doc_start, ba.B, ba.T};
    a.keep = std::move(ba.keep);
    a.memory = parse_memory(env, ba.memory, ba.B, need_grad, a.keep);
    a.batch.memory = a.memory.get();
    return a;
  }

  Napi::Value ForwardBackward(const Napi::CallbackInfo& info) {
    auto a = parse_batch(info, true);
    return Napi::Number::New(info.Env(), model_->forward_backward(a.batch));
  }
  Napi::Value ForwardLoss(const Napi::CallbackInfo& info) {
    auto a = parse_batch(info, false);
    return Napi::Number::New(info.Env(), model_->forward_loss(a.batch));
  }

  Napi::Value RunAsync(const Napi::CallbackInfo& info, bool backward) {
    auto a = parse_batch(info, backward);
    auto result = std::make_shared<double>(0);
    AnchorModel* m = model_.get();
    Batch b = a.batch;
    auto mem = a.memory;  // owned by the worker lambda below
    a.keep.push_back(Value());  // keep this model alive while the worker runs
    a.keep.push_back(params_ref_.Value());
    a.keep.push_back(grads_ref_.Value());
    busy_ = true;
    auto* w = new PromiseWorker(
        info.Env(), [m, b, mem, result, backward] { *result = backward ? m->forward_backward(b) : m->forward_loss(b); },
        [result](Napi::Env env) { return Napi::Number::New(env, *result); }, a.keep, [this] { busy_ = false; });
    auto p = w->Promise();
    w->Queue();
    return p;
  }
  Napi::Value ForwardBackwardAsync(const Napi::CallbackInfo& info) { return RunAsync(info, true); }
  Napi::Value ForwardLossAsync(const Napi::CallbackInfo& info) { return RunAsync(info, false); }

  Napi::Value LastLogits(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    check_idle(env);
    const auto& d = model_->dims();
    int64_t T;
    get_array<int32_t>(info[0], env, "tokens", -1, &T);
    if (T < 1 || T > d.T) fail(env, "E_SHAPE_MISMATCH", "prompt length must be in [1, " + std::to_string(d.T) + "], got " + std::to_string(T));
    const int32_t* tokens = get_array<int32_t>(info, 0, "tokens", T);
    check_tokens(env, "tokens", tokens, T, d.V, false);
    std::vector<Napi::Value> keep;
    auto mem = info.Length() > 1 ? parse_memory(env, info[1], 1, false, keep) : nullptr;
    auto out = Napi::Float32Array::New(env, (size_t)d.V);
    model_->last_logits(tokens, T, out.Data(), mem.get());
    return out;
  }

  // kvCacheCreate() -> NativeKVCache: K and V (L, seqLen, nKvHeads*hd) for one sequence of this model.
  Napi::Value KVCacheCreate(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    check_idle(env);
    const auto& d = model_->dims();
    const double n = (double)d.L * (double)d.T * (double)d.Dkv();
    check_fits_in_memory(env, "a KV cache of " + std::to_string(d.L) + " layers x seqLen " + std::to_string(d.T) + " x " +
                                  std::to_string(d.Dkv()), 8 * n);
    auto st = std::make_shared<KVState>();
    st->model_id = id_;
    try {
      st->cache = KVCache(d);
    } catch (const std::exception& e) {
      fail(env, "E_CONFIG_INVALID", std::string("cannot allocate the KV cache: ") + e.what());
    }
    return NativeKVCache::Create(env, env.GetInstanceData<ModelClasses>()->kv_cache, std::move(st));
  }

  // The cache argument: a NativeKVCache (or the Proxy lib/native.ts puts around it) of this model.
  KVHandle parse_cache(Napi::Env env, Napi::Value v) {
    const char* what = "cache must be a NativeKVCache from this model's kvCacheCreate()";
    if (!v.IsObject()) fail(env, "E_INVALID_ARGUMENT", what);
    auto h = v.As<Napi::Object>().Get(kKVHandle);
    if (!h.IsExternal() || !h.As<Napi::External<KVHandle>>().CheckTypeTag(&kKVTag)) fail(env, "E_INVALID_ARGUMENT", what);
    KVHandle st = *h.As<Napi::External<KVHandle>>().Data();
    if (!st || st->model_id != id_) fail(env, "E_INVALID_ARGUMENT", "cache was created by another model");
    return st;
  }

  // prefill(cache, tokens: Int32Array (T' in [1, seqLen]), logitsOut: Float32Array (V), memory?)
  // -> logitsOut: the last position's logits (as lastLogits); the cache then holds T' positions.
  Napi::Value Prefill(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    check_idle(env);
    const auto& d = model_->dims();
    auto st = parse_cache(env, info[0]);
    int64_t T;
    get_array<int32_t>(info[1], env, "tokens", -1, &T);
    if (T < 1 || T > d.T) fail(env, "E_SHAPE_MISMATCH", "prompt length must be in [1, " + std::to_string(d.T) + "], got " + std::to_string(T));
    const int32_t* tokens = get_array<int32_t>(info, 1, "tokens", T);
    check_tokens(env, "tokens", tokens, T, d.V, false);
    float* logits = get_array<float>(info, 2, "logitsOut", d.V);
    std::vector<Napi::Value> keep;
    auto mem = info.Length() > 3 ? parse_memory(env, info[3], 1, false, keep) : nullptr;
    model_->prefill(tokens, T, st->cache, logits, mem.get());
    return info[2];
  }

  // decodeStep(cache, token, logitsOut: Float32Array (V), memory?) -> logitsOut: appends token at
  // position cache.length and writes its next-token logits. A full cache (length == seqLen) is
  // E_CACHE_FULL: the caller re-runs a sliding window with lastLogits instead.
  Napi::Value DecodeStep(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    check_idle(env);
    const auto& d = model_->dims();
    auto st = parse_cache(env, info[0]);
    if (info.Length() < 2 || !info[1].IsNumber()) fail(env, "E_INVALID_ARGUMENT", "token must be a number");
    const double tv = info[1].As<Napi::Number>().DoubleValue();
    if (tv != std::floor(tv)) fail(env, "E_INVALID_ARGUMENT", "token must be an integer, got " + std::to_string(tv));
    if (!(tv >= 0 && tv < (double)d.V))  // also NaN-safe
      fail(env, "E_TOKEN_OUT_OF_RANGE", "token = " + std::to_string(tv) + " is outside [0, " + std::to_string(d.V) + ")");
    float* logits = get_array<float>(info, 2, "logitsOut", d.V);
    std::vector<Napi::Value> keep;
    auto mem = info.Length() > 3 ? parse_memory(env, info[3], 1, false, keep) : nullptr;
    if (st->cache.len >= d.T)
      fail(env, "E_CACHE_FULL", "the KV cache holds seqLen = " + std::to_string(d.T) + " positions already; "
                                "re-run the last tokens with lastLogits (a sliding window) instead");
    model_->decode_step((int32_t)tv, st->cache, logits, mem.get());
    return info[2];
  }

  Napi::Value Busy(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), busy_); }

  static std::atomic<uint64_t> next_id_;
  const uint64_t id_ = ++next_id_;  // never reused, unlike an address
  std::unique_ptr<AnchorModel> model_;
  Napi::ObjectReference params_ref_, grads_ref_;
  bool busy_ = false;
};
std::atomic<uint64_t> NativeModel::next_id_{0};

void RegisterModel(Napi::Env env, Napi::Object exports) {
  auto* classes = new ModelClasses{Napi::Persistent(NativeModel::Define(env)), Napi::Persistent(NativeKVCache::Define(env))};
  env.SetInstanceData<ModelClasses>(classes);
  exports.Set("anchorLayout", Napi::Function::New(env, AnchorLayout));
  exports.Set("createAnchorModel", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
                auto* classes = info.Env().GetInstanceData<ModelClasses>();
                std::vector<napi_value> args;
                for (size_t i = 0; i < info.Length(); i++) args.push_back(info[i]);
                return classes->model.New(args);
              }));
}

}  // namespace hmb
