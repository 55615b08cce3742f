// optimizer.cc — AdamW and the global gradient norm.
#include <cmath>
#include <memory>
#include <vector>

#include "args.h"
#include "binding.h"
#include "kernels/adamw.h"

namespace hmb {
using namespace hm;

struct Segment {
  int64_t offset, length;
  float wd;
};

struct AdamWArgs {
  float *p, *g, *m, *v;
  std::vector<Segment> segments;
  AdamWHyper hyper;
};

static AdamWArgs parse_adamw(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  AdamWArgs a;
  int64_t n;
  get_array<float>(info[0], env, "params", -1, &n);
  a.p = get_array<float>(info, 0, "params", n);
  a.g = get_array<float>(info, 1, "grads", n);
  a.m = get_array<float>(info, 2, "m", n);
  a.v = get_array<float>(info, 3, "v", n);
  int64_t ns;
  const double* seg = get_array<double>(info[4], env, "segments", -1, &ns);
  if (ns % 3) fail(env, "E_SHAPE_MISMATCH", "segments must hold (offset, length, weightDecay) triples");
  for (int64_t i = 0; i < ns; i += 3) {
    double off = seg[i], len = seg[i + 1], wd = seg[i + 2];
    if (!(off >= 0 && len >= 0 && off == std::floor(off) && len == std::floor(len) && off + len <= (double)n) ||
        !std::isfinite(wd) || wd < 0)
      fail(env, "E_INVALID_ARGUMENT", "segment " + std::to_string(i / 3) + " is outside the parameter buffer or has a bad weight decay");
    a.segments.push_back({(int64_t)off, (int64_t)len, (float)wd});
  }
  if (info.Length() < 6 || !info[5].IsObject()) fail(env, "E_INVALID_ARGUMENT", "hyper must be an object");
  auto h = info[5].As<Napi::Object>();
  auto num = [&](const char* k) {
    auto v = h.Get(k);
    if (!v.IsNumber() || !std::isfinite(v.As<Napi::Number>().DoubleValue()))
      fail(env, "E_INVALID_ARGUMENT", std::string("hyper.") + k + " must be a finite number");
    return v.As<Napi::Number>().DoubleValue();
  };
  a.hyper.lr = num("lr");
  a.hyper.beta1 = num("beta1");
  a.hyper.beta2 = num("beta2");
  a.hyper.eps = num("eps");
  double step = num("step");
  if (step < 1 || step != std::floor(step)) fail(env, "E_INVALID_ARGUMENT", "hyper.step must be an integer >= 1");
  a.hyper.step = (int64_t)step;
  a.hyper.grad_scale = num("gradScale");
  if (!(a.hyper.beta1 >= 0 && a.hyper.beta1 < 1 && a.hyper.beta2 >= 0 && a.hyper.beta2 < 1 && a.hyper.eps > 0))
    fail(env, "E_INVALID_ARGUMENT", "need 0 <= beta1, beta2 < 1 and eps > 0");
  return a;
}

static void run_adamw(const AdamWArgs& a) {
  for (const auto& s : a.segments)
    adamw_update(a.p + s.offset, a.g + s.offset, a.m + s.offset, a.v + s.offset, s.length, s.wd, a.hyper);
}

static Napi::Value AdamwStep(const Napi::CallbackInfo& info) {
  run_adamw(parse_adamw(info));
  return info.Env().Undefined();
}

static Napi::Value AdamwStepAsync(const Napi::CallbackInfo& info) {
  auto args = std::make_shared<AdamWArgs>(parse_adamw(info));
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
