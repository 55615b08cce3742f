// model.cu — section "model": the ~110M-parameter anchor (V 32768, C 768, L 12, H 12, hd 64, F 2048,
// T 1024) with FFN memories R = 256+64+16 = 336 on all 12 layers (the paper's 160M levels), one
// training step with everything on the device (gather from the device bank, fwd+bwd, grad norm,
// dense AdamW, scatter-add, sparse AdamW): tokens/s and MFU, in BF16 and TF32; then the host-tier
// overlap: the next batch's fetched blocks copied H2D on a second stream while a step runs, against
// the same copy done before the step. `train --backend cuda` keeps the bank on the host instead:
// pipeline.cu times that step.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "anchor_model.h"  // hm::anchor_param_count
#include "bench.h"

namespace hmbench {

void section_model(Report& rep, const Options& o, cudaStream_t s, const Bank& bank, const Peak& peak) {
  const hmc::ModelDims d = bench_dims();
  const int64_t P = hm::anchor_param_count(d);
  DevBuf<float> params((size_t)P), grads((size_t)P), adam_m((size_t)P), adam_v((size_t)P);
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
      fill_params(params.p, d, s);  // zero optimizer state:
      CUDA_CHECK(cudaMemsetAsync(grads.p, 0, grads.bytes(), s));
      CUDA_CHECK(cudaMemsetAsync(adam_m.p, 0, adam_m.bytes(), s));
      CUDA_CHECK(cudaMemsetAsync(adam_v.p, 0, adam_v.bytes(), s));
      CUDA_CHECK(cudaStreamSynchronize(s));
      int64_t B = 0;
      const ModelPtr model = create_model_fitting(d, bench_memory(), o.batch, params.p, grads.p, mode, &B);
      const int64_t N = B * d.T, S = B;

      const DeviceBatch db(d, B, 77, s);
      const int64_t slot_floats = bank.slot_floats();
      DevBuf<float> fetched((size_t)(S * slot_floats)), dfetched((size_t)(S * slot_floats));
      CUDA_CHECK(cudaMemsetAsync(fetched.p, 0, fetched.bytes(), s));

      // memory blocks of the batch: unique (level, node), their gradients and compact AdamW state
      const auto paths = bank.random_paths(S, 13);
      DevBuf<int32_t> paths_d(paths.size());
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
      DevBuf<float> dblocks((size_t)dfloats), blk_m((size_t)dfloats), blk_v((size_t)dfloats);
      CUDA_CHECK(cudaMemsetAsync(blk_m.p, 0, blk_m.bytes(), s));
      CUDA_CHECK(cudaMemsetAsync(blk_v.p, 0, blk_v.bytes(), s));
      DevBuf<hmc::BlockRef> refs_d(refs.size());
      upload(refs_d.p, refs.data(), refs.size(), s);
      const hm::AdamWConsts args = hm::adamw_consts(hm::AdamWHyper{1e-4, 0.9, 0.95, 1e-8, 1, 1.0}, 0.1f);
      std::vector<hmc::SparseAdamBlock> sblocks;
      for (auto& ref : refs) {
        // the bank's weights are updated in place (the bench does not care that they drift)
        float* w = bank.level[ref.level].p + (int64_t)ref.node * bank.block_floats(ref.level);
        sblocks.push_back({w, blk_m.p + ref.offset, blk_v.p + ref.offset, dblocks.p + ref.offset,
                           bank.block_floats(ref.level), args.ibc1, args.ibc2});
      }
      DevBuf<hmc::SparseAdamBlock> sblocks_d(sblocks.size());
      upload(sblocks_d.p, sblocks.data(), sblocks.size(), s);
      DevBuf<double> norm_scratch((size_t)std::max<int64_t>(hmc::global_norm_scratch_doubles(P), 1));
      DevBuf<double> norm_out(1);
      const std::string parts = "gather fwd_bwd grad_norm adamw scatter_add sparse_adamw";

      const hmc::ModelBatch batch = db.view(B, d.T, fetched.p, dfetched.p);

      hmdev::Event e0, e1, e2, e3;
      double loss = NAN, first_loss = NAN;
      // one training step on `st`; fills the events around its three phases
      auto step = [&](cudaStream_t st) {
        CUDA_CHECK(cudaEventRecord(e0, st));
        HMC_CHECK(hmc::memory_gather(fetched.p, bank.level_ptrs_dev.p, bank.L, paths_d.p, kLevels, S, st));
        CUDA_CHECK(cudaMemsetAsync(dfetched.p, 0, dfetched.bytes(), st));
        CUDA_CHECK(cudaMemsetAsync(grads.p, 0, grads.bytes(), st));
        CUDA_CHECK(cudaEventRecord(e1, st));
        HMC_CHECK(hmc::model_forward_backward(model.get(), batch, &loss, st));  // synchronises st
        CUDA_CHECK(cudaEventRecord(e2, st));
        HMC_CHECK(hmc::global_sumsq(norm_out.p, grads.p, P, norm_scratch.p, st));
        HMC_CHECK(hmc::adamw_update(params.p, grads.p, adam_m.p, adam_v.p, P, args, st));
        CUDA_CHECK(cudaMemsetAsync(dblocks.p, 0, dblocks.bytes(), st));
        HMC_CHECK(hmc::memory_scatter_add(dblocks.p, refs_d.p, U, bank.L, dfetched.p, paths_d.p, kLevels, S, st));
        HMC_CHECK(hmc::memory_adamw(sblocks_d.p, U, args, st));
        CUDA_CHECK(cudaEventRecord(e3, st));
        CUDA_CHECK(cudaEventSynchronize(e3));
      };
      for (int i = 0; i < 2; i++) {  // warm-up (first call allocates the model's scratch)
        step(s);
        if (i == 0) first_loss = loss;
      }
      std::vector<double> t_step, t_fb, t_rest;
      const double wall0 = hmdev::now_ms();
      for (int i = 0; i < o.steps; i++) {
        step(s);
        t_step.push_back(hmdev::elapsed_ms(e0, e3));
        t_fb.push_back(hmdev::elapsed_ms(e1, e2));
        t_rest.push_back(hmdev::elapsed_ms(e0, e1) + hmdev::elapsed_ms(e2, e3));
      }
      const double wall_per_step = (hmdev::now_ms() - wall0) / std::max(1, o.steps);
      const Stats ss = hmdev::stats_of(t_step), sf = hmdev::stats_of(t_fb), sr = hmdev::stats_of(t_rest);
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
        CUDA_CHECK(cudaMallocHost((void**)&host, bytes));
        struct FreeHost {
          float* p;
          ~FreeHost() { cudaFreeHost(p); }
        } free_host{host};
        std::memset(host, 0, bytes);
        DevBuf<float> next((size_t)(S * slot_floats));
        hmdev::Stream s2;
        Stats copy = hmdev::time_calls([&] { CUDA_CHECK(cudaMemcpyAsync(next.p, host, bytes, cudaMemcpyHostToDevice, s2.s)); }, s2.s, 1,
                                5, 0.0);
        std::vector<double> serial, overlapped;
        for (int i = 0; i < 3; i++) {
          CUDA_CHECK(cudaDeviceSynchronize());
          double t0 = hmdev::now_ms();
          CUDA_CHECK(cudaMemcpyAsync(next.p, host, bytes, cudaMemcpyHostToDevice, s2.s));
          CUDA_CHECK(cudaStreamSynchronize(s2.s));
          step(s);
          serial.push_back(hmdev::now_ms() - t0);
          CUDA_CHECK(cudaDeviceSynchronize());
          t0 = hmdev::now_ms();
          CUDA_CHECK(cudaMemcpyAsync(next.p, host, bytes, cudaMemcpyHostToDevice, s2.s));
          step(s);
          CUDA_CHECK(cudaStreamSynchronize(s2.s));
          overlapped.push_back(hmdev::now_ms() - t0);
        }
        const Stats sser = hmdev::stats_of(serial), sov = hmdev::stats_of(overlapped);
        const double hidden = std::min(1.0, std::max(0.0, (sser.med - sov.med) / copy.med));
        const double h2d_gbps = (double)bytes / (copy.med * 1e-3) / 1e9;
        std::printf("overlap H2D %.1f MB: copy %.2f ms (%.1f GB/s); step+copy serial %.2f ms, overlapped %.2f ms:"
                    " %.0f%% of the copy hidden\n",
                    bytes / 1e6, copy.med, h2d_gbps, sser.med, sov.med, 100 * hidden);
        rep.set("overlap", jobj({{"bytes", jnum((double)bytes)}, {"copy", jstats(copy)}, {"h2d_gbps", jnum(h2d_gbps)},
                                 {"serial_wall", jstats(sser)}, {"overlapped_wall", jstats(sov)},
                                 {"step_alone", jstats(ss)}, {"hidden_fraction", jnum(hidden)}}));
      }
    } catch (const std::exception& e) {
      rep.error(std::string("model ") + mn, e.what());
      if (cudaDeviceSynchronize() != cudaSuccess) throw;
    }
  }
}

}  // namespace hmbench
