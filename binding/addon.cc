// addon.cc — module entry: registers the binding's parts. Thin by design: checks and glue only.
#include <napi.h>

#include "args.h"
#include "binding.h"
#include "kernels/gemm.h"
#include "parallel.h"


namespace hmb {

void RegisterNccl(Napi::Env env, Napi::Object exports);  // nccl.cc: the dlopen'ed NCCL library (issue #14)

static Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  hm::set_num_threads((int)get_int(info, 0, "n", 1, 256));
  return info.Env().Undefined();
}
static Napi::Value GetNumThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), hm::num_threads());
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("version", Napi::String::New(env, "0.1.0"));
  // no BLAS: dense products are our own GEMM; "blas" stays for readers of `hiermem info --json`
  exports.Set("blas", Napi::String::New(env, "none (own gemm)"));
  exports.Set("gemmKernel", Napi::String::New(env, hm::gemm_kernel_name()));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  exports.Set("getNumThreads", Napi::Function::New(env, GetNumThreads));
  RegisterKernels(env, exports);
  RegisterOptimizer(env, exports);
  RegisterModel(env, exports);
  RegisterMemory(env, exports);
  RegisterCuda(env, exports);
  RegisterMpi(env, exports);
  RegisterNccl(env, exports);
  return exports;
}

}  // namespace hmb

static Napi::Object InitHiermem(Napi::Env env, Napi::Object exports) { return hmb::Init(env, exports); }

NODE_API_MODULE(hiermem, InitHiermem)
