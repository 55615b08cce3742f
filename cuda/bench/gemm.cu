// gemm.cu — section "gemm": hmc::gemm in TF32 and BF16 at three transformer shapes, TFLOP/s, with a
// sampled float64 check of each output (bench/peers/torch_gpu.py times cuBLAS at the same shapes).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench.h"

namespace hmbench {

namespace {
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
}  // namespace

void section_gemm(Report& rep, const Options& o, cudaStream_t s) {
  std::string rows = "[";
  bool first = true;
  for (const GemmShape& g : kGemmShapes) {
    // A stored (M,K) or (K,M) if ta; B stored (K,N) or (N,K) if tb; C (M,N)
    const int64_t lda = g.ta ? g.M : g.K, ldb = g.tb ? g.K : g.N, ldc = g.N;
    const int64_t na = g.M * g.K, nb = g.K * g.N, nc = g.M * g.N;
    DevBuf<float> A((size_t)na), B((size_t)nb), C((size_t)nc);
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
        st = hmdev::time_calls([&] { HMC_CHECK(hmc::gemm(mode, g.ta, g.tb, g.M, g.N, g.K, 1.f, A.p, lda, B.p, ldb, 0.f, C.p, ldc, s)); },
                        s, 2, o.samples);
        // 64 sampled elements against a float64 product of the same inputs: normwise relative error
        hmdev::Rng r(33);
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

}  // namespace hmbench
