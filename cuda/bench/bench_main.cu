// bench_main.cu — hiermem_cuda_bench: times the CUDA backend's kernels and the device training step on
// the GPU machine (run by bench/gpu.sh; the cuBLAS references come from bench/peers/torch_gpu.py, which
// mirrors the shapes below — keep the two in sync). No CPU twin: correctness is the harness's job; the
// bench only spot-checks GEMM outputs and the loss so that a fast-but-wrong kernel is visible.
//
// Sections (each in its own try/catch; a sticky CUDA error stops the remaining ones):
//   copy    cudaMemcpyAsync device-to-device of the gather's bytes (the ceiling the gather is held to)
//   gather  hmc::memory_gather of S slots from a device-resident bank of a few GB, random paths
//   gemm    hmc::gemm in TF32 and BF16 at three transformer shapes, TFLOP/s
//   ffn     hmc::ffn_memory_forward (+ backward): gather + all Lm layers forward, one layer fwd, fwd+bwd
//   model   a ~110M-parameter anchor (V 32768, C 768, L 12, H 12, hd 64, F 2048, T 1024) with FFN
//           memories R = 256+64+16 = 336 on all 12 layers (the paper's 160M levels), one training step
//           (gather, fwd+bwd, grad norm, dense AdamW, scatter-add, sparse AdamW): tokens/s and MFU,
//           in BF16 and TF32; then the host-tier overlap: the next batch's fetched blocks copied H2D
//           on a second stream while a step runs, against the same copy done before the step.
// Timing: CUDA events, warm-up calls first, then samples of back-to-back calls (each sample >= ~2 ms
// so that launch latency is amortised); median, min and max per call. JSON to --json (rewritten after
// every section, so a crash or timeout keeps what was measured).
//
// Every hmc:: function is referenced weakly: a kernel that does not exist yet leaves its section
// "not linked" instead of breaking the link of the whole bench.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "anchor_model.h"  // hm::anchor_layout: parameter names (norm gains start at 1)
#include "hiermem_cuda.h"

// ---- weak references to the backend (null where the defining object is absent) ------------------
namespace hmc {
__attribute__((weak)) int gemm(GemmMode mode, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                               const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                               int64_t ldc, Stream s);
__attribute__((weak)) int ffn_memory_forward(GemmMode mode, float* y, float* gate_m, float* up_m, const float* x,
                                             const float* layer_w, int64_t slot_stride, const MemoryGroup* groups,
                                             int64_t G, int64_t N, int64_t C, int64_t R, Stream s);
__attribute__((weak)) int ffn_memory_backward(GemmMode mode, float* dx, float* dlayer_w, const float* dy,
                                              const float* x, const float* gate_m, const float* up_m,
                                              const float* layer_w, int64_t slot_stride, const MemoryGroup* groups,
                                              int64_t G, int64_t N, int64_t C, int64_t R, float* scratch, Stream s);
__attribute__((weak)) int64_t ffn_memory_backward_scratch_floats(int64_t N, int64_t R);
__attribute__((weak)) int adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWArgs& a,
                                       Stream s);
__attribute__((weak)) int global_sumsq(double* out_dev, const float* g, int64_t n, double* scratch, Stream s);
__attribute__((weak)) int64_t global_norm_scratch_doubles(int64_t n);
__attribute__((weak)) int memory_gather(float* fetched, const float* const* level_w, const MemoryLayoutDesc& L,
                                        const int32_t* paths, int64_t path_stride, int64_t S, Stream s);
__attribute__((weak)) int memory_scatter_add(float* dblocks, const BlockRef* blocks, int64_t U,
                                             const MemoryLayoutDesc& L, const float* dfetched, const int32_t* paths,
                                             int64_t path_stride, int64_t S, Stream s);
__attribute__((weak)) int memory_adamw(const SparseAdamBlock* blocks, int64_t U, const AdamWArgs& a, Stream s);
__attribute__((weak)) Model* model_create(const ModelDims& d, const ModelMemory& mem, int64_t max_batch,
                                          float* params, float* grads, GemmMode mode, int* err);
__attribute__((weak)) void model_destroy(Model* m);
__attribute__((weak)) int model_forward_backward(Model* m, const ModelBatch& b, double* loss_host, Stream s);
}  // namespace hmc

namespace {

// ---- the benchmark's shapes (bench/peers/torch_gpu.py mirrors them) -------------------------------
constexpr int64_t kC = 768, kLm = 12, kT = 1024;
constexpr int64_t kLevels = 3;
constexpr int64_t kLevelRows[kLevels] = {256, 64, 16};     // the paper's 160M: r = [256, 64, 16], k = 16
constexpr int64_t kLevelNodes[kLevels] = {16, 256, 1024};  // k^l, the last level capped (4096) to keep ~4 GB
constexpr int64_t kR = 256 + 64 + 16;
constexpr int64_t kSlots = 16;  // gather / ffn sections: 16 sequences of T tokens, one slot each

struct GemmShape {
  const char* name;
  bool ta, tb;
  int64_t M, N, K;
};
// x W^T of the fused QKV projection, the tied classifier's logits, the FFN w1 weight gradient (dy^T x)
const GemmShape kGemmShapes[] = {
    {"qkv_fwd", false, true, 8192, 2304, 768},
    {"cls_fwd", false, true, 8192, 32768, 768},
    {"w1_wgrad", true, false, 2048, 768, 8192},
};

// ---- errors ---------------------------------------------------------------------------------------
#define CK(call)                                                                                         \
  do {                                                                                                   \
    cudaError_t e_ = (call);                                                                             \
    if (e_ != cudaSuccess) throw std::runtime_error(std::string(#call) + ": " + cudaGetErrorString(e_)); \
  } while (0)
#define OK(call)                                                                                           \
  do {                                                                                                     \
    int e_ = (call);                                                                                       \
    if (e_ != 0)                                                                                           \
      throw std::runtime_error(std::string(#call) + " returned " + std::to_string(e_) + " (" +            \
                               cudaGetErrorString((cudaError_t)e_) + ")");                                \
  } while (0)
struct NotLinked : std::runtime_error {
  using std::runtime_error::runtime_error;
};
#define NEED(fn) \
  if (!(&fn)) throw NotLinked(#fn " is not linked")

// ---- device memory (RAII) ---------------------------------------------------------------------------
template <typename T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  Dev() = default;
  explicit Dev(size_t count) : n(count) { CK(cudaMalloc(&p, std::max<size_t>(count, 1) * sizeof(T))); }
  ~Dev() {
    if (p) cudaFree(p);
  }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  size_t bytes() const { return n * sizeof(T); }
};
struct Event {
  cudaEvent_t e = nullptr;
  Event() { CK(cudaEventCreate(&e)); }
  ~Event() { cudaEventDestroy(e); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  operator cudaEvent_t() const { return e; }
};
struct StreamRAII {
  cudaStream_t s = nullptr;
  StreamRAII() { CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
  ~StreamRAII() { cudaStreamDestroy(s); }
  StreamRAII(const StreamRAII&) = delete;
  StreamRAII& operator=(const StreamRAII&) = delete;
};

// ---- fill kernels (grid-stride; thread i owns elements i, i + stride, ...) -------------------------
__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
// p[i] = scale * N(0,1), a counter-based hash of (seed, i) through Box-Muller: same values for any launch shape
__global__ void fill_normal_kernel(float* p, int64_t n, uint64_t seed, float scale) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const uint64_t h = mix64(seed * 0x9E3779B97F4A7C15ull + (uint64_t)i);
    const float u1 = ((float)(h >> 40) + 0.5f) * (1.f / 16777216.f);  // (0, 1): log is finite
    const float u2 = (float)((h >> 16) & 0xFFFFFF) * (1.f / 16777216.f);
    p[i] = scale * sqrtf(-2.f * logf(u1)) * cospif(2.f * u2);
  }
}
__global__ void fill_const_kernel(float* p, int64_t n, float v) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) p[i] = v;
}
int grid_for(int64_t n) { return (int)std::min<int64_t>((n + 255) / 256, 132 * 16); }
void fill_normal(float* p, int64_t n, uint64_t seed, float scale, cudaStream_t s) {
  if (n <= 0) return;
  fill_normal_kernel<<<grid_for(n), 256, 0, s>>>(p, n, seed, scale);
  CK(cudaGetLastError());
}
void fill_const(float* p, int64_t n, float v, cudaStream_t s) {
  if (n <= 0) return;
  fill_const_kernel<<<grid_for(n), 256, 0, s>>>(p, n, v);
  CK(cudaGetLastError());
}

// Copies ordered on the bench's non-blocking stream, then waited for: a plain cudaMemcpy runs on the
// legacy stream, which a non-blocking stream does not synchronise with (a pageable H2D cudaMemcpy may
// even return before its DMA lands), so it could race with the fill kernels and the timed calls.
template <typename T>
void upload(T* dst, const T* src, size_t count, cudaStream_t s) {
  CK(cudaMemcpyAsync(dst, src, count * sizeof(T), cudaMemcpyHostToDevice, s));
  CK(cudaStreamSynchronize(s));
}
template <typename T>
void download(T* dst, const T* src, size_t count, cudaStream_t s) {
  CK(cudaMemcpyAsync(dst, src, count * sizeof(T), cudaMemcpyDeviceToHost, s));
  CK(cudaStreamSynchronize(s));
}

// host RNG (splitmix64) for paths, tokens and sample positions
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int64_t below(int64_t n) { return (int64_t)(next() % (uint64_t)n); }
};

// ---- statistics and timing --------------------------------------------------------------------------
struct Stats {
  double med = NAN, lo = NAN, hi = NAN;
  int n = 0;
};
Stats stats_of(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  s.med = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  s.lo = v.front();
  s.hi = v.back();
  s.n = (int)n;
  return s;
}

// Per-call milliseconds of fn (which enqueues work on s and throws on error): `warm` untimed calls, then
// `samples` samples of `inner` back-to-back calls between two events; inner is calibrated from one
// timed call so that a sample lasts about target_ms (1..1000 calls).
Stats time_calls(const std::function<void()>& fn, cudaStream_t s, int warm, int samples, double target_ms = 2.0) {
  Event a, b;
  for (int i = 0; i < warm; i++) fn();
  CK(cudaStreamSynchronize(s));
  CK(cudaEventRecord(a, s));
  fn();
  CK(cudaEventRecord(b, s));
  CK(cudaEventSynchronize(b));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, a, b));
  const int inner = (int)std::min(1000.0, std::max(1.0, std::ceil(target_ms / std::max((double)ms, 1e-3))));
  std::vector<double> v;
  for (int k = 0; k < samples; k++) {
    CK(cudaEventRecord(a, s));
    for (int i = 0; i < inner; i++) fn();
    CK(cudaEventRecord(b, s));
    CK(cudaEventSynchronize(b));
    CK(cudaEventElapsedTime(&ms, a, b));
    v.push_back((double)ms / inner);
  }
  CK(cudaGetLastError());
  return stats_of(v);
}
double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// ---- JSON (flat enough to write by hand) -------------------------------------------------------------
std::string jnum(double x) {
  if (!std::isfinite(x)) return "null";
  char b[64];
  std::snprintf(b, sizeof b, "%.6g", x);
  return b;
}
std::string jstr(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\', o += c;
    else if ((unsigned char)c < 0x20) o += ' ';
    else o += c;
  }
  return o + "\"";
}
std::string jstats(const Stats& s) {
  return "{\"median_ms\": " + jnum(s.med) + ", \"min_ms\": " + jnum(s.lo) + ", \"max_ms\": " + jnum(s.hi) +
         ", \"samples\": " + std::to_string(s.n) + "}";
}
// an object from key/value pairs whose values are already JSON
std::string jobj(const std::vector<std::pair<std::string, std::string>>& kv) {
  std::string o = "{";
  for (size_t i = 0; i < kv.size(); i++) o += (i ? ", " : "") + jstr(kv[i].first) + ": " + kv[i].second;
  return o + "}";
}

struct Report {
  std::string path;
  std::vector<std::pair<std::string, std::string>> sections;
  std::vector<std::string> errors;
  void set(const std::string& key, const std::string& json) {
    for (auto& kv : sections)
      if (kv.first == key) {
        kv.second = json;
        write();
        return;
      }
    sections.emplace_back(key, json);
    write();
  }
  void error(const std::string& section, const std::string& msg) {
    errors.push_back(section + ": " + msg);
    std::printf("  ERROR %s: %s\n", section.c_str(), msg.c_str());
    write();
  }
  void write() const {
    if (path.empty()) return;
    std::string o = "{\n";
    for (auto& kv : sections) o += "  " + jstr(kv.first) + ": " + kv.second + ",\n";
    o += "  \"errors\": [";
    for (size_t i = 0; i < errors.size(); i++) o += (i ? ", " : "") + jstr(errors[i]);
    o += "]\n}\n";
    const std::string tmp = path + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "w");
    if (!f) return;
    std::fwrite(o.data(), 1, o.size(), f);
    std::fclose(f);
    std::rename(tmp.c_str(), path.c_str());
  }
};

// ---- options ---------------------------------------------------------------------------------------
struct Options {
  std::string json;
  int64_t batch = 16;  // model batch (sequences of T tokens); halved until model_create fits
  int steps = 6;       // timed training steps per mode
  int samples = 10;    // timed samples per kernel measurement
  std::set<std::string> sections = {"copy", "gather", "gemm", "ffn", "model"};
};

// ---- the memory bank shared by the gather, ffn and model sections -----------------------------------
struct Bank {
  Dev<float> level[kLevels];
  std::vector<const float*> level_ptrs;
  Dev<const float*> level_ptrs_dev;
  hmc::MemoryLayoutDesc L{};
  int64_t block_floats(int64_t l) const { return kLm * 3 * kLevelRows[l] * kC; }
  int64_t slot_floats() const { return kLm * 3 * kR * kC; }
  int64_t total_floats() const {
    int64_t t = 0;
    for (int64_t l = 0; l < kLevels; l++) t += kLevelNodes[l] * block_floats(l);
    return t;
  }
  explicit Bank(cudaStream_t s) : level_ptrs_dev(kLevels) {
    std::memset(&L, 0, sizeof L);
    L.num_levels = (int32_t)kLevels;
    L.Lm = kLm;
    L.d = kC;
    L.R = kR;
    int64_t off = 0;
    for (int64_t l = 0; l < kLevels; l++) {
      L.rows[l] = kLevelRows[l];
      L.row_offset[l] = off;
      off += kLevelRows[l];
      const int64_t n = kLevelNodes[l] * block_floats(l);
      CK(cudaMalloc(&level[l].p, (size_t)n * sizeof(float)));  // freed by ~Dev
      level[l].n = (size_t)n;
      fill_normal(level[l].p, n, 1000 + (uint64_t)l, 0.02f, s);
      level_ptrs.push_back(level[l].p);
    }
    upload(level_ptrs_dev.p, level_ptrs.data(), (size_t)kLevels, s);
  }
  // (S, kLevels) random node per level (independent per level: the gather does not care about the tree)
  std::vector<int32_t> random_paths(int64_t S, uint64_t seed) const {
    Rng r(seed);
    std::vector<int32_t> p((size_t)(S * kLevels));
    for (int64_t s = 0; s < S; s++)
      for (int64_t l = 0; l < kLevels; l++) p[(size_t)(s * kLevels + l)] = (int32_t)r.below(kLevelNodes[l]);
    return p;
  }
};

// ---- device properties and peak rates -----------------------------------------------------------------
struct Peak {
  double bf16, tf32;
  std::string source;
};
Peak peak_for(const std::string& name) {
  // dense (no sparsity) tensor-core rates from NVIDIA's datasheets
  auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
  if (has("H100") && has("PCIe")) return {756e12, 378e12, "H100 PCIe datasheet (756 bf16 / 378 tf32 TFLOP/s dense)"};
  if (has("H100") && has("NVL")) return {835e12, 418e12, "H100 NVL datasheet (835 bf16 / 418 tf32 TFLOP/s dense)"};
  if (has("H100") || has("H200") || has("H800") || has("GH200"))
    return {989e12, 494e12, "H100/H200 SXM datasheet (989 bf16 / 494 tf32 TFLOP/s dense)"};
  if (has("A100")) return {312e12, 156e12, "A100 datasheet (312 bf16 / 156 tf32 TFLOP/s dense)"};
  return {989e12, 494e12, "unknown device: H100 SXM datasheet assumed (989 bf16 / 494 tf32 TFLOP/s dense)"};
}

const char* mode_name(hmc::GemmMode m) { return m == hmc::GemmMode::BF16 ? "bf16" : m == hmc::GemmMode::TF32 ? "tf32" : "fp32"; }

// ---- sections ----------------------------------------------------------------------------------------
void section_copy(Report& rep, const Options& o, cudaStream_t s, const Bank& bank) {
  const int64_t floats = kSlots * bank.slot_floats();
  Dev<float> src((size_t)floats), dst((size_t)floats);
  fill_normal(src.p, floats, 7, 1.f, s);
  const size_t bytes = (size_t)floats * sizeof(float);
  Stats st = time_calls([&] { CK(cudaMemcpyAsync(dst.p, src.p, bytes, cudaMemcpyDeviceToDevice, s)); }, s, 3, o.samples);
  const double gbps = 2.0 * (double)bytes / (st.med * 1e-3) / 1e9;  // read + write
  std::printf("copy   cudaMemcpy D2D %.1f MB: %.3f ms, %.0f GB/s (read+write)\n", bytes / 1e6, st.med, gbps);
  rep.set("copy_d2d", jobj({{"bytes", jnum((double)bytes)}, {"time", jstats(st)}, {"gbps", jnum(gbps)},
                            {"gbps_counts", jstr("bytes read + bytes written")}}));
}

void section_gather(Report& rep, const Options& o, cudaStream_t s, const Bank& bank) {
  NEED(hmc::memory_gather);
  const int64_t S = kSlots;
  Dev<float> fetched((size_t)(S * bank.slot_floats()));
  const auto paths = bank.random_paths(S, 11);
  Dev<int32_t> paths_dev(paths.size());
  upload(paths_dev.p, paths.data(), paths.size(), s);
  Stats st = time_calls(
      [&] { OK(hmc::memory_gather(fetched.p, bank.level_ptrs_dev.p, bank.L, paths_dev.p, kLevels, S, s)); }, s, 3,
      o.samples);
  // spot check: slot 0, layer 0, gate row 0 of each level equals the bank's row
  for (int64_t l = 0; l < kLevels; l++) {
    std::vector<float> got((size_t)kC), want((size_t)kC);
    const float* src = bank.level[l].p + (int64_t)paths[(size_t)l] * bank.block_floats(l);  // layer 0, gate, row 0
    const float* dst = fetched.p + bank.L.row_offset[l] * kC;
    download(got.data(), dst, (size_t)kC, s);
    download(want.data(), src, (size_t)kC, s);
    if (std::memcmp(got.data(), want.data(), kC * sizeof(float)) != 0)
      rep.error("gather", "spot check: slot 0 level " + std::to_string(l) + " row 0 differs from the bank");
  }
  const double bytes = (double)fetched.bytes();
  const double gbps = 2.0 * bytes / (st.med * 1e-3) / 1e9;
  std::printf("gather S=%lld slots, %.1f MB fetched from a %.2f GB bank: %.3f ms, %.0f GB/s (read+write)\n",
              (long long)S, bytes / 1e6, bank.total_floats() * 4e-9, st.med, gbps);
  rep.set("gather", jobj({{"slots", jnum((double)S)}, {"bytes", jnum(bytes)}, {"bank_bytes", jnum(bank.total_floats() * 4.0)},
                          {"time", jstats(st)}, {"gbps", jnum(gbps)}}));
}

void section_gemm(Report& rep, const Options& o, cudaStream_t s) {
  NEED(hmc::gemm);
  std::string rows = "[";
  bool first = true;
  for (const GemmShape& g : kGemmShapes) {
    // A stored (M,K) or (K,M) if ta; B stored (K,N) or (N,K) if tb; C (M,N)
    const int64_t lda = g.ta ? g.M : g.K, ldb = g.tb ? g.K : g.N, ldc = g.N;
    const int64_t na = g.M * g.K, nb = g.K * g.N, nc = g.M * g.N;
    Dev<float> A((size_t)na), B((size_t)nb), C((size_t)nc);
    fill_normal(A.p, na, 21, 1.f, s);
    fill_normal(B.p, nb, 22, 1.f, s);
    std::vector<float> ha((size_t)na), hb((size_t)nb);
    download(ha.data(), A.p, A.n, s);
    download(hb.data(), B.p, B.n, s);
    for (hmc::GemmMode mode : {hmc::GemmMode::TF32, hmc::GemmMode::BF16}) {
      std::string err;
      Stats st;
      double rel = NAN;
      try {
        fill_const(C.p, nc, NAN, s);  // poison: beta = 0 must overwrite every element
        st = time_calls([&] { OK(hmc::gemm(mode, g.ta, g.tb, g.M, g.N, g.K, 1.f, A.p, lda, B.p, ldb, 0.f, C.p, ldc, s)); },
                        s, 2, o.samples);
        // 64 sampled elements against a float64 product of the same inputs: normwise relative error
        Rng r(33);
        double num = 0, den = 0;
        for (int k = 0; k < 64; k++) {
          const int64_t i = r.below(g.M), j = r.below(g.N);
          double ref = 0;
          for (int64_t p = 0; p < g.K; p++) {
            const double a = g.ta ? ha[(size_t)(p * lda + i)] : ha[(size_t)(i * lda + p)];
            const double b = g.tb ? hb[(size_t)(j * ldb + p)] : hb[(size_t)(p * ldb + j)];
            ref += a * b;
          }
          float got = NAN;
          download(&got, C.p + i * ldc + j, 1, s);
          num += (got - ref) * (got - ref);
          den += ref * ref;
        }
        rel = std::isfinite(num) ? std::sqrt(num / std::max(den, 1e-300)) : INFINITY;
      } catch (const NotLinked&) {
        throw;
      } catch (const std::exception& e) {
        err = e.what();
        rep.error(std::string("gemm ") + g.name + " " + mode_name(mode), err);
        if (cudaDeviceSynchronize() != cudaSuccess) throw;  // sticky error: stop
      }
      const double tflops = 2.0 * g.M * g.N * g.K / (st.med * 1e-3) / 1e12;
      // tf32 ~3e-4, bf16 ~3e-3 for random normal operands (METHOD.md); 10x that is wrong, not rounding
      const double limit = mode == hmc::GemmMode::TF32 ? 5e-3 : 3e-2;
      const bool suspect = !(rel <= limit);
      std::printf("gemm   %-9s %s %s%s M=%lld N=%lld K=%lld: %.3f ms, %.1f TFLOP/s, sampled rel err %.2e%s\n", g.name,
                  mode_name(mode), g.ta ? "T" : "N", g.tb ? "T" : "N", (long long)g.M, (long long)g.N, (long long)g.K,
                  st.med, tflops, rel, suspect ? "  SUSPECT" : "");
      rows += std::string(first ? "" : ", ") +
              jobj({{"name", jstr(g.name)}, {"mode", jstr(mode_name(mode))}, {"trans_a", g.ta ? "true" : "false"},
                    {"trans_b", g.tb ? "true" : "false"}, {"M", jnum((double)g.M)}, {"N", jnum((double)g.N)},
                    {"K", jnum((double)g.K)}, {"time", jstats(st)}, {"tflops", jnum(tflops)},
                    {"sample_rel_err", jnum(rel)}, {"suspect", suspect ? "true" : "false"},
                    {"error", err.empty() ? "null" : jstr(err)}});
      first = false;
      rep.set("gemm", rows + "]");
    }
  }
}

// FFN memory: x (S*T, C) rows, sequence s uses slot s; fetched (S, Lm, 3, R, C) from the bank.
void section_ffn(Report& rep, const Options& o, cudaStream_t s, const Bank& bank) {
  NEED(hmc::memory_gather);
  NEED(hmc::ffn_memory_forward);
  const int64_t S = kSlots, N = S * kT, C = kC, R = kR;
  const int64_t slot_stride = bank.slot_floats();
  Dev<float> fetched((size_t)(S * slot_stride)), dfetched((size_t)(S * slot_stride));
  Dev<float> x((size_t)(N * C)), y((size_t)(N * C)), dx((size_t)(N * C)), dy((size_t)(N * C));
  Dev<float> gate_m((size_t)(N * R)), up_m((size_t)(N * R));
  fill_normal(x.p, N * C, 41, 1.f, s);
  fill_normal(dy.p, N * C, 42, 1.f, s);
  CK(cudaMemsetAsync(y.p, 0, y.bytes(), s));
  CK(cudaMemsetAsync(dx.p, 0, dx.bytes(), s));
  CK(cudaMemsetAsync(dfetched.p, 0, dfetched.bytes(), s));
  const auto paths = bank.random_paths(S, 12);
  Dev<int32_t> paths_dev(paths.size());
  upload(paths_dev.p, paths.data(), paths.size(), s);
  std::vector<hmc::MemoryGroup> groups;
  for (int64_t b = 0; b < S; b++) groups.push_back({b * kT, kT, b});
  Dev<hmc::MemoryGroup> groups_dev(groups.size());
  upload(groups_dev.p, groups.data(), groups.size(), s);
  OK(hmc::memory_gather(fetched.p, bank.level_ptrs_dev.p, bank.L, paths_dev.p, kLevels, S, s));
  const bool have_bwd = &hmc::ffn_memory_backward && &hmc::ffn_memory_backward_scratch_floats;
  Dev<float> scratch(have_bwd ? (size_t)hmc::ffn_memory_backward_scratch_floats(N, R) : 1);

  std::vector<std::pair<std::string, std::string>> out = {
      {"slots", jnum((double)S)}, {"T", jnum((double)kT)}, {"C", jnum((double)C)}, {"R", jnum((double)R)},
      {"Lm", jnum((double)kLm)}};
  for (hmc::GemmMode mode : {hmc::GemmMode::BF16, hmc::GemmMode::TF32}) {
    std::vector<std::pair<std::string, std::string>> m;
    // (a) the memory part of a forward pass: gather the batch's paths, then every memory layer's units
    Stats all = time_calls(
        [&] {
          OK(hmc::memory_gather(fetched.p, bank.level_ptrs_dev.p, bank.L, paths_dev.p, kLevels, S, s));
          for (int64_t j = 0; j < kLm; j++)
            OK(hmc::ffn_memory_forward(mode, y.p, gate_m.p, up_m.p, x.p, fetched.p + j * 3 * R * C, slot_stride,
                                       groups_dev.p, S, N, C, R, s));
        },
        s, 2, o.samples);
    // (b) one layer's forward, weights already fetched
    Stats one = time_calls(
        [&] {
          OK(hmc::ffn_memory_forward(mode, y.p, gate_m.p, up_m.p, x.p, fetched.p, slot_stride, groups_dev.p, S, N, C, R, s));
        },
        s, 2, o.samples);
    m.push_back({"gather_fwd_all_layers", jstats(all)});
    m.push_back({"fwd_one_layer", jstats(one)});
    // FLOPs of one layer's forward: 3 products of (N, C) x (C, R)
    const double fl = 2.0 * 3 * N * C * R;
    std::printf("ffn    %s gather + %lld layers fwd: %.3f ms; one layer fwd %.3f ms (%.1f TFLOP/s)\n", mode_name(mode),
                (long long)kLm, all.med, one.med, fl / (one.med * 1e-3) / 1e12);
    if (have_bwd) {
      Stats fb = time_calls(
          [&] {
            OK(hmc::ffn_memory_forward(mode, y.p, gate_m.p, up_m.p, x.p, fetched.p, slot_stride, groups_dev.p, S, N, C,
                                       R, s));
            OK(hmc::ffn_memory_backward(mode, dx.p, dfetched.p, dy.p, x.p, gate_m.p, up_m.p, fetched.p, slot_stride,
                                        groups_dev.p, S, N, C, R, scratch.p, s));
          },
          s, 2, o.samples);
      m.push_back({"fwd_bwd_one_layer", jstats(fb)});
      std::printf("ffn    %s one layer fwd+bwd %.3f ms (%.1f TFLOP/s)\n", mode_name(mode), fb.med,
                  3 * fl / (fb.med * 1e-3) / 1e12);
    }
    out.push_back({mode_name(mode), jobj(m)});
    rep.set("ffn_memory", jobj(out));
  }
  // sanity: outputs finite
  std::vector<float> probe(4096);
  download(probe.data(), y.p, probe.size(), s);
  for (float v : probe)
    if (!std::isfinite(v)) {
      rep.error("ffn", "y has non-finite values after the runs");
      break;
    }
}

// FLOPs of one training token: 6 x (matmul parameters incl. the tied classifier and the fetched memory
// units) + 3 x causal attention forward (lib/model/config.ts trainFlopsPerToken, plus the memories)
double train_flops_per_token(const hmc::ModelDims& d, int64_t Lm, int64_t R) {
  const double C = (double)d.C, D = (double)(d.H * d.hd), F = (double)d.F, L = (double)d.L, V = (double)d.V,
               T = (double)d.T;
  const double matmul_params = L * (3 * D * C + C * D + 3 * F * C) + V * C;
  const double memory_params = (double)Lm * 3 * (double)R * C;
  const double attention = L * 2 * 2 * D * T / 2;
  return 6 * (matmul_params + memory_params) + 3 * attention;
}

void section_model(Report& rep, const Options& o, cudaStream_t s, const Bank& bank, const Peak& peak) {
  NEED(hmc::model_create);
  NEED(hmc::model_destroy);
  NEED(hmc::model_forward_backward);
  hmc::ModelDims d{};
  d.V = 32768;
  d.C = kC;
  d.L = 12;
  d.H = 12;
  d.hd = 64;
  d.F = 2048;
  d.T = kT;
  d.norm_eps = 1e-5f;
  d.rope_base = 1e5;
  hmc::ModelMemory mem{};
  mem.R = kR;
  mem.Lm = kLm;
  for (int i = 0; i < 64; i++) mem.layer_to_mem[i] = i < d.L ? i : -1;  // every layer carries memories

  hm::AnchorDims ad{d.V, d.C, d.L, d.H, d.hd, d.F, d.T, d.norm_eps, d.rope_base};
  const auto layout = hm::anchor_layout(ad);
  const int64_t P = layout.back().offset + layout.back().size;
  Dev<float> params((size_t)P), grads((size_t)P), adam_m((size_t)P), adam_v((size_t)P);
  const double flops_tok = train_flops_per_token(d, kLm, kR);
  std::printf("model  %lld parameters (V %lld C %lld L %lld H %lld hd %lld F %lld T %lld), memories R=%lld on %lld layers,"
              " %.3g FLOPs per token\n",
              (long long)P, (long long)d.V, (long long)d.C, (long long)d.L, (long long)d.H, (long long)d.hd,
              (long long)d.F, (long long)d.T, (long long)kR, (long long)kLm, flops_tok);
  std::vector<std::pair<std::string, std::string>> out = {
      {"params", jnum((double)P)},
      {"dims", jobj({{"V", jnum((double)d.V)}, {"C", jnum((double)d.C)}, {"L", jnum((double)d.L)}, {"H", jnum((double)d.H)},
                     {"hd", jnum((double)d.hd)}, {"F", jnum((double)d.F)}, {"T", jnum((double)d.T)}})},
      {"memory", jobj({{"R", jnum((double)kR)}, {"Lm", jnum((double)kLm)}, {"levels", "[256, 64, 16]"}})},
      {"flops_per_token", jnum(flops_tok)},
      {"flops_formula", jstr("6*(L*(3DC+CD+3FC)+VC + Lm*3*R*C) + 3*(L*2*2*D*T/2)")},
      {"peak_bf16", jnum(peak.bf16)}, {"peak_tf32", jnum(peak.tf32)}, {"peak_source", jstr(peak.source)}};
  rep.set("model", jobj(out));

  for (hmc::GemmMode mode : {hmc::GemmMode::BF16, hmc::GemmMode::TF32}) {
    const char* mn = mode_name(mode);
    try {
      // parameters: normals * 0.02, norm gains 1 (as a fresh model); zero optimizer state
      fill_normal(params.p, P, 5, 0.02f, s);
      for (const auto& t : layout)
        if (t.name.find("norm") != std::string::npos) fill_const(params.p + t.offset, t.size, 1.f, s);
      CK(cudaMemsetAsync(grads.p, 0, grads.bytes(), s));
      CK(cudaMemsetAsync(adam_m.p, 0, adam_m.bytes(), s));
      CK(cudaMemsetAsync(adam_v.p, 0, adam_v.bytes(), s));
      CK(cudaStreamSynchronize(s));
      int64_t B = o.batch;
      hmc::Model* model = nullptr;
      int err = 0;
      while (B >= 1) {
        model = hmc::model_create(d, mem, B, params.p, grads.p, mode, &err);
        if (model) break;
        cudaGetLastError();
        if (err != (int)cudaErrorMemoryAllocation) break;
        B /= 2;
      }
      if (!model) throw std::runtime_error("model_create failed: " + std::to_string(err) + " (" +
                                           cudaGetErrorString((cudaError_t)err) + ")");
      struct Destroy {
        hmc::Model* m;
        ~Destroy() { hmc::model_destroy(m); }
      } destroy{model};
      const int64_t N = B * d.T, S = B;

      // the batch: random tokens/targets, positions t, sequence b uses slot b
      Rng r(77);
      std::vector<int32_t> tok((size_t)N), tgt((size_t)N), pos((size_t)N);
      for (int64_t i = 0; i < N; i++) {
        tok[(size_t)i] = (int32_t)r.below(d.V);
        tgt[(size_t)i] = (int32_t)r.below(d.V);
        pos[(size_t)i] = (int32_t)(i % d.T);
      }
      Dev<int32_t> tok_d((size_t)N), tgt_d((size_t)N), pos_d((size_t)N);
      upload(tok_d.p, tok.data(), (size_t)N, s);
      upload(tgt_d.p, tgt.data(), (size_t)N, s);
      upload(pos_d.p, pos.data(), (size_t)N, s);
      std::vector<hmc::MemoryGroup> groups;
      for (int64_t b = 0; b < B; b++) groups.push_back({b * d.T, d.T, b});
      const int64_t slot_floats = bank.slot_floats();
      Dev<float> fetched((size_t)(S * slot_floats)), dfetched((size_t)(S * slot_floats));
      CK(cudaMemsetAsync(fetched.p, 0, fetched.bytes(), s));

      // memory blocks of the batch: unique (level, node), their gradients and compact AdamW state
      const auto paths = bank.random_paths(S, 13);
      Dev<int32_t> paths_d(paths.size());
      upload(paths_d.p, paths.data(), paths.size(), s);
      std::set<std::pair<int32_t, int32_t>> uniq;
      for (int64_t sl = 0; sl < S; sl++)
        for (int64_t l = 0; l < kLevels; l++) uniq.insert({(int32_t)l, paths[(size_t)(sl * kLevels + l)]});
      std::vector<hmc::BlockRef> refs;
      int64_t dfloats = 0;
      for (auto& u : uniq) {
        refs.push_back({u.first, u.second, dfloats});
        dfloats += bank.block_floats(u.first);
      }
      const int64_t U = (int64_t)refs.size();
      Dev<float> dblocks((size_t)dfloats), blk_m((size_t)dfloats), blk_v((size_t)dfloats);
      CK(cudaMemsetAsync(blk_m.p, 0, blk_m.bytes(), s));
      CK(cudaMemsetAsync(blk_v.p, 0, blk_v.bytes(), s));
      Dev<hmc::BlockRef> refs_d(refs.size());
      upload(refs_d.p, refs.data(), refs.size(), s);
      hmc::AdamWArgs args = hmc::adamw_args(1e-4, 0.9, 0.95, 1e-8, 0.1, 1.0, 1);
      std::vector<hmc::SparseAdamBlock> sblocks;
      for (auto& ref : refs) {
        // the bank's weights are updated in place (the bench does not care that they drift)
        float* w = bank.level[ref.level].p + (int64_t)ref.node * bank.block_floats(ref.level);
        sblocks.push_back({w, blk_m.p + ref.offset, blk_v.p + ref.offset, dblocks.p + ref.offset,
                           bank.block_floats(ref.level), args.inv_bc1, args.inv_bc2});
      }
      Dev<hmc::SparseAdamBlock> sblocks_d(sblocks.size());
      upload(sblocks_d.p, sblocks.data(), sblocks.size(), s);
      const bool have_norm = &hmc::global_sumsq && &hmc::global_norm_scratch_doubles;
      Dev<double> norm_scratch(have_norm ? (size_t)std::max<int64_t>(hmc::global_norm_scratch_doubles(P), 1) : 1);
      Dev<double> norm_out(1);
      const bool have_gather = &hmc::memory_gather, have_adam = &hmc::adamw_update;
      const bool have_scatter = &hmc::memory_scatter_add && &hmc::memory_adamw;
      std::string parts = std::string(have_gather ? "gather " : "") + "fwd_bwd" + (have_norm ? " grad_norm" : "") +
                          (have_adam ? " adamw" : "") + (have_scatter ? " scatter_add sparse_adamw" : "");

      hmc::ModelBatch batch{};
      batch.tokens = tok_d.p;
      batch.targets = tgt_d.p;
      batch.doc_start = nullptr;
      batch.pos = pos_d.p;
      batch.B = B;
      batch.T = d.T;
      batch.fetched = fetched.p;
      batch.dfetched = dfetched.p;
      batch.groups_host = groups.data();
      batch.G = (int64_t)groups.size();

      Event e0, e1, e2, e3;
      double loss = NAN, first_loss = NAN;
      // one training step on `st`; fills the events around its three phases
      auto step = [&](cudaStream_t st) {
        CK(cudaEventRecord(e0, st));
        if (have_gather) OK(hmc::memory_gather(fetched.p, bank.level_ptrs_dev.p, bank.L, paths_d.p, kLevels, S, st));
        CK(cudaMemsetAsync(dfetched.p, 0, dfetched.bytes(), st));
        CK(cudaMemsetAsync(grads.p, 0, grads.bytes(), st));
        CK(cudaEventRecord(e1, st));
        OK(hmc::model_forward_backward(model, batch, &loss, st));  // synchronises st
        CK(cudaEventRecord(e2, st));
        if (have_norm) OK(hmc::global_sumsq(norm_out.p, grads.p, P, norm_scratch.p, st));
        if (have_adam) OK(hmc::adamw_update(params.p, grads.p, adam_m.p, adam_v.p, P, args, st));
        if (have_scatter) {
          CK(cudaMemsetAsync(dblocks.p, 0, dblocks.bytes(), st));
          OK(hmc::memory_scatter_add(dblocks.p, refs_d.p, U, bank.L, dfetched.p, paths_d.p, kLevels, S, st));
          OK(hmc::memory_adamw(sblocks_d.p, U, args, st));
        }
        CK(cudaEventRecord(e3, st));
        CK(cudaEventSynchronize(e3));
      };
      auto elapsed = [](cudaEvent_t a, cudaEvent_t b) {
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, a, b));
        return (double)ms;
      };
      for (int i = 0; i < 2; i++) {  // warm-up (first call allocates the model's scratch)
        step(s);
        if (i == 0) first_loss = loss;
      }
      std::vector<double> t_step, t_fb, t_rest;
      const double wall0 = now_ms();
      for (int i = 0; i < o.steps; i++) {
        step(s);
        t_step.push_back(elapsed(e0, e3));
        t_fb.push_back(elapsed(e1, e2));
        t_rest.push_back(elapsed(e0, e1) + elapsed(e2, e3));
      }
      const double wall_per_step = (now_ms() - wall0) / std::max(1, o.steps);
      const Stats ss = stats_of(t_step), sf = stats_of(t_fb), sr = stats_of(t_rest);
      const double tps = (double)N / (ss.med * 1e-3);
      const double pk = mode == hmc::GemmMode::BF16 ? peak.bf16 : peak.tf32;
      const double mfu = flops_tok * tps / pk;
      const bool loss_ok = std::isfinite(first_loss) && std::fabs(first_loss - std::log((double)d.V)) < 1.0;
      std::printf("model  %s B=%lld (%lld tokens): step %.2f ms (fwd+bwd %.2f, rest %.2f), %.0f tokens/s, MFU %.1f%% of %.0f"
                  " TFLOP/s; loss %.4f first, %.4f last (ln V = %.4f)%s\n",
                  mn, (long long)B, (long long)N, ss.med, sf.med, sr.med, tps, 100 * mfu, pk / 1e12, first_loss, loss,
                  std::log((double)d.V), loss_ok ? "" : "  LOSS SUSPECT");
      if (!loss_ok) rep.error(std::string("model ") + mn, "first loss " + jnum(first_loss) + " is not near ln V");
      std::vector<std::pair<std::string, std::string>> mo = {
          {"batch", jnum((double)B)}, {"tokens_per_step", jnum((double)N)}, {"parts", jstr(parts)},
          {"unique_blocks", jnum((double)U)}, {"step", jstats(ss)}, {"fwd_bwd", jstats(sf)}, {"rest", jstats(sr)},
          {"wall_ms_per_step", jnum(wall_per_step)}, {"tokens_per_s", jnum(tps)}, {"mfu", jnum(mfu)},
          {"peak", jnum(pk)}, {"first_loss", jnum(first_loss)}, {"last_loss", jnum(loss)}};
      out.push_back({mn, jobj(mo)});
      rep.set("model", jobj(out));

      if (mode == hmc::GemmMode::BF16) {
        // host tier: the next batch's fetched blocks (S slots, pinned host) copied H2D on a second stream
        const size_t bytes = fetched.bytes();
        float* host = nullptr;
        CK(cudaMallocHost((void**)&host, bytes));
        struct FreeHost {
          float* p;
          ~FreeHost() { cudaFreeHost(p); }
        } free_host{host};
        std::memset(host, 0, bytes);
        Dev<float> next((size_t)(S * slot_floats));
        StreamRAII s2;
        Stats copy = time_calls([&] { CK(cudaMemcpyAsync(next.p, host, bytes, cudaMemcpyHostToDevice, s2.s)); }, s2.s, 1,
                                5, 0.0);
        std::vector<double> serial, overlapped;
        for (int i = 0; i < 3; i++) {
          CK(cudaDeviceSynchronize());
          double t0 = now_ms();
          CK(cudaMemcpyAsync(next.p, host, bytes, cudaMemcpyHostToDevice, s2.s));
          CK(cudaStreamSynchronize(s2.s));
          step(s);
          serial.push_back(now_ms() - t0);
          CK(cudaDeviceSynchronize());
          t0 = now_ms();
          CK(cudaMemcpyAsync(next.p, host, bytes, cudaMemcpyHostToDevice, s2.s));
          step(s);
          CK(cudaStreamSynchronize(s2.s));
          overlapped.push_back(now_ms() - t0);
        }
        const Stats sser = stats_of(serial), sov = stats_of(overlapped);
        const double hidden = std::min(1.0, std::max(0.0, (sser.med - sov.med) / copy.med));
        const double h2d_gbps = (double)bytes / (copy.med * 1e-3) / 1e9;
        std::printf("overlap H2D %.1f MB: copy %.2f ms (%.1f GB/s); step+copy serial %.2f ms, overlapped %.2f ms:"
                    " %.0f%% of the copy hidden\n",
                    bytes / 1e6, copy.med, h2d_gbps, sser.med, sov.med, 100 * hidden);
        rep.set("overlap", jobj({{"bytes", jnum((double)bytes)}, {"copy", jstats(copy)}, {"h2d_gbps", jnum(h2d_gbps)},
                                 {"serial_wall", jstats(sser)}, {"overlapped_wall", jstats(sov)},
                                 {"step_alone", jstats(ss)}, {"hidden_fraction", jnum(hidden)}}));
      }
    } catch (const NotLinked&) {
      throw;
    } catch (const std::exception& e) {
      rep.error(std::string("model ") + mn, e.what());
      if (cudaDeviceSynchronize() != cudaSuccess) throw;
    }
  }
}

bool parse_args(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--json") o.json = val();
    else if (a == "--batch") o.batch = std::max<int64_t>(1, std::atoll(val().c_str()));
    else if (a == "--steps") o.steps = std::max(1, std::atoi(val().c_str()));
    else if (a == "--samples") o.samples = std::max(1, std::atoi(val().c_str()));
    else if (a == "--quick") o.samples = 3, o.steps = 2;
    else if (a == "--only") {
      o.sections.clear();
      std::string v = val();
      size_t p = 0;
      while (p <= v.size()) {
        size_t q = v.find(',', p);
        if (q == std::string::npos) q = v.size();
        if (q > p) o.sections.insert(v.substr(p, q - p));
        p = q + 1;
      }
    } else {
      std::printf("usage: hiermem_cuda_bench [--json PATH] [--batch B] [--steps N] [--samples N] [--quick]"
                  " [--only copy,gather,gemm,ffn,model]\n");
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    if (!parse_args(argc, argv, o)) return 2;
  } catch (const std::exception& e) {
    std::printf("hiermem_cuda_bench: %s\n", e.what());
    return 2;
  }
  Report rep;
  rep.path = o.json;
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    std::printf("hiermem_cuda_bench: SKIP, no CUDA device (%s)\n", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    rep.set("device", jobj({{"error", jstr("no CUDA device")}}));
    return 77;
  }
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  const Peak peak = peak_for(prop.name);
  std::printf("hiermem_cuda_bench: %s (sm_%d%d, %d SMs, %.1f GB), driver %d runtime %d; peaks: %s\n", prop.name,
              prop.major, prop.minor, prop.multiProcessorCount, prop.totalGlobalMem / 1e9, driver, runtime,
              peak.source.c_str());
  rep.set("device", jobj({{"name", jstr(prop.name)}, {"cc", jstr(std::to_string(prop.major) + "." + std::to_string(prop.minor))},
                          {"sms", jnum(prop.multiProcessorCount)}, {"memory_bytes", jnum((double)prop.totalGlobalMem)},
                          {"l2_bytes", jnum(prop.l2CacheSize)}, {"driver", jnum(driver)}, {"runtime", jnum(runtime)},
                          {"peak_bf16", jnum(peak.bf16)}, {"peak_tf32", jnum(peak.tf32)}, {"peak_source", jstr(peak.source)}}));

  int rc = 0;
  try {
    StreamRAII stream;
    const cudaStream_t s = stream.s;
    Bank bank(s);
    CK(cudaStreamSynchronize(s));
    struct Sec {
      const char* name;
      std::function<void()> run;
    };
    const std::vector<Sec> secs = {
        {"copy", [&] { section_copy(rep, o, s, bank); }},
        {"gather", [&] { section_gather(rep, o, s, bank); }},
        {"gemm", [&] { section_gemm(rep, o, s); }},
        {"ffn", [&] { section_ffn(rep, o, s, bank); }},
        {"model", [&] { section_model(rep, o, s, bank, peak); }},
    };
    for (const Sec& sec : secs) {
      if (!o.sections.count(sec.name)) continue;
      const double t0 = now_ms();
      try {
        sec.run();
      } catch (const NotLinked& ex) {
        rep.error(sec.name, std::string("skipped: ") + ex.what());
      } catch (const std::exception& ex) {
        rep.error(sec.name, ex.what());
        rc = 1;
        const cudaError_t sticky = cudaDeviceSynchronize();
        if (sticky != cudaSuccess) {
          rep.error(sec.name, std::string("CUDA context lost (") + cudaGetErrorString(sticky) +
                                  "): remaining sections skipped");
          break;
        }
        cudaGetLastError();
      }
      std::printf("  (%s: %.1f s)\n", sec.name, (now_ms() - t0) / 1e3);
      std::fflush(stdout);
    }
  } catch (const std::exception& ex) {
    rep.error("setup", ex.what());
    rc = 1;
  }
  rep.write();
  if (!rep.errors.empty()) rc = rc ? rc : 3;  // 3: some section reported an error but the context survived
  std::printf("hiermem_cuda_bench: done, %zu error(s)\n", rep.errors.size());
  return rc;
}
