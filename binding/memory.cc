// memory.cc — the NativeMemoryBank object (RAM or memory-mapped file) and its kernels: gather,
// scatter-add and row-sparse AdamW. Paths, block lists and buffer sizes are validated here.
#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <memory>

#include "args.h"
#include "binding.h"
#include "kernels/memory.h"
#include "memory/bank.h"

namespace hmb {
using namespace hm;

MemoryLayout parse_memory_layout(Napi::Env env, Napi::Value v) {
  if (!v.IsObject()) fail(env, "E_INVALID_ARGUMENT", "memory spec must be an object");
  auto o = v.As<Napi::Object>();
  auto integer = [&](const char* key, int64_t lo, int64_t hi) {
    auto x = o.Get(key);
    double d = x.IsNumber() ? x.As<Napi::Number>().DoubleValue() : NAN;
    if (!std::isfinite(d) || d != std::floor(d) || d < (double)lo || d > (double)hi)
      fail(env, "E_CONFIG_INVALID", std::string("memory spec: ") + key + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return (int64_t)d;
  };
  MemoryLayout L;
  L.k = integer("k", 2, 1 << 16);
  L.Lm = integer("memoryLayers", 1, 4096);
  L.d = integer("dModel", 1, 1 << 16);
  auto levels = o.Get("levels");
  if (!levels.IsArray()) fail(env, "E_CONFIG_INVALID", "memory spec: levels must be an array of block multipliers r_l");
  auto arr = levels.As<Napi::Array>();
  L.p = arr.Length();
  if (L.p < 1 || L.p > 16) fail(env, "E_CONFIG_INVALID", "memory spec: need 1 to 16 levels");
  double nodes = 1;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value x = arr.Get(i);
    double d = x.IsNumber() ? x.As<Napi::Number>().DoubleValue() : NAN;
    if (!std::isfinite(d) || d != std::floor(d) || d < 0 || d > (1 << 20))
      fail(env, "E_CONFIG_INVALID", "memory spec: levels[" + std::to_string(i) + "] must be an integer r_l >= 0");
    L.r.push_back((int64_t)d);
    nodes *= (double)L.k;
    if (nodes > 2147483647.0) fail(env, "E_CONFIG_INVALID", "memory spec: k^p exceeds 2^31 nodes");
  }
  if (L.R() == 0) fail(env, "E_CONFIG_INVALID", "memory spec: every level has r_l = 0 (no memory)");
  L.generic = o.Get("generic").ToBoolean();
  L.optimizer = o.Get("optimizer").ToBoolean();
  double bytes = 0;
  for (int64_t l = 0; l <= L.p; l++) if (L.has_level(l)) bytes += 4.0 * (double)L.nodes(l) * (double)L.block_floats(l);
  if (bytes > 9.0e18 / 4) fail(env, "E_CONFIG_INVALID", "memory spec: bank size overflows");
  return L;
}

static Napi::Value MemoryBankTensors(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  auto L = parse_memory_layout(env, info[0]);
  auto ts = bank_tensors(L);
  auto arr = Napi::Array::New(env, ts.size());
  for (size_t i = 0; i < ts.size(); i++) {
    auto o = Napi::Object::New(env);
    o.Set("name", ts[i].name);
    o.Set("dtype", ts[i].is_f32 ? "F32" : "I32");
    auto shape = Napi::Array::New(env, ts[i].shape.size());
    for (size_t j = 0; j < ts[i].shape.size(); j++) shape.Set((uint32_t)j, Napi::Number::New(env, (double)ts[i].shape[j]));
    o.Set("shape", shape);
    o.Set("level", Napi::Number::New(env, (double)ts[i].level));
    o.Set("byteOffset", Napi::Number::New(env, (double)ts[i].byte_offset));
    o.Set("byteSize", Napi::Number::New(env, (double)ts[i].byte_size));
    arr.Set((uint32_t)i, o);
  }
  return arr;
}

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
      InstanceMethod<&NativeMemoryBank::UniqueBlocks>("uniqueBlocks"),
      InstanceMethod<&NativeMemoryBank::ScatterAdd>("scatterAdd"),
      InstanceMethod<&NativeMemoryBank::AdamwUpdate>("adamwUpdate"),
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

  MemoryBank& live(Napi::Env env) {
    if (!bank_) fail(env, "E_DISPOSED", "this memory bank was closed");
    return *bank_;
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

  Napi::Value Gather(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    auto& bank = live(env);
    int64_t S;
    const int32_t* paths = get_paths(env, info[1], &S);
    float* fetched = get_array<float>(info, 0, "fetched", S * bank.layout().slot_floats());
    memory_gather(fetched, bank, paths, S);
    return env.Undefined();
  }

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
  Napi::Value ScatterAdd(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    auto& bank = live(env);
    const auto& L = bank.layout();
    auto blocks = get_blocks(env, info[1]);
    int64_t S;
    const int32_t* paths = get_paths(env, info[3], &S);
    float* dblocks = get_array<float>(info, 0, "dblocks", memory_blocks_floats(L, blocks));
    const float* dfetched = get_array<float>(info, 2, "dfetched", S * L.slot_floats());
    memory_scatter_add(dblocks, L, blocks, dfetched, paths, S);
    return env.Undefined();
  }

  // (blocks, dblocks, hyper {lr, beta1, beta2, eps, gradScale}, weightDecay)
  Napi::Value AdamwUpdate(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    auto& bank = live(env);
    if (!bank.layout().optimizer) fail(env, "E_CONFIG_INVALID", "this bank was created without optimizer state");
    if (!bank.writable()) fail(env, "E_INVALID_ARGUMENT", "this bank is read-only");
    auto blocks = get_blocks(env, info[0]);
    // step counts come from a file: one that cannot be incremented is corrupt, not an overflow
    for (const auto& b : blocks) {
      const int32_t s = bank.steps(b.first)[b.second];
      if (s < 0 || s == INT32_MAX)
        fail(env, "E_CHECKPOINT_CORRUPT", "block (" + std::to_string(b.first) + ", " + std::to_string(b.second) + ") has step count " +
                                              std::to_string(s) + ": the bank's optimizer state is corrupt");
    }
    const float* dblocks = get_array<float>(info, 1, "dblocks", memory_blocks_floats(bank.layout(), blocks));
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
    memory_adamw(bank, blocks, dblocks, (float)wd, hyper);
    return env.Undefined();
  }

  float* block_ptr(Napi::Env env, const std::string& kind, int64_t l, int64_t node) {
    auto& bank = live(env);
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
    auto& bank = live(env);
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
    auto& bank = live(env);
    if (!bank.writable()) fail(env, "E_INVALID_ARGUMENT", "this bank is read-only");
    const float* src = get_array<float>(info, 3, "data", bank.layout().block_floats(l));
    if (kind == "weight") bank.initialized(l)[node] = 1;
    else bank.ensure_initialized(l, node);
    std::memcpy(dst, src, sizeof(float) * bank.layout().block_floats(l));
    return env.Undefined();
  }

  Napi::Value BlockSteps(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    auto& bank = live(env);
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
    if (!live(env).pin_levels(get_int(info, 0, "levels", 0, 64), &err)) return Napi::String::New(env, err);
    return env.Null();
  }

  Napi::Value Flush(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    std::string err;
    if (!live(env).flush(&err)) fail(env, "E_IO", err);
    return env.Undefined();
  }

  Napi::Value ReleasePageCache(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    std::string err;
    if (!live(env).release_page_cache(&err)) fail(env, "E_IO", err);
    return env.Undefined();
  }

  Napi::Value ResidentBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), (double)live(info.Env()).resident_bytes());
  }

  // (path, dataStart): writes the data section into an existing file at dataStart and fsyncs it.
  Napi::Value SaveData(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    auto& bank = live(env);
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
    auto& bank = live(env);
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
    bank_.reset();
    return info.Env().Undefined();
  }
  Napi::Value Bytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), (double)live(info.Env()).bytes()); }
  Napi::Value IsFile(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), live(info.Env()).is_file()); }

 private:
  std::unique_ptr<MemoryBank> bank_;
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
