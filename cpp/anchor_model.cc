#include "anchor_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/attention.h"
#include "kernels/classifier.h"
#include "kernels/embedding.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/ffn.h"
#include "kernels/linear.h"
#include "parallel.h"

namespace hm {

std::vector<TensorSlot> anchor_layout(const ModelDims& d) {
  std::vector<TensorSlot> out;
  int64_t off = 0;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, bool decay) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    out.push_back({name, shape, off, n, decay});
    off += n;
  };
  const int64_t C = d.C, D = d.D(), F = d.F, W = d.Wqkv();
  add("tok_embeddings.weight", {d.V, C}, true);
  for (int64_t l = 0; l < d.L; l++) {
    const std::string p = "layers." + std::to_string(l) + ".";
    add(p + "attn_norm.weight", {C}, false);
    add(p + "attn.wqkv", {W, C}, true);  // rows [q heads | k heads | v heads]
    if (d.qkv_bias) add(p + "attn.bqkv", {W}, false);
    if (d.qk_norm) {
      add(p + "attn.q_norm.weight", {D}, false);
      add(p + "attn.k_norm.weight", {d.Dkv()}, false);
    }
    add(p + "attn.wo", {C, D}, true);
    add(p + "ffn_norm.weight", {C}, false);
    add(p + "ffn.w1", {F, C}, true);
    add(p + "ffn.w2", {F, C}, true);
    add(p + "ffn.w3", {C, F}, true);
  }
  add("final_norm.weight", {C}, false);
  if (!d.tie_embeddings) add("lm_head.weight", {d.V, C}, true);
  return out;
}

int64_t anchor_param_count(const ModelDims& d) {
  auto l = anchor_layout(d);
  return l.back().offset + l.back().size;
}

AnchorParams anchor_params_view(const ModelDims& d, float* base) {
  auto slots = anchor_layout(d);
  AnchorParams p;
  size_t i = 0;
  auto next = [&]() { return base + slots[i++].offset; };
  p.wte = next();
  p.layers.resize((size_t)d.L);
  for (auto& lp : p.layers) {
    lp.attn_norm = next();
    lp.wqkv = next();
    lp.bqkv = d.qkv_bias ? next() : nullptr;
    lp.q_norm = d.qk_norm ? next() : nullptr;
    lp.k_norm = d.qk_norm ? next() : nullptr;
    lp.wo = next();
    lp.ffn_norm = next();
    lp.w1 = next();
    lp.w2 = next();
    lp.w3 = next();
  }
  p.final_norm = next();
  p.head = d.tie_embeddings ? p.wte : next();
  return p;
}

AnchorModel::AnchorModel(const ModelDims& d, float* params, float* grads, int64_t max_batch, const MemoryConfig& mem)
    : d_(d), mem_(mem), max_batch_(max_batch), p_(anchor_params_view(d, params)), g_(anchor_params_view(d, grads)) {
  if (mem_.layer_to_mem.empty()) mem_.layer_to_mem.assign((size_t)d.L, -1);
  const size_t N = (size_t)(max_batch * d.T), C = (size_t)d.C, D = (size_t)d.D(), F = (size_t)d.F;
  const size_t Dkv = (size_t)d.Dkv(), W = (size_t)d.Wqkv();
  acts_.resize((size_t)d.L);
  for (auto& a : acts_) {
    a.x_in.resize(N * C);
    a.ln1.resize(N * C);
    a.ln1_rstd.resize(N);
    a.qkv.resize(N * W);
    if (d.qk_norm) {
      a.q_rstd.resize(N);
      a.k_rstd.resize(N);
    }
    a.q.resize(N * D);
    a.k.resize(N * Dkv);
    a.att.resize(N * D);
    a.lse.resize((size_t)max_batch * d.H * d.T);
    a.h_mid.resize(N * C);
    a.ln2.resize(N * C);
    a.ln2_rstd.resize(N);
    a.gu.resize(N * 2 * F);
  }
  const size_t NR = N * (size_t)mem_.R;
  for (int64_t l = 0; l < d.L; l++) {
    if (mem_.layer_to_mem[(size_t)l] < 0 || NR == 0) continue;
    acts_[(size_t)l].gate_m.resize(NR);
    acts_[(size_t)l].up_m.resize(NR);
  }
  if (NR) {
    mem_hidden_.resize(NR);
    mem_scratch_.resize(4 * NR);
  }
  x_final_.resize(N * C);
  lnf_.resize(N * C);
  lnf_rstd_.resize(N);
  losses_.resize(N);
  cls_scratch_.resize((size_t)(classifier_chunk_rows((int64_t)N, d.V) * d.V));
  pos_.resize(N);
  ffn_hidden_.resize(N * F);
}

// Row-wise work between the qkv GEMM and attention, rows [n0, n1): bias, QK-norm (if any), RoPE.
// q (N, D), k (N, Dkv) get the normed (or copied) and rotated q_raw, k_raw columns of qkv (N, W).
static void qk_prepare_rows(const ModelDims& d, const LayerParams& w, float* qkv, float* q, float* k, float* q_rstd,
                            float* k_rstd, const RopeTable& rope, int64_t n0, int64_t n1) {
  const int64_t D = d.D(), Dkv = d.Dkv(), W = d.Wqkv();
  if (w.bqkv)
    for (int64_t n = n0; n < n1; n++)
      for (int64_t j = 0; j < W; j++) qkv[n * W + j] += w.bqkv[j];
  if (w.q_norm) {
    rmsnorm_forward_rows(q, D, q_rstd, qkv, W, w.q_norm, n0, n1, D, d.norm_eps);
    rmsnorm_forward_rows(k, Dkv, k_rstd, qkv + D, W, w.k_norm, n0, n1, Dkv, d.norm_eps);
  } else {
    for (int64_t n = n0; n < n1; n++) {
      std::memcpy(q + n * D, qkv + n * W, sizeof(float) * D);
      std::memcpy(k + n * Dkv, qkv + n * W + D, sizeof(float) * Dkv);
    }
  }
  rope_apply_rows(q, D, rope, n0, n1, d.H, 1.f);
  rope_apply_rows(k, Dkv, rope, n0, n1, d.KV(), 1.f);
}

void AnchorModel::forward(const Batch& b) {
  const int64_t N = b.B * b.T, C = d_.C, D = d_.D(), F = d_.F, H = d_.H, hd = d_.hd;
  const int64_t Dkv = d_.Dkv(), W = d_.Wqkv();
  // Rotary positions restart at each document.
  for (int64_t n = 0; n < N; n++) pos_[n] = b.doc_start ? (int32_t)(n % b.T) - b.doc_start[n] : (int32_t)(n % b.T);
  rope_table_build(rope_, pos_.data(), N, hd, d_.rope_base, d_.rope_scaling);
  embedding_forward(acts_[0].x_in.data(), b.tokens, p_.wte, N, C);
  groups_.clear();
  if (b.memory && mem_.R > 0) groups_ = memory_groups(b.memory->seq_slot, b.B, b.T);
  const int64_t R = mem_.R, slot_stride = mem_.Lm * 3 * R * C;
  const float eps = d_.norm_eps;
  for (int64_t l = 0; l < d_.L; l++) {
    auto& a = acts_[l];
    const auto& w = p_.layers[l];
    rmsnorm_forward(a.ln1.data(), a.ln1_rstd.data(), a.x_in.data(), w.attn_norm, N, C, eps);
    // [q_raw | k_raw | v] (N, W) = ln1 Wqkv^T (+ bqkv), one GEMM over the stacked (W, C) weight
    float* qkv = a.qkv.data();
    linear_forward(qkv, a.ln1.data(), w.wqkv, N, W, C);
    // q, k = rope(rmsnorm(q_raw)), rope(rmsnorm(k_raw)), row by row in one pass
    parallel_for(N, [&](int64_t n0, int64_t n1) {
      qk_prepare_rows(d_, w, qkv, a.q.data(), a.k.data(), a.q_rstd.data(), a.k_rstd.data(), rope_, n0, n1);
    }, 16);
    attention_forward_strided(a.att.data(), a.lse.data(), a.q.data(), a.k.data(), qkv + D + Dkv, b.doc_start, b.B,
                              b.T, H, hd, AttnStrides{D, Dkv, W, D}, d_.KV());
    // h = x + att Wo^T
    std::memcpy(a.h_mid.data(), a.x_in.data(), sizeof(float) * N * C);
    gemm(false, true, N, C, D, 1.f, a.att.data(), D, w.wo, D, 1.f, a.h_mid.data(), C);
    rmsnorm_forward(a.ln2.data(), a.ln2_rstd.data(), a.h_mid.data(), w.ffn_norm, N, C, eps);
    float* next = (l + 1 < d_.L) ? acts_[l + 1].x_in.data() : x_final_.data();
    // w1 and w2 are adjacent in the layout: [w1; w2] is the (2F, C) gate|up projection
    ffn_forward_fused(next, a.gu.data(), ffn_hidden_.data(), a.ln2.data(), w.w1, w.w3, N, C, F);
    const int32_t j = mem_.layer_to_mem[(size_t)l];
    if (j >= 0 && !groups_.empty())
      ffn_memory_forward(next, a.gate_m.data(), a.up_m.data(), mem_hidden_.data(), a.ln2.data(),
                         b.memory->fetched + j * 3 * R * C, slot_stride, groups_, C, R);
    const float* hm = a.h_mid.data();
    parallel_for(N * C, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; i++) next[i] += hm[i];
    }, 1 << 15);
  }
  rmsnorm_forward(lnf_.data(), lnf_rstd_.data(), x_final_.data(), p_.final_norm, N, C, eps);
}

// db (W) += column sums of dy (N, W): each column summed over rows in row order (any thread count).
static void bias_backward(float* db, const float* dy, int64_t N, int64_t W) {
  parallel_for(W, [&](int64_t c0, int64_t c1) {
    std::vector<float> acc((size_t)(c1 - c0), 0.f);
    for (int64_t n = 0; n < N; n++)
      for (int64_t c = c0; c < c1; c++) acc[(size_t)(c - c0)] += dy[n * W + c];
    for (int64_t c = c0; c < c1; c++) db[c] += acc[(size_t)(c - c0)];
  }, 64);
}

static void ensure(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

double AnchorModel::loss_and_grad(const Batch& b, bool backward) {
  const int64_t N = b.B * b.T, C = d_.C;
  int64_t count = 0;
  for (int64_t n = 0; n < N; n++) count += b.targets[n] >= 0;
  if (count == 0) return std::numeric_limits<double>::quiet_NaN();
  const float scale = 1.f / (float)count;
  float* dlnf = nullptr;
  if (backward) {
    ensure(dln_, (size_t)(N * std::max(C, d_.D())));
    dlnf = dln_.data();
    std::memset(dlnf, 0, sizeof(float) * N * C);
  }
  classifier_forward_backward(losses_.data(), dlnf, backward ? g_.head : nullptr, lnf_.data(), p_.head, b.targets, N,
                              C, d_.V, scale, cls_scratch_.data());
  double sum = 0;
  for (int64_t n = 0; n < N; n++) sum += losses_[n];
  return sum / (double)count;
}

void AnchorModel::backward(const Batch& b) {
  const int64_t N = b.B * b.T, C = d_.C, D = d_.D(), F = d_.F, H = d_.H, hd = d_.hd;
  const int64_t Dkv = d_.Dkv(), W = d_.Wqkv();
  ensure(dresid_, (size_t)(N * C));
  ensure(dqkv_, (size_t)(N * W));
  ensure(datt_, (size_t)(N * D));
  ensure(dq_, (size_t)(N * D));
  ensure(dk_, (size_t)(N * Dkv));
  ensure(s_h_, (size_t)(N * F));
  ensure(s_dh_, (size_t)(N * F));
  ensure(s_dgu_, (size_t)(N * 2 * F));
  float* dresid = dresid_.data();
  float* dln = dln_.data();  // holds dlnf from loss_and_grad
  float* dqkv = dqkv_.data();
  // Every "=" below writes its buffer whole (no zeroing passes); "+=" accumulates on purpose.
  rmsnorm_backward(dresid, g_.final_norm, dln, x_final_.data(), p_.final_norm, lnf_rstd_.data(), N, C, false);
  for (int64_t l = d_.L - 1; l >= 0; l--) {
    auto& a = acts_[l];
    const auto& w = p_.layers[l];
    auto& gw = g_.layers[l];
    const float* qkv = a.qkv.data();
    // out = h + FFN(norm2(h)): dln = d norm2-output
    ffn_backward_fused(dln, gw.w1, gw.w3, dresid, a.ln2.data(), a.gu.data(), w.w1, w.w3, N, C, F, s_h_.data(),
                       s_dh_.data(), s_dgu_.data(), false);
    const int32_t j = mem_.layer_to_mem[(size_t)l];
    if (j >= 0 && !groups_.empty()) {
      const int64_t R = mem_.R, off = j * 3 * R * C, slot_stride = mem_.Lm * 3 * R * C;
      ffn_memory_backward(dln, b.memory->dfetched + off, dresid, a.ln2.data(), a.gate_m.data(), a.up_m.data(),
                          b.memory->fetched + off, slot_stride, groups_, C, R, mem_scratch_.data());
    }
    rmsnorm_backward(dresid, gw.ffn_norm, dln, a.h_mid.data(), w.ffn_norm, a.ln2_rstd.data(), N, C);
    // h = x + att Wo^T: datt = dresid Wo, dWo += dresid^T att
    gemm(false, false, N, D, C, 1.f, dresid, C, w.wo, D, 0.f, datt_.data(), D);
    linear_backward_weight(gw.wo, dresid, a.att.data(), N, C, D);
    // dq (N, D), dk (N, Dkv) and dv straight into the v columns of dqkv
    attention_backward_strided(dq_.data(), dk_.data(), dqkv + D + Dkv, datt_.data(), a.q.data(), a.k.data(),
                               qkv + D + Dkv, a.att.data(), a.lse.data(), b.doc_start, b.B, b.T, H, hd,
                               AttnStrides{D, Dkv, W, D}, false, d_.KV());
    // q = rope(qnorm(q_raw)): rotate the gradients back, then d q_raw / d k_raw into dqkv
    const bool qkn = w.q_norm != nullptr;
    parallel_for(N, [&](int64_t n0, int64_t n1) {
      rope_apply_rows(dq_.data(), D, rope_, n0, n1, H, -1.f);
      rope_apply_rows(dk_.data(), Dkv, rope_, n0, n1, d_.KV(), -1.f);
      if (qkn) {
        rmsnorm_backward_dx_rows(dqkv, W, dq_.data(), D, qkv, W, w.q_norm, a.q_rstd.data(), n0, n1, D, false);
        rmsnorm_backward_dx_rows(dqkv + D, W, dk_.data(), Dkv, qkv + D, W, w.k_norm, a.k_rstd.data(), n0, n1, Dkv,
                                 false);
        return;
      }
      for (int64_t n = n0; n < n1; n++) {
        std::memcpy(dqkv + n * W, dq_.data() + n * D, sizeof(float) * D);
        std::memcpy(dqkv + n * W + D, dk_.data() + n * Dkv, sizeof(float) * Dkv);
      }
    }, 16);
    if (qkn)  // columns [0, D) of q_norm, then [D, D + Dkv) of k_norm: each summed over rows in order
      parallel_for(D + Dkv, [&](int64_t c0, int64_t c1) {
        if (c0 < D)
          rmsnorm_backward_dw_cols(gw.q_norm, dq_.data(), D, qkv, W, a.q_rstd.data(), N, c0, std::min(c1, D));
        if (c1 > D)
          rmsnorm_backward_dw_cols(gw.k_norm, dk_.data(), Dkv, qkv + D, W, a.k_rstd.data(), N,
                                   std::max<int64_t>(c0 - D, 0), c1 - D);
      }, 16);
    if (gw.bqkv) bias_backward(gw.bqkv, dqkv, N, W);
    // u = norm1(x); [q_raw | k_raw | v] = u Wqkv^T: dln = dqkv Wqkv, dWqkv += dqkv^T u
    gemm(false, false, N, C, W, 1.f, dqkv, W, w.wqkv, C, 0.f, dln, C);
    linear_backward_weight(gw.wqkv, dqkv, a.ln1.data(), N, W, C);
    rmsnorm_backward(dresid, gw.attn_norm, dln, a.x_in.data(), w.attn_norm, a.ln1_rstd.data(), N, C);
  }
  embedding_backward(g_.wte, dresid, b.tokens, N, C);
}

double AnchorModel::forward_backward(const Batch& b) {
  forward(b);
  double loss = loss_and_grad(b, true);
  if (std::isnan(loss)) return loss;  // no targets: nothing to differentiate
  backward(b);
  return loss;
}

double AnchorModel::forward_loss(const Batch& b) {
  forward(b);
  return loss_and_grad(b, false);
}

void AnchorModel::last_logits(const int32_t* tokens, int64_t T, float* logits_out, const MemoryBatch* memory) {
  std::vector<int32_t> targets((size_t)T, -1);
  Batch b{tokens, targets.data(), nullptr, 1, T, memory};
  forward(b);
  classifier_logits(logits_out, lnf_.data() + (T - 1) * d_.C, p_.head, 1, d_.C, d_.V);
}

void AnchorModel::prefill(const int32_t* tokens, int64_t T, KVCache& cache, float* logits_out, const MemoryBatch* memory) {
  // One (1, T) forward, exactly last_logits; its per-layer k (normed + rotated) and v rows are the cache.
  last_logits(tokens, T, logits_out, memory);
  const int64_t Dkv = d_.Dkv(), W = d_.Wqkv();
  for (int64_t l = 0; l < d_.L; l++) {
    std::memcpy(cache.k_at(l, 0), acts_[l].k.data(), sizeof(float) * T * Dkv);
    const float* v = acts_[l].qkv.data() + d_.D() + Dkv;  // the v columns of [q_raw | k_raw | v]
    for (int64_t t = 0; t < T; t++) std::memcpy(cache.v_at(l, t), v + t * W, sizeof(float) * Dkv);
  }
  cache.len = T;
}

void AnchorModel::decode_step(int32_t token, KVCache& cache, float* logits_out, const MemoryBatch* memory) {
  const int64_t C = d_.C, D = d_.D(), F = d_.F, H = d_.H, hd = d_.hd, R = mem_.R, t = cache.len;
  const int64_t Dkv = d_.Dkv(), W = d_.Wqkv();
  // one sequence = one document from position 0 (last_logits: doc_start null, pos = n % T), so
  // the new token sits at position t
  const int32_t pos = (int32_t)t;
  if (dec_x_.empty()) {  // first use: one row of scratch
    for (auto* v : {&dec_x_, &dec_h_, &dec_ln_}) v->resize((size_t)C);
    dec_qkv_.resize((size_t)W);
    dec_q_.resize((size_t)D);
    dec_att_.resize((size_t)D);
    for (auto* v : {&dec_gate_, &dec_up_, &dec_hidden_}) v->resize((size_t)F);
    for (auto* v : {&dec_gate_m_, &dec_up_m_, &dec_mem_hidden_}) v->resize((size_t)std::max<int64_t>(R, 1));
  }
  float *x = dec_x_.data(), *h = dec_h_.data(), *ln = dec_ln_.data(), *qkv = dec_qkv_.data(), *q = dec_q_.data(),
        *att = dec_att_.data();
  float rstd;  // (1) rmsnorm side output, unused here
  std::vector<MemoryGroup> groups;
  if (memory && R > 0) groups = memory_groups(memory->seq_slot, 1, 1);
  const int64_t slot_stride = mem_.Lm * 3 * R * C;
  rope_table_build(dec_rope_, &pos, 1, hd, d_.rope_base, d_.rope_scaling);
  embedding_forward(x, &token, p_.wte, 1, C);  // x (C)
  for (int64_t l = 0; l < d_.L; l++) {
    const auto& w = p_.layers[l];
    float *kc = cache.k_at(l, t), *vc = cache.v_at(l, t);
    rmsnorm_forward(ln, &rstd, x, w.attn_norm, 1, C, d_.norm_eps);
    // qkv (W) = ln Wqkv^T (+ bqkv): one GEMV over the stacked (W, C) matrix, [q_raw | k_raw | v]
    linear_forward(qkv, ln, w.wqkv, 1, W, C);
    // q and k (straight into the cache) as forward's rows: bias, norm, rotation
    float q_rstd, k_rstd;
    qk_prepare_rows(d_, w, qkv, q, kc, &q_rstd, &k_rstd, dec_rope_, 0, 1);
    std::memcpy(vc, qkv + D + Dkv, sizeof(float) * Dkv);
    attention_decode(att, q, cache.k_at(l, 0), cache.v_at(l, 0), t + 1, H, hd, d_.KV());
    // h = x + att Wo^T
    std::memcpy(h, x, sizeof(float) * C);
    gemm(false, true, 1, C, D, 1.f, att, D, w.wo, D, 1.f, h, C);
    rmsnorm_forward(ln, &rstd, h, w.ffn_norm, 1, C, d_.norm_eps);
    // x = h + FFN(ln) (+ the fetched slot's memory units)
    ffn_forward(x, dec_gate_.data(), dec_up_.data(), dec_hidden_.data(), ln, w.w1, w.w2, w.w3, 1, C, F);
    const int32_t j = mem_.layer_to_mem[(size_t)l];
    if (j >= 0 && !groups.empty())
      ffn_memory_forward(x, dec_gate_m_.data(), dec_up_m_.data(), dec_mem_hidden_.data(), ln,
                         memory->fetched + j * 3 * R * C, slot_stride, groups, C, R);
    for (int64_t i = 0; i < C; i++) x[i] += h[i];
  }
  rmsnorm_forward(ln, &rstd, x, p_.final_norm, 1, C, d_.norm_eps);
  classifier_logits(logits_out, ln, p_.head, 1, C, d_.V);
  cache.len = t + 1;
}

}  // namespace hm
