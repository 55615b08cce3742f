// bench_common.cu — the shared parts declared in bench.h: JSON, the report, peaks, device fills,
// the device bank and model creation.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "anchor_model.h"  // hm::anchor_layout: parameter names (norm gains start at 1)
#include "bench.h"

namespace hmbench {

hmc::ModelDims bench_dims() {
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
  return d;
}

hmc::ModelMemory bench_memory() {
  static const std::vector<int32_t> layer_to_mem = [] {
    std::vector<int32_t> m((size_t)bench_dims().L);
    for (size_t l = 0; l < m.size(); l++) m[l] = (int32_t)l;
    return m;
  }();
  return hmc::ModelMemory{kR, kLm, layer_to_mem.data()};
}

// ---- JSON -------------------------------------------------------------------------------------------
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
std::string jobj(const std::vector<std::pair<std::string, std::string>>& kv) {
  std::string o = "{";
  for (size_t i = 0; i < kv.size(); i++) o += (i ? ", " : "") + jstr(kv[i].first) + ": " + kv[i].second;
  return o + "}";
}

void Report::set(const std::string& key, const std::string& json) {
  for (auto& kv : sections)
    if (kv.first == key) {
      kv.second = json;
      write();
      return;
    }
  sections.emplace_back(key, json);
  write();
}
void Report::error(const std::string& section, const std::string& msg) {
  errors.push_back(section + ": " + msg);
  std::printf("  ERROR %s: %s\n", section.c_str(), msg.c_str());
  write();
}
void Report::write() const {
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

// ---- device properties ----------------------------------------------------------------------------
Peak peak_for(const std::string& name) {
  auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
  if (has("H100") && has("PCIe")) return {756e12, 378e12, "H100 PCIe datasheet (756 bf16 / 378 tf32 TFLOP/s dense)"};
  if (has("H100") && has("NVL")) return {835e12, 418e12, "H100 NVL datasheet (835 bf16 / 418 tf32 TFLOP/s dense)"};
  if (has("H100") || has("H200") || has("H800") || has("GH200"))
    return {989e12, 494e12, "H100/H200 SXM datasheet (989 bf16 / 494 tf32 TFLOP/s dense)"};
  if (has("A100")) return {312e12, 156e12, "A100 datasheet (312 bf16 / 156 tf32 TFLOP/s dense)"};
  return {989e12, 494e12, "unknown device: H100 SXM datasheet assumed (989 bf16 / 494 tf32 TFLOP/s dense)"};
}

const char* mode_name(hmc::GemmMode m) {
  return m == hmc::GemmMode::BF16 ? "bf16" : m == hmc::GemmMode::TF32 ? "tf32" : "fp32";
}

double train_flops_per_token(const hmc::ModelDims& d, int64_t Lm, int64_t R) {
  const double C = (double)d.C, D = (double)(d.H * d.hd), F = (double)d.F, L = (double)d.L, V = (double)d.V,
               T = (double)d.T;
  const double matmul_params = L * (3 * D * C + C * D + 3 * F * C) + V * C;
  const double memory_params = (double)Lm * 3 * (double)R * C;
  const double attention = L * 2 * 2 * D * T / 2;
  return 6 * (matmul_params + memory_params) + 3 * attention;
}

// ---- fills ------------------------------------------------------------------------------------------
namespace {
__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
// p[i] = scale * N(0,1), a counter-based hash of (seed, i) through Box-Muller
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
}  // namespace

void fill_normal(float* p, int64_t n, uint64_t seed, float scale, cudaStream_t s) {
  if (n <= 0) return;
  fill_normal_kernel<<<grid_for(n), 256, 0, s>>>(p, n, seed, scale);
  CUDA_CHECK(cudaGetLastError());
}
void fill_const(float* p, int64_t n, float v, cudaStream_t s) {
  if (n <= 0) return;
  fill_const_kernel<<<grid_for(n), 256, 0, s>>>(p, n, v);
  CUDA_CHECK(cudaGetLastError());
}
void fill_params(float* p, const hmc::ModelDims& d, cudaStream_t s) {
  const auto layout = hm::anchor_layout(d);
  fill_normal(p, layout.back().offset + layout.back().size, 5, 0.02f, s);
  for (const auto& t : layout)
    if (t.name.find("norm") != std::string::npos) fill_const(p + t.offset, t.size, 1.f, s);
}

// ---- the device bank --------------------------------------------------------------------------------
Bank::Bank(cudaStream_t s) : level_ptrs_dev(kLevels) {
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
    CUDA_CHECK(cudaMalloc(&level[l].p, (size_t)n * sizeof(float)));  // freed by ~DevBuf; filled below
    level[l].n = (size_t)n;
    fill_normal(level[l].p, n, 1000 + (uint64_t)l, 0.02f, s);
    level_ptrs.push_back(level[l].p);
  }
  upload(level_ptrs_dev.p, level_ptrs.data(), (size_t)kLevels, s);
}

int64_t Bank::total_floats() const {
  int64_t t = 0;
  for (int64_t l = 0; l < kLevels; l++) t += kLevelNodes[l] * block_floats(l);
  return t;
}

std::vector<int32_t> Bank::random_paths(int64_t S, uint64_t seed) const {
  hmdev::Rng r(seed);
  std::vector<int32_t> p((size_t)(S * kLevels));
  for (int64_t s = 0; s < S; s++)
    for (int64_t l = 0; l < kLevels; l++) p[(size_t)(s * kLevels + l)] = (int32_t)r.below(kLevelNodes[l]);
  return p;
}

DeviceBatch::DeviceBatch(const hmc::ModelDims& d, int64_t B, uint64_t seed, cudaStream_t s)
    : tokens((size_t)(B * d.T)), targets((size_t)(B * d.T)), pos((size_t)(B * d.T)) {
  const int64_t N = B * d.T;
  hmdev::Rng r(seed);
  std::vector<int32_t> tok((size_t)N), tgt((size_t)N), ps((size_t)N);
  for (int64_t i = 0; i < N; i++) {
    tok[(size_t)i] = (int32_t)r.below(d.V);
    tgt[(size_t)i] = (int32_t)r.below(d.V);
    ps[(size_t)i] = (int32_t)(i % d.T);
  }
  upload(tokens.p, tok.data(), (size_t)N, s);
  upload(targets.p, tgt.data(), (size_t)N, s);
  upload(pos.p, ps.data(), (size_t)N, s);
  for (int64_t b = 0; b < B; b++) groups.push_back({b * d.T, d.T, b});
}

ModelPtr create_model_fitting(const hmc::ModelDims& d, const hmc::ModelMemory& mem, int64_t batch, float* params,
                              float* grads, hmc::GemmMode mode, int64_t* batch_out) {
  int err = 0;
  for (int64_t B = batch; B >= 1; B /= 2) {
    hmc::Model* m = hmc::model_create(d, mem, B, params, grads, mode, &err);
    if (m) {
      *batch_out = B;
      return ModelPtr(m, hmc::model_destroy);
    }
    cudaGetLastError();
    if (err != (int)cudaErrorMemoryAllocation) break;
  }
  throw std::runtime_error("model_create failed: " + std::to_string(err) + " (" + cudaGetErrorString((cudaError_t)err) +
                           ")");
}

}  // namespace hmbench
