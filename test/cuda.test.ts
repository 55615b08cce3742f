/**
 * The CUDA backend's Node side (issue #8): loading, detection, backend selection, the device-model
 * binding.
 *
 * Without a GPU (here): the probe answers "no device" with a reason and never crashes; 'auto' stays
 * silent where no NVIDIA driver is installed; 'cuda' throws E_BACKEND_UNAVAILABLE; a missing file,
 * an executable, libc, an ABI-mismatched library and a library whose constructor aborts are all
 * clean "not available" answers. Where g++ exists, a FAKE hiermem_cuda.so (host memory behind the
 * same function table) drives binding/cuda_lib.cc + cuda_model.cc end to end in child processes: uploads, downloads,
 * ADD semantics, positions and memory groups, dfetched, AdamW clipping and weight-decay segments,
 * E_NON_FINITE, E_BUSY, E_DISPOSED, E_CUDA on allocation failure, and the CPU model's boundary checks.
 *
 * With a GPU (skipped here): the kernel harness must pass, and CudaAnchorModel must match the CPU
 * AnchorModel (loss, gradients, AdamW updates) over two steps.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { loadNative, nativeAddonPath, packageRoot } from '../lib/native.js';
import {
  BACKEND_ENV, CUDA_LIB_ENV, CudaAdamW, CudaAnchorModel, cudaLibraryPath, detectGpu, nvidiaDriverPresent, resolveBackend,
} from '../lib/backend.js';
import { HiermemError } from '../lib/errors.js';
import { AnchorModel } from '../lib/model/anchor.js';
import { AdamW } from '../lib/train/adamw.js';
import { Rng } from './helpers.js';
import { ABORT_SOURCE, FAKE_SOURCE, NULL_API_SOURCE, buildFake, hasGxx } from './fake-cuda.js';

const root = packageRoot();
const indexUrl = pathToFileURL(path.join(root, 'dist', 'lib', 'index.js')).href;
const gpu = detectGpu();
const driver = nvidiaDriverPresent();
const NO_GPU = `no usable CUDA GPU here (${gpu.reason})`;

const isCode = (code: string) => (e: unknown) => e instanceof HiermemError && e.code === code;

/** Runs an ES module body in a fresh node (own CUDA library slot, own stderr); env added to ours. */
function runChild(body: string, env: Record<string, string | undefined> = {}) {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete childEnv[k];
  delete childEnv.NODE_OPTIONS;
  const src = `import assert from 'node:assert/strict';\nconst lib = await import(${JSON.stringify(indexUrl)});\n${body}\n`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', src], { encoding: 'utf8', env: childEnv, timeout: 120_000 });
  return { status: r.status, signal: r.signal, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

function expectChildOk(r: ReturnType<typeof runChild>, label: string) {
  assert.equal(r.status, 0, `${label}: child exited ${r.status} (${r.signal})\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
}

// ---- no GPU: detection and selection ------------------------------------------------------

describe('CUDA detection without a GPU', { skip: gpu.available ? 'a GPU is present: covered by the GPU tests below' : false }, () => {
  test('detectGpu answers "not available" with a reason and the library it tried', () => {
    const g = detectGpu({ refresh: true });
    assert.equal(g.available, false);
    assert.ok(g.reason.length > 0 && g.reason !== 'ok', `reason: ${g.reason}`);
    assert.equal(g.driverPresent, driver);
    assert.equal(g.library.path, cudaLibraryPath());
    if (g.library.loaded) {
      // the library loaded in the child: the device query must have said why there is no device
      assert.ok(g.device && g.device.status !== 0 && g.device.statusText.length > 0, JSON.stringify(g.device));
      if (!driver) assert.equal(g.device.status, 35, 'no driver: cudaErrorInsufficientDriver');
    }
  });

  test("'cuda' throws E_BACKEND_UNAVAILABLE naming the reason", () => {
    assert.throws(() => resolveBackend('cuda'), (e: unknown) => isCode('E_BACKEND_UNAVAILABLE')(e) && (e as Error).message.includes(gpu.reason));
    assert.throws(() => CudaAnchorModel.create({ vocabSize: 16 }), isCode('E_BACKEND_UNAVAILABLE'));
  });

  test("'cpu' is the CPU; a bad backend name is E_INVALID_ARGUMENT", () => {
    assert.equal(resolveBackend('cpu'), 'cpu');
    assert.throws(() => resolveBackend('gpu' as never), isCode('E_INVALID_ARGUMENT'));
  });

  test("'auto' without an NVIDIA driver: the CPU, and nothing on stderr", { skip: driver ? 'an NVIDIA driver is installed here' : false }, () => {
    const r = runChild(`process.stdout.write(lib.resolveBackend('auto') + ' ' + lib.resolveBackend());`, { [BACKEND_ENV]: undefined });
    expectChildOk(r, 'auto');
    assert.equal(r.stdout, 'cpu cpu');
    assert.equal(r.stderr, '', 'a machine without a GPU must never print CUDA errors');
  });

  test("'auto' where a driver exists but CUDA fails: the CPU and ONE notice line per process", () => {
    const r = runChild(`process.stdout.write(lib.resolveBackend('auto', { driverPresent: true }) + lib.resolveBackend('auto', { driverPresent: true }));`,
      { [BACKEND_ENV]: undefined });
    expectChildOk(r, 'auto + driver');
    assert.equal(r.stdout, 'cpucpu');
    assert.match(r.stderr, /^hiermem: no usable GPU \(.+\), using the CPU backend\n$/);
  });

  test(`${BACKEND_ENV} overrides 'auto' only`, () => {
    const saved = process.env[BACKEND_ENV];
    try {
      process.env[BACKEND_ENV] = 'cpu';
      assert.equal(resolveBackend('auto'), 'cpu');
      process.env[BACKEND_ENV] = 'cuda';
      assert.throws(() => resolveBackend('auto'), isCode('E_BACKEND_UNAVAILABLE'));
      assert.equal(resolveBackend('cpu'), 'cpu', 'an explicit backend wins over the variable');
      process.env[BACKEND_ENV] = 'tpu';
      assert.throws(() => resolveBackend('auto'), (e: unknown) => isCode('E_INVALID_ARGUMENT')(e) && /HIERMEM_BACKEND/.test((e as Error).message));
    } finally {
      if (saved === undefined) delete process.env[BACKEND_ENV];
      else process.env[BACKEND_ENV] = saved;
    }
  });

  test('hiermem info --gpu prints the probe without failing', () => {
    const r = spawnSync(process.execPath, [path.join(root, 'dist', 'lib', 'cli', 'main.js'), 'info', '--gpu'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    const info = JSON.parse(r.stdout) as { gpu: { available: boolean; reason: string; library: { path: string | null } } };
    assert.equal(info.gpu.available, false);
    assert.ok(info.gpu.reason.length > 0);
    assert.equal(info.gpu.library.path, cudaLibraryPath());
    assert.equal(r.stderr, '');
  });
});

// ---- libraries that are not (usable) hiermem CUDA libraries -------------------------------

describe('the CUDA loader refuses bad libraries cleanly', () => {
  const withLib = (lib: string) => {
    const saved = process.env[CUDA_LIB_ENV];
    process.env[CUDA_LIB_ENV] = lib;
    try {
      return detectGpu({ refresh: true });
    } finally {
      if (saved === undefined) delete process.env[CUDA_LIB_ENV];
      else process.env[CUDA_LIB_ENV] = saved;
    }
  };

  test('a path that does not exist', () => {
    const g = withLib('/nonexistent/hiermem_cuda.so');
    assert.equal(g.available, false);
    assert.equal(g.library.found, false);
    assert.match(g.reason, /HIERMEM_CUDA_LIB=\/nonexistent\/hiermem_cuda\.so: no such file/);
    const r = loadNative().cudaOpen('/nonexistent/hiermem_cuda.so');
    assert.equal(r.loaded, false);
    // (once a real library is open in this process, cudaOpen answers "already loaded" instead)
    if (!loadNative().cudaStatus().loaded) assert.match(r.error ?? '', /dlopen failed: .*No such file/);
  });

  test('hostile arguments to the loader are typed errors', () => {
    const addon = loadNative();
    for (const h of [undefined, null, 0, {}, [], 1n, Symbol('x')]) {
      assert.throws(() => addon.cudaOpen(h as never), isCode('E_INVALID_ARGUMENT'));
      assert.throws(() => addon.cudaDeviceInfo(h as never), (e: unknown) => e instanceof HiermemError);
    }
    for (const h of [-1, 1.5, NaN, 2 ** 40]) assert.throws(() => addon.cudaDeviceInfo(h), isCode('E_INVALID_ARGUMENT'));
    const empty = addon.cudaOpen('');
    assert.equal(empty.loaded, false);
  });

  test('an executable (/bin/ls) and a library without hmc_get_api (libc)', () => {
    const ls = withLib('/bin/ls');
    assert.equal(ls.available, false);
    assert.equal(ls.library.found, true);
    assert.equal(ls.library.loaded, false);
    assert.match(ls.reason, /dlopen failed/);
    const addon = loadNative();
    assert.equal(addon.cudaOpen('/bin/ls').loaded, false);
    const libc = addon.cudaOpen('libc.so.6');
    assert.equal(libc.loaded, false);
    if (!addon.cudaStatus().loaded) assert.match(libc.error ?? '', /not a hiermem CUDA library \(no hmc_get_api/);
    // nothing was accepted: a device query still says "no library"
    if (!addon.cudaStatus().loaded) assert.throws(() => addon.cudaDeviceInfo(0), isCode('E_BACKEND_UNAVAILABLE'));
  });
});

// ---- packaging: the library that would ship ----------------------------------------------

describe('hiermem_cuda.so as shipped', () => {
  const GLIBC = /^(libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|ld-linux-x86-64\.so\.2|ld-linux-aarch64\.so\.1)$/;
  const candidates = [cudaLibraryPath(), path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, 'hiermem_cuda.so')]
    .filter((p): p is string => p !== null && fs.existsSync(p));
  const readelf = spawnSync('readelf', ['--version']).status === 0;
  test('depends on glibc only (static cudart, static libstdc++) and exports hmc_get_api', (t) => {
    if (candidates.length === 0) return t.skip('no hiermem_cuda.so built here (no nvcc at build time)');
    if (!readelf) return t.skip('readelf not installed');
    for (const lib of new Set(candidates)) {
      const d = spawnSync('readelf', ['-d', '-W', lib], { encoding: 'utf8' });
      const needed = [...d.stdout.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]!);
      assert.deepEqual(needed.filter((n) => !GLIBC.test(n)), [], `${lib} needs more than glibc: ${needed.join(', ')}`);
      const syms = spawnSync('readelf', ['--dyn-syms', '-W', lib], { encoding: 'utf8' });
      assert.match(syms.stdout, /\bGLOBAL\s+DEFAULT\s+\d+\s+hmc_get_api\b/, `${lib} does not export hmc_get_api`);
    }
  });
});

// ---- the real CUDA runtime without a driver ----------------------------------------------

const hasNvcc = spawnSync('nvcc', ['--version']).status === 0;

/** cuda/runtime.cu's device query behind a table with nothing else (no kernels: quick to build). */
const MIN_API_SOURCE = String.raw`
#include <cuda_runtime.h>
#include "hiermem_cuda.h"
namespace hmc { int32_t device_info(int32_t device, hmc_device_info* out); }
namespace {
const char* error_string(int32_t s) { return cudaGetErrorString((cudaError_t)s); }
hmc_api make() { hmc_api a{}; a.abi_version = HMC_ABI_VERSION; a.device_info = hmc::device_info; a.error_string = error_string; return a; }
const hmc_api kApi = make();
}
extern "C" __attribute__((visibility("default"))) const hmc_api* hmc_get_api(int32_t v) { return v == HMC_ABI_VERSION ? &kApi : nullptr; }
`;

test('a static-cudart library on a machine without a driver: status 35, no crash, no output', (t) => {
  if (!hasNvcc) return t.skip('nvcc not found');
  if (driver) return t.skip('an NVIDIA driver is installed here');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hiermem-min-cuda-'));
  try {
    fs.writeFileSync(path.join(dir, 'api.cu'), MIN_API_SOURCE);
    const so = path.join(dir, 'hiermem_cuda.so');
    const c = spawnSync('nvcc', ['-std=c++17', '-shared', '-Xcompiler', '-fPIC,-fvisibility=hidden', '-cudart', 'static',
      `-I${path.join(root, 'cuda')}`, '-o', so, path.join(root, 'cuda', 'runtime.cu'), path.join(dir, 'api.cu')], { encoding: 'utf8' });
    assert.equal(c.status, 0, `nvcc: ${c.stderr}`);
    const r = runChild(`const g = lib.detectGpu();
      assert.equal(g.library.loaded, true, g.reason);
      assert.equal(g.available, false);
      assert.equal(g.device.status, 35, JSON.stringify(g.device));
      assert.match(g.reason, /insufficient.*\(cudaError 35\)/);
      assert.equal(lib.resolveBackend('auto'), 'cpu');
      assert.throws(() => lib.resolveBackend('cuda'), (e) => e.code === 'E_BACKEND_UNAVAILABLE' && /cudaError 35/.test(e.message));`,
    { [CUDA_LIB_ENV]: so, [BACKEND_ENV]: undefined });
    expectChildOk(r, 'static cudart');
    assert.equal(r.stderr, '');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// ---- a fake hiermem_cuda.so: the binding end to end without a GPU --------------------------
// (test/fake-cuda.ts: host memory behind the real function table; device pointers are host pointers)

describe('binding/cuda_lib.cc + cuda_model.cc against a fake CUDA library (host memory)', { skip: hasGxx ? false : 'g++ not found: cannot build the fake library' }, () => {
  let dir = '';
  const lib = (name: string) => path.join(dir, name);
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hiermem-fake-cuda-'));
    for (const [name, src] of [['fake.so', FAKE_SOURCE], ['null-api.so', NULL_API_SOURCE], ['abort.so', ABORT_SOURCE]] as const) {
      buildFake(dir, name, src);
    }
  });
  after(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('found beside the addon as prebuildify lays it out (prebuilds/<platform>-<arch>/, stripped)', (t) => {
    const addon = nativeAddonPath();
    if (!addon) return t.skip('the addon file is unknown');
    const pre = path.join(dir, 'pkg', 'prebuilds', `${process.platform}-${process.arch}`);
    fs.mkdirSync(pre, { recursive: true });
    fs.copyFileSync(addon, path.join(pre, 'hiermem.node'));
    fs.copyFileSync(lib('fake.so'), path.join(pre, 'hiermem_cuda.so'));
    spawnSync('strip', ['--strip-all', path.join(pre, 'hiermem_cuda.so')]); // what prebuildify --strip does (best effort)
    const r = runChild(`const g = lib.detectGpu(); process.stdout.write(JSON.stringify(g));`,
      { HIERMEM_ADDON_PATH: path.join(pre, 'hiermem.node'), [CUDA_LIB_ENV]: undefined });
    expectChildOk(r, 'prebuild layout');
    const g = JSON.parse(r.stdout) as { available: boolean; reason: string; library: { path: string } };
    assert.equal(g.library.path, path.join(pre, 'hiermem_cuda.so'));
    assert.equal(g.available, true, g.reason);
  });

  test('ABI mismatch (hmc_get_api returns null) is refused', () => {
    const r = runChild(`const g = lib.detectGpu(); process.stdout.write(JSON.stringify(g));`, { [CUDA_LIB_ENV]: lib('null-api.so') });
    expectChildOk(r, 'null api');
    const g = JSON.parse(r.stdout) as { available: boolean; reason: string; library: { loaded: boolean } };
    assert.equal(g.available, false);
    assert.equal(g.library.loaded, false);
    assert.match(g.reason, /ABI mismatch/);
  });

  test('a library that aborts while loading kills only the probe child', () => {
    const r = runChild(`const g = lib.detectGpu(); process.stdout.write(JSON.stringify(g));
      assert.throws(() => lib.resolveBackend('cuda'), (e) => e.code === 'E_BACKEND_UNAVAILABLE');`, { [CUDA_LIB_ENV]: lib('abort.so') });
    expectChildOk(r, 'abort');
    const g = JSON.parse(r.stdout) as { available: boolean; reason: string };
    assert.equal(g.available, false);
    assert.match(g.reason, /GPU probe crashed \(SIGABRT\)/);
  });

  test('a device query that fails: not available, the status text, one notice for auto', () => {
    const r = runChild(`const g = lib.detectGpu();
      assert.equal(g.available, false);
      assert.equal(g.library.loaded, true);
      assert.equal(g.reason, 'fake status 100 (cudaError 100)');
      assert.throws(() => lib.resolveBackend('cuda'), (e) => e.code === 'E_BACKEND_UNAVAILABLE' && e.message.includes('fake status 100'));
      process.stdout.write(lib.resolveBackend('auto', { driverPresent: true }));`,
    { [CUDA_LIB_ENV]: lib('fake.so'), HIERMEM_FAKE_CUDA_STATUS: '100', [BACKEND_ENV]: undefined });
    expectChildOk(r, 'status 100');
    assert.equal(r.stdout, 'cpu');
    assert.equal(r.stderr, 'hiermem: no usable GPU (fake status 100 (cudaError 100)), using the CPU backend\n');
  });

  test('device allocation failure is E_CUDA, nothing leaks into later calls', () => {
    const r = runChild(`assert.equal(lib.resolveBackend('cuda'), 'cuda');
      assert.throws(() => lib.CudaAnchorModel.create({ vocabSize: 16, dModel: 8, nLayers: 1, nHeads: 2, headDim: 4, ffnHidden: 8, seqLen: 4 }),
        (e) => e.code === 'E_CUDA' && /cannot allocate/.test(e.message));`,
    { [CUDA_LIB_ENV]: lib('fake.so'), HIERMEM_FAKE_CUDA_OOM: '1' });
    expectChildOk(r, 'oom');
  });

  test('the device model: init, uploads, ADD semantics, positions, memory groups, dfetched, AdamW, errors', () => {
    const r = runChild(String.raw`
      const { CudaAnchorModel, CudaAdamW, AnchorModel, detectGpu, resolveBackend } = lib;
      const code = (c) => (e) => { assert.equal(e.code, c, e.message); return true; };
      const g = detectGpu();
      assert.equal(g.available, true, g.reason);
      assert.equal(g.device.name, 'hiermem fake device');
      assert.equal(g.device.computeCapability, '9.0');
      assert.equal(resolveBackend('auto', { driverPresent: true }), 'cuda');
      assert.equal(resolveBackend('cuda'), 'cuda');
      const cfg = { vocabSize: 32, dModel: 8, nLayers: 2, nHeads: 2, headDim: 4, ffnHidden: 16, seqLen: 4, seed: 3 };
      const memory = { R: 2, layerToMemory: Int32Array.from([0, -1]) };
      const m = CudaAnchorModel.create(cfg, { maxBatch: 4, memory });
      const cpu = AnchorModel.create(cfg, { maxBatch: 1 });
      assert.deepEqual(m.downloadParams(), cpu.params, 'the CPU model init, uploaded');
      assert.equal(m.paramCount, cpu.paramCount);
      assert.deepEqual(m.tensor('layers.1.ffn.w3'), cpu.tensor('layers.1.ffn.w3'));
      assert.ok(m.downloadGrads().every((x) => x === 0), 'gradients start at zero');

      const B = 4, T = 4, N = B * T;
      const tokens = Int32Array.from({ length: N }, (_, i) => (i * 7 + 1) % 32);
      const targets = Int32Array.from({ length: N }, (_, i) => (i % 5 === 0 ? -1 : (i * 3) % 32));
      const docStart = Int32Array.from([0, 0, 2, 2, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 3]);
      const slot = 1 * 3 * 2 * 8; // Lm * 3 * R * C (one memory layer)
      const fetched = new Float32Array(2 * slot); fetched[0] = 0.25;
      const dfetched = new Float32Array(2 * slot).fill(5);
      const seqSlot = Int32Array.from([0, 0, -1, 1]); // groups {rows 0-7, slot 0}, {rows 12-15, slot 1}
      const batch = { tokens, targets, docStart, batchSize: B, memory: { fetched, dfetched, seqSlot, numSlots: 2 } };
      let sumTok = 0, sumPos = 0;
      for (let i = 0; i < N; i++) { sumTok += tokens[i]; sumPos += (i % T) - docStart[i]; }
      const expected = sumTok + 0.001 * sumPos + 2 * 100 + 10 * 1 + 0.5;
      assert.ok(Math.abs(await m.forwardBackward(batch) - expected) < 1e-9, 'loss sees tokens, doc positions, groups');
      assert.equal(dfetched[0], 5 + 1 + 0.25, 'dfetched is ADDED to and copied back');
      assert.ok(dfetched.subarray(1).every((x) => x === 5));
      assert.ok(m.downloadGrads().every((x) => x === 1));
      await m.forwardBackward({ tokens, targets, batchSize: B });
      assert.ok(m.downloadGrads().every((x) => x === 2), 'gradients accumulate');
      let sumPlain = 0; for (let i = 0; i < N; i++) sumPlain += tokens[i] + 0.001 * (i % T);
      assert.ok(Math.abs(await m.loss({ tokens, targets, batchSize: B }) - sumPlain) < 1e-9);
      assert.ok(m.downloadGrads().every((x) => x === 2), 'loss() leaves gradients alone');

      // one call at a time
      const pending = m.forwardBackward({ tokens, targets, batchSize: B });
      assert.throws(() => m.zeroGrad(), code('E_BUSY'));
      await pending;
      m.zeroGrad();
      await m.forwardBackward({ tokens, targets, batchSize: B });
      await m.forwardBackward({ tokens, targets, batchSize: B }); // grads = 2 everywhere

      // the CPU model's boundary checks
      await assert.rejects(m.forwardBackward({ tokens: tokens.subarray(1), targets, batchSize: B }), code('E_SHAPE_MISMATCH'));
      await assert.rejects(m.forwardBackward({ tokens: Int32Array.from(tokens, (t, i) => (i === 3 ? 32 : t)), targets, batchSize: B }), code('E_TOKEN_OUT_OF_RANGE'));
      await assert.rejects(m.forwardBackward({ tokens, targets: Int32Array.from(targets, (t, i) => (i === 3 ? -2 : t)), batchSize: B }), code('E_TOKEN_OUT_OF_RANGE'));
      await assert.rejects(m.forwardBackward({ tokens, targets, batchSize: 5 }), code('E_INVALID_ARGUMENT'));
      await assert.rejects(m.forwardBackward({ tokens, targets, docStart: Int32Array.from(docStart, (d, i) => (i === 1 ? 2 : d)), batchSize: B }), code('E_INVALID_ARGUMENT'));
      await assert.rejects(m.forwardBackward({ ...batch, memory: { ...batch.memory, seqSlot: Int32Array.from([0, 2, 0, 0]) } }), code('E_INVALID_ARGUMENT'));
      await assert.rejects(m.forwardBackward({ ...batch, memory: { ...batch.memory, dfetched: null } }), code('E_INVALID_ARGUMENT'));
      await assert.rejects(m.forwardBackward({ ...batch, memory: { ...batch.memory, fetched: new Float32Array(3) } }), code('E_SHAPE_MISMATCH'));
      assert.throws(() => m.uploadParams(new Float32Array(3)), code('E_SHAPE_MISMATCH'));
      assert.ok(m.downloadGrads().every((x) => x === 2), 'rejected batches changed nothing');
      const plain = CudaAnchorModel.create(cfg, { maxBatch: 2 });
      await assert.rejects(plain.forwardBackward({ tokens: tokens.subarray(0, 8), targets: targets.subarray(0, 8), batchSize: 2, memory: batch.memory }), code('E_CONFIG_INVALID'));
      plain.dispose();
      // no layer cap: the layer map crosses the ABI as a pointer (cpp/contract.h ModelMemory)
      const deep = CudaAnchorModel.create({ ...cfg, nLayers: 65 }, { maxBatch: 1 });
      deep.dispose();
      assert.throws(() => CudaAnchorModel.create(cfg, { gemm: 'fp8' }), code('E_INVALID_ARGUMENT'));

      // AdamW: the norm of all-2 gradients, clipped to 1; weight decay on matrices only
      const before = m.downloadParams();
      const opt = new CudaAdamW(m, { weightDecay: 0.1, clipNorm: 1 });
      const n = m.paramCount, lr = 0.01;
      const res = await opt.step(m, lr);
      assert.ok(Math.abs(res.gradNorm - 2 * Math.sqrt(n)) < 1e-9 * res.gradNorm, 'gradNorm');
      assert.ok(Math.abs(res.gradScale - 1 / (2 * Math.sqrt(n))) < 1e-12, 'gradScale');
      assert.equal(opt.stepCount, 1);
      const after = m.downloadParams();
      for (const s of m.layout) {
        const wd = s.decay ? 0.1 : 0;
        for (let i = s.offset; i < s.offset + s.size; i++) {
          const want = Math.fround(before[i] - Math.fround(Math.fround(Math.fround(lr) * Math.fround(res.gradScale)) * 2) - Math.fround(wd));
          assert.ok(Math.abs(after[i] - want) <= 1e-6, s.name + '[' + (i - s.offset) + ']: ' + after[i] + ' vs ' + want);
        }
      }
      // a non-finite norm: E_NON_FINITE, nothing changes, the step is not counted
      m.zeroGrad();
      await m.forwardBackward({ tokens: Int32Array.from(tokens, (t, i) => (i === 0 ? 13 : t)), targets, batchSize: B });
      await assert.rejects(opt.step(m, lr), code('E_NON_FINITE'));
      assert.equal(opt.stepCount, 1);
      assert.deepEqual(m.downloadParams(), after);
      assert.ok(Number.isNaN(m.gradNorm()), 'gradNorm: the device reduction of NaN gradients');
      await assert.rejects(opt.step(m, lr, NaN), code('E_NON_FINITE'));
      assert.equal(opt.stepCount, 1);

      // a given norm (joint clipping) replaces the device's own: 0.5 < clipNorm, so no clipping
      m.zeroGrad();
      await m.forwardBackward({ tokens, targets, batchSize: B }); // grads = 1
      assert.ok(Math.abs(m.gradNorm() - Math.sqrt(n)) < 1e-9 * Math.sqrt(n));
      const given = await opt.step(m, lr, 0.5);
      assert.deepEqual(given, { gradNorm: 0.5, gradScale: 1 });
      assert.equal(opt.stepCount, 2);
      const after2 = m.downloadParams();
      for (const s of m.layout) {
        const i = s.offset, wd = s.decay ? 0.1 : 0;
        assert.ok(Math.abs(after2[i] - Math.fround(after[i] - Math.fround(Math.fround(lr) * 1) * 1 - Math.fround(wd))) <= 1e-6, s.name);
      }

      // AdamW state: the toy counts updates in m and sums gradients in v; download, upload, round trip
      const ms = new Float32Array(n), vs = new Float32Array(n);
      m.downloadAdamState(ms, vs);
      assert.ok(ms.every((x) => x === 2) && vs.every((x) => x === 3), 'm, v downloaded');
      m.uploadAdamState(Float32Array.from(ms, (_, i) => i), Float32Array.from(vs, (_, i) => -i));
      m.downloadAdamState(ms, vs);
      assert.ok(ms.every((x, i) => x === i) && vs.every((x, i) => x === -i), 'm, v uploaded');
      assert.throws(() => m.downloadAdamState(new Float32Array(3), vs), code('E_SHAPE_MISMATCH'));
      assert.throws(() => m.uploadAdamState(ms, new Float32Array(n + 1)), code('E_SHAPE_MISMATCH'));
      const st = opt.exportState(m);
      assert.equal(st.stepCount, 2);
      assert.deepEqual(st.m, ms);
      const opt2 = new CudaAdamW(m);
      opt2.importState(m, { m: new Float32Array(n).fill(7), v: new Float32Array(n).fill(8), stepCount: 5 });
      assert.equal(opt2.stepCount, 5);
      m.downloadAdamState(ms, vs);
      assert.ok(ms.every((x) => x === 7) && vs.every((x) => x === 8), 'importState uploads m, v');
      assert.throws(() => m.nativeModel().adamwStep(Float64Array.from([0, 4, 0.1]), { lr: 0.01, beta1: 0.9, beta2: 0.95, eps: 1e-8, step: 1, clipNorm: 1, gradNorm: -1 }),
        code('E_INVALID_ARGUMENT'));

      // hostile values in every argument: a HiermemError with a code, never another exception or a crash
      const hostile = [undefined, null, 0, -1, 2 ** 53, NaN, Infinity, '4', {}, [], [1, 2], 1n, Symbol('x'), () => 1,
        new Float32Array(0), new Float32Array(3), new Int32Array(3), new Float64Array(2), new Uint8Array(8)];
      const nm = m.nativeModel();
      const hyper = { lr: 0.01, beta1: 0.9, beta2: 0.95, eps: 1e-8, step: 1, clipNorm: 1 };
      const segs = Float64Array.from([0, 4, 0.1]);
      const typed = (e) => { assert.ok(e instanceof lib.HiermemError && /^E_/.test(e.code), String(e && e.stack || e)); };
      for (const h of hostile) {
        const calls = [() => nm.uploadParams(h), () => nm.forwardBackward(h), () => nm.forwardLoss(h), () => nm.adamwStep(h, hyper),
          () => nm.adamwStep(segs, h), () => nm.adamwStep(segs, { ...hyper, gradNorm: h }), () => nm.downloadAdamState(h, h),
          () => nm.uploadAdamState(h, h), () => nm.downloadAdamState(new Float32Array(n), h), () => nm.forwardBackward({ tokens: h, targets, batchSize: B }),
          () => nm.forwardBackward({ ...batch, memory: h }), () => nm.forwardBackward({ ...batch, memory: { ...batch.memory, numSlots: h } }),
          () => lib.loadNative().createCudaAnchorModel(h, 2), () => lib.loadNative().createCudaAnchorModel({ ...cfg, normEps: 1e-5, ropeBase: 1e4, dModel: h }, 2),
          () => lib.loadNative().createCudaAnchorModel({ ...cfg, normEps: 1e-5, ropeBase: 1e4 }, h), () => lib.loadNative().cudaDeviceInfo(h)];
        for (const call of calls) {
          let r;
          try { r = call(); } catch (e) { typed(e); continue; }
          if (r instanceof Promise) await r.then(() => {}, typed);
          else if (r && typeof r.dispose === 'function') r.dispose();
        }
      }
      while (m.nativeModel().busy) await new Promise((res) => setTimeout(res, 1));

      m.dispose();
      assert.throws(() => m.downloadParams(), code('E_DISPOSED'));
      await assert.rejects(m.forwardBackward({ tokens, targets, batchSize: B }), code('E_DISPOSED'));
      m.dispose(); // idempotent
      process.stdout.write('ok');
    `, { [CUDA_LIB_ENV]: lib('fake.so') });
    expectChildOk(r, 'fake model');
    assert.equal(r.stdout, 'ok');
    assert.equal(r.stderr, '');
  });
});

// ---- with a GPU --------------------------------------------------------------------------

describe('CUDA backend on a GPU', () => {
  test('the kernel harness passes (hiermem_cuda_harness beside the addon)', (t) => {
    if (!gpu.available) return t.skip(NO_GPU);
    const addon = nativeAddonPath();
    const harness = [addon ? path.join(path.dirname(addon), 'hiermem_cuda_harness') : '', path.join(root, 'build', 'Release', 'hiermem_cuda_harness')]
      .find((p) => p && fs.existsSync(p));
    if (!harness) return t.skip('hiermem_cuda_harness was not built');
    const r = spawnSync(harness, [], { encoding: 'utf8', timeout: 540_000 });
    assert.equal(r.status, 0, `harness exit ${r.status} (${r.signal})\n${(r.stdout ?? '').slice(-6000)}\n${(r.stderr ?? '').slice(-3000)}`);
  });

  /**
   * CudaAnchorModel against AnchorModel, same init, two optimizer steps. Tolerances: fp32 GEMMs in
   * another summation order, so loss rtol 1e-4 and gradients within 1e-3 of the largest gradient.
   * The device AdamW is checked against a float64 replica fed with the DEVICE's own gradients (so
   * that gradient noise near g = 0, where AdamW's first steps are ~lr * sign(g), cannot blur it):
   * within 1e-4 lr per element. Before step 2 the GPU gets the CPU's parameters, so that step 2
   * compares gradients at the same point (the device m, v carry on from step 1, as the replica's).
   */
  async function parity(t: { skip(msg: string): void }, memoryLayers: boolean) {
    if (!gpu.available) return t.skip(NO_GPU);
    resolveBackend('cuda');
    const cfg = { vocabSize: 64, dModel: 32, nLayers: 2, nHeads: 2, headDim: 16, ffnHidden: 64, seqLen: 16, seed: 7 };
    const B = 3, T = cfg.seqLen, N = B * T, R = 4;
    const memory = memoryLayers ? { R, layerToMemory: Int32Array.from([0, -1]) } : null;
    const cpu = AnchorModel.create(cfg, { maxBatch: B, memory });
    const dev = CudaAnchorModel.create(cfg, { maxBatch: B, memory, gemm: 'fp32' });
    assert.deepEqual(dev.downloadParams(), cpu.params, 'same init on both backends');
    const rng = new Rng(11);
    const cpuOpt = new AdamW(cpu), devOpt = new CudaAdamW(dev);
    const lr = 1e-3;
    const mRep = new Float64Array(cpu.paramCount), vRep = new Float64Array(cpu.paramCount);
    for (let step = 1; step <= 2; step++) {
      const tokens = Int32Array.from({ length: N }, () => rng.int(cfg.vocabSize));
      const targets = Int32Array.from({ length: N }, (_, i) => (i % 7 === 3 ? -1 : rng.int(cfg.vocabSize)));
      const docStart = new Int32Array(N);
      for (let b = 0; b < B; b++) for (let i = 0; i < T; i++) docStart[b * T + i] = b === 1 && i >= 9 ? 9 : 0;
      let mem = null;
      let dfCpu: Float32Array | null = null, dfDev: Float32Array | null = null;
      if (memoryLayers) {
        const fetched = Float32Array.from({ length: 2 * 3 * R * cfg.dModel }, () => rng.normal() * 0.1);
        dfCpu = new Float32Array(fetched.length);
        dfDev = new Float32Array(fetched.length);
        mem = { fetched, seqSlot: Int32Array.from([1, -1, 0]), numSlots: 2 };
      }
      cpu.zeroGrad();
      dev.zeroGrad();
      const lc = await cpu.forwardBackward({ tokens, targets, docStart, batchSize: B, memory: mem && { ...mem, dfetched: dfCpu } });
      const ld = await dev.forwardBackward({ tokens, targets, docStart, batchSize: B, memory: mem && { ...mem, dfetched: dfDev } });
      assert.ok(Math.abs(ld - lc) <= 1e-4 * Math.abs(lc), `step ${step}: loss ${ld} vs CPU ${lc}`);
      const gd = dev.downloadGrads();
      const gmax = cpu.grads.reduce((a, x) => Math.max(a, Math.abs(x)), 0);
      let worst = 0, at = 0;
      for (let i = 0; i < gd.length; i++) {
        const d = Math.abs(gd[i]! - cpu.grads[i]!);
        if (!(d <= worst)) { worst = d; at = i; }
      }
      const slotAt = cpu.layout.find((s) => at >= s.offset && at < s.offset + s.size)!;
      assert.ok(worst <= 1e-3 * gmax, `step ${step}: grads differ by ${worst} (max |g| ${gmax}) at ${slotAt.name}[${at - slotAt.offset}]`);
      if (dfCpu && dfDev) {
        const fmax = dfCpu.reduce((a, x) => Math.max(a, Math.abs(x)), 0);
        const fw = dfDev.reduce((a, x, i) => Math.max(a, Math.abs(x - dfCpu![i]!)), 0);
        assert.ok(fw <= 1e-3 * fmax, `step ${step}: dfetched differs by ${fw} (max ${fmax})`);
      }
      const p0 = dev.downloadParams();
      const rc = await cpuOpt.step(cpu, lr);
      const rd = await devOpt.step(dev, lr);
      assert.ok(Math.abs(rd.gradNorm - rc.gradNorm) <= 1e-3 * rc.gradNorm, `step ${step}: grad norm ${rd.gradNorm} vs ${rc.gradNorm}`);
      assert.ok(Math.abs(rd.gradScale - rc.gradScale) <= 1e-3 * rc.gradScale, `step ${step}: grad scale`);
      const ownNorm = Math.sqrt(gd.reduce((a, x) => a + x * x, 0));
      assert.ok(Math.abs(rd.gradNorm - ownNorm) <= 1e-6 * ownNorm, `step ${step}: device norm ${rd.gradNorm} vs its gradients' ${ownNorm}`);
      const pd = dev.downloadParams();
      const o = devOpt.options;
      const bc1 = 1 - o.beta1 ** step, bc2 = 1 - o.beta2 ** step;
      for (const s of dev.layout) {
        const wd = s.decay ? o.weightDecay : 0;
        for (let i = s.offset; i < s.offset + s.size; i++) {
          const g = gd[i]! * rd.gradScale;
          mRep[i] = o.beta1 * mRep[i]! + (1 - o.beta1) * g;
          vRep[i] = o.beta2 * vRep[i]! + (1 - o.beta2) * g * g;
          const want = p0[i]! - lr * (mRep[i]! / bc1 / (Math.sqrt(vRep[i]! / bc2) + o.eps) + wd * p0[i]!);
          assert.ok(Math.abs(pd[i]! - want) <= 1e-4 * lr + 2e-7 * Math.abs(p0[i]!),
            `step ${step}: AdamW ${s.name}[${i - s.offset}] = ${pd[i]}, replica ${want}`);
        }
      }
      dev.uploadParams(cpu.params); // step 2 starts from the same point on both
    }
    dev.dispose();
    cpu.dispose();
  }

  test('CudaAnchorModel matches the CPU AnchorModel over two steps (fp32)', (t) => parity(t, false));
  test('... with FFN memories (fetched blocks, dfetched)', (t) => parity(t, true));
});
