// gather.cu — section "gather": hmc::memory_gather of S slots from the device-resident bank, random
// paths, in GB/s (read + write); spot-checked against the bank.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench.h"

namespace hmbench {

void section_gather(Report& rep, const Options& o, cudaStream_t s, const Bank& bank) {
  const int64_t S = kSlots;
  DevBuf<float> fetched((size_t)(S * bank.slot_floats()));
  const auto paths = bank.random_paths(S, 11);
  DevBuf<int32_t> paths_dev(paths.size());
  upload(paths_dev.p, paths.data(), paths.size(), s);
  Stats st = hmdev::time_calls(
      [&] { HMC_CHECK(hmc::memory_gather(fetched.p, bank.level_ptrs_dev.p, bank.L, paths_dev.p, kLevels, S, s)); }, s, 3,
      o.samples);
  // spot check: slot 0, layer 0, gate row 0 of each level equals the bank's row
  for (int64_t l = 0; l < kLevels; l++) {
    std::vector<float> got((size_t)kC), want((size_t)kC);
    const float* src = bank.level[l].p + (int64_t)paths[(size_t)l] * bank.block_floats(l);  // layer 0, gate, row 0
    const float* dst = fetched.p + bank.L.row_offset[l] * kC;
    download(got.data(), dst, (size_t)kC, s);
    download(want.data(), src, (size_t)kC, s);
    if (hmdev::validate(got.data(), want.data(), (size_t)kC, 0, 0).bad)
      rep.error("gather", "spot check: slot 0 level " + std::to_string(l) + " row 0 differs from the bank");
  }
  const double bytes = (double)fetched.bytes();
  const double gbps = 2.0 * bytes / (st.med * 1e-3) / 1e9;
  std::printf("gather S=%lld slots, %.1f MB fetched from a %.2f GB bank: %.3f ms, %.0f GB/s (read+write)\n",
              (long long)S, bytes / 1e6, bank.total_floats() * 4e-9, st.med, gbps);
  rep.set("gather", jobj({{"slots", jnum((double)S)}, {"bytes", jnum(bytes)}, {"bank_bytes", jnum(bank.total_floats() * 4.0)},
                          {"time", jstats(st)}, {"gbps", jnum(gbps)}}));
}

}  // namespace hmbench
