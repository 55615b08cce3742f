// nccl.cc — the addon's NCCL functions (issue #14, item 7), over the dlopen'ed library of nccl_lib.cc:
//
//   ncclOpen(path)                       -> { loaded, path, version?, fake?, error? }
//   ncclStatus()                         -> { loaded, fake, path, version, initialized, rank, size, uniqueId }
//   ncclInit()                           -> { rank, size }   bootstrapped over MPI (main thread)
//   ncclAllReduceDevice(ptr, n, mean)    -> Promise<void>    in place on device memory (ptr: a bigint address)
//   ncclAllReduceHost(buf, mean)         -> Promise<void>    a Float32Array, staged through the device
//   ncclHostAddress(buf)                 -> bigint           a Float32Array's address (the test double's "device" is host memory)
//   ncclDestroy()
//
// Collectives run on libuv pool threads, one at a time (E_BUSY otherwise), like the MPI ones.
#include <atomic>

#include "args.h"
#include "binding.h"
#include "nccl_lib.h"

namespace hmb {

namespace {

std::atomic<bool> g_nccl_busy{false};

template <typename F>
auto nccl_js(Napi::Env env, F fn) {
  try {
    return fn();
  } catch (const std::runtime_error& e) {
    throw Napi::Error::New(env, e.what());
  }
}

Napi::Value nccl_collective(Napi::Env env, std::function<void()> work, std::vector<Napi::Value> keep) {
  bool expected = false;
  if (!g_nccl_busy.compare_exchange_strong(expected, true))
    fail(env, "E_BUSY", "an NCCL all-reduce is already in flight in this process (await it first)");
  auto* w = new PromiseWorker(env, std::move(work), [](Napi::Env e) { return e.Undefined(); }, std::move(keep),
                              [] { g_nccl_busy.store(false); });
  auto p = w->Promise();
  w->Queue();
  return p;
}

bool get_bool(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsBoolean()) fail(info.Env(), "E_INVALID_ARGUMENT", std::string(name) + " must be a boolean");
  return info[i].As<Napi::Boolean>().Value();
}

}  // namespace

static Napi::Value NcclOpen(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  const std::string path = get_string(info, 0, "libPath");
  const std::string err = nccl::open(path);
  auto o = Napi::Object::New(env);
  o.Set("path", path);
  o.Set("loaded", Napi::Boolean::New(env, err.empty()));
  if (err.empty()) {
    const nccl::Info i = nccl::info();
    o.Set("version", Napi::Number::New(env, i.version));
    o.Set("fake", Napi::Boolean::New(env, i.fake));
  } else {
    o.Set("error", err);
  }
  return o;
}

static Napi::Value NcclStatus(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  const nccl::Info i = nccl::info();
  auto o = Napi::Object::New(env);
  o.Set("loaded", Napi::Boolean::New(env, i.loaded));
  o.Set("fake", Napi::Boolean::New(env, i.fake));
  o.Set("path", i.loaded ? Napi::Value(Napi::String::New(env, i.path)) : env.Null());
  o.Set("version", Napi::Number::New(env, i.version));
  o.Set("initialized", Napi::Boolean::New(env, i.initialized));
  o.Set("rank", Napi::Number::New(env, i.rank));
  o.Set("size", Napi::Number::New(env, i.size));
  o.Set("uniqueId", i.unique_id);
  return o;
}

static Napi::Value NcclInit(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  nccl_js(env, [] { nccl::init_over_mpi(); });
  const nccl::Info i = nccl::info();
  auto o = Napi::Object::New(env);
  o.Set("rank", Napi::Number::New(env, i.rank));
  o.Set("size", Napi::Number::New(env, i.size));
  return o;
}

static Napi::Value NcclAllReduceDevice(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  if (info.Length() < 1 || !info[0].IsBigInt()) fail(env, "E_INVALID_ARGUMENT", "ptr must be a bigint (a device address)");
  bool lossless = false;
  const uint64_t addr = info[0].As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless || addr == 0) fail(env, "E_INVALID_ARGUMENT", "ptr must be a non-zero 64-bit address");
  const int64_t n = get_int(info, 1, "count", 0, INT64_C(1) << 40);
  const bool mean = get_bool(info, 2, "mean");
  void* dev = reinterpret_cast<void*>(addr);
  return nccl_collective(env, [dev, n, mean] { nccl::allreduce_device(dev, n, mean, nullptr); }, {});
}

static Napi::Value NcclAllReduceHost(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  int64_t n = 0;
  if (info.Length() < 1) fail(env, "E_INVALID_ARGUMENT", "buf is missing");
  float* buf = get_array<float>(info[0], env, "buf", -1, &n);
  const bool mean = get_bool(info, 1, "mean");
  return nccl_collective(env, [buf, n, mean] { nccl::allreduce_host(buf, n, mean); }, {info[0]});
}

static Napi::Value NcclHostAddress(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  if (info.Length() < 1) fail(env, "E_INVALID_ARGUMENT", "buf is missing");
  int64_t n = 0;
  float* buf = get_array<float>(info[0], env, "buf", -1, &n);
  return Napi::BigInt::New(env, (uint64_t)reinterpret_cast<uintptr_t>(buf));
}

static Napi::Value NcclDestroy(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  if (g_nccl_busy.load()) fail(env, "E_BUSY", "an NCCL all-reduce is still in flight");
  nccl::destroy();
  return env.Undefined();
}

void RegisterNccl(Napi::Env env, Napi::Object exports) {
  exports.Set("ncclOpen", Napi::Function::New(env, NcclOpen));
  exports.Set("ncclStatus", Napi::Function::New(env, NcclStatus));
  exports.Set("ncclInit", Napi::Function::New(env, NcclInit));
  exports.Set("ncclAllReduceDevice", Napi::Function::New(env, NcclAllReduceDevice));
  exports.Set("ncclAllReduceHost", Napi::Function::New(env, NcclAllReduceHost));
  exports.Set("ncclHostAddress", Napi::Function::New(env, NcclHostAddress));
  exports.Set("ncclDestroy", Napi::Function::New(env, NcclDestroy));
}

}  // namespace hmb
