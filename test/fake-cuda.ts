/**
 * Fake hiermem_cuda.so libraries for tests on machines without a GPU: host memory behind the real
 * function table (cuda/hiermem_cuda.h, whose plain-data types are cpp/contract.h's), so that
 * "device pointers" are host pointers and the binding's CUDA half (binding/cuda_lib.cc,
 * binding/cuda_model.cc) runs end to end.
 *
 *  - FAKE_SOURCE (toy): checkable arithmetic instead of a model (the loss is a sum of token ids,
 *    positions and group slots; every gradient gets +1; AdamW is p -= lr * scale * g + wd). Used by
 *    cuda.test.ts to check the binding's plumbing.
 *  - TWIN_FAKE_SOURCE (cpu twins): the device model IS the CPU hm::AnchorModel (cpp/, compiled into
 *    the fake), running on the parameter / gradient buffers the binding allocated; AdamW is the
 *    CUDA kernel's float expression (cuda/kernels/adamw.cu) evaluated on the host; the gradient
 *    sum of squares is hm::global_norm's (same chunks, squared back: sqrt(x * x) == x in IEEE
 *    double). Used by cuda-train.test.ts: a training run through it should track a CPU run.
 *
 * Both need g++ (and nothing else: the CPU backend has no BLAS).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../lib/native.js';

export const hasGxx = spawnSync('g++', ['--version']).status === 0;

/** Device query, errors, allocation, copies, streams: the fake runtime shared by both fakes. */
const FAKE_RUNTIME_SOURCE = String.raw`
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include "hiermem_cuda.h"
namespace {
int32_t device_info(int32_t, hmc_device_info* o) {
  std::memset(o, 0, sizeof *o);
  const char* st = std::getenv("HIERMEM_FAKE_CUDA_STATUS");
  o->status = st ? std::atoi(st) : 0;
  o->driver_version = 13000;
  o->runtime_version = 13000;
  if (o->status) { std::snprintf(o->status_text, sizeof o->status_text, "fake status %d", o->status); return o->status; }
  o->device_count = 1; o->cc_major = 9; o->cc_minor = 0;
  o->free_bytes = INT64_C(1) << 30; o->total_bytes = INT64_C(2) << 30;
  std::snprintf(o->name, sizeof o->name, "hiermem fake device");
  std::snprintf(o->status_text, sizeof o->status_text, "ok");
  return 0;
}
const char* error_string(int32_t s) { static thread_local char b[64]; std::snprintf(b, sizeof b, "fake error %d", s); return b; }
int32_t dmalloc(void** p, size_t n) {
  if (std::getenv("HIERMEM_FAKE_CUDA_OOM")) { *p = nullptr; return 2; }
  *p = std::calloc(1, n); return *p ? 0 : 2;
}
int32_t dfree(void* p) { std::free(p); return 0; }
int32_t cp(void* d, const void* s, size_t n, void*) { std::memcpy(d, s, n); return 0; }
int32_t sync(void*) { return 0; }
int32_t screate(void** s) { *s = (void*)0x1; return 0; }
int32_t sdestroy(void*) { return 0; }
int32_t dmemset(void* d, int32_t v, size_t n, void*) { std::memset(d, v, n); return 0; }
}  // namespace
`;

const TABLE_SOURCE = String.raw`
namespace {
const hmc_api kApi = {HMC_ABI_VERSION, device_info, error_string, dmalloc, dfree, cp, cp, sync, screate, sdestroy,
                      dmalloc, dfree, dmemset, mcreate, mdestroy, mfb, mloss, adamw, sumsq, scratch};
}  // namespace
extern "C" __attribute__((visibility("default"))) const hmc_api* hmc_get_api(int32_t abi) {
  return abi == HMC_ABI_VERSION ? &kApi : nullptr;
}
`;

/** The toy: checkable arithmetic (see cuda.test.ts for what each number means). */
export const FAKE_SOURCE = FAKE_RUNTIME_SOURCE + String.raw`
namespace {
struct FakeModel { hmc::ModelDims d; float* grads; int64_t n; };
int64_t param_count(const hmc::ModelDims& d) {  // hm::anchor_param_count, Llama-family fields included
  const int64_t D = d.D(), Dkv = d.Dkv(), W = d.Wqkv();
  const int64_t layer = 2 * d.C + W * d.C + (d.qkv_bias ? W : 0) + (d.qk_norm ? D + Dkv : 0) + d.C * D + 3 * d.F * d.C;
  return d.V * d.C + d.L * layer + d.C + (d.tie_embeddings ? 0 : d.V * d.C);
}
void* mcreate(const hmc::ModelDims* d, const hmc::ModelMemory*, int64_t, float*, float* grads, int32_t, int32_t* err) {
  *err = 0; return new FakeModel{*d, grads, param_count(*d)};
}
void mdestroy(void* m) { delete (FakeModel*)m; }
// loss = sum(tokens) + 0.001 sum(pos) + 100 G + 10 sum(group slots) + 0.5 [docStart given]
double fake_loss(const hmc::ModelBatch* b) {
  double L = 0;
  for (int64_t i = 0; i < b->B * b->T; i++) L += b->tokens[i] + 0.001 * b->pos[i];
  for (int64_t g = 0; g < b->G; g++) L += 100 + 10.0 * (double)b->groups_host[g].slot;
  return L + (b->doc_start ? 0.5 : 0);
}
int32_t mfb(void* m, const hmc::ModelBatch* b, double* loss, void*) {
  auto* f = (FakeModel*)m;
  const float add = b->tokens[0] == 13 ? NAN : 1.0f;  // token 13 poisons the gradients
  for (int64_t i = 0; i < f->n; i++) f->grads[i] += add;
  if (b->dfetched && b->G > 0) b->dfetched[0] += 1.0f + b->fetched[0];
  *loss = fake_loss(b);
  return 0;
}
int32_t mloss(void*, const hmc::ModelBatch* b, double* loss, void*) { *loss = fake_loss(b); return 0; }
// p -= lr * scale * g + wd (checkable from the host); m counts updates, v += g
int32_t adamw(float* p, const float* g, float* m, float* v, int64_t n, const hmc::AdamWConsts* k, void*) {
  for (int64_t i = 0; i < n; i++) { p[i] -= k->lr * k->scale * g[i] + k->wd; m[i] += 1; v[i] += g[i]; }
  return 0;
}
int32_t sumsq(double* out, const float* g, int64_t n, double*, void*) {
  double s = 0; for (int64_t i = 0; i < n; i++) s += (double)g[i] * g[i]; *out = s; return 0;
}
int64_t scratch(int64_t) { return 4; }
}  // namespace
` + TABLE_SOURCE;

/** The CPU twins behind the table: hm::AnchorModel as the device model. */
export const TWIN_FAKE_SOURCE = FAKE_RUNTIME_SOURCE + String.raw`
#include <algorithm>
#include <memory>
#include <vector>
#include "anchor_model.h"
#include "kernels/adamw.h"
namespace {
struct TwinModel {
  std::unique_ptr<hm::AnchorModel> model;
  int64_t R;
};
void* mcreate(const hmc::ModelDims* d, const hmc::ModelMemory* mem, int64_t max_batch, float* params, float* grads,
              int32_t, int32_t* err) {
  hm::MemoryConfig mc;
  if (mem && mem->R > 0) {
    mc.R = mem->R;
    mc.Lm = mem->Lm;
    mc.layer_to_mem.assign(mem->layer_to_mem, mem->layer_to_mem + d->L);
  }
  *err = 0;
  try {
    return new TwinModel{std::make_unique<hm::AnchorModel>(*d, params, grads, max_batch, mc), mc.R};
  } catch (...) {
    *err = 2;
    return nullptr;
  }
}
void mdestroy(void* m) { delete (TwinModel*)m; }
// The groups back to one slot per sequence (hm::memory_groups' inverse), then the CPU model.
double run(void* m, const hmc::ModelBatch* b, bool backward) {
  auto* t = (TwinModel*)m;
  hm::Batch hb{b->tokens, b->targets, b->doc_start, b->B, b->T};
  std::vector<int32_t> seq_slot;
  hm::MemoryBatch mb{};
  if (b->fetched && b->G > 0 && t->R > 0) {
    seq_slot.assign((size_t)b->B, -1);
    int64_t S = 0;
    for (int64_t g = 0; g < b->G; g++) {
      const auto& gr = b->groups_host[g];
      for (int64_t r = gr.row0; r < gr.row0 + gr.rows; r += b->T) seq_slot[(size_t)(r / b->T)] = (int32_t)gr.slot;
      S = std::max<int64_t>(S, gr.slot + 1);
    }
    mb = hm::MemoryBatch{b->fetched, backward ? b->dfetched : nullptr, seq_slot.data(), S};
    hb.memory = &mb;
  }
  return backward ? t->model->forward_backward(hb) : t->model->forward_loss(hb);
}
int32_t mfb(void* m, const hmc::ModelBatch* b, double* loss, void*) { *loss = run(m, b, true); return 0; }
int32_t mloss(void* m, const hmc::ModelBatch* b, double* loss, void*) { *loss = run(m, b, false); return 0; }
// cuda/kernels/adamw.cuh's adamw_element, element for element (plain float ops, no contraction)
int32_t adamw(float* p, const float* g, float* m, float* v, int64_t n, const hmc::AdamWConsts* k, void*) {
  for (int64_t i = 0; i < n; i++) {
    const float gi = g[i] * k->scale;
    const float mi = k->b1 * m[i] + k->one_m_b1 * gi;
    const float vi = k->b2 * v[i] + (k->one_m_b2 * gi) * gi;
    m[i] = mi;
    v[i] = vi;
    const float mhat = mi * k->ibc1, vhat = vi * k->ibc2;
    const float pi = p[i];
    p[i] = pi - k->lr * (mhat / (std::sqrt(vhat) + k->eps) + k->wd * pi);
  }
  return 0;
}
int32_t sumsq(double* out, const float* g, int64_t n, double*, void*) {
  const double norm = n ? hm::global_norm(g, n) : 0.0;
  *out = norm * norm;
  return 0;
}
int64_t scratch(int64_t) { return 4; }
}  // namespace
` + TABLE_SOURCE;

export const NULL_API_SOURCE = `extern "C" __attribute__((visibility("default"))) const void* hmc_get_api(int) { return nullptr; }\n`;
export const ABORT_SOURCE = `#include <cstdlib>\n__attribute__((constructor)) static void boom() { std::abort(); }\n` + NULL_API_SOURCE;

/** Why the CPU-twin fake cannot be built here, or null when it can. */
export function twinFakeUnavailable(): string | null {
  if (!hasGxx) return 'g++ not found: cannot build the fake CUDA library';
  return null;
}

const FLAGS = ['-std=c++17', '-fPIC', '-fvisibility=hidden'];
/** The addon's flags for cpp/ (CMake: CMAKE_CXX_STANDARD 17 with extensions, Release, -O3), so that the twins compute the same floats. */
const TWIN_FLAGS = ['-std=gnu++17', '-fPIC', '-fvisibility=hidden', '-O3', '-DNDEBUG'];

/** Builds a small fake (toy, null-api, abort) into dir/name from source; returns its path. */
export function buildFake(dir: string, name: string, source: string): string {
  const root = packageRoot();
  const cc = path.join(dir, name.replace(/\.so$/, '.cc'));
  const so = path.join(dir, name);
  fs.writeFileSync(cc, source);
  const r = spawnSync('g++', [...FLAGS, '-O1', '-shared', `-I${path.join(root, 'cuda')}`, '-o', so, cc], { encoding: 'utf8' });
  assert.equal(r.status, 0, `g++ ${name}: ${r.stderr}`);
  return so;
}

function compile(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn('g++', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`g++ ${args.join(' ')}: exit ${code}\n${err}`))));
  });
}

/**
 * Builds the CPU-twin fake into dir/name: cpp/ (the CPU backend, the addon's -O3) + the
 * table (no BLAS: the GEMM is cpp/kernels/gemm.cc). Two compilers at a time. Returns the library's path.
 */
export async function buildTwinFake(dir: string, name = 'twin.so'): Promise<string> {
  const why = twinFakeUnavailable();
  if (why) throw new Error(why);
  const root = packageRoot();
  const inc = [`-I${path.join(root, 'cuda')}`, `-I${path.join(root, 'cpp')}`];
  const fakeCc = path.join(dir, name.replace(/\.so$/, '.cc'));
  fs.writeFileSync(fakeCc, TWIN_FAKE_SOURCE);
  const sources = [fakeCc, ...['', 'kernels', 'memory'].flatMap((sub) => {
    const d = path.join(root, 'cpp', sub);
    return fs.readdirSync(d).filter((f) => f.endsWith('.cc')).map((f) => path.join(d, f));
  })];
  const objs = sources.map((s, i) => path.join(dir, `twin-${i}-${path.basename(s, '.cc')}.o`));
  let next = 0;
  const worker = async () => {
    while (next < sources.length) {
      const i = next++;
      await compile([...TWIN_FLAGS, ...inc, '-c', '-o', objs[i]!, sources[i]!]);
    }
  };
  await Promise.all([worker(), worker()]);
  const so = path.join(dir, name);
  await compile(['-shared', '-o', so, ...objs, '-lpthread', '-lm']);
  return so;
}
