// cuda_lib.cc — the addon's side of the CUDA backend (issue #8): the library. The addon never links CUDA: the
// kernels live in hiermem_cuda.so, opened here with dlopen on request, and reached through the
// versioned function table that its one exported symbol hmc_get_api hands out. Everything fails as
// a clean "[E_CODE] message" (never an abort): a missing file, a library with an undefined symbol
// (RTLD_NOW resolves them all at open), a non-CUDA library or one built for another ABI.
//
//   cudaOpen(path)          -> { loaded, path, error? }   (one library per process, kept open)
//   cudaStatus()            -> { loaded, path }
//   cudaDeviceInfo(device)  -> { status, statusText, deviceCount, driverVersion, ... }
//   createCudaAnchorModel(...)  -> NativeCudaModel (cuda_model.cc)
#include "cuda_lib.h"

#include <dlfcn.h>

#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>

#include "args.h"
#include "binding.h"

namespace hmb {

// ---- the library ---------------------------------------------------------------------------

namespace {

// One CUDA library per process (a worker_thread's addon instance shares it). Once a library is
// opened and accepted it is never closed: models hold pointers into it, and unloading a library
// that carries a static CUDA runtime would run that runtime's teardown under live allocations.
struct CudaLib {
  std::mutex mu;
  const hmc_api* api = nullptr;
  std::string path;
};
CudaLib g_lib;

const hmc_api* lib_api() {
  std::lock_guard<std::mutex> lock(g_lib.mu);
  return g_lib.api;
}

std::string dl_error(const char* fallback) {
  const char* e = dlerror();
  return e ? std::string(e) : std::string(fallback);
}

// Opens `path` and returns null, or the reason it cannot be used.
std::string open_library(const std::string& path, const hmc_api** out) {
  dlerror();  // clear a stale message
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) return "dlopen failed: " + dl_error(path.c_str());  // dlerror names the file
  // From here on a failed check leaves the handle open (never dlclose a library that may have run
  // CUDA runtime constructors); it costs one mapping and only on this error path.
  dlerror();
  void* sym = dlsym(h, "hmc_get_api");
  if (!sym) return path + " is not a hiermem CUDA library (no hmc_get_api: " + dl_error("symbol not found") + ")";
  auto get_api = reinterpret_cast<const hmc_api* (*)(int32_t)>(sym);
  const hmc_api* api = get_api(HMC_ABI_VERSION);
  if (!api || api->abi_version != HMC_ABI_VERSION)
    return path + " was built for another interface version (ABI mismatch: this addon needs " +
           std::to_string(HMC_ABI_VERSION) + "); rebuild hiermem so that the addon and the CUDA library match";
  if (!api->device_info || !api->error_string)
    return path + " lacks its device query entry points (a partial build?)";
  *out = api;
  return "";
}

}  // namespace

std::string cuda_error_text(const hmc_api* api, int32_t status) {
  const char* s = api && api->error_string ? api->error_string(status) : nullptr;
  return std::string(s ? s : "unknown CUDA error") + " (cudaError " + std::to_string(status) + ")";
}

[[noreturn]] void throw_code(const char* code, const std::string& msg) {
  throw std::runtime_error(std::string("[") + code + "] " + msg);
}

static Napi::Value CudaOpen(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  const std::string path = get_string(info, 0, "libPath");
  auto result = Napi::Object::New(env);
  result.Set("path", path);
  std::lock_guard<std::mutex> lock(g_lib.mu);
  std::string error;
  if (g_lib.api) {
    if (g_lib.path != path) error = "a CUDA library is already loaded from " + g_lib.path + "; cannot also load " + path;
  } else if (path.empty()) {
    error = "no CUDA library path given";
  } else {
    const hmc_api* api = nullptr;
    error = open_library(path, &api);
    if (error.empty()) {
      g_lib.api = api;
      g_lib.path = path;
    }
  }
  result.Set("loaded", Napi::Boolean::New(env, error.empty()));
  if (!error.empty()) result.Set("error", error);
  return result;
}

static Napi::Value CudaStatus(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  auto result = Napi::Object::New(env);
  std::lock_guard<std::mutex> lock(g_lib.mu);
  result.Set("loaded", Napi::Boolean::New(env, g_lib.api != nullptr));
  result.Set("path", g_lib.api ? Napi::Value(Napi::String::New(env, g_lib.path)) : env.Null());
  return result;
}

const hmc_api* require_cuda_api(Napi::Env env) {
  const hmc_api* api = lib_api();
  if (!api) fail(env, "E_BACKEND_UNAVAILABLE", "no CUDA library is loaded (cudaOpen first)");
  return api;
}

static Napi::Value CudaDeviceInfo(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  const int32_t device = (int32_t)get_int(info, 0, "device", 0, 1024);
  const hmc_api* api = require_cuda_api(env);
  hmc_device_info d;
  std::memset(&d, 0, sizeof d);
  api->device_info(device, &d);
  d.name[sizeof d.name - 1] = 0;  // never trust the library to terminate its strings
  d.status_text[sizeof d.status_text - 1] = 0;
  auto o = Napi::Object::New(env);
  o.Set("status", Napi::Number::New(env, d.status));
  o.Set("statusText", Napi::String::New(env, d.status_text));
  o.Set("deviceCount", Napi::Number::New(env, d.device_count));
  o.Set("driverVersion", Napi::Number::New(env, d.driver_version));
  o.Set("runtimeVersion", Napi::Number::New(env, d.runtime_version));
  o.Set("name", Napi::String::New(env, d.name));
  o.Set("computeCapability", Napi::String::New(env, std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor)));
  o.Set("freeBytes", Napi::Number::New(env, (double)d.free_bytes));
  o.Set("totalBytes", Napi::Number::New(env, (double)d.total_bytes));
  return o;
}

void RegisterCuda(Napi::Env env, Napi::Object exports) {
  exports.Set("cudaAbiVersion", Napi::Number::New(env, HMC_ABI_VERSION));
  exports.Set("cudaOpen", Napi::Function::New(env, CudaOpen));
  exports.Set("cudaStatus", Napi::Function::New(env, CudaStatus));
  exports.Set("cudaDeviceInfo", Napi::Function::New(env, CudaDeviceInfo));
  RegisterCudaModel(env, exports);
}

}  // namespace hmb
