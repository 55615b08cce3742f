/**
 * The backend seam (issue #13): createAnchorRunner is the one place that picks CPU or CUDA; the
 * steppers and HierarchicalModel take the runner it gives (or one the caller built) and run the
 * same way on either. lib/backend.js keeps its old exports for deep imports.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AnchorModel, type Batch } from '../lib/model/anchor.js';
import { AdamW } from '../lib/train/adamw.js';
import { anchorStepper, trainLoop, type Source } from '../lib/train/trainer.js';
import { memoryStepper } from '../lib/train/memory-trainer.js';
import { CpuAnchorRunner, createAnchorRunner, detectGpu, type BackendRunner } from '../lib/backend/index.js';
import { CudaAnchorModel } from '../lib/model/cuda-anchor.js';
import { CudaAdamW } from '../lib/train/cuda-adamw.js';
import * as compat from '../lib/backend.js';
import * as api from '../lib/index.js';
import { MemoryBank } from '../lib/memory/bank.js';
import { HierarchicalModel, cpuAnchorRunner, type PathBatch } from '../lib/memory/memory-model.js';
import { resolveMemorySpec } from '../lib/memory/spec.js';
import { ByteTokenizer } from '../lib/data/tokenizer.js';
import { HiermemError } from '../lib/errors.js';
import { Rng } from './helpers.js';

const isCode = (code: string) => (e: unknown) => e instanceof HiermemError && e.code === code;
const tok = new ByteTokenizer();
const CFG = { vocabSize: tok.vocabSize, dModel: 16, nLayers: 2, nHeads: 2, headDim: 8, ffnHidden: 32, seqLen: 8, seed: 4 };

function source(seed: number, levels = 0): Source<PathBatch> {
  const rng = new Rng(seed);
  return {
    next(B: number): PathBatch {
      const n = B * CFG.seqLen;
      const paths = new Int32Array(B * levels);
      for (let b = 0; b < B; b++) {
        const leaf = rng.int(4);
        if (levels) paths.set([leaf >> 1, leaf], b * levels);
      }
      return { tokens: new Int32Array(n).map(() => rng.int(CFG.vocabSize)), targets: new Int32Array(n).map(() => rng.int(CFG.vocabSize)), batchSize: B, paths };
    },
  };
}

test('createAnchorRunner: the CPU runner wraps the host model and optimizer; cuda without a GPU is E_BACKEND_UNAVAILABLE', () => {
  const model = AnchorModel.create(CFG, { maxBatch: 2 });
  const opt = new AdamW(model);
  const r = createAnchorRunner(model, opt);
  assert.ok(r instanceof CpuAnchorRunner);
  assert.equal(r.backend, 'cpu');
  assert.equal(r.host, model);
  assert.equal(r.hostOptimizer, opt);
  assert.ok(createAnchorRunner(model, opt, { backend: 'cpu' }) instanceof CpuAnchorRunner);
  assert.ok(cpuAnchorRunner(model, opt) instanceof CpuAnchorRunner);
  if (!detectGpu().available) assert.throws(() => createAnchorRunner(model, opt, { backend: 'cuda' }), isCode('E_BACKEND_UNAVAILABLE'));
  assert.throws(() => createAnchorRunner(model, opt, { backend: 'gpu' as never }), isCode('E_INVALID_ARGUMENT'));
});

test('a stepper on a runner the caller built = the stepper that builds its own; the caller\'s runner is not disposed', async () => {
  const run = async (withRunner: boolean) => {
    const model = AnchorModel.create(CFG, { maxBatch: 2 });
    const opt = new AdamW(model);
    let disposed = 0;
    const runner: BackendRunner = Object.assign(new CpuAnchorRunner(model, opt), { dispose: () => { disposed++; } });
    const stepper = anchorStepper(model, opt, tok, withRunner ? { runner } : {});
    const hist = await trainLoop<Batch>(stepper, source(1), undefined, undefined, { steps: 4, batchSize: 2, evalEvery: 0 }, CFG.seqLen);
    stepper.dispose?.();
    assert.equal(disposed, 0);
    assert.equal(hist.backend, 'cpu');
    return { losses: hist.losses, params: model.params };
  };
  const a = await run(true), b = await run(false);
  assert.deepEqual(a.losses, b.losses);
  assert.deepEqual(a.params, b.params);
  // a runner around another model or optimizer is refused
  const model = AnchorModel.create(CFG, { maxBatch: 2 });
  const other = AnchorModel.create(CFG, { maxBatch: 2 });
  const opt = new AdamW(model);
  assert.throws(() => anchorStepper(model, opt, tok, { runner: new CpuAnchorRunner(other, opt) }), isCode('E_INVALID_ARGUMENT'));
  assert.throws(() => anchorStepper(model, opt, tok, { runner: new CpuAnchorRunner(model, new AdamW(model)) }), isCode('E_INVALID_ARGUMENT'));
});

test('memoryStepper runs on the runner it is given, as HierarchicalModel.trainStep does', async () => {
  const spec = resolveMemorySpec({ k: 2, levels: [2, 3] }, CFG);
  const run = async (withRunner: boolean) => {
    const bank = MemoryBank.createInMemory(spec, CFG.dModel, { seed: 9 });
    const hm = HierarchicalModel.fromAnchor(AnchorModel.create(CFG, { maxBatch: 2 }), bank);
    const opt = new AdamW(hm.anchor);
    const stepper = memoryStepper(hm, opt, tok, withRunner ? { runner: new CpuAnchorRunner(hm.anchor, opt) } : {});
    const hist = await trainLoop<PathBatch>(stepper, source(2, 2), undefined, undefined, { steps: 3, batchSize: 2, evalEvery: 0 }, CFG.seqLen);
    const out = { losses: hist.losses, block: bank.readBlock(1, 3) };
    bank.close();
    return out;
  };
  const a = await run(true), b = await run(false);
  assert.deepEqual(a.losses, b.losses);
  assert.deepEqual(a.block, b.block);
});

test('lib/backend.js and the package index keep their exports (the CUDA model and optimizer moved, same classes)', () => {
  for (const name of ['resolveBackend', 'detectGpu', 'nvidiaDriverPresent', 'cudaLibraryPath', 'CudaAnchorModel', 'CudaAdamW', 'BACKEND_ENV', 'CUDA_LIB_ENV']) {
    assert.ok(name in compat, `lib/backend.js exports ${name}`);
    assert.ok(name in api, `lib/index.js exports ${name}`);
  }
  assert.equal(compat.CudaAnchorModel, CudaAnchorModel);
  assert.equal(compat.CudaAdamW, CudaAdamW);
  assert.equal(api.CudaAnchorRunner, compat.CudaAnchorRunner);
  assert.equal(api.cpuAnchorRunner, cpuAnchorRunner);
  assert.equal(api.DEFAULT_BACKEND, 'cpu');
});
