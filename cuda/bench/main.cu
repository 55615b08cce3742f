// main.cu — hiermem_cuda_bench: times the CUDA backend's kernels and training steps on the GPU machine
// (run by bench/gpu.sh; the cuBLAS references come from bench/peers/torch_gpu.py). No CPU twin:
// correctness is the harness's job; the sections only spot-check outputs and the loss so that a
// fast-but-wrong kernel is visible. Sections: bench.h. Each runs in its own try/catch; a sticky
// CUDA error stops the remaining ones. Timing: CUDA events, warm-up calls first, then samples of
// back-to-back calls; median, min and max per call. JSON to --json (rewritten after every section).
// Exit: 0, 1 (a section failed), 2 (usage), 3 (errors reported, context alive), 77 (no GPU).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench.h"

using namespace hmbench;

namespace {

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
                  " [--only copy,gather,gemm,ffn,model,pipeline]\n");
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
    hmdev::Stream stream;
    const cudaStream_t s = stream.s;
    // the device bank only when a section uses it (a few GB)
    std::unique_ptr<Bank> bank_ptr;
    const bool need_bank = o.sections.count("copy") || o.sections.count("gather") || o.sections.count("ffn") ||
                           o.sections.count("model");
    if (need_bank) bank_ptr.reset(new Bank(s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    struct Sec {
      const char* name;
      std::function<void()> run;
    };
    const std::vector<Sec> secs = {
        {"copy", [&] { section_copy(rep, o, s, *bank_ptr); }},
        {"gather", [&] { section_gather(rep, o, s, *bank_ptr); }},
        {"gemm", [&] { section_gemm(rep, o, s); }},
        {"ffn", [&] { section_ffn(rep, o, s, *bank_ptr); }},
        {"model", [&] { section_model(rep, o, s, *bank_ptr, peak); }},
        {"pipeline", [&] { section_pipeline(rep, o, s); }},
    };
    for (const Sec& sec : secs) {
      if (!o.sections.count(sec.name)) continue;
      const double t0 = hmdev::now_ms();
      try {
        sec.run();
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
      std::printf("  (%s: %.1f s)\n", sec.name, (hmdev::now_ms() - t0) / 1e3);
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
