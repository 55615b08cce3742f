/**
 * Training on the CUDA backend (issue #8) without a GPU: the train loop, the memory step (bank in
 * host memory, fetched blocks up, dfetched down), checkpoints across backends and the CLI's
 * --backend, driven through the CPU-TWIN fake hiermem_cuda.so of test/fake-cuda.ts (the device
 * model is the CPU hm::AnchorModel on the binding's buffers; AdamW is cuda/kernels/adamw.cu's
 * float expression on the host).
 *
 * What "equal" means here: forward/backward are the CPU's own code, so a step from the same state
 * gives the same loss bit for bit. The device AdamW derives 1 - beta in float from the float beta,
 * the CPU in double from the double beta; for betas exact in float (EXACT_BETAS) the two updates are
 * the same floats and whole runs are equal bit for bit; with the defaults (0.9, 0.95) the moments
 * differ by ~2e-7 relative and losses after the first step agree to ~1e-7 (checked at 1e-5).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../lib/native.js';
import { BACKEND_ENV, CUDA_LIB_ENV, CudaAnchorModel, detectGpu, nvidiaDriverPresent, resolveBackend } from '../lib/backend.js';
import { HiermemError } from '../lib/errors.js';
import { AnchorModel, type Batch } from '../lib/model/anchor.js';
import { AdamW, type AdamWOptions } from '../lib/train/adamw.js';
import { loadCheckpoint, type TrainerState } from '../lib/train/checkpoint.js';
import { anchorStepper, trainLoop, type Stepper } from '../lib/train/trainer.js';
import { loadHierarchicalCheckpoint, memoryStepper, type MemoryTrainMode } from '../lib/train/memory-trainer.js';
import { ByteTokenizer } from '../lib/data/tokenizer.js';
import { WindowSampler } from '../lib/data/windows.js';
import { packByLeaf, PathBatchSampler } from '../lib/data/packing.js';
import { MemoryBank } from '../lib/memory/bank.js';
import { HierarchicalModel } from '../lib/memory/memory-model.js';
import { resolveMemorySpec } from '../lib/memory/spec.js';
import { buildTwinFake, twinFakeUnavailable } from './fake-cuda.js';

const execFileP = promisify(execFile);
const CLI = path.join(packageRoot(), 'dist', 'lib', 'cli', 'main.js');

const tok = new ByteTokenizer();
const CFG = { vocabSize: tok.vocabSize, dModel: 24, nLayers: 2, nHeads: 2, headDim: 12, ffnHidden: 48, seqLen: 32, seed: 3 };
const T = CFG.seqLen;
/** Betas exact in float: the device and CPU AdamW then compute the same floats. */
const EXACT_BETAS: Partial<AdamWOptions> = { beta1: 0.875, beta2: 0.9375 };

const text = Array.from({ length: 30 }, (_, i) => `Element ${i} has ${(i * 37) % 101} protons and melts at ${(i * 131) % 997} K.`).join('\n');
const stream = Int32Array.from(tok.encode(text));

// 8 "entities", one leaf each in a k=2, p=3 tree (as memory-train.test.ts)
const docs = Array.from({ length: 8 }, (_, e) => tok.encode(`Entity ${e} has the secret number ${(e * 37) % 100}.`));
const docPaths = Int32Array.from(docs.flatMap((_, e) => [e >> 2, e >> 1, e]));
const seqs = packByLeaf({ docs: [...docs, ...docs], paths: Int32Array.from([...docPaths, ...docPaths]), levels: 3 },
  { seqLen: T, eotId: tok.eotId, padId: tok.padId! });

interface RunResult {
  backend: string;
  losses: number[];
  valLosses: number[];
  params: Float32Array;
  m: Float32Array;
  v: Float32Array;
  stepCount: number;
}

interface RunOptions {
  steps: number;
  /** Abort after this step (a checkpoint is written: checkpointEvery 1). */
  stopAt?: number;
  ckPath?: string;
  resume?: string;
  adam?: Partial<AdamWOptions>;
  evalEvery?: number;
}

/** trainLoop over a stepper; losses from the progress events (so an aborted run reports its steps too). */
async function loop<B extends Batch>(stepper: Stepper<B>, source: { next(n: number): B; rngState?(): number[] },
  val: { next(n: number): B } | undefined, start: TrainerState | undefined, o: RunOptions) {
  const losses: number[] = [], valLosses: number[] = [];
  const controller = new AbortController();
  let backend = '';
  try {
    const hist = await trainLoop(stepper, source, val, start, {
      steps: o.steps, batchSize: 4, lr: 3e-3, minLr: 3e-4, warmupSteps: 2, evalEvery: o.evalEvery ?? 0, evalBatches: 1,
      checkpointEvery: o.ckPath ? 1 : 0, checkpointPath: o.ckPath, signal: controller.signal,
      onProgress: (e) => {
        losses.push(e.loss);
        if (e.valLoss !== undefined) valLosses.push(e.valLoss);
        if (o.stopAt !== undefined && e.step >= o.stopAt) controller.abort();
      },
    }, T);
    backend = hist.backend ?? '';
  } catch (e) {
    if (!(e instanceof HiermemError && e.code === 'E_ABORTED')) throw e;
    backend = stepper.backend ?? 'cpu';
  } finally {
    stepper.dispose?.();
  }
  return { losses, valLosses, backend };
}

async function anchorRun(backend: 'cpu' | 'cuda', o: RunOptions): Promise<RunResult> {
  let model: AnchorModel, opt: AdamW, start: TrainerState | undefined;
  if (o.resume) {
    const ck = await loadCheckpoint(o.resume, { maxBatch: 4 });
    model = ck.model;
    opt = ck.optimizer!;
    start = ck.trainer;
  } else {
    model = AnchorModel.create(CFG, { maxBatch: 4 });
    opt = new AdamW(model, o.adam);
  }
  const source = new WindowSampler(stream, T, start?.rngState ? Uint32Array.from(start.rngState) : 7);
  const val = new WindowSampler(stream, T, 8);
  const r = await loop(anchorStepper(model, opt, tok, { backend }), source, val, start, o);
  return { ...r, params: model.params, m: opt.m, v: opt.v, stepCount: opt.stepCount };
}

interface MemoryRunResult extends RunResult {
  bank: MemoryBank;
}

async function memoryRun(backend: 'cpu' | 'cuda', o: RunOptions & { mode?: MemoryTrainMode; bankFile?: string }): Promise<MemoryRunResult> {
  let hm: HierarchicalModel, opt: AdamW, start: TrainerState | undefined;
  if (o.resume) {
    const ck = await loadHierarchicalCheckpoint(o.resume, { inRam: true, maxBatch: 4 });
    hm = ck.hm;
    opt = ck.optimizer!;
    start = ck.trainer;
  } else {
    const anchor = AnchorModel.create(CFG, { maxBatch: 4 });
    const spec = resolveMemorySpec({ k: 2, levels: [2, 0, 4], generic: true }, CFG);
    const bank = o.bankFile ? await MemoryBank.createFile(o.bankFile, spec, CFG.dModel, { seed: 11 })
      : MemoryBank.createInMemory(spec, CFG.dModel, { seed: 11 });
    hm = HierarchicalModel.fromAnchor(anchor, bank);
    opt = new AdamW(hm.anchor, o.adam);
  }
  const source = new PathBatchSampler(seqs, { seed: 5, state: start?.rngState, genericK: 2 });
  const val = new PathBatchSampler(seqs, { seed: 6 });
  const stepper = memoryStepper(hm, opt, tok, { mode: o.mode ?? 'cotrain', memoryLrScale: 3, backend });
  const r = await loop(stepper, source, val, start, o);
  return { ...r, params: hm.anchor.params, m: opt.m, v: opt.v, stepCount: opt.stepCount, bank: hm.bank };
}

/** Every block of the test bank: weights, moments and step counts. */
function assertSameBank(a: MemoryBank, b: MemoryBank, what: string) {
  const blocks: [number, number][] = [[0, 0], [0, 1], ...Array.from({ length: 8 }, (_, n) => [2, n] as [number, number]), [3, 0]];
  for (const [l, n] of blocks) {
    for (const kind of ['weight', 'm', 'v'] as const) assert.deepEqual(a.readBlock(l, n, kind), b.readBlock(l, n, kind), `${what}: block (${l}, ${n}) ${kind}`);
    assert.equal(a.blockSteps(l, n), b.blockSteps(l, n), `${what}: block (${l}, ${n}) steps`);
  }
}

function assertClose(a: number[], b: number[], rel: number, what: string) {
  assert.equal(a.length, b.length, `${what}: ${a.length} vs ${b.length} losses`);
  for (let i = 0; i < a.length; i++) {
    assert.ok(Math.abs(a[i]! - b[i]!) <= rel * Math.abs(b[i]!), `${what}[${i}]: ${a[i]} vs ${b[i]}`);
  }
}

const twinMissing = twinFakeUnavailable();

describe('training on the CUDA backend through the CPU-twin fake library', { skip: twinMissing ?? false }, () => {
  let dir = '';
  let twin = '';
  const saved = { lib: process.env[CUDA_LIB_ENV] };
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'hiermem-cuda-train-'));
    twin = await buildTwinFake(dir);
    process.env[CUDA_LIB_ENV] = twin;
    detectGpu({ refresh: true });
    assert.equal(resolveBackend('cuda'), 'cuda', 'the fake library loads and answers as a device');
  });
  after(async () => {
    if (saved.lib === undefined) delete process.env[CUDA_LIB_ENV];
    else process.env[CUDA_LIB_ENV] = saved.lib;
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('the twin computes what the addon computes (both built from the same cpp/)', async () => {
    const memory = { R: 6, layerToMemory: Int32Array.from([0, -1]) };
    const cpu = AnchorModel.create(CFG, { maxBatch: 4, memory });
    const dev = CudaAnchorModel.create(CFG, { maxBatch: 4, memory });
    try {
      const batch = new WindowSampler(stream, T, 1).next(4);
      const fetched = Float32Array.from({ length: 2 * 3 * 6 * CFG.dModel }, (_, i) => Math.sin(i) * 0.1);
      const mem = (dfetched: Float32Array) => ({ fetched, dfetched, seqSlot: Int32Array.from([1, -1, 0, 1]), numSlots: 2 });
      const dfCpu = new Float32Array(fetched.length), dfDev = new Float32Array(fetched.length);
      const lc = await cpu.forwardBackward({ ...batch, memory: mem(dfCpu) });
      const ld = await dev.forwardBackward({ ...batch, memory: mem(dfDev) });
      const same = ld === lc && dfDev.every((x, i) => x === dfCpu[i]) && dev.downloadGrads().every((x, i) => x === cpu.grads[i]);
      assert.ok(same, `the fake's CPU twins differ from the addon's (loss ${ld} vs ${lc}): the addon was built from other cpp/ sources than the tree; rebuild it (npm run build:native)`);
    } finally {
      dev.dispose();
      cpu.dispose();
    }
  });

  test('anchor: the CUDA run tracks the CPU run (default betas), and equals it bit for bit with float-exact betas', async () => {
    const cpu = await anchorRun('cpu', { steps: 6, evalEvery: 3 });
    const cuda = await anchorRun('cuda', { steps: 6, evalEvery: 3 });
    assert.equal(cpu.backend, 'cpu');
    assert.equal(cuda.backend, 'cuda');
    assert.equal(cuda.losses[0], cpu.losses[0], 'step 1 starts from the same parameters: the same loss');
    assertClose(cuda.losses, cpu.losses, 1e-5, 'loss');
    assertClose(cuda.valLosses, cpu.valLosses, 1e-5, 'val loss (forwardLoss on the device)');
    assert.equal(cuda.stepCount, 6, 'the host optimizer mirror was synced');
    const cpuX = await anchorRun('cpu', { steps: 6, evalEvery: 3, adam: EXACT_BETAS });
    const cudaX = await anchorRun('cuda', { steps: 6, evalEvery: 3, adam: EXACT_BETAS });
    assert.deepEqual(cudaX.losses, cpuX.losses);
    assert.deepEqual(cudaX.valLosses, cpuX.valLosses);
    assert.deepEqual(cudaX.params, cpuX.params, 'parameters downloaded into the host model when trainLoop returned');
    assert.deepEqual(cudaX.m, cpuX.m, 'AdamW m downloaded');
    assert.deepEqual(cudaX.v, cpuX.v, 'AdamW v downloaded');
  });

  test('memories (cotrain): bank on the host, fetched blocks up, dfetched down; RAM and memory-mapped banks', async () => {
    const cpu = await memoryRun('cpu', { steps: 6, evalEvery: 3 });
    const cuda = await memoryRun('cuda', { steps: 6, evalEvery: 3 });
    assert.equal(cuda.backend, 'cuda');
    assert.equal(cuda.losses[0], cpu.losses[0]);
    assertClose(cuda.losses, cpu.losses, 1e-5, 'loss');
    assertClose(cuda.valLosses, cpu.valLosses, 1e-5, 'val loss');
    cpu.bank.close();
    cuda.bank.close();
    const cpuX = await memoryRun('cpu', { steps: 6, evalEvery: 3, adam: EXACT_BETAS });
    const cudaX = await memoryRun('cuda', { steps: 6, evalEvery: 3, adam: EXACT_BETAS, bankFile: path.join(dir, 'bank.safetensors') });
    assert.deepEqual(cudaX.losses, cpuX.losses);
    assert.deepEqual(cudaX.valLosses, cpuX.valLosses);
    assert.deepEqual(cudaX.params, cpuX.params);
    assert.deepEqual(cudaX.m, cpuX.m);
    assertSameBank(cudaX.bank, cpuX.bank, 'memory-mapped bank (CUDA run) vs RAM bank (CPU run)');
    cpuX.bank.close();
    cudaX.bank.close();
  });

  test('memories (posthoc): the anchor stays put on the device, only the bank learns', async () => {
    const cpu = await memoryRun('cpu', { steps: 4, mode: 'posthoc' });
    const cuda = await memoryRun('cuda', { steps: 4, mode: 'posthoc' });
    assert.deepEqual(cuda.losses, cpu.losses, 'no anchor AdamW: nothing differs');
    assert.deepEqual(cuda.params, AnchorModel.create(CFG, { maxBatch: 1 }).params);
    assert.equal(cuda.stepCount, 0);
    assertSameBank(cuda.bank, cpu.bank, 'posthoc bank');
    cpu.bank.close();
    cuda.bank.close();
  });

  test('a checkpoint written by a CUDA run resumes on the CPU with the identical next loss, and vice versa', async () => {
    const ck = (name: string) => path.join(dir, name, 'ck.safetensors');
    for (const name of ['a', 'b', 'c', 'd', 'e']) fs.mkdirSync(path.join(dir, name), { recursive: true });

    // default betas: the next loss after the switch is the same bit for bit; later ones track
    const full = await anchorRun('cuda', { steps: 6 });
    await anchorRun('cuda', { steps: 6, stopAt: 3, ckPath: ck('a') });
    const onCpu = await loadCheckpoint(ck('a'));
    assert.equal(onCpu.optimizer?.stepCount, 3, 'the AdamW step count came from the device run');
    assert.ok(onCpu.optimizer!.m.some((x) => x !== 0) && onCpu.optimizer!.v.some((x) => x !== 0), 'AdamW m, v were downloaded');
    assert.deepEqual(onCpu.trainer?.step, 3);
    const resumed = await anchorRun('cpu', { steps: 6, resume: ck('a') });
    assert.equal(resumed.losses[0], full.losses[3], 'CUDA checkpoint -> CPU: the next loss');
    assertClose(resumed.losses, full.losses.slice(3), 1e-5, 'CUDA checkpoint -> CPU');

    // float-exact betas: the whole rest of the run is the same, both ways (params, m, v, step, data order)
    const fullX = await anchorRun('cpu', { steps: 6, adam: EXACT_BETAS });
    await anchorRun('cuda', { steps: 6, stopAt: 3, ckPath: ck('b'), adam: EXACT_BETAS });
    const toCpu = await anchorRun('cpu', { steps: 6, resume: ck('b') });
    assert.deepEqual(toCpu.losses, fullX.losses.slice(3), 'CUDA checkpoint -> CPU');
    assert.deepEqual(toCpu.params, fullX.params);
    await anchorRun('cpu', { steps: 6, stopAt: 3, ckPath: ck('c'), adam: EXACT_BETAS });
    const toCuda = await anchorRun('cuda', { steps: 6, resume: ck('c') });
    assert.equal(toCuda.backend, 'cuda');
    assert.deepEqual(toCuda.losses, fullX.losses.slice(3), 'CPU checkpoint -> CUDA (m, v, step uploaded)');
    assert.deepEqual(toCuda.params, fullX.params);
    assert.deepEqual(toCuda.m, fullX.m);

    // with memories: the anchor checkpoint and its bank file, both ways
    const memFull = await memoryRun('cpu', { steps: 6, adam: EXACT_BETAS });
    const m1 = await memoryRun('cuda', { steps: 6, stopAt: 3, ckPath: ck('d'), adam: EXACT_BETAS });
    m1.bank.close();
    const memToCpu = await memoryRun('cpu', { steps: 6, resume: ck('d') });
    assert.deepEqual(memToCpu.losses, memFull.losses.slice(3), 'memory checkpoint CUDA -> CPU');
    assertSameBank(memToCpu.bank, memFull.bank, 'bank after CUDA -> CPU');
    memToCpu.bank.close();
    const m2 = await memoryRun('cpu', { steps: 6, stopAt: 3, ckPath: ck('e'), adam: EXACT_BETAS });
    m2.bank.close();
    const memToCuda = await memoryRun('cuda', { steps: 6, resume: ck('e') });
    assert.deepEqual(memToCuda.losses, memFull.losses.slice(3), 'memory checkpoint CPU -> CUDA');
    assert.deepEqual(memToCuda.params, memFull.params);
    assertSameBank(memToCuda.bank, memFull.bank, 'bank after CPU -> CUDA');
    memToCuda.bank.close();
    memFull.bank.close();
  });

  test('hiermem train --backend cuda (fake): backend "cuda" in the summary, losses as on the CPU, its checkpoint resumes on the CPU', async () => {
    const env: NodeJS.ProcessEnv = { ...process.env, [CUDA_LIB_ENV]: twin };
    delete env[BACKEND_ENV];
    const train = async (out: string, ...extra: string[]) => {
      const r = await execFileP(process.execPath, [CLI, 'train', '--preset', 'tiny', '--steps', '4', '--batch-size', '2', '--eval-every', '2',
        '--out', out, '--json', '--no-progress', ...extra], { env });
      const metrics = (await readFile(path.join(out, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { step: number; loss: number });
      return { summary: JSON.parse(r.stdout.trim()) as Record<string, unknown>, stderr: r.stderr, metrics };
    };
    const cpu = await train(path.join(dir, 'cli-cpu'));
    const cuda = await train(path.join(dir, 'cli-cuda'), '--backend', 'cuda');
    assert.equal(cpu.summary.backend, 'cpu', 'the default backend is the CPU');
    assert.equal(cuda.summary.backend, 'cuda');
    assert.equal(cuda.stderr, '');
    assertClose(cuda.metrics.map((m) => m.loss), cpu.metrics.map((m) => m.loss), 1e-5, 'CLI loss');
    assert.equal(typeof cuda.summary.sample, 'string', 'the host model was synced for the greedy sample');
    // --stop-after on CUDA, --resume on the CPU: step 3's loss is the uninterrupted CUDA run's
    const split = path.join(dir, 'cli-split');
    await train(split, '--backend', 'cuda', '--stop-after', '2');
    const resumed = await train(split, '--backend', 'cpu', '--resume', path.join(split, 'checkpoint.safetensors'));
    assert.equal(resumed.summary.backend, 'cpu');
    assert.deepEqual(resumed.metrics.map((m) => m.step), [1, 2, 3, 4]);
    assert.equal(resumed.metrics[2]!.loss, cuda.metrics[2]!.loss, 'the next loss after CUDA -> CPU');
  });
});

describe('hiermem train --backend without a GPU', () => {
  const gpu = detectGpu();
  const envWithout = () => {
    const env = { ...process.env };
    delete env[CUDA_LIB_ENV];
    delete env[BACKEND_ENV];
    return env;
  };

  test('--backend cuda: exit code 2 and E_BACKEND_UNAVAILABLE with the reason', { skip: gpu.available ? 'a GPU is present here' : false }, async () => {
    const out = await mkdtemp(path.join(os.tmpdir(), 'hiermem-nocuda-'));
    try {
      await assert.rejects(execFileP(process.execPath, [CLI, 'train', '--preset', 'tiny', '--steps', '1', '--out', out, '--json', '--no-progress', '--backend', 'cuda'],
        { env: envWithout() }),
      (e: { code?: number; stderr?: string; stdout?: string }) => {
        assert.equal(e.code, 2, e.stderr);
        assert.match(e.stderr ?? '', /^hiermem: error E_BACKEND_UNAVAILABLE: the CUDA backend is not available: .+\n$/);
        assert.equal(e.stdout, '');
        return true;
      });
      assert.equal(fs.existsSync(path.join(out, 'checkpoint.safetensors')), false, 'nothing was trained');
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });

  test('--backend auto on a machine without an NVIDIA driver: trains on the CPU, nothing on stderr', { skip: nvidiaDriverPresent() ? 'an NVIDIA driver is installed here' : false }, async () => {
    const out = await mkdtemp(path.join(os.tmpdir(), 'hiermem-auto-'));
    try {
      const r = await execFileP(process.execPath, [CLI, 'train', '--preset', 'tiny', '--steps', '2', '--batch-size', '2', '--eval-every', '0',
        '--out', out, '--json', '--no-progress', '--backend', 'auto'], { env: envWithout() });
      const summary = JSON.parse(r.stdout.trim()) as { backend: string; finalLoss: number };
      assert.equal(summary.backend, 'cpu');
      assert.ok(Number.isFinite(summary.finalLoss));
      assert.equal(r.stderr, '');
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });

  test('--backend takes cpu, cuda or auto only', async () => {
    await assert.rejects(execFileP(process.execPath, [CLI, 'train', '--steps', '1', '--backend', 'gpu'], { env: envWithout() }),
      (e: { code?: number; stderr?: string }) => e.code === 2 && /E_INVALID_ARGUMENT/.test(e.stderr ?? '') && /cpu, cuda, auto/.test(e.stderr ?? ''));
  });
});
