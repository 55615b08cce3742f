// memory.cc — the NativeMemoryBank object (RAM or memory-mapped file) and its kernels: gather,
// scatter-add and row-sparse AdamW. Paths, block lists and buffer sizes are validated here.
// gather / scatterAdd / adamwUpdate also run as AsyncWorkers (…Async: a Promise), since a
// memory-mapped bank can wait on the disk; while one runs the bank is busy: every other call that
// touches its data is rejected with E_BUSY (never a data race).
#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>

#include "args.h"
#include "binding.h"
#include "kernels/memory.h"
#include "memory/bank.h"
#include "memory_layout.h"

namespace hmb {
using namespace hm;

// (level, node) must name a block this bank has (a level with r > 0, or the generic level p).
static void check_block(Napi::Env env, const MemoryLayout& L, int64_t l, int64_t node) {
  if (l < 0 || l > L.p || !L.has_level(l) || node < 0 || node >= L.nodes(l))
    fail(env, "E_INVALID_ARGUMENT", "block (" + std::to_string(l) + ", " + std::to_string(node) + ") does not exist in this bank");
}

class NativeMemoryBank : public Napi::ObjectWrap<NativeMemoryBank> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeMemoryBank", {
      InstanceMethod<&NativeMemoryBank::Gather>("gather"),
      InstanceMethod<&NativeMemoryBank::GatherAsync>("gatherAsync"),
      InstanceMethod<&NativeMemoryBank::UniqueBlocks>("uniqueBlocks"),
      InstanceMethod<&NativeMemoryBank::ScatterAdd>("scatterAdd"),
      InstanceMethod<&NativeMemoryBank::ScatterAddAsync>("scatterAddAsync"),
      InstanceMethod<&NativeMemoryBank::AdamwUpdate>("adamwUpdate"),
      InstanceMethod<&NativeMemoryBank::AdamwUpdateAsync>("adamwUpdateAsync"),
      InstanceMethod<&NativeMemoryBank::ReadBlock>("readBlock"),
      InstanceMethod<&NativeMemoryBank::WriteBlock>("writeBlock"),
      InstanceMethod<&NativeMemoryBank::BlockSteps>("blockSteps"),
      InstanceMethod<&NativeMemoryBank::Prefetch>("prefetch"),
      InstanceMethod<&NativeMemoryBank::PinLevels>("pinLevels"),
      InstanceMethod<&NativeMemoryBank::Flush>("flush"),
      InstanceMethod<&NativeMemoryBank::ReleasePageCache>("releasePageCache"),
      InstanceMethod<&NativeMemoryBank::ResidentBytes>("residentBytes"),
      InstanceMethod<&NativeMemoryBank::SaveData>("saveData"),
      InstanceMethod<&NativeMemoryBank::LoadData>("loadData"),
      InstanceMethod<&NativeMemoryBank::Close>("close"),
      InstanceAccessor<&NativeMemoryBank::Bytes>("bytes"),
      InstanceAccessor<&NativeMemoryBank::IsFile>("isFile"),
      InstanceAccessor<&NativeMemoryBank::Busy>("busy"),
    });
  }

  // (spec, seed, storage) with storage = {kind:'ram'} | {kind:'file', path, dataStart, writable}
  NativeMemoryBank(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeMemoryBank>(info) {
    auto env = info.Env();
    auto L = parse_memory_layout(env, info[0]);
    double seed = get_double(info, 1, "seed");
    if (seed < 0 || seed != std::floor(seed)) fail(env, "E_INVALID_ARGUMENT", "seed must be a non-negative integer");
    if (info.Length() < 3 || !info[2].IsObject()) fail(env, "E_INVALID_ARGUMENT", "storage must be an object");
    auto st = info[2].As<Napi::Object>();
    auto kv = st.Get("kind");
    std::string kind = kv.IsString() ? kv.As<Napi::String>().Utf8Value() : std::string();
    std::string err;
    if (kind == "ram") {
      bank_ = MemoryBank::create_ram(L, (uint64_t)seed, &err);
      if (!bank_) fail(env, "E_IO", err);
    } else if (kind == "file") {
      if (!st.Get("path").IsString()) fail(env, "E_INVALID_ARGUMENT", "storage.path must be a string");
      std::string path = st.Get("path").As<Napi::String>().Utf8Value();
      if (path.empty() || path.find('\0') != std::string::npos) fail(env, "E_INVALID_ARGUMENT", "storage.path must be a non-empty path without NUL bytes");
      auto ds = st.Get("dataStart");
      double dstart = ds.IsNumber() ? ds.As<Napi::Number>().DoubleValue() : -1;
      if (!(dstart >= 8 && dstart == std::floor(dstart))) fail(env, "E_INVALID_ARGUMENT", "storage.dataStart must be an integer >= 8");
      bank_ = MemoryBank::open_file(L, (uint64_t)seed, path, (int64_t)dstart, st.Get("writable").ToBoolean(), &err);
      if (!bank_) fail(env, "E_CHECKPOINT_CORRUPT", err);
    } else {
      fail(env, "E_INVALID_ARGUMENT", "storage.kind must be 'ram' or 'file'");
    }
  }

  MemoryBank* bank() { return bank_.get(); }

  // The bank, open (for its layout and hints, which an asynchronous call does not change).
  MemoryBank& live(Napi::Env env) {
    if (!bank_) fail(env, "E_DISPOSED", "this memory bank was closed");
    return *bank_;
  }
  // The bank, open and with no asynchronous call running (for anything that reads or writes its data).
  MemoryBank& idle(Napi::Env env) {
    auto& b = live(env);
    if (busy_) fail(env, "E_BUSY", "this memory bank is already running an asynchronous call; await it first");
    return b;
  }

  // A job's error (on a worker thread, where no JS error can be made): "[CODE] message".
  [[noreturn]] static void job_fail(const char* code, const std::string& msg) {
    throw std::runtime_error(std::string("[") + code + "] " + msg);
  }

  // Runs a validated job now, or (async) on a libuv worker thread, resolving a Promise; the bank
  // and the JS buffers in `keep` stay alive, and the bank busy, until it settles.
  Napi::Value run(const Napi::CallbackInfo& info, bool async, std::function<void()> job, std::vector<Napi::Value> keep) {
    auto env = info.Env();
    if (!async) {
      try {
        job();
      } catch (const std::runtime_error& e) {
        throw Napi::Error::New(env, e.what());
      }
      return env.Undefined();
    }
    keep.push_back(Value());
    busy_ = true;
    auto* w = new PromiseWorker(env, std::move(job), [](Napi::Env e) { return e.Undefined(); }, std::move(keep),
                                [this] { busy_ = false; });
    auto p = w->Promise();
    w->Queue();
    return p;
  }

  // paths (S, p), validated: each slot is either generic (paths[s*p] == -1, bank has a generic
  // block) or a full root-to-leaf path whose node at level l+1 is a child of its node at level l.
  const int32_t* get_paths(Napi::Env env, Napi::Value v, int64_t* S_out) {
    const MemoryLayout& L = live(env).layout();
    int64_t n;
    const int32_t* paths = get_array<int32_t>(v, env, "paths", -1, &n);
    if (n % L.p) fail(env, "E_SHAPE_MISMATCH", "paths has " + std::to_string(n) + " entries, not a multiple of the " + std::to_string(L.p) + " levels");
    const int64_t S = n / L.p;
    for (int64_t s = 0; s < S; s++) {
      const int32_t* ps = paths + s * L.p;
      if (ps[0] == -1) {
        if (!L.generic) fail(env, "E_INVALID_ARGUMENT", "path " + std::to_string(s) + " asks for the generic memory, which this bank does not have");
        continue;
      }
      for (int64_t l = 0; l < L.p; l++) {
        if (ps[l] < 0 || ps[l] >= L.nodes(l))
          fail(env, "E_INVALID_ARGUMENT", "path " + std::to_string(s) + ": node " + std::to_string(ps[l]) + " at level " + std::to_string(l + 1) +
                                              " is outside [0, " + std::to_string(L.nodes(l)) + ")");
        if (l > 0 && ps[l] / L.k != ps[l - 1])
          fail(env, "E_INVALID_ARGUMENT", "path " + std::to_string(s) + ": node " + std::to_string(ps[l]) + " at level " + std::to_string(l + 1) +
                                              " is not a child of node " + std::to_string(ps[l - 1]));
      }
    }
    *S_out = S;
    return paths;
  }

  std::vector<BlockId> get_blocks(Napi::Env env, Napi::Value v) {
    const MemoryLayout& L = live(env).layout();
    int64_t n;
    const int32_t* b = get_array<int32_t>(v, env, "blocks", -1, &n);
    if (n % 2) fail(env, "E_SHAPE_MISMATCH", "blocks must hold (level, node) pairs");
    std::vector<BlockId> out;
    for (int64_t i = 0; i < n; i += 2) {
      int64_t l = b[i], node = b[i + 1];
      check_block(env, L, l, node);
      if (!out.empty() && !(out.back() < BlockId(l, node)))
        fail(env, "E_INVALID_ARGUMENT", "blocks must be sorted and unique (as uniqueBlocks returns them)");
      out.emplace_back(l, node);
    }
    return out;
  }

  // (fetched, paths): the bank readies the blocks (lazy init, page-in), then a pure copy.
  Napi::Value GatherImpl(const Napi::CallbackInfo& info, bool async) {
    auto env = info.Env();
    auto& bank = idle(env);
    int64_t S;
    const int32_t* pv = get_paths(env, info[1], &S);
    float* fetched = get_array<float>(info, 0, "fetched", S * bank.layout().slot_floats());
    // a copy: the worker must not read paths that JS may change after they were validated
    auto paths = std::make_shared<std::vector<int32_t>>(pv, pv + S * bank.layout().p);
    MemoryBank* b = &bank;
    return run(info, async, [b, fetched, paths, S] {
      auto blocks = memory_unique_blocks(b->layout(), paths->data(), S);
      auto src = b->prepare_gather(blocks);
      memory_gather(fetched, b->layout(), blocks, src.weights.data(), paths->data(), S);
    }, {info[0]});
  }
  Napi::Value Gather(const Napi::CallbackInfo& info) { return GatherImpl(info, false); }
  Napi::Value GatherAsync(const Napi::CallbackInfo& info) { return GatherImpl(info, true); }

  Napi::Value UniqueBlocks(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    int64_t S;
    const int32_t* paths = get_paths(env, info[0], &S);
    auto blocks = memory_unique_blocks(live(env).layout(), paths, S);
    auto out = Napi::Int32Array::New(env, blocks.size() * 2);
    for (size_t i = 0; i < blocks.size(); i++) {
      out[2 * i] = (int32_t)blocks[i].first;
      out[2 * i + 1] = (int32_t)blocks[i].second;
    }
    return out;
  }

  // (dblocks, blocks, dfetched, paths)
  Napi::Value ScatterAddImpl(const Napi::CallbackInfo& info, bool async) {
    auto env = info.Env();
    const auto& L = idle(env).layout();
    auto blocks = std::make_shared<std::vector<BlockId>>(get_blocks(env, info[1]));
    int64_t S;
    const int32_t* pv = get_paths(env, info[3], &S);
    float* dblocks = get_array<float>(info, 0, "dblocks", memory_blocks_floats(L, *blocks));
    const float* dfetched = get_array<float>(info, 2, "dfetched", S * L.slot_floats());
    auto paths = std::make_shared<std::vector<int32_t>>(pv, pv + S * L.p);
    const MemoryLayout* lp = &L;
    return run(info, async, [lp, blocks, dblocks, dfetched, paths, S] {
      memory_scatter_add(dblocks, *lp, *blocks, dfetched, paths->data(), S);
    }, {info[0], info[2]});
  }
  Napi::Value ScatterAdd(const Napi::CallbackInfo& info) { return ScatterAddImpl(info, false); }
  Napi::Value ScatterAddAsync(const Napi::CallbackInfo& info) { return ScatterAddImpl(info, true); }

  // (blocks, dblocks, hyper {lr, beta1, beta2, eps, gradScale}, weightDecay)
  Napi::Value AdamwUpdateImpl(const Napi::CallbackInfo& info, bool async) {
    auto env = info.Env();
    auto& bank = idle(env);
    if (!bank.layout().optimizer) fail(env, "E_CONFIG_INVALID", "this bank was created without optimizer state");
    if (!bank.writable()) fail(env, "E_INVALID_ARGUMENT", "this bank is read-only");
    auto blocks = std::make_shared<std::vector<BlockId>>(get_blocks(env, info[0]));
    const float* dblocks = get_array<float>(info, 1, "dblocks", memory_blocks_floats(bank.layout(), *blocks));
    if (info.Length() < 3 || !info[2].IsObject()) fail(env, "E_INVALID_ARGUMENT", "hyper must be an object");
    auto h = info[2].As<Napi::Object>();
    auto num = [&](const char* k) {
      auto x = h.Get(k);
      if (!x.IsNumber() || !std::isfinite(x.As<Napi::Number>().DoubleValue()))
        fail(env, "E_INVALID_ARGUMENT", std::string("hyper.") + k + " must be a finite number");
      return x.As<Napi::Number>().DoubleValue();
    };
    AdamWHyper hyper{num("lr"), num("beta1"), num("beta2"), num("eps"), 1, num("gradScale")};
    if (!(hyper.beta1 >= 0 && hyper.beta1 < 1 && hyper.beta2 >= 0 && hyper.beta2 < 1 && hyper.eps > 0))
      fail(env, "E_INVALID_ARGUMENT", "need 0 <= beta1, beta2 < 1 and eps > 0");
    double wd = get_double(info, 3, "weightDecay");
    if (wd < 0) fail(env, "E_INVALID_ARGUMENT", "weightDecay must be >= 0");
    MemoryBank* b = &bank;
    return run(info, async, [b, blocks, dblocks, wd, hyper] {
      // step counts come from a file (read here, off the main thread: they may be on disk); one
      // that cannot be incremented is corrupt, not an overflow. Checked before anything changes.
      for (const auto& blk : *blocks) {
        const int32_t s = b->steps(blk.first)[blk.second];
        if (s < 0 || s == INT32_MAX)
          job_fail("E_CHECKPOINT_CORRUPT", "block (" + std::to_string(blk.first) + ", " + std::to_string(blk.second) +
                                               ") has step count " + std::to_string(s) + ": the bank's optimizer state is corrupt");
      }
      memory_adamw(*b, *blocks, dblocks, (float)wd, hyper);
    }, {info[1]});
  }
  Napi::Value AdamwUpdate(const Napi::CallbackInfo& info) { return AdamwUpdateImpl(info, false); }
  Napi::Value AdamwUpdateAsync(const Napi::CallbackInfo& info) { return AdamwUpdateImpl(info, true); }

  float* block_ptr(Napi::Env env, const std::string& kind, int64_t l, int64_t node) {
    auto& bank = idle(env);
    const auto& L = bank.layout();
    check_block(env, L, l, node);
    if (kind == "weight") return bank.weight(l, node);
    if (!L.optimizer) fail(env, "E_CONFIG_INVALID", "this bank has no optimizer state");
    if (kind == "m") return bank.adam_m(l, node);
    if (kind == "v") return bank.adam_v(l, node);
    fail(env, "E_INVALID_ARGUMENT", "kind must be 'weight', 'm' or 'v'");
  }

  // (kind, level, node, out): out = the block ([Lm][3][rows][d]); an uninitialised weight block
  // reads as its init values.
  Napi::Value ReadBlock(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    std::string kind = get_string(info, 0, "kind");
    int64_t l = get_int(info, 1, "level", 0, 64), node = get_int(info, 2, "node", 0, INT32_MAX);
    float* src = block_ptr(env, kind, l, node);
    auto& bank = idle(env);
    float* out = get_array<float>(info, 3, "out", bank.layout().block_floats(l));
    if (kind == "weight" && !bank.initialized(l)[node]) bank.init_values(l, node, out);
    else std::memcpy(out, src, sizeof(float) * bank.layout().block_floats(l));
    return env.Undefined();
  }

  Napi::Value WriteBlock(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    std::string kind = get_string(info, 0, "kind");
    int64_t l = get_int(info, 1, "level", 0, 64), node = get_int(info, 2, "node", 0, INT32_MAX);
    float* dst = block_ptr(env, kind, l, node);
    auto& bank = idle(env);
    if (!bank.writable()) fail(env, "E_INVALID_ARGUMENT", "this bank is read-only");
    const float* src = get_array<float>(info, 3, "data", bank.layout().block_floats(l));
    if (kind == "weight") bank.initialized(l)[node] = 1;
    else bank.ensure_initialized(l, node);
    std::memcpy(dst, src, sizeof(float) * bank.layout().block_floats(l));
    return env.Undefined();
  }

  Napi::Value BlockSteps(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    auto& bank = idle(env);
    int64_t l = get_int(info, 0, "level", 0, 64), node = get_int(info, 1, "node", 0, INT32_MAX);
    const auto& L = bank.layout();
    check_block(env, L, l, node);
    return Napi::Number::New(env, L.optimizer ? bank.steps(l)[node] : 0);
  }

  Napi::Value Prefetch(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    int64_t S;
    const int32_t* paths = get_paths(env, info[0], &S);
    auto& bank = live(env);
    for (const auto& b : memory_unique_blocks(bank.layout(), paths, S)) bank.prefetch(b.first, b.second);
    return env.Undefined();
  }

  Napi::Value PinLevels(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    std::string err;
    if (!idle(env).pin_levels(get_int(info, 0, "levels", 0, 64), &err)) return Napi::String::New(env, err);
    return env.Null();
  }

  Napi::Value Flush(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    std::string err;
    if (!idle(env).flush(&err)) fail(env, "E_IO", err);
    return env.Undefined();
  }

  Napi::Value ReleasePageCache(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    std::string err;
    if (!idle(env).release_page_cache(&err)) fail(env, "E_IO", err);
    return env.Undefined();
  }

  Napi::Value ResidentBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), (double)live(info.Env()).resident_bytes());
  }

  // (path, dataStart): writes the data section into an existing file at dataStart and fsyncs it.
  Napi::Value SaveData(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    auto& bank = idle(env);
    std::string path = get_string(info, 0, "path");
    if (path.empty() || path.find('\0') != std::string::npos) fail(env, "E_INVALID_ARGUMENT", "path must be a non-empty path without NUL bytes");
    int64_t off = get_int(info, 1, "dataStart", 8, INT64_C(1) << 50);
    int fd = ::open(path.c_str(), O_WRONLY);
    if (fd < 0) fail(env, "E_IO", path + ": " + std::strerror(errno));
    std::string err;
    bool ok = bank.write_to_fd(fd, off, &err) && (fsync(fd) == 0 || (err = std::strerror(errno), false));
    ::close(fd);
    if (!ok) fail(env, "E_IO", path + ": " + err);
    return env.Undefined();
  }

  Napi::Value LoadData(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    auto& bank = idle(env);
    if (!bank.writable()) fail(env, "E_INVALID_ARGUMENT", "this bank is read-only");
    std::string path = get_string(info, 0, "path");
    if (path.empty() || path.find('\0') != std::string::npos) fail(env, "E_INVALID_ARGUMENT", "path must be a non-empty path without NUL bytes");
    int64_t off = get_int(info, 1, "dataStart", 8, INT64_C(1) << 50);
    int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) fail(env, "E_IO", path + ": " + std::strerror(errno));
    std::string err;
    bool ok = bank.read_from_fd(fd, off, &err);
    ::close(fd);
    if (!ok) fail(env, "E_CHECKPOINT_CORRUPT", path + ": " + err);
    return env.Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (busy_) fail(info.Env(), "E_BUSY", "cannot close a memory bank while an asynchronous call runs");
    bank_.reset();
    return info.Env().Undefined();
  }
  Napi::Value Bytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), (double)live(info.Env()).bytes()); }
  Napi::Value IsFile(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), live(info.Env()).is_file()); }
  Napi::Value Busy(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), busy_); }

 private:
  std::unique_ptr<MemoryBank> bank_;
  bool busy_ = false;
};

static Napi::FunctionReference* g_bank_ctor = nullptr;

void RegisterMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("memoryBankTensors", Napi::Function::New(env, MemoryBankTensors));
  g_bank_ctor = new Napi::FunctionReference(Napi::Persistent(NativeMemoryBank::Define(env)));
  exports.Set("createMemoryBank", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    std::vector<napi_value> args;
    for (size_t i = 0; i < info.Length(); i++) args.push_back(info[i]);
    return g_bank_ctor->New(args);
  }));
}

}  // namespace hmb
