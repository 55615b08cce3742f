/**
 * KV-cached generation (NativeModel.prefill / decodeStep, AnchorModel.decoder): the logits of
 * every cached step equal lastLogits over the whole sequence, on a tiny and an odd-shaped config
 * (H * hd != dModel, 3 heads of 14), with and without a fetched memory slot, for ragged prompt
 * lengths up to a full cache; generate() gives the same tokens with and without the cache
 * (including past seqLen, where it falls back to the sliding window); and the errors are typed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AnchorModel } from '../lib/model/anchor.js';
import { generate } from '../lib/model/generate.js';
import { MemoryBank } from '../lib/memory/bank.js';
import { HierarchicalModel } from '../lib/memory/memory-model.js';
import { resolveMemorySpec } from '../lib/memory/spec.js';
import { HiermemError } from '../lib/errors.js';
import type { NativeModel } from '../lib/native-types.js';
import { Rng } from './helpers.js';

const isCode = (code: string) => (e: unknown) => e instanceof HiermemError && e.code === code;

const TINY = { vocabSize: 37, dModel: 32, nLayers: 2, nHeads: 2, headDim: 16, ffnHidden: 64, seqLen: 20, seed: 3 };
const ODD = { vocabSize: 23, dModel: 40, nLayers: 3, nHeads: 3, headDim: 14, ffnHidden: 52, seqLen: 13, seed: 4 };
type Cfg = typeof TINY;

function randomize(model: AnchorModel, seed: number): void {
  const rng = new Rng(seed);
  for (const s of model.layout) {
    const v = model.tensor(s.name);
    for (let i = 0; i < v.length; i++) v[i] = s.name.endsWith('norm.weight') ? 1 + 0.2 * rng.normal() : 0.3 * rng.normal();
  }
}

const PATH = Int32Array.from([1, 3]);

/** An anchor and, with memory, a HierarchicalModel whose PATH blocks are random (a fresh block adds nothing). */
function build(cfg: Cfg, seed: number): { anchor: AnchorModel; hm: HierarchicalModel } {
  const anchor = AnchorModel.create(cfg, { maxBatch: 1 });
  randomize(anchor, seed);
  const spec = resolveMemorySpec({ k: 2, levels: [3, 2], layers: cfg.nLayers === 3 ? [0, 2] : [1] }, cfg);
  const bank = MemoryBank.createInMemory(spec, cfg.dModel, { seed: 5 });
  const rng = new Rng(seed + 1);
  for (const [level, node] of [[0, PATH[0]!], [1, PATH[1]!]] as const) {
    const b = bank.readBlock(level, node);
    for (let i = 0; i < b.length; i++) b[i] = 0.3 * rng.normal();
    bank.writeBlock(level, node, b);
  }
  return { anchor, hm: HierarchicalModel.fromAnchor(anchor, bank, 1) };
}

function maxRel(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let d = 0, m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    m = Math.max(m, Math.abs(b[i]!));
  }
  return d / m;
}

const TOL = 2e-5;

for (const [name, cfg] of [['tiny', TINY], ['odd-shaped (3 heads of 14, dModel 40)', ODD]] as const) {
  for (const memory of [false, true]) {
    test(`${name}${memory ? ', one memory slot' : ''}: prefill + decodeStep logits equal lastLogits at every step`, () => {
      const { anchor, hm } = build(cfg, 11);
      const fn = hm.logitsForPath(memory ? PATH : Int32Array.from([-2, 0]));
      const dec = fn.decoder!();
      assert.equal(dec.capacity, cfg.seqLen);
      const rng = new Rng(7);
      let worst = 0;
      for (const P of [1, 2, 5, cfg.seqLen - 1, cfg.seqLen]) {
        const toks = Int32Array.from({ length: cfg.seqLen }, () => rng.int(cfg.vocabSize));
        worst = Math.max(worst, maxRel(dec.prefill(toks.subarray(0, P)), fn(toks.subarray(0, P))));
        assert.equal(dec.length, P);
        for (let t = P; t < cfg.seqLen; t++) {
          worst = Math.max(worst, maxRel(dec.step(toks[t]!), fn(toks.subarray(0, t + 1))));
          assert.equal(dec.length, t + 1);
        }
        assert.throws(() => dec.step(0), isCode('E_CACHE_FULL'));
      }
      assert.ok(worst < TOL, `max relative difference ${worst}`);
      // a fresh cache decodes from position 0 too (no prefill needed)
      const d2 = fn.decoder!();
      assert.ok(maxRel(d2.step(5), fn(Int32Array.of(5))) < TOL);
      assert.ok(maxRel(d2.step(6), fn(Int32Array.of(5, 6))) < TOL);
      // the memory really changes the logits (the comparison above is not vacuous)
      if (memory) assert.ok(maxRel(fn(Int32Array.of(1, 2, 3)), anchor.nextTokenLogits(Int32Array.of(1, 2, 3))) > 1e-3);
      hm.anchor.dispose();
      hm.bank.close();
      anchor.dispose();
    });
  }
}

test('generate: the same tokens with and without the cache, greedy and sampled, past seqLen too', () => {
  for (const cfg of [TINY, ODD]) {
    const { anchor, hm } = build(cfg, 21);
    const prompt = Int32Array.of(3, 1, 4, 1, 5);
    for (const temperature of [0, 0.9]) {
      const o = { maxTokens: 2 * cfg.seqLen, temperature, topK: 8, seed: 9 };
      // a plain function has no decoder: the old path (context re-run per token)
      const plain = generate((ctx) => anchor.nextTokenLogits(ctx), prompt, o);
      assert.equal(plain.length, o.maxTokens);
      assert.deepEqual(generate(anchor, prompt, o), plain);
      const f = hm.logitsForPath(PATH);
      assert.deepEqual(generate(f, prompt, o), generate((ctx) => f(ctx), prompt, o));
      // a prompt longer than seqLen: the window from the start
      const long = Int32Array.from({ length: cfg.seqLen + 3 }, (_, i) => (i * 7) % cfg.vocabSize);
      assert.deepEqual(generate(anchor, long, { ...o, maxTokens: 4 }), generate((ctx) => anchor.nextTokenLogits(ctx), long, { ...o, maxTokens: 4 }));
    }
    // a prompt that fills the cache exactly, then one more token
    const full = Int32Array.from({ length: cfg.seqLen }, (_, i) => i % cfg.vocabSize);
    assert.deepEqual(generate(anchor, full, { maxTokens: 3, temperature: 0 }), generate((ctx) => anchor.nextTokenLogits(ctx), full, { maxTokens: 3, temperature: 0 }));
    // unchanged edge cases: nothing to generate, empty prompt
    assert.equal(generate(anchor, new Int32Array(0), { maxTokens: 0 }).length, 0);
    assert.throws(() => generate(anchor, new Int32Array(0), { maxTokens: 1 }), isCode('E_INVALID_ARGUMENT'));
    hm.anchor.dispose();
    hm.bank.close();
    anchor.dispose();
  }
});

const nativeOf = (m: AnchorModel): NativeModel => (m as unknown as { native: NativeModel }).native;

test('errors: token out of range, cache full, another model\'s cache, bad buffers, busy, disposed', async () => {
  const { anchor, hm } = build(TINY, 31);
  const V = TINY.vocabSize;
  const dec = anchor.decoder();
  assert.throws(() => dec.prefill(Int32Array.of(1, V)), isCode('E_TOKEN_OUT_OF_RANGE'));
  assert.throws(() => dec.prefill(Int32Array.of(-1)), isCode('E_TOKEN_OUT_OF_RANGE'));
  assert.throws(() => dec.prefill(new Int32Array(TINY.seqLen + 1)), isCode('E_SHAPE_MISMATCH'));
  assert.throws(() => dec.prefill(new Int32Array(0)), isCode('E_INVALID_ARGUMENT'));
  dec.prefill(Int32Array.of(1, 2));
  assert.throws(() => dec.step(V), isCode('E_TOKEN_OUT_OF_RANGE'));
  assert.throws(() => dec.step(-1), isCode('E_TOKEN_OUT_OF_RANGE'));
  assert.throws(() => dec.step(NaN), isCode('E_INVALID_ARGUMENT'));
  assert.throws(() => dec.step(1.5), isCode('E_INVALID_ARGUMENT'));
  assert.equal(dec.length, 2, 'refused steps leave the cache as it was');
  dec.prefill(new Int32Array(TINY.seqLen));
  assert.throws(() => dec.step(1), isCode('E_CACHE_FULL'));

  const a = nativeOf(anchor), b = nativeOf(hm.anchor);
  const cacheA = a.kvCacheCreate();
  assert.equal(cacheA.length, 0);
  assert.equal(cacheA.capacity, TINY.seqLen);
  assert.throws(() => b.prefill(cacheA, Int32Array.of(1), new Float32Array(V)), isCode('E_INVALID_ARGUMENT'));
  assert.throws(() => b.decodeStep(cacheA, 1, new Float32Array(V)), isCode('E_INVALID_ARGUMENT'));
  for (const bad of [{}, null, 3, Int32Array.of(1), { __hiermemKVCache: {} }]) {
    assert.throws(() => a.decodeStep(bad as never, 1, new Float32Array(V)), isCode('E_INVALID_ARGUMENT'));
  }
  assert.throws(() => a.prefill(cacheA, Int32Array.of(1), new Float32Array(V - 1)), isCode('E_SHAPE_MISMATCH'));
  assert.throws(() => a.decodeStep(cacheA, 1, new Float64Array(V) as never), isCode('E_INVALID_ARGUMENT'));
  const out = new Float32Array(V);
  assert.equal(a.prefill(cacheA, Int32Array.of(1), out), out, 'logits are written into logitsOut');
  assert.deepEqual(out, a.lastLogits(Int32Array.of(1)));
  // memory on a model without memory layers; a memory with two slots
  const mem = { fetched: new Float32Array(1 * 3 * 10 * TINY.dModel), dfetched: null, seqSlot: Int32Array.of(0), numSlots: 1 };
  assert.throws(() => a.decodeStep(cacheA, 1, out, mem), isCode('E_CONFIG_INVALID'));
  const cacheB = b.kvCacheCreate();
  assert.throws(() => b.decodeStep(cacheB, 1, out, { ...mem, numSlots: 2 }), isCode('E_INVALID_ARGUMENT'));
  // one call at a time per model
  const T = TINY.seqLen;
  const running = anchor.loss({ tokens: new Int32Array(T), targets: new Int32Array(T), batchSize: 1 });
  assert.throws(() => a.decodeStep(cacheA, 1, out), isCode('E_BUSY'));
  await running;
  a.decodeStep(cacheA, 1, out);
  assert.equal(cacheA.length, 2);
  anchor.dispose();
  assert.throws(() => dec.step(1), isCode('E_DISPOSED'));
  assert.throws(() => anchor.decoder(), isCode('E_DISPOSED'));
  hm.anchor.dispose();
  hm.bank.close();
});
