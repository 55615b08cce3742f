import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AnchorModel } from '../lib/model/anchor.js';
import { AdamW } from '../lib/train/adamw.js';
import { WindowSampler } from '../lib/data/windows.js';
import { HiermemError } from '../lib/errors.js';
import { modelLoss64 } from './reference/model64.js';
import { Rng, docStartFromLengths, concatRows, fdGrad } from './helpers.js';

// A deliberately odd tiny config: 3 heads of 4, dModel 13, ffn 17.
const TINY = { vocabSize: 11, dModel: 13, nLayers: 2, nHeads: 3, headDim: 4, ffnHidden: 17, seqLen: 7, seed: 3 };

function randomizeParams(model: AnchorModel, seed: number): void {
  const rng = new Rng(seed);
  for (const s of model.layout) {
    const v = model.tensor(s.name);
    const isNorm = s.name.endsWith('norm.weight');
    for (let i = 0; i < v.length; i++) v[i] = isNorm ? 1 + 0.2 * rng.normal() : 0.4 * rng.normal();
  }
}

function tinyBatch(seed: number) {
  const rng = new Rng(seed);
  const B = 2, T = TINY.seqLen;
  const tokens = new Int32Array(B * T).map(() => rng.int(0, TINY.vocabSize));
  const targets = new Int32Array(B * T).map(() => rng.int(0, TINY.vocabSize));
  targets[3] = -1; // an ignored position
  const docStart = concatRows([docStartFromLengths([3, 1, 3]), docStartFromLengths([7])]);
  return { tokens, targets, docStart, batchSize: B };
}

test('model loss matches the float64 reference', () => {
  const model = AnchorModel.create(TINY, { maxBatch: 2 });
  randomizeParams(model, 10);
  const batch = tinyBatch(11);
  const native = model.lossSync(batch);
  const ref = modelLoss64(model.config, model.layout, Float64Array.from(model.params),
    { tokens: batch.tokens, targets: batch.targets, docStart: batch.docStart, B: 2, T: TINY.seqLen });
  assert.ok(Math.abs(native - ref) / Math.abs(ref) < 1e-5, `native ${native} vs float64 ${ref}`);
  // forwardBackward reports the same loss
  assert.ok(Math.abs(model.forwardBackwardSync(batch) - native) < 1e-6);
});

test('whole-model gradient matches float64 finite differences (rel err < 1e-3)', () => {
  const model = AnchorModel.create(TINY, { maxBatch: 2 });
  randomizeParams(model, 20);
  const batch = tinyBatch(21);
  model.zeroGrad();
  model.forwardBackwardSync(batch);
  const p64 = Float64Array.from(model.params);
  const b64 = { tokens: batch.tokens, targets: batch.targets, docStart: batch.docStart, B: 2, T: TINY.seqLen };
  const loss = (p: Float64Array) => modelLoss64(model.config, model.layout, p, b64);
  const rng = new Rng(22);
  let num = 0, den = 0;
  for (const slot of model.layout) {
    // every element of small tensors, 12 random elements of the others
    const idx = slot.size <= 24 ? [...Array(slot.size).keys()] : Array.from({ length: 12 }, () => rng.int(0, slot.size));
    const global = idx.map((i) => slot.offset + i);
    const fd = fdGrad(loss, p64, global, 1e-5);
    let sNum = 0, sDen = 0;
    global.forEach((g, j) => {
      const d = model.grads[g]! - fd[j]!;
      sNum += d * d;
      sDen += fd[j]! * fd[j]!;
    });
    num += sNum;
    den += sDen;
    assert.ok(Math.sqrt(sNum) <= 3e-3 * Math.sqrt(sDen) + 1e-7, `${slot.name}: rel err ${Math.sqrt(sNum / sDen)}`);
  }
  const rel = Math.sqrt(num / den);
  assert.ok(rel < 1e-3, `global relative gradient error ${rel}`);
});

test('packed documents are independent: a document scores the same packed or alone', () => {
  const cfg = { ...TINY, seqLen: 8 };
  const model = AnchorModel.create(cfg, { maxBatch: 1 });
  randomizeParams(model, 30);
  const a = [1, 2, 3], b = [4, 5, 6, 7, 8], c = [9, 10, 0];
  const bTargets = [5, 6, 7, 8, 1];
  // packed: [a | b], scored on b
  const packed = {
    tokens: Int32Array.from([...a, ...b]),
    targets: Int32Array.from([-1, -1, -1, ...bTargets]),
    docStart: docStartFromLengths([3, 5]),
    batchSize: 1,
  };
  // alone: [b | c], scored on b
  const alone = {
    tokens: Int32Array.from([...b, ...c]),
    targets: Int32Array.from([...bTargets, -1, -1, -1]),
    docStart: docStartFromLengths([5, 3]),
    batchSize: 1,
  };
  const l1 = model.lossSync(packed), l2 = model.lossSync(alone);
  assert.ok(Math.abs(l1 - l2) < 1e-5, `packed ${l1} vs alone ${l2}`);
  // and without the mask the context leaks in: the loss changes
  const leaky = model.lossSync({ ...packed, docStart: null });
  assert.ok(Math.abs(leaky - l1) > 1e-4, 'masking must matter');
});

function trainTiny(seed: number, steps: number): number[] {
  const text = 'the quick brown fox jumps over the lazy dog. '.repeat(40);
  const stream = Int32Array.from(Buffer.from(text));
  const model = AnchorModel.create({ vocabSize: 256, dModel: 48, nLayers: 2, nHeads: 2, headDim: 24, ffnHidden: 128, seqLen: 32, seed }, { maxBatch: 4 });
  const opt = new AdamW(model, { weightDecay: 0.0 });
  const sampler = new WindowSampler(stream, 32, seed);
  const losses: number[] = [];
  for (let s = 0; s < steps; s++) {
    model.zeroGrad();
    losses.push(model.forwardBackwardSync(sampler.next(4)));
    opt.stepSync(model, 3e-3);
  }
  return losses;
}

test('a tiny model learns a repeating text (loss < 0.3 after 300 steps)', () => {
  const losses = trainTiny(5, 300);
  assert.ok(losses[0]! > 4, `initial loss ${losses[0]} should be near ln(256) = 5.5`);
  const last = losses.slice(-10).reduce((a, b) => a + b, 0) / 10;
  assert.ok(last < 0.3, `final loss ${last}`);
});

test('same seed and thread count give bit-identical losses', () => {
  const a = trainTiny(9, 25), b = trainTiny(9, 25);
  assert.deepEqual(a, b);
  const c = trainTiny(10, 25);
  assert.notDeepEqual(a, c);
});

test('bad batches are rejected with typed errors', () => {
  const model = AnchorModel.create(TINY, { maxBatch: 2 });
  const good = tinyBatch(40);
  const expectCode = (fn: () => unknown, code: string) => {
    assert.throws(fn, (e: unknown) => e instanceof HiermemError && e.code === code, `expected ${code}`);
  };
  expectCode(() => model.lossSync({ ...good, tokens: good.tokens.subarray(1) }), 'E_SHAPE_MISMATCH');
  expectCode(() => model.lossSync({ ...good, tokens: good.tokens.map((t, i) => (i === 5 ? 11 : t)) }), 'E_TOKEN_OUT_OF_RANGE');
  expectCode(() => model.lossSync({ ...good, tokens: good.tokens.map((t, i) => (i === 5 ? -1 : t)) }), 'E_TOKEN_OUT_OF_RANGE');
  expectCode(() => model.lossSync({ ...good, targets: good.targets.map((t, i) => (i === 5 ? -2 : t)) }), 'E_TOKEN_OUT_OF_RANGE');
  expectCode(() => model.lossSync({ ...good, batchSize: 3 }), 'E_INVALID_ARGUMENT');
  expectCode(() => model.lossSync({ ...good, docStart: Int32Array.from(good.docStart).fill(5, 0, 1) }), 'E_INVALID_ARGUMENT');
  expectCode(() => model.lossSync({ ...good, tokens: new Float32Array(14) as unknown as Int32Array }), 'E_INVALID_ARGUMENT');
  expectCode(() => model.tensor('nope'), 'E_INVALID_ARGUMENT');
  expectCode(() => AnchorModel.create({ ...TINY, headDim: 5 }), 'E_CONFIG_INVALID');
  expectCode(() => AnchorModel.create({ ...TINY, nLayers: 0 }), 'E_CONFIG_INVALID');
  expectCode(() => model.nextTokenLogits(Int32Array.from([1, 11])), 'E_TOKEN_OUT_OF_RANGE');
  expectCode(() => model.nextTokenLogits(new Int32Array(0)), 'E_INVALID_ARGUMENT');
  // prompts longer than seqLen are cut to their last seqLen tokens
  assert.equal(model.nextTokenLogits(new Int32Array(20)).length, TINY.vocabSize);
});

test('a second async call on a busy model is rejected (E_BUSY), never raced', async () => {
  const model = AnchorModel.create({ ...TINY, seqLen: 7 }, { maxBatch: 2 });
  const batch = tinyBatch(50);
  const first = model.forwardBackward(batch);
  assert.throws(() => model.lossSync(batch), (e: unknown) => e instanceof HiermemError && e.code === 'E_BUSY');
  await assert.rejects(model.loss(batch), (e: unknown) => e instanceof HiermemError && e.code === 'E_BUSY');
  const loss = await first;
  assert.ok(Number.isFinite(loss));
  assert.ok(Number.isFinite(await model.loss(batch))); // free again
});

test('non-finite parameters surface as NaN loss and the optimizer refuses the step', () => {
  const model = AnchorModel.create(TINY, { maxBatch: 2 });
  model.tensor('final_norm.weight')[0] = Number.NaN;
  model.zeroGrad();
  const loss = model.forwardBackwardSync(tinyBatch(60));
  assert.ok(Number.isNaN(loss));
  const opt = new AdamW(model);
  const before = Float32Array.from(model.params);
  assert.throws(() => opt.stepSync(model, 1e-3), (e: unknown) => e instanceof HiermemError && e.code === 'E_NON_FINITE');
  assert.deepEqual(Array.from(model.params.subarray(0, 50)), Array.from(before.subarray(0, 50)));
});
