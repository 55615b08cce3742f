// kernels.cc — single-kernel entry points (synchronous; used by tests and references).
#include <algorithm>
#include <cstring>

#include "kernels/adamw.h"
#include "kernels/attention.h"
#include "kernels/classifier.h"
#include "kernels/embedding.h"
#include "kernels/ffn_memory.h"
#include "kernels/fma_peak.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/ffn.h"
#include "kernels/linear.h"
#include "parallel.h"
#include "args.h"
#include "binding.h"

#include <vector>

namespace hmb {
using namespace hm;
static constexpr int64_t kMaxDim = int64_t(1) << 31;

static Napi::Value EmbeddingForward(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  int64_t V = get_int(info, 3, "V", 1, kMaxDim), C = get_int(info, 4, "C", 1, kMaxDim);
  int64_t N;
  get_array<int32_t>(info[1], env, "tokens", -1, &N);
  auto* tokens = get_array<int32_t>(info, 1, "tokens", N);
  auto* out = get_array<float>(info, 0, "out", elems(env, "out", {N, C}));
  auto* wte = get_array<float>(info, 2, "wte", elems(env, "wte", {V, C}));
  check_tokens(env, "tokens", tokens, N, V, false);
  embedding_forward(out, tokens, wte, N, C);
  return env.Undefined();
}

static Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  int64_t V = get_int(info, 3, "V", 1, kMaxDim), C = get_int(info, 4, "C", 1, kMaxDim);
  int64_t N;
  get_array<int32_t>(info[2], env, "tokens", -1, &N);
  auto* tokens = get_array<int32_t>(info, 2, "tokens", N);
  auto* dwte = get_array<float>(info, 0, "dwte", elems(env, "dwte", {V, C}));
  auto* dout = get_array<float>(info, 1, "dout", elems(env, "dout", {N, C}));
  check_tokens(env, "tokens", tokens, N, V, false);
  embedding_backward(dwte, dout, tokens, N, C);
  return env.Undefined();
}

static Napi::Value RmsnormForward(const Napi::CallbackInfo& info) {
  int64_t N = get_int(info, 4, "N", 0, kMaxDim), C = get_int(info, 5, "C", 1, kMaxDim);
  const int64_t NC = elems(info.Env(), "x", {N, C});
  double eps = get_double(info, 6, "eps");
  auto* out = get_array<float>(info, 0, "out", NC);
  auto* rstd = get_array<float>(info, 1, "rstd", N);
  auto* x = get_array<float>(info, 2, "x", NC);
  auto* w = get_array<float>(info, 3, "w", C);
  rmsnorm_forward(out, rstd, x, w, N, C, (float)eps);
  return info.Env().Undefined();
}

static Napi::Value RmsnormBackward(const Napi::CallbackInfo& info) {
  int64_t N = get_int(info, 6, "N", 0, kMaxDim), C = get_int(info, 7, "C", 1, kMaxDim);
  const int64_t NC = elems(info.Env(), "x", {N, C});
  auto* dx = get_array<float>(info, 0, "dx", NC);
  auto* dw = get_array<float>(info, 1, "dw", C);
  auto* dout = get_array<float>(info, 2, "dout", NC);
  auto* x = get_array<float>(info, 3, "x", NC);
  auto* w = get_array<float>(info, 4, "w", C);
  auto* rstd = get_array<float>(info, 5, "rstd", N);
  rmsnorm_backward(dx, dw, dout, x, w, rstd, N, C);
  return info.Env().Undefined();
}

static Napi::Value Rope(const Napi::CallbackInfo& info, bool backward) {
  auto env = info.Env();
  int64_t N = get_int(info, 2, "N", 0, kMaxDim), H = get_int(info, 3, "H", 1, kMaxDim),
          hd = get_int(info, 4, "hd", 2, kMaxDim);
  double base = get_double(info, 5, "base");
  if (hd % 2) fail(env, "E_INVALID_ARGUMENT", "hd must be even for rotary embeddings, got " + std::to_string(hd));
  if (base <= 1) fail(env, "E_INVALID_ARGUMENT", "rope base must be > 1");
  auto* x = get_array<float>(info, 0, "x", elems(env, "x", {N, H, hd}));
  auto* pos = get_array<int32_t>(info, 1, "pos", N);
  for (int64_t i = 0; i < N; i++)
    if (pos[i] < 0 || pos[i] > (1 << 24)) fail(env, "E_INVALID_ARGUMENT", "pos[" + std::to_string(i) + "] out of range");
  if (backward) rope_backward(x, pos, N, H, hd, base);
  else rope_forward(x, pos, N, H, hd, base);
  return env.Undefined();
}

static Napi::Value AttentionForward(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  int64_t B = get_int(info, 6, "B", 1, kMaxDim), T = get_int(info, 7, "T", 1, kMaxDim),
          H = get_int(info, 8, "H", 1, kMaxDim), hd = get_int(info, 9, "hd", 1, kMaxDim);
  const int64_t n = elems(env, "q", {B, T, H, hd}), nl = elems(env, "lse", {B, H, T});
  auto* out = get_array<float>(info, 0, "out", n);
  auto* lse = get_array<float>(info, 1, "lse", nl);
  auto* q = get_array<float>(info, 2, "q", n);
  auto* k = get_array<float>(info, 3, "k", n);
  auto* v = get_array<float>(info, 4, "v", n);
  auto* ds = get_optional_array<int32_t>(info, 5, "docStart", elems(env, "docStart", {B, T}));
  check_doc_start(env, ds, B, T);
  attention_forward(out, lse, q, k, v, ds, B, T, H, hd, H * hd);
  return env.Undefined();
}

static Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  int64_t B = get_int(info, 10, "B", 1, kMaxDim), T = get_int(info, 11, "T", 1, kMaxDim),
          H = get_int(info, 12, "H", 1, kMaxDim), hd = get_int(info, 13, "hd", 1, kMaxDim);
  const int64_t n = elems(env, "q", {B, T, H, hd}), nl = elems(env, "lse", {B, H, T});
  auto* dq = get_array<float>(info, 0, "dq", n);
  auto* dk = get_array<float>(info, 1, "dk", n);
  auto* dv = get_array<float>(info, 2, "dv", n);
  auto* dout = get_array<float>(info, 3, "dout", n);
  auto* q = get_array<float>(info, 4, "q", n);
  auto* k = get_array<float>(info, 5, "k", n);
  auto* v = get_array<float>(info, 6, "v", n);
  auto* out = get_array<float>(info, 7, "out", n);
  auto* lse = get_array<float>(info, 8, "lse", nl);
  auto* ds = get_optional_array<int32_t>(info, 9, "docStart", elems(env, "docStart", {B, T}));
  check_doc_start(env, ds, B, T);
  attention_backward(dq, dk, dv, dout, q, k, v, out, lse, ds, B, T, H, hd, H * hd);
  return env.Undefined();
}

static Napi::Value SwigluForward(const Napi::CallbackInfo& info) {
  int64_t n = get_int(info, 3, "n", 0, kMaxDim * 64);
  swiglu_forward(get_array<float>(info, 0, "h", n), get_array<float>(info, 1, "gate", n),
                 get_array<float>(info, 2, "up", n), n);
  return info.Env().Undefined();
}

static Napi::Value SwigluBackward(const Napi::CallbackInfo& info) {
  int64_t n = get_int(info, 5, "n", 0, kMaxDim * 64);
  swiglu_backward(get_array<float>(info, 0, "dgate", n), get_array<float>(info, 1, "dup", n),
                  get_array<float>(info, 2, "dh", n), get_array<float>(info, 3, "gate", n),
                  get_array<float>(info, 4, "up", n), n);
  return info.Env().Undefined();
}

static Napi::Value FfnForward(const Napi::CallbackInfo& info) {
  int64_t N = get_int(info, 7, "N", 0, kMaxDim), C = get_int(info, 8, "C", 1, kMaxDim),
          F = get_int(info, 9, "F", 1, kMaxDim);
  auto env = info.Env();
  const int64_t NC = elems(env, "x", {N, C}), NF = elems(env, "gate", {N, F}), FC = elems(env, "w1", {F, C});
  elems(env, "scratch", {4, N, F});
  auto* y = get_array<float>(info, 0, "y", NC);
  auto* gate = get_array<float>(info, 1, "gate", NF);
  auto* up = get_array<float>(info, 2, "up", NF);
  auto* x = get_array<float>(info, 3, "x", NC);
  auto* w1 = get_array<float>(info, 4, "w1", FC);
  auto* w2 = get_array<float>(info, 5, "w2", FC);
  auto* w3 = get_array<float>(info, 6, "w3", FC);
  std::vector<float> hidden((size_t)(N * F));
  ffn_forward(y, gate, up, hidden.data(), x, w1, w2, w3, N, C, F);
  return info.Env().Undefined();
}

static Napi::Value FfnBackward(const Napi::CallbackInfo& info) {
  int64_t N = get_int(info, 11, "N", 0, kMaxDim), C = get_int(info, 12, "C", 1, kMaxDim),
          F = get_int(info, 13, "F", 1, kMaxDim);
  auto env = info.Env();
  const int64_t NC = elems(env, "x", {N, C}), NF = elems(env, "gate", {N, F}), FC = elems(env, "w1", {F, C});
  elems(env, "scratch", {4, N, F});
  auto* dx = get_array<float>(info, 0, "dx", NC);
  auto* dw1 = get_array<float>(info, 1, "dw1", FC);
  auto* dw2 = get_array<float>(info, 2, "dw2", FC);
  auto* dw3 = get_array<float>(info, 3, "dw3", FC);
  auto* dy = get_array<float>(info, 4, "dy", NC);
  auto* x = get_array<float>(info, 5, "x", NC);
  auto* gate = get_array<float>(info, 6, "gate", NF);
  auto* up = get_array<float>(info, 7, "up", NF);
  auto* w1 = get_array<float>(info, 8, "w1", FC);
  auto* w2 = get_array<float>(info, 9, "w2", FC);
  auto* w3 = get_array<float>(info, 10, "w3", FC);
  std::vector<float> s((size_t)(4 * N * F));
  ffn_backward(dx, dw1, dw2, dw3, dy, x, gate, up, w1, w2, w3, N, C, F, s.data(), s.data() + N * F,
               s.data() + 2 * N * F, s.data() + 3 * N * F);
  return info.Env().Undefined();
}

static Napi::Value ClassifierForwardBackward(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  int64_t N = get_int(info, 6, "N", 0, kMaxDim), C = get_int(info, 7, "C", 1, kMaxDim),
          V = get_int(info, 8, "V", 1, kMaxDim);
  double scale = get_double(info, 9, "gradScale");
  const int64_t NC = elems(env, "x", {N, C}), VC = elems(env, "wte", {V, C});
  auto* losses = get_array<float>(info, 0, "losses", N);
  auto* dx = get_optional_array<float>(info, 1, "dx", NC);
  auto* dwte = get_optional_array<float>(info, 2, "dwte", VC);
  auto* x = get_array<float>(info, 3, "x", NC);
  auto* wte = get_array<float>(info, 4, "wte", VC);
  auto* targets = get_array<int32_t>(info, 5, "targets", N);
  check_tokens(env, "targets", targets, N, V, true);
  std::vector<float> scratch((size_t)(classifier_chunk_rows(N, V) * V));
  classifier_forward_backward(losses, dx, dwte, x, wte, targets, N, C, V, (float)scale, scratch.data());
  return env.Undefined();
}

static Napi::Value MatmulNT(const Napi::CallbackInfo& info) {
  int64_t M = get_int(info, 3, "M", 0, kMaxDim), N = get_int(info, 4, "N", 0, kMaxDim),
          K = get_int(info, 5, "K", 0, kMaxDim);
  auto env = info.Env();
  linear_forward(get_array<float>(info, 0, "c", elems(env, "c", {M, N})), get_array<float>(info, 1, "a", elems(env, "a", {M, K})),
                 get_array<float>(info, 2, "b", elems(env, "b", {N, K})), M, N, K);
  return info.Env().Undefined();
}

// General product C = alpha op(A) op(B) + beta C with leading dimensions (the GEMM's tests and
// bench). The arrays must hold at least the strided extent each operand spans; lda/ldb/ldc at least
// the row length, so no row runs into the next one's start past the end.
static const float* gemm_operand(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t rows, int64_t cols,
                                 int64_t ld, int64_t* extent) {
  auto env = info.Env();
  if (ld < std::max<int64_t>(1, cols))
    fail(env, "E_INVALID_ARGUMENT", std::string("leading dimension of ") + name + " is " + std::to_string(ld) +
                                        ", less than its row length " + std::to_string(cols));
  int64_t n = 0;
  const float* p = get_array<float>(info[i], env, name, -1, &n);
  *extent = rows == 0 || cols == 0 ? 0 : elems(env, name, {rows - 1, ld}) + cols;
  if (n < *extent)
    fail(env, "E_SHAPE_MISMATCH", std::string(name) + " has " + std::to_string(n) + " elements, its " +
                                      std::to_string(rows) + " x " + std::to_string(cols) + " view with leading dimension " +
                                      std::to_string(ld) + " needs " + std::to_string(*extent));
  return p;
}

static Napi::Value Gemm(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  if (info.Length() < 13) fail(env, "E_INVALID_ARGUMENT", "gemm(transA, transB, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc)");
  if (!info[0].IsBoolean() || !info[1].IsBoolean()) fail(env, "E_INVALID_ARGUMENT", "transA and transB must be booleans");
  const bool ta = info[0].As<Napi::Boolean>().Value(), tb = info[1].As<Napi::Boolean>().Value();
  const int64_t M = get_int(info, 2, "M", 0, kMaxDim), N = get_int(info, 3, "N", 0, kMaxDim),
                K = get_int(info, 4, "K", 0, kMaxDim);
  const float alpha = (float)get_double(info, 5, "alpha"), beta = (float)get_double(info, 10, "beta");
  const int64_t lda = get_int(info, 7, "lda", 1, kMaxDim), ldb = get_int(info, 9, "ldb", 1, kMaxDim),
                ldc = get_int(info, 12, "ldc", 1, kMaxDim);
  int64_t ea = 0, eb = 0, ec = 0;
  const float* a = gemm_operand(info, 6, "a", ta ? K : M, ta ? M : K, lda, &ea);
  const float* b = gemm_operand(info, 8, "b", tb ? N : K, tb ? K : N, ldb, &eb);
  float* c = const_cast<float*>(gemm_operand(info, 11, "c", M, N, ldc, &ec));
  // C must not overlap A or B: the product reads its operands while it writes C
  auto overlaps = [](const float* x, int64_t nx, const float* y, int64_t ny) { return nx > 0 && ny > 0 && x < y + ny && y < x + nx; };
  if (overlaps(c, ec, a, ea) || overlaps(c, ec, b, eb)) fail(env, "E_INVALID_ARGUMENT", "c overlaps a or b");
  gemm(ta, tb, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc);
  return env.Undefined();
}

// dst (n) = src (n), split over our pool: the bench's memcpy limit with the same threads as the
// gather it bounds (a single-threaded TypedArray.set would understate it on a multi-core machine).
static Napi::Value CopyParallel(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  int64_t n = 0;
  const float* src = get_array<float>(info[1], env, "src", -1, &n);
  float* dst = get_array<float>(info, 0, "dst", n);
  if (n > 0 && src != dst)
    parallel_for(n, [&](int64_t a, int64_t b) { std::memcpy(dst + a, src + a, (size_t)(b - a) * sizeof(float)); }, 1 << 16);
  return env.Undefined();
}

// Memory part of the FFN for one layer. fetched (S, 3, R, C); seqSlot (B): slot per sequence or -1.
static std::vector<MemoryGroup> check_groups(const Napi::CallbackInfo& info, size_t i_slots, int64_t B, int64_t T, int64_t S) {
  auto env = info.Env();
  const int32_t* slots = get_array<int32_t>(info, i_slots, "seqSlot", B);
  for (int64_t b = 0; b < B; b++)
    if (slots[b] < -1 || slots[b] >= S) fail(env, "E_INVALID_ARGUMENT", "seqSlot[" + std::to_string(b) + "] is outside [-1, S)");
  return memory_groups(slots, B, T);
}

// The dims (B, T, C, R, S) both memory-FFN entry points take from argument `first` on, checked
// for overflow, and the sequence groups of the seqSlot argument just before them.
struct FfnMemoryArgs {
  int64_t N, C, R, NC, NR, SF;
  std::vector<MemoryGroup> groups;
};
static FfnMemoryArgs parse_ffn_memory(const Napi::CallbackInfo& info, size_t first) {
  int64_t B = get_int(info, first, "B", 1, kMaxDim), T = get_int(info, first + 1, "T", 1, kMaxDim),
          C = get_int(info, first + 2, "C", 1, kMaxDim), R = get_int(info, first + 3, "R", 1, kMaxDim),
          S = get_int(info, first + 4, "S", 1, kMaxDim);
  auto env = info.Env();
  FfnMemoryArgs a;
  a.N = elems(env, "x", {B, T});
  a.C = C;
  a.R = R;
  a.NC = elems(env, "x", {a.N, C});
  a.NR = elems(env, "gateM", {a.N, R});
  a.SF = elems(env, "fetched", {S, 3, R, C});
  elems(env, "scratch", {4, a.N, R});
  a.groups = check_groups(info, first - 1, B, T, S);
  return a;
}

// (y, gateM, upM, x, fetched, seqSlot, B, T, C, R, S)
static Napi::Value FfnMemoryForward(const Napi::CallbackInfo& info) {
  auto [N, C, R, NC, NR, SF, groups] = parse_ffn_memory(info, 6);
  float* y = get_array<float>(info, 0, "y", NC);
  float* gm = get_array<float>(info, 1, "gateM", NR);
  float* um = get_array<float>(info, 2, "upM", NR);
  const float* x = get_array<float>(info, 3, "x", NC);
  const float* f = get_array<float>(info, 4, "fetched", SF);
  std::vector<float> hidden((size_t)(N * R));
  ffn_memory_forward(y, gm, um, hidden.data(), x, f, 3 * R * C, groups, C, R);
  return info.Env().Undefined();
}

// (dx, dfetched, dy, x, gateM, upM, fetched, seqSlot, B, T, C, R, S)
static Napi::Value FfnMemoryBackward(const Napi::CallbackInfo& info) {
  auto [N, C, R, NC, NR, SF, groups] = parse_ffn_memory(info, 8);
  float* dx = get_array<float>(info, 0, "dx", NC);
  float* df = get_array<float>(info, 1, "dfetched", SF);
  const float* dy = get_array<float>(info, 2, "dy", NC);
  const float* x = get_array<float>(info, 3, "x", NC);
  const float* gm = get_array<float>(info, 4, "gateM", NR);
  const float* um = get_array<float>(info, 5, "upM", NR);
  const float* f = get_array<float>(info, 6, "fetched", SF);
  std::vector<float> scratch((size_t)(4 * N * R));
  ffn_memory_backward(dx, df, dy, x, gm, um, f, 3 * R * C, groups, C, R, scratch.data());
  return info.Env().Undefined();
}

// The machine's fp32 FMA peak (bench limit): a register-bound FMA loop of `iters` iterations on
// every pool thread at the GEMM's SIMD level; returns what it did and how long it took.
static Napi::Value FmaPeak(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  const int64_t iters = get_int(info, 0, "iters", 1, int64_t(1) << 40);
  const FmaPeakResult r = fma_peak(iters);
  Napi::Object o = Napi::Object::New(env);
  o.Set("flops", r.flops);
  o.Set("seconds", r.seconds);
  o.Set("threads", r.threads);
  o.Set("lanes", r.lanes);
  o.Set("chains", r.chains);
  o.Set("level", r.level);
  o.Set("sink", r.sink);
  return o;
}

void RegisterKernels(Napi::Env env, Napi::Object exports) {
  exports.Set("ffnMemoryForward", Napi::Function::New(env, FfnMemoryForward));
  exports.Set("ffnMemoryBackward", Napi::Function::New(env, FfnMemoryBackward));
  exports.Set("embeddingForward", Napi::Function::New(env, EmbeddingForward));
  exports.Set("embeddingBackward", Napi::Function::New(env, EmbeddingBackward));
  exports.Set("rmsnormForward", Napi::Function::New(env, RmsnormForward));
  exports.Set("rmsnormBackward", Napi::Function::New(env, RmsnormBackward));
  exports.Set("ropeForward", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return Rope(i, false); }));
  exports.Set("ropeBackward", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return Rope(i, true); }));
  exports.Set("attentionForward", Napi::Function::New(env, AttentionForward));
  exports.Set("attentionBackward", Napi::Function::New(env, AttentionBackward));
  exports.Set("swigluForward", Napi::Function::New(env, SwigluForward));
  exports.Set("swigluBackward", Napi::Function::New(env, SwigluBackward));
  exports.Set("ffnForward", Napi::Function::New(env, FfnForward));
  exports.Set("ffnBackward", Napi::Function::New(env, FfnBackward));
  exports.Set("classifierForwardBackward", Napi::Function::New(env, ClassifierForwardBackward));
  exports.Set("matmulNT", Napi::Function::New(env, MatmulNT));
  exports.Set("gemm", Napi::Function::New(env, Gemm));
  exports.Set("copyParallel", Napi::Function::New(env, CopyParallel));
  exports.Set("fmaPeak", Napi::Function::New(env, FmaPeak));
}

}  // namespace hmb
