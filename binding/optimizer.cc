// optimizer.cc — AdamW and the global gradient norm.
#include <cmath>
#include <memory>
#include <vector>

#include "args.h"
#include "binding.h"
#include "optimizer_args.h"
#include "kernels/adamw.h"

namespace hmb {
using namespace hm;

struct AdamWCall {
  float *p, *g, *m, *v;
  std::vector<DecaySegment> segments;
  AdamWHyper hyper;
};

static AdamWCall parse_adamw(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  AdamWCall a;
  int64_t n;
  get_array<float>(info[0], env, "params", -1, &n);
  a.p = get_array<float>(info, 0, "params", n);
  a.g = get_array<float>(info, 1, "grads", n);
  a.m = get_array<float>(info, 2, "m", n);
  a.v = get_array<float>(info, 3, "v", n);
  a.segments = parse_decay_segments(env, info[4], n);
  if (info.Length() < 6 || !info[5].IsObject()) fail(env, "E_INVALID_ARGUMENT", "hyper must be an object");
  auto h = info[5].As<Napi::Object>();
  a.hyper = parse_adamw_hyper(env, h);
  a.hyper.grad_scale = hyper_number(env, h, "gradScale");
  return a;
}

static void run_adamw(const AdamWCall& a) {
  for (const auto& s : a.segments)
    adamw_update(a.p + s.offset, a.g + s.offset, a.m + s.offset, a.v + s.offset, s.length, s.wd, a.hyper);
}

static Napi::Value AdamwStep(const Napi::CallbackInfo& info) {
  run_adamw(parse_adamw(info));
  return info.Env().Undefined();
}

static Napi::Value AdamwStepAsync(const Napi::CallbackInfo& info) {
  auto args = std::make_shared<AdamWCall>(parse_adamw(info));
  auto* w = new PromiseWorker(
      info.Env(), [args] { run_adamw(*args); }, [](Napi::Env env) { return env.Undefined(); },
      {info[0], info[1], info[2], info[3]});
  auto promise = w->Promise();
  w->Queue();
  return promise;
}

static Napi::Value GlobalNorm(const Napi::CallbackInfo& info) {
  int64_t n;
  const float* g = get_array<float>(info[0], info.Env(), "grads", -1, &n);
  return Napi::Number::New(info.Env(), n ? global_norm(g, n) : 0.0);
}

void RegisterOptimizer(Napi::Env env, Napi::Object exports) {
  exports.Set("adamwStep", Napi::Function::New(env, AdamwStep));
  exports.Set("adamwStepAsync", Napi::Function::New(env, AdamwStepAsync));
  exports.Set("globalNorm", Napi::Function::New(env, GlobalNorm));
}

}  // namespace hmb
