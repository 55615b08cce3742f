#include "attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "matmul.h"
#include "parallel.h"

namespace hm {

static constexpr int64_t kQueryTile = 64;

// Key range [k0, k1) needed by queries [i0, i1) of one row.
static void key_range(const int32_t* ds, int64_t i0, int64_t i1, int64_t* k0, int64_t* k1) {
  int64_t lo = 0;
  if (ds) {
    lo = i1;
    for (int64_t i = i0; i < i1; i++) lo = std::min<int64_t>(lo, ds[i]);
  }
  *k0 = lo;
  *k1 = i1;
}

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const int32_t* doc_start, int64_t B, int64_t T, int64_t H, int64_t hd, int64_t ld) {
  const float scale = 1.f / std::sqrt((float)hd);
  parallel_for(B * H, [&](int64_t t0, int64_t t1) {
    std::vector<float> s((size_t)kQueryTile * T);
    for (int64_t task = t0; task < t1; task++) {
      const int64_t b = task / H, h = task % H;
      const float* qb = q + b * T * ld + h * hd;
      const float* kb = k + b * T * ld + h * hd;
      const float* vb = v + b * T * ld + h * hd;
      float* ob = out + b * T * ld + h * hd;
      float* lb = lse + (b * H + h) * T;
      const int32_t* ds = doc_start ? doc_start + b * T : nullptr;
      for (int64_t i0 = 0; i0 < T; i0 += kQueryTile) {
        const int64_t i1 = std::min(T, i0 + kQueryTile), tq = i1 - i0;
        int64_t k0, k1;
        key_range(ds, i0, i1, &k0, &k1);
        const int64_t nk = k1 - k0;
        // s (tq, nk) = scale * Q_tile K_range^T
        gemm(false, true, tq, nk, hd, scale, qb + i0 * ld, ld, kb + k0 * ld, ld, 0.f, s.data(), nk);
        for (int64_t r = 0; r < tq; r++) {
          const int64_t i = i0 + r;
          const int64_t lo = (ds ? ds[i] : 0) - k0, hi = i - k0;  // allowed columns [lo, hi]
          float* sr = s.data() + r * nk;
          float mx = -std::numeric_limits<float>::infinity();
          for (int64_t j = lo; j <= hi; j++) mx = std::max(mx, sr[j]);
          double sum = 0;
          for (int64_t j = 0; j < nk; j++) {
            if (j < lo || j > hi) {
              sr[j] = 0.f;
            } else {
              sr[j] = std::exp(sr[j] - mx);
              sum += sr[j];
            }
          }
          const float inv = (float)(1.0 / sum);
          for (int64_t j = lo; j <= hi; j++) sr[j] *= inv;
          lb[i] = mx + (float)std::log(sum);
        }
        // O_tile (tq, hd) = P V_range
        gemm(false, false, tq, hd, nk, 1.f, s.data(), nk, vb + k0 * ld, ld, 0.f, ob + i0 * ld, ld);
      }
    }
  });
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, const int32_t* doc_start, int64_t B,
                        int64_t T, int64_t H, int64_t hd, int64_t ld) {
  const float scale = 1.f / std::sqrt((float)hd);
  parallel_for(B * H, [&](int64_t t0, int64_t t1) {
    std::vector<float> p((size_t)kQueryTile * T), dp((size_t)kQueryTile * T), di(kQueryTile);
    for (int64_t task = t0; task < t1; task++) {
      const int64_t b = task / H, h = task % H;
      const int64_t off = b * T * ld + h * hd;
      const float *qb = q + off, *kb = k + off, *vb = v + off, *ob = out + off, *gb = dout + off;
      float *dqb = dq + off, *dkb = dk + off, *dvb = dv + off;
      const float* lb = lse + (b * H + h) * T;
      const int32_t* ds = doc_start ? doc_start + b * T : nullptr;
      for (int64_t i0 = 0; i0 < T; i0 += kQueryTile) {
        const int64_t i1 = std::min(T, i0 + kQueryTile), tq = i1 - i0;
        int64_t k0, k1;
        key_range(ds, i0, i1, &k0, &k1);
        const int64_t nk = k1 - k0;
        gemm(false, true, tq, nk, hd, scale, qb + i0 * ld, ld, kb + k0 * ld, ld, 0.f, p.data(), nk);
        for (int64_t r = 0; r < tq; r++) {
          const int64_t i = i0 + r;
          const int64_t lo = (ds ? ds[i] : 0) - k0, hi = i - k0;
          float* pr = p.data() + r * nk;
          for (int64_t j = 0; j < nk; j++) pr[j] = (j < lo || j > hi) ? 0.f : std::exp(pr[j] - lb[i]);
          double d = 0;  // D_i = dO_i . O_i
          for (int64_t c = 0; c < hd; c++) d += (double)gb[i * ld + c] * ob[i * ld + c];
          di[r] = (float)d;
        }
        // dV_range += P^T dO_tile
        gemm(true, false, nk, hd, tq, 1.f, p.data(), nk, gb + i0 * ld, ld, 1.f, dvb + k0 * ld, ld);
        // dP = dO_tile V_range^T
        gemm(false, true, tq, nk, hd, 1.f, gb + i0 * ld, ld, vb + k0 * ld, ld, 0.f, dp.data(), nk);
        // dS = P * (dP - D)   (stored in dp)
        for (int64_t r = 0; r < tq; r++) {
          float* pr = p.data() + r * nk;
          float* dr = dp.data() + r * nk;
          for (int64_t j = 0; j < nk; j++) dr[j] = pr[j] * (dr[j] - di[r]);
        }
        // dQ_tile += scale dS K_range ; dK_range += scale dS^T Q_tile
        gemm(false, false, tq, hd, nk, scale, dp.data(), nk, kb + k0 * ld, ld, 1.f, dqb + i0 * ld, ld);
        gemm(true, false, nk, hd, tq, scale, dp.data(), nk, qb + i0 * ld, ld, 1.f, dkb + k0 * ld, ld);
      }
    }
  });
}

void attention_decode(float* out, const float* q, const float* kcache, const float* vcache, int64_t n, int64_t H,
                      int64_t hd) {
  const float scale = 1.f / std::sqrt((float)hd);
  const int64_t ld = H * hd;
  auto heads = [&](int64_t h0, int64_t h1) {
    std::vector<float> s((size_t)n);
    for (int64_t h = h0; h < h1; h++) {
      const float* qh = q + h * hd;
      // s (n) = scale * K_h q_h
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < n; j++) {
        const float* kj = kcache + j * ld + h * hd;
        float dot = 0.f;
        for (int64_t c = 0; c < hd; c++) dot += qh[c] * kj[c];
        s[(size_t)j] = scale * dot;
        mx = std::max(mx, s[(size_t)j]);
      }
      double sum = 0;
      for (int64_t j = 0; j < n; j++) {
        s[(size_t)j] = std::exp(s[(size_t)j] - mx);
        sum += s[(size_t)j];
      }
      const float inv = (float)(1.0 / sum);
      // out_h (hd) = sum_j p_j v_j
      float* oh = out + h * hd;
      std::fill(oh, oh + hd, 0.f);
      for (int64_t j = 0; j < n; j++) {
        const float p = s[(size_t)j] * inv;
        const float* vj = vcache + j * ld + h * hd;
        for (int64_t c = 0; c < hd; c++) oh[c] += p * vj[c];
      }
    }
  };
  // the pool only pays off once the cache is long: n * H * hd multiply-adds, twice
  if (n * ld < (1 << 15)) heads(0, H);
  else parallel_for(H, heads);
}

}  // namespace hm
