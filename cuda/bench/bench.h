// bench.h — hiermem_cuda_bench's shared parts: the shapes (bench/peers/torch_gpu.py mirrors them —
// keep the two in sync), the JSON report, options, the device-resident memory bank and the device
// fills; one section a file (copy.cu, gather.cu, gemm.cu, ffn_memory.cu, model.cu, pipeline.cu),
// each calling the real cuda/hiermem_cuda.h declarations, so that a signature change breaks the
// build instead of skipping a section. main.cu runs them. Check macros, DevBuf, timing: common.h.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common.h"
#include "hiermem_cuda.h"

namespace hmbench {

using hmdev::DevBuf;
using hmdev::Stats;

// ---- the benchmark's shapes -----------------------------------------------------------------------
constexpr int64_t kC = 768, kLm = 12, kT = 1024;
constexpr int64_t kLevels = 3;
constexpr int64_t kLevelRows[kLevels] = {256, 64, 16};     // the paper's 160M: r = [256, 64, 16], k = 16
constexpr int64_t kLevelNodes[kLevels] = {16, 256, 1024};  // k^l, the last level capped (4096) to keep ~4 GB
constexpr int64_t kR = 256 + 64 + 16;
constexpr int64_t kSlots = 16;  // gather / ffn sections: 16 sequences of T tokens, one slot each

// the ~110M-parameter anchor of the model and pipeline sections, with memories (R = kR) in every layer
hmc::ModelDims bench_dims();
hmc::ModelMemory bench_memory();  // its layer map lives in static storage

// ---- JSON (flat enough to write by hand) ----------------------------------------------------------
std::string jnum(double x);
std::string jstr(const std::string& s);
std::string jstats(const Stats& s);
std::string jobj(const std::vector<std::pair<std::string, std::string>>& kv);  // values already JSON

// The --json file, rewritten after every section (a crash or timeout keeps what was measured).
struct Report {
  std::string path;
  std::vector<std::pair<std::string, std::string>> sections;
  std::vector<std::string> errors;
  void set(const std::string& key, const std::string& json);
  void error(const std::string& section, const std::string& msg);
  void write() const;
};

struct Options {
  std::string json;
  int64_t batch = 16;  // model batch (sequences of T tokens); halved until model_create fits
  int steps = 6;       // timed training steps per mode
  int samples = 10;    // timed samples per kernel measurement
  std::set<std::string> sections = {"copy", "gather", "gemm", "ffn", "model", "pipeline"};
};

// dense (no sparsity) tensor-core peaks of the device, from NVIDIA's datasheets
struct Peak {
  double bf16, tf32;
  std::string source;
};
Peak peak_for(const std::string& name);
const char* mode_name(hmc::GemmMode m);
// FLOPs of one training token: 6 x (matmul parameters incl. the tied classifier and the fetched
// memory units) + 3 x causal attention forward (lib/model/config.ts trainFlopsPerToken + memories)
double train_flops_per_token(const hmc::ModelDims& d, int64_t Lm, int64_t R);

// ---- device fills (grid-stride; the values depend only on (seed, i), not on the launch shape) -----
void fill_normal(float* p, int64_t n, uint64_t seed, float scale, cudaStream_t s);
void fill_const(float* p, int64_t n, float v, cudaStream_t s);
// Model parameters as a fresh model: normals * 0.02, norm gains 1.
void fill_params(float* p, const hmc::ModelDims& d, cudaStream_t s);

// Copies ordered on the bench's non-blocking stream, then waited for: a plain cudaMemcpy runs on the
// legacy stream, which a non-blocking stream does not synchronise with (a pageable H2D cudaMemcpy
// may even return before its DMA lands), so it could race with the fills and the timed calls.
template <typename T>
void upload(T* dst, const T* src, size_t count, cudaStream_t s) {
  CUDA_CHECK(cudaMemcpyAsync(dst, src, count * sizeof(T), cudaMemcpyHostToDevice, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
}
template <typename T>
void download(T* dst, const T* src, size_t count, cudaStream_t s) {
  CUDA_CHECK(cudaMemcpyAsync(dst, src, count * sizeof(T), cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
}

// ---- the device-resident memory bank of the gather, ffn and model sections ------------------------
struct Bank {
  DevBuf<float> level[kLevels];
  std::vector<const float*> level_ptrs;
  DevBuf<const float*> level_ptrs_dev;
  hmc::MemoryLayoutDesc L{};
  explicit Bank(cudaStream_t s);
  int64_t block_floats(int64_t l) const { return kLm * 3 * kLevelRows[l] * kC; }
  int64_t slot_floats() const { return kLm * 3 * kR * kC; }
  int64_t total_floats() const;
  // (S, kLevels) random node per level (independent per level: the gather does not care about the tree)
  std::vector<int32_t> random_paths(int64_t S, uint64_t seed) const;
};

// One training batch on the device: B random sequences of T tokens / targets, positions t, and
// sequence b using memory slot b.
struct DeviceBatch {
  DevBuf<int32_t> tokens, targets, pos;
  std::vector<hm::MemoryGroup> groups;
  DeviceBatch(const hmc::ModelDims& d, int64_t B, uint64_t seed, cudaStream_t s);
  // the model's view, with the fetched blocks and their gradients (device)
  hmc::ModelBatch view(int64_t B, int64_t T, const float* fetched, float* dfetched) const {
    return hmc::ModelBatch{tokens.p, targets.p, nullptr, pos.p, B, T, fetched, dfetched, groups.data(),
                           (int64_t)groups.size()};
  }
};

// A model_create that halves the batch until it fits (from o.batch); throws when nothing fits.
using ModelPtr = std::unique_ptr<hmc::Model, void (*)(hmc::Model*)>;
ModelPtr create_model_fitting(const hmc::ModelDims& d, const hmc::ModelMemory& mem, int64_t batch, float* params,
                                 float* grads, hmc::GemmMode mode, int64_t* batch_out);

// ---- the sections -----------------------------------------------------------------------------------
//   copy      cudaMemcpyAsync device-to-device of the gather's bytes (the ceiling the gather is held to)
//   gather    hmc::memory_gather of S slots from a device-resident bank of a few GB, random paths
//   gemm      hmc::gemm in TF32 and BF16 at three transformer shapes, TFLOP/s
//   ffn       hmc::ffn_memory_forward (+ backward): gather + all Lm layers forward, one layer fwd, fwd+bwd
//   model     the ~110M anchor with memories on all 12 layers, a training step with everything on the
//             device (gather, fwd+bwd, grad norm, dense AdamW, scatter-add, sparse AdamW): tokens/s and
//             MFU in BF16 and TF32; then the next batch's fetched blocks copied H2D on a second stream
//             while a step runs, against the same copy done before the step
//   pipeline  the step `train --backend cuda` runs: the bank in host memory, gathered on the host,
//             uploaded, fwd+bwd on the device, dfetched downloaded, scatter-add and sparse AdamW on the
//             host; phase by phase, serial, then with the next batch's gather + upload overlapped
void section_copy(Report& rep, const Options& o, cudaStream_t s, const Bank& bank);
void section_gather(Report& rep, const Options& o, cudaStream_t s, const Bank& bank);
void section_gemm(Report& rep, const Options& o, cudaStream_t s);
void section_ffn(Report& rep, const Options& o, cudaStream_t s, const Bank& bank);
void section_model(Report& rep, const Options& o, cudaStream_t s, const Bank& bank, const Peak& peak);
void section_pipeline(Report& rep, const Options& o, cudaStream_t s);

}  // namespace hmbench
