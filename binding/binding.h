// binding.h — registration functions of the binding's parts, and the promise-returning worker base.
#pragma once
#include <napi.h>

#include <functional>
#include <string>
#include <vector>

namespace hmb {

void RegisterKernels(Napi::Env env, Napi::Object exports);
void RegisterOptimizer(Napi::Env env, Napi::Object exports);
void RegisterModel(Napi::Env env, Napi::Object exports);
void RegisterMemory(Napi::Env env, Napi::Object exports);
void RegisterCuda(Napi::Env env, Napi::Object exports);  // cuda_lib.cc: the dlopen'ed CUDA backend
void RegisterMpi(Napi::Env env, Napi::Object exports);   // mpi.cc: the dlopen'ed MPI library (issue #14)

// Runs `work` on a libuv worker thread and resolves a Promise with `result()` on the JS thread.
// The JS objects in `keep_alive` (buffers the work reads or writes) are referenced until then.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, std::function<void()> work, std::function<Napi::Value(Napi::Env)> result,
                std::vector<Napi::Value> keep_alive, std::function<void()> on_done = nullptr)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)),
        result_(std::move(result)), on_done_(std::move(on_done)) {
    for (auto& v : keep_alive)
      if (v.IsObject()) refs_.push_back(Napi::Persistent(v.As<Napi::Object>()));
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      work_();
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    if (on_done_) on_done_();
    deferred_.Resolve(result_(Env()));
  }
  void OnError(const Napi::Error& e) override {
    if (on_done_) on_done_();
    deferred_.Reject(e.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::function<void()> work_;
  std::function<Napi::Value(Napi::Env)> result_;
  std::function<void()> on_done_;
  std::vector<Napi::ObjectReference> refs_;
};

}  // namespace hmb
