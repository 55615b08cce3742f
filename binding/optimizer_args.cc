// optimizer_args.cc — see optimizer_args.h.
#include "optimizer_args.h"

#include <cmath>
#include <string>

#include "args.h"

namespace hmb {

std::vector<DecaySegment> parse_decay_segments(Napi::Env env, Napi::Value v, int64_t n) {
  int64_t ns;
  const double* seg = get_array<double>(v, env, "segments", -1, &ns);
  if (ns % 3) fail(env, "E_SHAPE_MISMATCH", "segments must hold (offset, length, weightDecay) triples");
  std::vector<DecaySegment> out;
  for (int64_t i = 0; i < ns; i += 3) {
    double off = seg[i], len = seg[i + 1], wd = seg[i + 2];
    if (!(off >= 0 && len >= 0 && off == std::floor(off) && len == std::floor(len) && off + len <= (double)n) ||
        !std::isfinite(wd) || wd < 0)
      fail(env, "E_INVALID_ARGUMENT", "segment " + std::to_string(i / 3) + " is outside the parameter buffer or has a bad weight decay");
    out.push_back({(int64_t)off, (int64_t)len, (float)wd});
  }
  return out;
}

double hyper_number(Napi::Env env, Napi::Object h, const char* key) {
  auto v = h.Get(key);
  if (!v.IsNumber() || !std::isfinite(v.As<Napi::Number>().DoubleValue()))
    fail(env, "E_INVALID_ARGUMENT", std::string("hyper.") + key + " must be a finite number");
  return v.As<Napi::Number>().DoubleValue();
}

hm::AdamWHyper parse_adamw_hyper(Napi::Env env, Napi::Object h) {
  hm::AdamWHyper a;
  a.grad_scale = 1.0;
  a.lr = hyper_number(env, h, "lr");
  a.beta1 = hyper_number(env, h, "beta1");
  a.beta2 = hyper_number(env, h, "beta2");
  a.eps = hyper_number(env, h, "eps");
  double step = hyper_number(env, h, "step");
  if (step < 1 || step != std::floor(step)) fail(env, "E_INVALID_ARGUMENT", "hyper.step must be an integer >= 1");
  a.step = (int64_t)step;
  if (!(a.beta1 >= 0 && a.beta1 < 1 && a.beta2 >= 0 && a.beta2 < 1 && a.eps > 0))
    fail(env, "E_INVALID_ARGUMENT", "need 0 <= beta1, beta2 < 1 and eps > 0");
  return a;
}

}  // namespace hmb
