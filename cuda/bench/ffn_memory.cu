// ffn_memory.cu — section "ffn": hmc::ffn_memory_forward / backward on fetched blocks: the gather plus all
// Lm layers forward, one layer forward, one layer forward + backward.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench.h"

namespace hmbench {

// FFN memory: x (S*T, C) rows, sequence s uses slot s; fetched (S, Lm, 3, R, C) from the bank.
void section_ffn(Report& rep, const Options& o, cudaStream_t s, const Bank& bank) {
  const int64_t S = kSlots, N = S * kT, C = kC, R = kR;
  const int64_t slot_stride = bank.slot_floats();
  DevBuf<float> fetched((size_t)(S * slot_stride)), dfetched((size_t)(S * slot_stride));
  DevBuf<float> x((size_t)(N * C)), y((size_t)(N * C)), dx((size_t)(N * C)), dy((size_t)(N * C));
  DevBuf<float> gate_m((size_t)(N * R)), up_m((size_t)(N * R));
  fill_normal(x.p, N * C, 41, 1.f, s);
  fill_normal(dy.p, N * C, 42, 1.f, s);
  CUDA_CHECK(cudaMemsetAsync(y.p, 0, y.bytes(), s));
  CUDA_CHECK(cudaMemsetAsync(dx.p, 0, dx.bytes(), s));
  CUDA_CHECK(cudaMemsetAsync(dfetched.p, 0, dfetched.bytes(), s));
  const auto paths = bank.random_paths(S, 12);
  DevBuf<int32_t> paths_dev(paths.size());
  upload(paths_dev.p, paths.data(), paths.size(), s);
  std::vector<hmc::MemoryGroup> groups;
  for (int64_t b = 0; b < S; b++) groups.push_back({b * kT, kT, b});
  DevBuf<hmc::MemoryGroup> groups_dev(groups.size());
  upload(groups_dev.p, groups.data(), groups.size(), s);
  HMC_CHECK(hmc::memory_gather(fetched.p, bank.level_ptrs_dev.p, bank.L, paths_dev.p, kLevels, S, s));
  DevBuf<float> scratch((size_t)hmc::ffn_memory_backward_scratch_floats(N, R));

  std::vector<std::pair<std::string, std::string>> out = {
      {"slots", jnum((double)S)}, {"T", jnum((double)kT)}, {"C", jnum((double)C)}, {"R", jnum((double)R)},
      {"Lm", jnum((double)kLm)}};
  for (hmc::GemmMode mode : {hmc::GemmMode::BF16, hmc::GemmMode::TF32}) {
    std::vector<std::pair<std::string, std::string>> m;
    // (a) the memory part of a forward pass: gather the batch's paths, then every memory layer's units
    Stats all = hmdev::time_calls(
        [&] {
          HMC_CHECK(hmc::memory_gather(fetched.p, bank.level_ptrs_dev.p, bank.L, paths_dev.p, kLevels, S, s));
          for (int64_t j = 0; j < kLm; j++)
            HMC_CHECK(hmc::ffn_memory_forward(mode, y.p, gate_m.p, up_m.p, x.p, fetched.p + j * 3 * R * C, slot_stride,
                                       groups_dev.p, S, N, C, R, s));
        },
        s, 2, o.samples);
    // (b) one layer's forward, weights already fetched
    Stats one = hmdev::time_calls(
        [&] {
          HMC_CHECK(hmc::ffn_memory_forward(mode, y.p, gate_m.p, up_m.p, x.p, fetched.p, slot_stride, groups_dev.p, S, N, C, R, s));
        },
        s, 2, o.samples);
    m.push_back({"gather_fwd_all_layers", jstats(all)});
    m.push_back({"fwd_one_layer", jstats(one)});
    // FLOPs of one layer's forward: 3 products of (N, C) x (C, R)
    const double fl = 2.0 * 3 * N * C * R;
    std::printf("ffn    %s gather + %lld layers fwd: %.3f ms; one layer fwd %.3f ms (%.1f TFLOP/s)\n", mode_name(mode),
                (long long)kLm, all.med, one.med, fl / (one.med * 1e-3) / 1e12);
    Stats fb = hmdev::time_calls(
        [&] {
          HMC_CHECK(hmc::ffn_memory_forward(mode, y.p, gate_m.p, up_m.p, x.p, fetched.p, slot_stride, groups_dev.p, S, N, C,
                                     R, s));
          HMC_CHECK(hmc::ffn_memory_backward(mode, dx.p, dfetched.p, dy.p, x.p, gate_m.p, up_m.p, fetched.p, slot_stride,
                                      groups_dev.p, S, N, C, R, scratch.p, s));
        },
        s, 2, o.samples);
    m.push_back({"fwd_bwd_one_layer", jstats(fb)});
    std::printf("ffn    %s one layer fwd+bwd %.3f ms (%.1f TFLOP/s)\n", mode_name(mode), fb.med,
                3 * fl / (fb.med * 1e-3) / 1e12);
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

}  // namespace hmbench
