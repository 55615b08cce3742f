// copy.cu — section "copy": cudaMemcpyAsync device-to-device of the gather's bytes, the ceiling the
// gather is held to.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench.h"

namespace hmbench {

void section_copy(Report& rep, const Options& o, cudaStream_t s, const Bank& bank) {
  const int64_t floats = kSlots * bank.slot_floats();
  DevBuf<float> src((size_t)floats), dst((size_t)floats);
  fill_normal(src.p, floats, 7, 1.f, s);
  const size_t bytes = (size_t)floats * sizeof(float);
  Stats st = hmdev::time_calls([&] { CUDA_CHECK(cudaMemcpyAsync(dst.p, src.p, bytes, cudaMemcpyDeviceToDevice, s)); }, s, 3, o.samples);
  const double gbps = 2.0 * (double)bytes / (st.med * 1e-3) / 1e9;  // read + write
  std::printf("copy   cudaMemcpy D2D %.1f MB: %.3f ms, %.0f GB/s (read+write)\n", bytes / 1e6, st.med, gbps);
  rep.set("copy_d2d", jobj({{"bytes", jnum((double)bytes)}, {"time", jstats(st)}, {"gbps", jnum(gbps)},
                            {"gbps_counts", jstr("bytes read + bytes written")}}));
}

}  // namespace hmbench
