// mpi.cc — the addon's MPI functions (issue #14), over the dlopen'ed library of mpi_lib.cc:
//
//   mpiOpen(path)                    -> { loaded, path, abi?, error? }   (one library per process)
//   mpiStatus()                      -> { loaded, path, abi, initialized, finalized, rank, size, threadLevel, version }
//   mpiInit()                        -> { rank, size, threadLevel }      (main thread, idempotent)
//   mpiAllReduce(buf, mean)          -> Promise<void>  in place, summed in rank order
//   mpiAllGather(send, recv)         -> Promise<void>  recv.length === size * send.length
//   mpiBroadcast(buf, root)          -> Promise<void>
//   mpiBarrier()                     -> Promise<void>
//   mpiAbort(code), mpiFinalize(), mpiWtime()
//
// Collectives run on libuv pool threads, one at a time (E_BUSY otherwise): every rank must issue
// the same collectives in the same order, so two in flight from one process is a caller's bug.
#include <atomic>

#include "args.h"
#include "binding.h"
#include "mpi_lib.h"

namespace hmb {

namespace {

std::atomic<bool> g_busy{false};

const char* abi_name(mpi::Abi a) {
  return a == mpi::Abi::OpenMPI ? "openmpi" : a == mpi::Abi::MPICH ? "mpich" : "none";
}

// Wraps mpi_lib's "[E_CODE] ..." runtime_errors as the binding's JS errors (same message).
template <typename F>
auto on_js_thread(Napi::Env env, F fn) {
  try {
    return fn();
  } catch (const std::runtime_error& e) {
    throw Napi::Error::New(env, e.what());
  }
}

void claim(Napi::Env env) {
  bool expected = false;
  if (!g_busy.compare_exchange_strong(expected, true))
    fail(env, "E_BUSY", "an MPI collective is already in flight in this process (await it first: every rank must issue collectives in the same order)");
}

// A collective on a pool thread; `keep` are the buffers it reads or writes.
Napi::Value collective(Napi::Env env, std::function<void()> work, std::vector<Napi::Value> keep) {
  claim(env);
  auto* w = new PromiseWorker(env, std::move(work), [](Napi::Env e) { return e.Undefined(); }, std::move(keep),
                              [] { g_busy.store(false); });
  auto p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

static Napi::Value MpiOpen(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  const std::string path = get_string(info, 0, "libPath");
  const std::string err = mpi::open(path);
  auto o = Napi::Object::New(env);
  o.Set("path", path);
  o.Set("loaded", Napi::Boolean::New(env, err.empty()));
  if (err.empty()) o.Set("abi", abi_name(mpi::info().abi));
  else o.Set("error", err);
  return o;
}

static Napi::Value MpiStatus(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  const mpi::Info i = on_js_thread(env, [] { return mpi::info(); });
  auto o = Napi::Object::New(env);
  o.Set("loaded", Napi::Boolean::New(env, i.loaded));
  o.Set("path", i.loaded ? Napi::Value(Napi::String::New(env, i.path)) : env.Null());
  o.Set("abi", abi_name(i.abi));
  o.Set("initialized", Napi::Boolean::New(env, i.initialized));
  o.Set("finalized", Napi::Boolean::New(env, i.finalized));
  o.Set("rank", Napi::Number::New(env, i.rank));
  o.Set("size", Napi::Number::New(env, i.size));
  o.Set("threadLevel", Napi::Number::New(env, i.thread_level));
  o.Set("version", i.version);
  return o;
}

static Napi::Value MpiInit(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  on_js_thread(env, [] { mpi::init(); });
  const mpi::Info i = mpi::info();
  auto o = Napi::Object::New(env);
  o.Set("rank", Napi::Number::New(env, i.rank));
  o.Set("size", Napi::Number::New(env, i.size));
  o.Set("threadLevel", Napi::Number::New(env, i.thread_level));
  return o;
}

static Napi::Value MpiAllReduce(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  int64_t n = 0;
  if (info.Length() < 1) fail(env, "E_INVALID_ARGUMENT", "buf is missing");
  float* buf = get_array<float>(info[0], env, "buf", -1, &n);
  if (info.Length() < 2 || !info[1].IsBoolean()) fail(env, "E_INVALID_ARGUMENT", "mean must be a boolean");
  const bool mean = info[1].As<Napi::Boolean>().Value();
  return collective(env, [buf, n, mean] { mpi::allreduce_ordered(buf, n, mean); }, {info[0]});
}

static Napi::Value MpiAllGather(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  int64_t n = 0;
  if (info.Length() < 2) fail(env, "E_INVALID_ARGUMENT", "send and recv are required");
  const float* send = get_array<float>(info[0], env, "send", -1, &n);
  const int64_t size = mpi::world_size();
  float* recv = get_array<float>(info[1], env, "recv", elems(env, "recv", {size, n}));
  return collective(env, [send, n, recv] { mpi::allgather(send, n, recv); }, {info[0], info[1]});
}

static Napi::Value MpiBroadcast(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  int64_t n = 0;
  if (info.Length() < 1) fail(env, "E_INVALID_ARGUMENT", "buf is missing");
  float* buf = get_array<float>(info[0], env, "buf", -1, &n);
  const int root = (int)get_int(info, 1, "root", 0, mpi::world_size() - 1);
  return collective(env, [buf, n, root] { mpi::bcast(buf, n, root); }, {info[0]});
}

static Napi::Value MpiBarrier(const Napi::CallbackInfo& info) {
  return collective(info.Env(), [] { mpi::barrier(); }, {});
}

static Napi::Value MpiAbort(const Napi::CallbackInfo& info) {
  mpi::abort_job((int)get_int(info, 0, "code", 0, 255));
  return info.Env().Undefined();
}

static Napi::Value MpiFinalize(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  if (g_busy.load()) fail(env, "E_BUSY", "an MPI collective is still in flight; cannot finalise");
  on_js_thread(env, [] { mpi::finalize(); });
  return env.Undefined();
}

static Napi::Value MpiWtime(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  return Napi::Number::New(env, on_js_thread(env, [] { return mpi::wtime(); }));
}

void RegisterMpi(Napi::Env env, Napi::Object exports) {
  exports.Set("mpiOpen", Napi::Function::New(env, MpiOpen));
  exports.Set("mpiStatus", Napi::Function::New(env, MpiStatus));
  exports.Set("mpiInit", Napi::Function::New(env, MpiInit));
  exports.Set("mpiAllReduce", Napi::Function::New(env, MpiAllReduce));
  exports.Set("mpiAllGather", Napi::Function::New(env, MpiAllGather));
  exports.Set("mpiBroadcast", Napi::Function::New(env, MpiBroadcast));
  exports.Set("mpiBarrier", Napi::Function::New(env, MpiBarrier));
  exports.Set("mpiAbort", Napi::Function::New(env, MpiAbort));
  exports.Set("mpiFinalize", Napi::Function::New(env, MpiFinalize));
  exports.Set("mpiWtime", Napi::Function::New(env, MpiWtime));
}

}  // namespace hmb
