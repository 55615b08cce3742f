// pipeline.cu — section "pipeline": the training step `train --backend cuda` runs, where the bank
// stays in host memory (lib/memory/memory-model.ts trainStep through binding/cuda_model.cc):
//   host gather (cpp/ kernels into pageable memory, as the JS Float32Array) -> upload fetched and
//   the zeroed dfetched -> fwd+bwd on the device -> dfetched downloaded -> host block gradients
//   (unique blocks + scatter-add) and their norm -> device gradient norm + dense AdamW with the
//   joint norm -> host row-sparse AdamW on the bank.
// Timed phase by phase (host wall clock; each device phase ends synchronised, as the binding's
// calls do), in BF16 with the model section's anchor and memories. Then the same step with the next
// batch's gather + upload (pinned staging, second stream) on a second host thread while the device
// runs this one, joined before the host sparse AdamW (which writes the bank the gather reads): what
// overlapping would buy. That gather reads blocks this step's sparse AdamW then updates, so a real
// pipeline would have to re-fetch those: it is a bound.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "anchor_model.h"
#include "bench.h"
#include "kernels/adamw.h"
#include "kernels/memory.h"
#include "memory/bank.h"

namespace hmbench {

namespace {

// The host half of one batch's memories.
struct HostBatch {
  std::vector<int32_t> paths;       // (S, p)
  std::vector<hm::BlockId> blocks;  // unique, sorted
};

// hm's gather as the bank binding runs it: lazy initialisation in the bank, then the copy.
void host_gather(float* fetched, hm::MemoryBank& bank, const HostBatch& hb, int64_t S) {
  const hm::GatherSources src = bank.prepare_gather(hb.blocks);
  hm::memory_gather(fetched, bank.layout(), hb.blocks, src.weights.data(), hb.paths.data(), S);
}

}  // namespace

void section_pipeline(Report& rep, const Options& o, cudaStream_t s) {
  const hmc::ModelDims d = bench_dims();
  const hmc::GemmMode mode = hmc::GemmMode::BF16;

  // the host bank: the model section's levels with the full tree (k = 16: 16, 256, 4096 nodes) and
  // AdamW state; calloc'ed, so only the blocks the batches touch become resident
  hm::MemoryLayout L;
  L.k = 16;
  L.p = kLevels;
  L.Lm = kLm;
  L.d = kC;
  L.r.assign(kLevelRows, kLevelRows + kLevels);
  L.optimizer = true;
  std::string err;
  auto bank = hm::MemoryBank::create_ram(L, 7, &err);
  if (!bank) throw std::runtime_error("host bank: " + err);

  const int64_t P = hm::anchor_param_count(d);
  DevBuf<float> params((size_t)P), grads((size_t)P), adam_m((size_t)P), adam_v((size_t)P);
  fill_params(params.p, d, s);
  CUDA_CHECK(cudaStreamSynchronize(s));
  int64_t B = 0;
  const ModelPtr model = create_model_fitting(d, bench_memory(), o.batch, params.p, grads.p, mode, &B);
  const int64_t N = B * d.T, S = B, slot = L.slot_floats();

  // a few batches of tree paths (sequence b uses slot b), cycled: the warm-up initialises every
  // block they touch, so the timed steps measure the steady state, not first-touch initialisation
  hmdev::Rng r(91);
  std::vector<HostBatch> batches(4);
  for (auto& hb : batches) {
    hb.paths.resize((size_t)(S * L.p));
    for (int64_t sl = 0; sl < S; sl++) {
      int64_t node = 0;
      for (int64_t l = 0; l < L.p; l++) {
        node = node * L.k + r.below(L.k);
        hb.paths[(size_t)(sl * L.p + l)] = (int32_t)node;
      }
    }
    hb.blocks = hm::memory_unique_blocks(L, hb.paths.data(), S);
  }
  const DeviceBatch db(d, B, 77, s);
  DevBuf<float> fetched_d[2] = {DevBuf<float>((size_t)(S * slot)), DevBuf<float>((size_t)(S * slot))};
  DevBuf<float> dfetched_d((size_t)(S * slot));
  DevBuf<double> norm_scratch((size_t)std::max<int64_t>(hmc::global_norm_scratch_doubles(P), 1)), norm_out(1);
  std::vector<float> fetched((size_t)(S * slot)), dfetched((size_t)(S * slot));  // pageable, as JS arrays
  float* pinned[2] = {nullptr, nullptr};  // the overlapped variant's staging
  for (auto& p : pinned) CUDA_CHECK(cudaMallocHost((void**)&p, fetched.size() * sizeof(float)));
  struct FreeHost {
    float** p;
    ~FreeHost() {
      for (int i = 0; i < 2; i++) cudaFreeHost(p[i]);
    }
  } free_host{pinned};
  hmdev::Stream s2;
  const hm::AdamWHyper hyper{1e-4, 0.9, 0.95, 1e-8, 1, 1.0};
  const double clip = 1.0;
  const size_t fbytes = fetched.size() * sizeof(float);

  // phases of one step, in ms
  enum { kGather, kUpload, kFwdBwd, kDownload, kBlockGrads, kDense, kSparse, kTotal, kPhases };
  const char* names[kPhases] = {"host_gather", "upload", "fwd_bwd", "download_dfetched", "host_block_grads",
                                "device_norm_adamw", "host_sparse_adamw", "step"};
  double loss = NAN;
  // the step after the upload: everything from fwd+bwd on; t[] gets its phases; before_sparse runs
  // right before the host sparse AdamW
  auto rest_of_step = [&](const HostBatch& hb, const float* fetched_dev, double* t,
                          const std::function<void()>& before_sparse) {
    const hmc::ModelBatch mb = db.view(B, d.T, fetched_dev, dfetched_d.p);
    double t0 = hmdev::now_ms();
    CUDA_CHECK(cudaMemsetAsync(grads.p, 0, grads.bytes(), s));
    HMC_CHECK(hmc::model_forward_backward(model.get(), mb, &loss, s));  // synchronises s
    double t1 = hmdev::now_ms();
    t[kFwdBwd] = t1 - t0;
    download(dfetched.data(), dfetched_d.p, dfetched.size(), s);
    t0 = hmdev::now_ms();
    t[kDownload] = t0 - t1;
    std::vector<float> dblocks((size_t)hm::memory_blocks_floats(L, hb.blocks), 0.f);
    hm::memory_scatter_add(dblocks.data(), L, hb.blocks, dfetched.data(), hb.paths.data(), S);
    const double mem_norm = hm::global_norm(dblocks.data(), (int64_t)dblocks.size());
    t1 = hmdev::now_ms();
    t[kBlockGrads] = t1 - t0;
    double sumsq = 0;
    HMC_CHECK(hmc::global_sumsq(norm_out.p, grads.p, P, norm_scratch.p, s));
    download(&sumsq, norm_out.p, 1, s);
    const double norm = std::sqrt(mem_norm * mem_norm + sumsq);
    hm::AdamWHyper h = hyper;
    h.grad_scale = norm > clip ? clip / norm : 1.0;
    HMC_CHECK(hmc::adamw_update(params.p, grads.p, adam_m.p, adam_v.p, P, hm::adamw_consts(h, 0.1f), s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    t0 = hmdev::now_ms();
    t[kDense] = t0 - t1;
    if (before_sparse) before_sparse();
    hm::memory_adamw(*bank, hb.blocks, dblocks.data(), 1e-3f, h);
    t[kSparse] = hmdev::now_ms() - t0;
  };
  // serial, as the binding runs it today: pageable gather buffer, uploads on the step's stream
  auto serial_step = [&](const HostBatch& hb, double* t) {
    const double t0 = hmdev::now_ms();
    host_gather(fetched.data(), *bank, hb, S);
    const double t1 = hmdev::now_ms();
    t[kGather] = t1 - t0;
    CUDA_CHECK(cudaMemcpyAsync(fetched_d[0].p, fetched.data(), fbytes, cudaMemcpyHostToDevice, s));
    std::fill(dfetched.begin(), dfetched.end(), 0.f);  // dfetched is ADDED to: the JS side passes zeros
    CUDA_CHECK(cudaMemcpyAsync(dfetched_d.p, dfetched.data(), fbytes, cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    t[kUpload] = hmdev::now_ms() - t1;
    rest_of_step(hb, fetched_d[0].p, t, nullptr);
    t[kTotal] = hmdev::now_ms() - t0;
  };

  double t[kPhases];
  for (size_t i = 0; i < batches.size() + 1; i++) serial_step(batches[i % batches.size()], t);  // warm-up
  const double first_loss = loss;
  std::vector<double> samples[kPhases];
  for (int i = 0; i < o.steps; i++) {
    serial_step(batches[(size_t)i % batches.size()], t);
    for (int k = 0; k < kPhases; k++) samples[k].push_back(t[k]);
  }
  std::vector<std::pair<std::string, std::string>> out = {
      {"batch", jnum((double)B)}, {"tokens_per_step", jnum((double)N)}, {"mode", jstr(mode_name(mode))},
      {"fetched_bytes", jnum((double)fbytes)}, {"bank_bytes", jnum((double)bank->bytes())}};
  std::vector<std::pair<std::string, std::string>> phases;
  std::printf("pipeline %s B=%lld, %.1f MB fetched per step from a host bank:", mode_name(mode), (long long)B,
              fbytes / 1e6);
  Stats step_stats;
  for (int k = 0; k < kPhases; k++) {
    const Stats st = hmdev::stats_of(samples[k]);
    if (k == kTotal) step_stats = st;
    phases.push_back({names[k], jstats(st)});
    std::printf(" %s %.2f", names[k], st.med);
  }
  std::printf(" ms; %.0f tokens/s\n", (double)N / (step_stats.med * 1e-3));
  out.push_back({"serial", jobj(phases)});
  out.push_back({"serial_tokens_per_s", jnum((double)N / (step_stats.med * 1e-3))});
  rep.set("pipeline", jobj(out));

  // overlapped: batch i+1's gather into pinned memory and its upload on s2, from a second thread,
  // while this thread runs batch i's step from the other device buffer
  auto prefetch = [&](const HostBatch& hb, int buf) {
    host_gather(pinned[buf], *bank, hb, S);
    CUDA_CHECK(cudaMemcpyAsync(fetched_d[buf].p, pinned[buf], fbytes, cudaMemcpyHostToDevice, s2));
    CUDA_CHECK(cudaStreamSynchronize(s2));
  };
  prefetch(batches[0], 0);
  std::vector<double> overlapped;
  for (int i = 0; i < o.steps; i++) {
    const int cur = i % 2;
    const double t0 = hmdev::now_ms();
    std::string thread_error;
    std::thread next([&] {
      try {
        prefetch(batches[(size_t)(i + 1) % batches.size()], 1 - cur);
      } catch (const std::exception& e) {
        thread_error = e.what();
      }
    });
    CUDA_CHECK(cudaMemsetAsync(dfetched_d.p, 0, dfetched_d.bytes(), s));
    try {
      rest_of_step(batches[(size_t)i % batches.size()], fetched_d[cur].p, t, [&] { next.join(); });
    } catch (...) {
      if (next.joinable()) next.join();
      throw;
    }
    if (!thread_error.empty()) throw std::runtime_error("prefetch: " + thread_error);
    overlapped.push_back(hmdev::now_ms() - t0);
  }
  const Stats ov = hmdev::stats_of(overlapped);
  const bool loss_ok = std::isfinite(first_loss) && std::fabs(first_loss - std::log((double)d.V)) < 1.0;
  std::printf("pipeline overlapped (next gather + upload on a second thread / stream): step %.2f ms, %.0f tokens/s;"
              " loss %.4f first, %.4f last%s\n",
              ov.med, (double)N / (ov.med * 1e-3), first_loss, loss, loss_ok ? "" : "  LOSS SUSPECT");
  if (!loss_ok) rep.error("pipeline", "first loss " + jnum(first_loss) + " is not near ln V");
  out.push_back({"overlapped_step", jstats(ov)});
  out.push_back({"overlapped_tokens_per_s", jnum((double)N / (ov.med * 1e-3))});
  out.push_back({"first_loss", jnum(first_loss)});
  out.push_back({"last_loss", jnum(loss)});
  rep.set("pipeline", jobj(out));
}

}  // namespace hmbench
