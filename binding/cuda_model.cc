// cuda_model.cc — NativeCudaModel, made by createCudaAnchorModel(dims, maxBatch, memory?, gemmMode?):
//   uploadParams / downloadParams / downloadGrads / zeroGrad / forwardBackward / forwardLoss /
//   adamwStep / gradNorm / downloadAdamState / uploadAdamState / allReduceGradients / dispose
// It mirrors NativeModel (model.cc) with the parameters, gradients and AdamW state in device memory:
// the host sees them only through upload/download calls. Configs and batches go through the CPU
// model's parsers (model_args.h, optimizer_args.h) before anything reaches the GPU. The model uses
// device 0 (the runtime's default on every thread); the library comes from cuda_lib.cc.
#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "anchor_model.h"
#include "args.h"
#include "binding.h"
#include "cuda_lib.h"
#include "model_args.h"
#include "nccl_lib.h"
#include "optimizer_args.h"

namespace hmb {

// The entry points the device model calls; a library without one of them is refused.
static void require_model_api(Napi::Env env, const hmc_api* a) {
  const struct {
    const void* fn;
    const char* name;
  } need[] = {{(const void*)a->malloc, "malloc"},
              {(const void*)a->free, "free"},
              {(const void*)a->memcpy_h2d, "memcpy_h2d"},
              {(const void*)a->memcpy_d2h, "memcpy_d2h"},
              {(const void*)a->stream_synchronize, "stream_synchronize"},
              {(const void*)a->stream_create, "stream_create"},
              {(const void*)a->stream_destroy, "stream_destroy"},
              {(const void*)a->memset, "memset"},
              {(const void*)a->model_create, "model_create"},
              {(const void*)a->model_destroy, "model_destroy"},
              {(const void*)a->model_forward_backward, "model_forward_backward"},
              {(const void*)a->model_forward_loss, "model_forward_loss"},
              {(const void*)a->adamw_update, "adamw_update"},
              {(const void*)a->global_sumsq, "global_sumsq"},
              {(const void*)a->global_norm_scratch_doubles, "global_norm_scratch_doubles"}};
  for (const auto& n : need)
    if (!n.fn) fail(env, "E_BACKEND_UNAVAILABLE", std::string("the loaded CUDA library has no ") + n.name + " entry point (a partial build?)");
}

class NativeCudaModel : public Napi::ObjectWrap<NativeCudaModel> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeCudaModel",
                       {InstanceMethod<&NativeCudaModel::UploadParams>("uploadParams"),
                        InstanceMethod<&NativeCudaModel::DownloadParams>("downloadParams"),
                        InstanceMethod<&NativeCudaModel::DownloadGrads>("downloadGrads"),
                        InstanceMethod<&NativeCudaModel::ZeroGrad>("zeroGrad"),
                        InstanceMethod<&NativeCudaModel::ForwardBackward>("forwardBackward"),
                        InstanceMethod<&NativeCudaModel::ForwardLoss>("forwardLoss"),
                        InstanceMethod<&NativeCudaModel::AdamwStep>("adamwStep"),
                        InstanceMethod<&NativeCudaModel::GradNorm>("gradNorm"),
                        InstanceMethod<&NativeCudaModel::DownloadAdamState>("downloadAdamState"),
                        InstanceMethod<&NativeCudaModel::UploadAdamState>("uploadAdamState"),
                        InstanceMethod<&NativeCudaModel::AllReduceGradients>("allReduceGradients"),
                        InstanceMethod<&NativeCudaModel::Dispose>("dispose"),
                        InstanceAccessor<&NativeCudaModel::ParamCount>("paramCount"),
                        InstanceAccessor<&NativeCudaModel::Busy>("busy")});
  }

  // (dims, maxBatch, memory?: { R, layerToMemory: Int32Array (L) } | null, gemmMode?: 0 fp32 | 1 tf32 | 2 bf16)
  NativeCudaModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeCudaModel>(info) {
    auto env = info.Env();
    api_ = require_cuda_api(env);
    require_model_api(env, api_);
    d_ = parse_dims(env, info[0]);
    max_batch_ = get_int(info, 1, "maxBatch", 1, 1 << 20);
    mem_ = parse_memory_config(env, info.Length() > 2 ? info[2] : env.Undefined(), d_.L);
    const int64_t mode = info.Length() > 3 && !info[3].IsUndefined() ? get_int(info, 3, "gemmMode", 0, 2) : 0;
    n_ = hm::anchor_param_count(d_);
    elems(env, "maxBatch x seqLen", {max_batch_, d_.T});

    const size_t pbytes = (size_t)n_ * sizeof(float), nbatch = (size_t)(max_batch_ * d_.T) * sizeof(int32_t);
    const int64_t scratch = api_->global_norm_scratch_doubles(n_);
    try {
      check(api_->stream_create(&stream_), "creating a stream");
      params_ = dev_alloc(pbytes, "the parameters");
      grads_ = dev_alloc(pbytes, "the gradients");
      m_ = dev_alloc(pbytes, "AdamW m");
      v_ = dev_alloc(pbytes, "AdamW v");
      for (void* p : {grads_, m_, v_}) check(api_->memset(p, 0, pbytes, stream_), "zeroing the model state");
      norm_ = (double*)dev_alloc(sizeof(double) * (size_t)(1 + std::max<int64_t>(scratch, 1)), "the norm scratch");
      tokens_ = (int32_t*)dev_alloc(nbatch, "the batch");
      targets_ = (int32_t*)dev_alloc(nbatch, "the batch");
      doc_start_ = (int32_t*)dev_alloc(nbatch, "the batch");
      pos_ = (int32_t*)dev_alloc(nbatch, "the batch");
      int32_t err = 0;
      const hm::ModelMemory mv = mem_.view();  // copied by model_create
      model_ = api_->model_create(&d_, &mv, max_batch_, (float*)params_, (float*)grads_, (int32_t)mode, &err);
      if (!model_) throw_code("E_CUDA", "model_create: " + cuda_error_text(api_, err ? err : 2 /* cudaErrorMemoryAllocation */));
      check(api_->stream_synchronize(stream_), "initialising the model");
    } catch (const std::exception& e) {
      release();
      throw Napi::Error::New(env, e.what());
    }
  }

  ~NativeCudaModel() override { release(); }

 private:
  // ---- device memory and errors (callable from any thread) ----
  void check(int32_t status, const std::string& what) {
    if (status != 0) throw_code("E_CUDA", what + ": " + cuda_error_text(api_, status));
  }
  void* dev_alloc(size_t bytes, const std::string& what) {
    void* p = nullptr;
    int32_t st = api_->malloc(&p, std::max<size_t>(bytes, 16));
    if (st != 0 || !p) throw_code("E_CUDA", "cannot allocate " + std::to_string(bytes) + " bytes of device memory for " + what + ": " + cuda_error_text(api_, st));
    allocs_.push_back(p);
    return p;
  }
  // Device buffer for the fetched / dfetched blocks, grown on demand (worker thread only).
  float* grow(float*& buf, size_t& cap, size_t bytes, const char* what) {
    if (bytes <= cap) return buf;
    if (buf) {
      check(api_->stream_synchronize(stream_), "synchronising before a reallocation");
      for (auto it = allocs_.begin(); it != allocs_.end(); ++it)
        if (*it == buf) {
          allocs_.erase(it);
          break;
        }
      api_->free(buf);
      buf = nullptr;
      cap = 0;
    }
    buf = (float*)dev_alloc(bytes, what);
    cap = bytes;
    return buf;
  }
  void release() {
    if (!api_) return;
    if (stream_) api_->stream_synchronize(stream_);  // nothing may still use what we free
    if (model_) api_->model_destroy(model_);
    model_ = nullptr;
    for (void* p : allocs_) api_->free(p);
    allocs_.clear();
    if (stream_) api_->stream_destroy(stream_);
    stream_ = nullptr;
    disposed_ = true;
  }

  void check_idle(Napi::Env env) {
    if (disposed_) fail(env, "E_DISPOSED", "this CUDA model was disposed");
    if (busy_) fail(env, "E_BUSY", "this model is already running an asynchronous call; await it first");
  }

  // ---- host <-> device ----
  Napi::Value UploadParams(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    check_idle(env);
    const float* src = get_array<float>(info, 0, "params", n_);
    run_sync(env, [&] {
      check(api_->memcpy_h2d(params_, src, (size_t)n_ * sizeof(float), stream_), "uploading the parameters");
      check(api_->stream_synchronize(stream_), "uploading the parameters");
    });
    return env.Undefined();
  }
  Napi::Value Download(const Napi::CallbackInfo& info, void* src, const char* what) {
    auto env = info.Env();
    check_idle(env);
    auto out = Napi::Float32Array::New(env, (size_t)n_);
    run_sync(env, [&] {
      check(api_->memcpy_d2h(out.Data(), src, (size_t)n_ * sizeof(float), stream_), std::string("downloading ") + what);
      check(api_->stream_synchronize(stream_), std::string("downloading ") + what);
    });
    return out;
  }
  Napi::Value DownloadParams(const Napi::CallbackInfo& info) { return Download(info, params_, "the parameters"); }
  Napi::Value DownloadGrads(const Napi::CallbackInfo& info) { return Download(info, grads_, "the gradients"); }
  // AdamW m and v (checkpoints): downloadAdamState(m, v) fills two host arrays of paramCount floats;
  // uploadAdamState(m, v) replaces the device state with them.
  Napi::Value DownloadAdamState(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    check_idle(env);
    float* m = get_array<float>(info, 0, "m", n_);
    float* v = get_array<float>(info, 1, "v", n_);
    run_sync(env, [&] {
      check(api_->memcpy_d2h(m, m_, (size_t)n_ * sizeof(float), stream_), "downloading AdamW m");
      check(api_->memcpy_d2h(v, v_, (size_t)n_ * sizeof(float), stream_), "downloading AdamW v");
      check(api_->stream_synchronize(stream_), "downloading the AdamW state");
    });
    return env.Undefined();
  }
  Napi::Value UploadAdamState(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    check_idle(env);
    const float* m = get_array<float>(info, 0, "m", n_);
    const float* v = get_array<float>(info, 1, "v", n_);
    run_sync(env, [&] {
      check(api_->memcpy_h2d(m_, m, (size_t)n_ * sizeof(float), stream_), "uploading AdamW m");
      check(api_->memcpy_h2d(v_, v, (size_t)n_ * sizeof(float), stream_), "uploading AdamW v");
      check(api_->stream_synchronize(stream_), "uploading the AdamW state");
    });
    return env.Undefined();
  }
  // gradNorm() -> sqrt(sum g^2) of the device gradients (the device reduction adamwStep uses), so
  // that a caller can clip jointly with gradients that live elsewhere (the memory blocks).
  Napi::Value GradNorm(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    check_idle(env);
    double sumsq = 0;
    run_sync(env, [&] { sumsq = device_sumsq(); });
    return Napi::Number::New(env, std::sqrt(sumsq));
  }
  double device_sumsq() {
    double sumsq = 0;
    check(api_->global_sumsq(norm_, (const float*)grads_, n_, norm_ + 1, stream_), "global_sumsq");
    check(api_->memcpy_d2h(&sumsq, norm_, sizeof(double), stream_), "downloading the gradient norm");
    check(api_->stream_synchronize(stream_), "global_sumsq");
    return sumsq;
  }
  Napi::Value ZeroGrad(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    check_idle(env);
    run_sync(env, [&] { check(api_->memset(grads_, 0, (size_t)n_ * sizeof(float), stream_), "zeroing the gradients"); });
    return env.Undefined();
  }

  template <typename F>
  void run_sync(Napi::Env env, F&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      throw Napi::Error::New(env, e.what());
    }
  }

  // ---- one batch ----
  struct Job {
    int64_t B = 0, T = 0;
    std::vector<int32_t> tokens, targets, doc_start, pos;  // host copies (the JS arrays may change after the call)
    std::vector<hm::MemoryGroup> groups;
    const float* fetched = nullptr;  // JS-owned, kept alive by the worker
    float* dfetched = nullptr;
    int64_t fetched_floats = 0;
    bool backward = false;
  };

  // The CPU model's checks (model_args.h), then host copies and positions.
  std::shared_ptr<Job> parse_job(const Napi::CallbackInfo& info, bool need_grad, std::vector<Napi::Value>& keep) {
    auto env = info.Env();
    check_idle(env);
    BatchArgs ba = parse_batch(env, info[0], d_, max_batch_);
    auto job = std::make_shared<Job>();
    const int64_t B = ba.B, T = ba.T, N = B * T;
    job->B = B;
    job->T = T;
    job->backward = need_grad;
    job->tokens.assign(ba.tokens, ba.tokens + N);
    job->targets.assign(ba.targets, ba.targets + N);
    if (ba.doc_start) job->doc_start.assign(ba.doc_start, ba.doc_start + N);
    job->pos.resize((size_t)N);  // as hm::AnchorModel: position within the document
    for (int64_t n = 0; n < N; n++) job->pos[n] = ba.doc_start ? (int32_t)(n % T) - ba.doc_start[n] : (int32_t)(n % T);
    MemoryBatchArgs ma;
    if (parse_memory_batch(env, ba.memory, B, d_, mem_, need_grad, &ma, keep)) {
      job->fetched_floats = ma.fetched_floats;
      job->fetched = ma.fetched;
      job->dfetched = need_grad ? ma.dfetched : nullptr;
      job->groups = hm::memory_groups(ma.seq_slot, B, T);
    }
    return job;
  }

  // Worker thread: upload, run, download dfetched. Returns the mean loss.
  double run_batch(const Job& j) {
    const size_t nb = j.tokens.size() * sizeof(int32_t);
    check(api_->memcpy_h2d(tokens_, j.tokens.data(), nb, stream_), "uploading batch.tokens");
    check(api_->memcpy_h2d(targets_, j.targets.data(), nb, stream_), "uploading batch.targets");
    if (!j.doc_start.empty()) check(api_->memcpy_h2d(doc_start_, j.doc_start.data(), nb, stream_), "uploading batch.docStart");
    check(api_->memcpy_h2d(pos_, j.pos.data(), nb, stream_), "uploading the positions");
    hmc::ModelBatch mb;
    std::memset(&mb, 0, sizeof mb);
    mb.tokens = tokens_;
    mb.targets = targets_;
    mb.doc_start = j.doc_start.empty() ? nullptr : doc_start_;
    mb.pos = pos_;
    mb.B = j.B;
    mb.T = j.T;
    const size_t fbytes = (size_t)j.fetched_floats * sizeof(float);
    if (j.fetched && !j.groups.empty()) {
      mb.fetched = grow(fetched_, fetched_cap_, fbytes, "memory.fetched");
      check(api_->memcpy_h2d(fetched_, j.fetched, fbytes, stream_), "uploading memory.fetched");
      if (j.dfetched) {
        // dfetched is ADDED to (the CPU model's contract): start from its current contents
        mb.dfetched = grow(dfetched_, dfetched_cap_, fbytes, "memory.dfetched");
        check(api_->memcpy_h2d(dfetched_, j.dfetched, fbytes, stream_), "uploading memory.dfetched");
      }
      mb.groups_host = j.groups.data();
      mb.G = (int64_t)j.groups.size();
    }
    double loss = 0;
    int32_t st = j.backward ? api_->model_forward_backward(model_, &mb, &loss, stream_)
                            : api_->model_forward_loss(model_, &mb, &loss, stream_);
    check(st, j.backward ? "model_forward_backward" : "model_forward_loss");
    if (mb.dfetched) {
      check(api_->memcpy_d2h(j.dfetched, dfetched_, fbytes, stream_), "downloading memory.dfetched");
    }
    check(api_->stream_synchronize(stream_), "finishing the batch");
    return loss;
  }

  Napi::Value RunAsync(const Napi::CallbackInfo& info, bool backward) {
    std::vector<Napi::Value> keep;
    auto job = parse_job(info, backward, keep);
    keep.push_back(Value());  // keep this model alive while the worker runs
    auto result = std::make_shared<double>(0);
    busy_ = true;
    auto* w = new PromiseWorker(
        info.Env(), [this, job, result] { *result = run_batch(*job); },
        [result](Napi::Env env) { return Napi::Number::New(env, *result); }, keep, [this] { busy_ = false; });
    auto p = w->Promise();
    w->Queue();
    return p;
  }
  Napi::Value ForwardBackward(const Napi::CallbackInfo& info) { return RunAsync(info, true); }
  Napi::Value ForwardLoss(const Napi::CallbackInfo& info) { return RunAsync(info, false); }

  // ---- AdamW on the device ----
  struct StepJob {
    std::vector<DecaySegment> segments;
    hm::AdamWHyper hyper;  // grad_scale set by run_step from the norm
    double clip;
    bool given_norm = false;  // hyper.gradNorm: clip by this norm instead of the device gradients' own
    double norm = 0, scale = 1;
  };

  // adamwStep(segments: Float64Array of (offset, length, weightDecay) triples,
  //           hyper: { lr, beta1, beta2, eps, step, clipNorm, gradNorm? }) -> Promise<{ gradNorm, gradScale }>
  // The global gradient norm is reduced on the device (deterministic, float64) and read back as one
  // double; a non-finite norm rejects with E_NON_FINITE and leaves every parameter untouched.
  // hyper.gradNorm (optional, finite, >= 0) replaces that norm: the joint norm of anchor and memory
  // gradients (as AdamW.step(target, lr, gradNorm) on the CPU).
  Napi::Value AdamwStep(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    check_idle(env);
    auto job = std::make_shared<StepJob>();
    job->segments = parse_decay_segments(env, info[0], n_);
    if (info.Length() < 2 || !info[1].IsObject()) fail(env, "E_INVALID_ARGUMENT", "hyper must be an object");
    auto h = info[1].As<Napi::Object>();
    job->hyper = parse_adamw_hyper(env, h);
    job->clip = hyper_number(env, h, "clipNorm");
    auto gn = h.Get("gradNorm");
    if (!gn.IsUndefined()) {
      job->norm = hyper_number(env, h, "gradNorm");
      if (job->norm < 0) fail(env, "E_INVALID_ARGUMENT", "hyper.gradNorm must be >= 0");
      job->given_norm = true;
    }
    if (!(job->hyper.lr >= 0) || !(job->clip >= 0)) fail(env, "E_INVALID_ARGUMENT", "need lr >= 0 and clipNorm >= 0");
    busy_ = true;
    auto* w = new PromiseWorker(
        env, [this, job] { run_step(*job); },
        [job](Napi::Env env) {
          auto o = Napi::Object::New(env);
          o.Set("gradNorm", Napi::Number::New(env, job->norm));
          o.Set("gradScale", Napi::Number::New(env, job->scale));
          return Napi::Value(o);
        },
        {Value()}, [this] { busy_ = false; });
    auto p = w->Promise();
    w->Queue();
    return p;
  }

  void run_step(StepJob& j) {
    if (!j.given_norm) j.norm = std::sqrt(device_sumsq());
    if (!std::isfinite(j.norm)) throw_code("E_NON_FINITE", "gradient norm is " + std::to_string(j.norm) + "; update skipped");
    j.scale = j.clip > 0 && j.norm > j.clip ? j.clip / j.norm : 1.0;
    j.hyper.grad_scale = j.scale;
    float *p = (float*)params_, *g = (float*)grads_, *m = (float*)m_, *v = (float*)v_;
    for (const auto& s : j.segments) {
      if (s.length == 0) continue;
      const hm::AdamWConsts k = hm::adamw_consts(j.hyper, s.wd);  // as hm::adamw_update derives them
      check(api_->adamw_update(p + s.offset, g + s.offset, m + s.offset, v + s.offset, s.length, &k, stream_), "adamw_update");
    }
    check(api_->stream_synchronize(stream_), "adamw_update");
  }

  // allReduceGradients(mean) -> Promise<void>: data-parallel training over NCCL (nccl_lib.h, initialised
  // over MPI first). The gradients are all-reduced in place on the model's own stream, after the
  // backward pass queued there and before the AdamW update; the stream is synchronised before the
  // promise settles, so the host sees a finished reduction, as after every other call.
  Napi::Value AllReduceGradients(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    check_idle(env);
    if (info.Length() < 1 || !info[0].IsBoolean()) fail(env, "E_INVALID_ARGUMENT", "mean must be a boolean");
    const bool mean = info[0].As<Napi::Boolean>().Value();
    busy_ = true;
    auto* w = new PromiseWorker(
        env,
        [this, mean] {
          nccl::allreduce_device(grads_, n_, mean, stream_);
          check(api_->stream_synchronize(stream_), "the gradient all-reduce");
        },
        [](Napi::Env e) { return e.Undefined(); }, {Value()}, [this] { busy_ = false; });
    auto p = w->Promise();
    w->Queue();
    return p;
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    if (busy_) fail(info.Env(), "E_BUSY", "cannot dispose a model while an asynchronous call runs");
    release();
    return info.Env().Undefined();
  }
  Napi::Value ParamCount(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), (double)n_); }
  Napi::Value Busy(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), busy_); }

  const hmc_api* api_ = nullptr;
  hm::ModelDims d_{};
  hm::MemoryConfig mem_;
  int64_t max_batch_ = 0, n_ = 0;
  void* stream_ = nullptr;
  void* model_ = nullptr;
  std::vector<void*> allocs_;  // every device allocation, freed by release()
  void *params_ = nullptr, *grads_ = nullptr, *m_ = nullptr, *v_ = nullptr;
  double* norm_ = nullptr;  // [0] = sum of squares, [1..] = its scratch
  int32_t *tokens_ = nullptr, *targets_ = nullptr, *doc_start_ = nullptr, *pos_ = nullptr;
  float *fetched_ = nullptr, *dfetched_ = nullptr;
  size_t fetched_cap_ = 0, dfetched_cap_ = 0;
  bool busy_ = false, disposed_ = false;
};

void RegisterCudaModel(Napi::Env env, Napi::Object exports) {
  // The constructor is held by this closure's data (model.cc owns the env's instance data).
  auto* ctor = new Napi::FunctionReference(Napi::Persistent(NativeCudaModel::Define(env)));
  env.AddCleanupHook([ctor] { delete ctor; });
  exports.Set("createCudaAnchorModel", Napi::Function::New(
                                           env,
                                           [](const Napi::CallbackInfo& info) -> Napi::Value {
                                             auto* c = static_cast<Napi::FunctionReference*>(info.Data());
                                             std::vector<napi_value> args;
                                             for (size_t i = 0; i < info.Length(); i++) args.push_back(info[i]);
                                             return c->New(args);
                                           },
                                           "createCudaAnchorModel", ctor));
}

}  // namespace hmb
