import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, writeFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { AnchorModel } from '../lib/model/anchor.js';
import { AdamW } from '../lib/train/adamw.js';
import { ByteTokenizer } from '../lib/data/tokenizer.js';
import { WindowSampler } from '../lib/data/windows.js';
import { saveCheckpoint, loadCheckpoint } from '../lib/train/checkpoint.js';
import { train, type TrainHistory } from '../lib/train/trainer.js';
import { HiermemError } from '../lib/errors.js';

const CFG = { vocabSize: 259, dModel: 24, nLayers: 2, nHeads: 2, headDim: 12, ffnHidden: 40, seqLen: 16, seed: 4 };
const stream = Int32Array.from(Buffer.from('Osmium is a hard, brittle, bluish-white transition metal. '.repeat(30)));

async function tmp(): Promise<string> {
  return mkdtemp(path.join(tmpdir(), 'hiermem-ck-'));
}

test('checkpoint round trip restores parameters, optimizer and trainer state exactly', async () => {
  const dir = await tmp();
  const model = AnchorModel.create(CFG, { maxBatch: 2 });
  const opt = new AdamW(model);
  const sampler = new WindowSampler(stream, CFG.seqLen, 1);
  for (let i = 0; i < 3; i++) {
    model.zeroGrad();
    model.forwardBackwardSync(sampler.next(2));
    opt.stepSync(model, 1e-3);
  }
  const file = path.join(dir, 'ck.safetensors');
  await saveCheckpoint(file, { model, tokenizer: new ByteTokenizer(), optimizer: opt, trainer: { step: 3, tokensSeen: 96, rngState: sampler.rngState() } });
  const ck = await loadCheckpoint(file, { maxBatch: 2 });
  assert.deepEqual(ck.model.config, model.config);
  assert.deepEqual(ck.model.params, model.params);
  assert.deepEqual(ck.optimizer!.m, opt.m);
  assert.deepEqual(ck.optimizer!.v, opt.v);
  assert.equal(ck.optimizer!.stepCount, 3);
  assert.deepEqual(ck.trainer!.rngState, sampler.rngState());
  // named tensors are visible to any safetensors reader
  const header = JSON.parse((await readFile(file)).subarray(8, 8 + Number((await readFile(file)).readBigUInt64LE(0))).toString());
  assert.deepEqual(header['layers.0.ffn.w1'].shape, [40, 24]);
  assert.equal(header.__metadata__.format, 'hiermem-checkpoint');
  await rm(dir, { recursive: true });
});

async function runTrain(dir: string, steps: number, resumeFrom?: string, total = 12): Promise<TrainHistory> {
  const tokenizer = new ByteTokenizer();
  let model: AnchorModel, optimizer: AdamW, start;
  if (resumeFrom) {
    const ck = await loadCheckpoint(resumeFrom, { maxBatch: 2 });
    model = ck.model;
    optimizer = ck.optimizer!;
    start = ck.trainer;
  } else {
    model = AnchorModel.create(CFG, { maxBatch: 2 });
    optimizer = new AdamW(model);
  }
  const sampler = new WindowSampler(stream, CFG.seqLen, start?.rngState ? Uint32Array.from(start.rngState) : 7);
  // stop after `steps` by aborting through the schedule's total: we train to `steps` but keep the
  // schedule of a `total`-step run by passing steps=total and aborting at `steps`
  const controller = new AbortController();
  try {
    return await train({ model, optimizer, tokenizer, train: sampler, start }, {
      steps: total, batchSize: 2, lr: 2e-3, warmupSteps: 2, evalEvery: 0, checkpointEvery: 1,
      checkpointPath: path.join(dir, 'ck.safetensors'), signal: controller.signal,
      onProgress: (e) => { if (e.step >= steps) controller.abort(); },
    });
  } catch (e) {
    if (e instanceof HiermemError && e.code === 'E_ABORTED') return { steps: [], losses: [], valSteps: [], valLosses: [], skippedSteps: 0, tokensPerSec: 0, elapsedSec: 0 };
    throw e;
  }
}

test('resuming from a checkpoint reproduces an uninterrupted run bit for bit', async () => {
  const dirA = await tmp(), dirB = await tmp();
  const full = await runTrain(dirA, 12);
  await runTrain(dirB, 5); // interrupted after step 5 (checkpoint written every step)
  const resumed = await runTrain(dirB, 12, path.join(dirB, 'ck.safetensors'));
  assert.deepEqual(resumed.steps, full.steps.slice(5));
  assert.deepEqual(resumed.losses, full.losses.slice(5));
  const a = await loadCheckpoint(path.join(dirA, 'ck.safetensors'));
  const b = await loadCheckpoint(path.join(dirB, 'ck.safetensors'));
  assert.deepEqual(a.model.params, b.model.params);
  await rm(dirA, { recursive: true });
  await rm(dirB, { recursive: true });
});

test('truncated, corrupted or foreign checkpoints give typed errors', async () => {
  const dir = await tmp();
  const model = AnchorModel.create(CFG, { maxBatch: 1 });
  const file = path.join(dir, 'ck.safetensors');
  await saveCheckpoint(file, { model, tokenizer: new ByteTokenizer() });
  const bytes = await readFile(file);
  const size = (await stat(file)).size;
  const bad = path.join(dir, 'bad.safetensors');
  const isCorrupt = (e: unknown) => e instanceof HiermemError && (e.code === 'E_CHECKPOINT_CORRUPT' || e.code === 'E_CONFIG_INCOMPATIBLE');
  for (const cut of [0, 7, 8, 100, Math.floor(size / 2), size - 1]) {
    await writeFile(bad, bytes.subarray(0, cut));
    await assert.rejects(loadCheckpoint(bad), isCorrupt, `truncated at ${cut}`);
  }
  // a header that parses but belongs to another config (shapes differ)
  const other = AnchorModel.create({ ...CFG, dModel: 26, headDim: 14 }, { maxBatch: 1 });
  const otherFile = path.join(dir, 'other.safetensors');
  await saveCheckpoint(otherFile, { model: other, tokenizer: new ByteTokenizer() });
  const hdrLen = Number(bytes.readBigUInt64LE(0));
  const hdr = JSON.parse(bytes.subarray(8, 8 + hdrLen).toString());
  // metadata claiming a different model config than the tensors hold
  hdr.__metadata__.model_config = JSON.stringify({ ...CFG, dModel: 26, headDim: 14 });
  const forged = Buffer.from(JSON.stringify(hdr));
  const out = Buffer.alloc(8 + forged.length);
  out.writeBigUInt64LE(BigInt(forged.length));
  forged.copy(out, 8);
  await writeFile(bad, Buffer.concat([out, bytes.subarray(8 + hdrLen)]));
  await assert.rejects(loadCheckpoint(bad), isCorrupt, 'config/tensor mismatch');
  // not a hiermem checkpoint
  hdr.__metadata__ = { format: 'something-else' };
  const f2 = Buffer.from(JSON.stringify(hdr));
  const o2 = Buffer.alloc(8);
  o2.writeBigUInt64LE(BigInt(f2.length));
  await writeFile(bad, Buffer.concat([o2, f2, bytes.subarray(8 + hdrLen)]));
  await assert.rejects(loadCheckpoint(bad), (e: unknown) => e instanceof HiermemError && e.code === 'E_CHECKPOINT_CORRUPT');
  await assert.rejects(loadCheckpoint(path.join(dir, 'missing.safetensors')), (e: unknown) => e instanceof HiermemError && e.code === 'E_IO');
  await rm(dir, { recursive: true });
});

test('a failed save leaves the previous checkpoint intact', async () => {
  const dir = await tmp();
  const model = AnchorModel.create(CFG, { maxBatch: 1 });
  const file = path.join(dir, 'ck.safetensors');
  await saveCheckpoint(file, { model, tokenizer: new ByteTokenizer() });
  const before = await readFile(file);
  // a file where the directory should be: the save must fail with E_IO
  await writeFile(path.join(dir, 'blocker'), 'x');
  await assert.rejects(saveCheckpoint(path.join(dir, 'blocker', 'ck.safetensors'), { model, tokenizer: new ByteTokenizer() }),
    (e: unknown) => e instanceof HiermemError && e.code === 'E_IO');
  assert.deepEqual(await readFile(file), before);
  await rm(dir, { recursive: true });
});

test('training skips non-finite steps and stops after maxBadSteps in a row', async () => {
  const model = AnchorModel.create(CFG, { maxBatch: 2 });
  const optimizer = new AdamW(model);
  model.tensor('final_norm.weight')[0] = Number.NaN;
  const sampler = new WindowSampler(stream, CFG.seqLen, 1);
  await assert.rejects(
    train({ model, optimizer, tokenizer: new ByteTokenizer(), train: sampler }, { steps: 10, batchSize: 2, maxBadSteps: 3, evalEvery: 0 }),
    (e: unknown) => e instanceof HiermemError && e.code === 'E_NON_FINITE' && /3 consecutive/.test(e.message),
  );
  assert.equal(optimizer.stepCount, 0);
});
