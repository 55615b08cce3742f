import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { AnchorModel } from '../lib/model/anchor.js';
import { AdamW } from '../lib/train/adamw.js';
import { MemoryBank } from '../lib/memory/bank.js';
import { HierarchicalModel, slotsOf, type PathBatch } from '../lib/memory/memory-model.js';
import { memorySizes, resolveMemorySpec, layerToMemory } from '../lib/memory/spec.js';
import { HiermemError } from '../lib/errors.js';
import { modelLoss64 } from './reference/model64.js';
import { Rng, fdGrad, randomPathBatch } from './helpers.js';

const isCode = (code: string) => (e: unknown) => e instanceof HiermemError && e.code === code;

test('size arithmetic reproduces the paper: 160M anchor, r = (256, 64, 16, 0), k = 16', () => {
  const model = { nLayers: 35, dModel: 512 };
  const spec = resolveMemorySpec({ k: 16, levels: [256, 64, 16, 0] }, model);
  const s = memorySizes(spec, model, 163_510_016);
  assert.deepEqual(s.blockParams, [13_762_560, 3_440_640, 860_160, 0]);
  assert.equal(s.fetchedParams, 18_063_360); // paper: 18M fetched
  assert.equal(s.bankParams, 4_624_220_160); // paper: 4.6B bank
  assert.equal(s.unitsPerLayer, 336); // 2,048 -> 2,384 SwiGLU units
  assert.ok(Math.abs(s.fetchedToAnchor! - 0.1105) < 1e-3);
  // Table 7: (256, 64, 16, 4) -> 18.7B bank
  const s7 = memorySizes(resolveMemorySpec({ k: 16, levels: [256, 64, 16, 4] }, model), model);
  assert.equal(Math.round(s7.bankParams / 1e8) / 10, 18.7);
  // 1.4B (C2): L = 24, d = 2048, (768, 256, 16, 0) -> 153M fetched, 21.1B bank
  const c2 = memorySizes(resolveMemorySpec({ k: 16, levels: [768, 256, 16, 0] }, { nLayers: 24, dModel: 2048 }), { dModel: 2048 });
  assert.equal(Math.round(c2.fetchedParams / 1e5) / 10, 153.4);
  assert.equal(Math.round(c2.bankParams / 1e8) / 10, 21.1);
});

test('specs that cannot be built are typed errors', () => {
  const m = { nLayers: 4, dModel: 8 };
  assert.throws(() => resolveMemorySpec({ k: 1, levels: [2] }, m), isCode('E_CONFIG_INVALID'));
  assert.throws(() => resolveMemorySpec({ k: 4, levels: [] }, m), isCode('E_CONFIG_INVALID'));
  assert.throws(() => resolveMemorySpec({ k: 4, levels: [0, 0] }, m), isCode('E_CONFIG_INVALID'));
  assert.throws(() => resolveMemorySpec({ k: 4, levels: [2, -1] }, m), isCode('E_CONFIG_INVALID'));
  assert.throws(() => resolveMemorySpec({ k: 4, levels: [2], layers: [4] }, m), isCode('E_CONFIG_INVALID'));
  assert.throws(() => resolveMemorySpec({ k: 4, levels: [2], layers: [1, 1] }, m), isCode('E_CONFIG_INVALID'));
  assert.throws(() => resolveMemorySpec({ k: 16, levels: [1, 1, 1, 1, 1, 1, 1, 1] }, m), isCode('E_CONFIG_INVALID'));
});

const CFG = { vocabSize: 13, dModel: 10, nLayers: 3, nHeads: 2, headDim: 4, ffnHidden: 14, seqLen: 6, seed: 2 };

function randomize(model: AnchorModel, seed: number): void {
  const rng = new Rng(seed);
  for (const s of model.layout) {
    const v = model.tensor(s.name);
    for (let i = 0; i < v.length; i++) v[i] = s.name.endsWith('norm.weight') ? 1 + 0.2 * rng.normal() : 0.4 * rng.normal();
  }
}

const batchWithPaths = (seed: number, paths: number[][]): PathBatch => randomPathBatch(seed, paths, CFG.vocabSize, CFG.seqLen);

test('a fresh memory changes nothing: loss with fetched blocks equals the anchor alone, bit for bit', async () => {
  const anchor = AnchorModel.create(CFG, { maxBatch: 3 });
  randomize(anchor, 1);
  const spec = resolveMemorySpec({ k: 2, levels: [3, 2], layers: [0, 2] }, CFG);
  const bank = MemoryBank.createInMemory(spec, CFG.dModel, { seed: 5 });
  const hm = HierarchicalModel.fromAnchor(anchor, bank);
  const batch = batchWithPaths(2, [[0, 1], [1, 3], [0, 1]]);
  assert.equal(await hm.loss(batch), await anchor.loss(batch));
  // trained (non-zero down rows) memory does change it
  const blk = bank.readBlock(1, 3);
  blk.fill(0.3, (blk.length * 2) / 3);
  bank.writeBlock(1, 3, blk);
  assert.notEqual(await hm.loss(batch), await anchor.loss(batch));
});

test('memory model: loss and gradients (anchor and fetched blocks) match float64 finite differences', () => {
  const spec = resolveMemorySpec({ k: 2, levels: [2, 3], layers: [0, 2] }, CFG);
  const R = 5;
  const model = AnchorModel.create(CFG, { maxBatch: 3, memory: { R, layerToMemory: layerToMemory(spec, CFG.nLayers) } });
  randomize(model, 3);
  const bank = MemoryBank.createInMemory(spec, CFG.dModel, { seed: 9 });
  const rng = new Rng(4);
  for (const [l, n] of [[0, 0], [0, 1], [1, 1], [1, 2]] as const) {
    const b = bank.readBlock(l, n);
    for (let i = 0; i < b.length; i++) b[i] = 0.4 * rng.normal();
    bank.writeBlock(l, n, b);
  }
  // sequences 0 and 2 share a path (their block gradients must add); sequence 1 has its own
  const batch = batchWithPaths(5, [[0, 1], [1, 2], [0, 1]]);
  const { slotPaths, seqSlot } = slotsOf(batch.paths, 3, 2);
  assert.deepEqual(Array.from(seqSlot), [0, 1, 0]);
  const fetched = bank.gather(slotPaths);
  const dfetched = new Float32Array(fetched.length);
  model.zeroGrad();
  const loss = model.forwardBackwardSync({ ...batch, memory: { fetched, dfetched, seqSlot, numSlots: 2 } });
  const b64 = { tokens: batch.tokens, targets: batch.targets, docStart: null, B: 3, T: CFG.seqLen };
  const map = layerToMemory(spec, CFG.nLayers);
  const f64 = Float64Array.from(fetched);
  const p64 = Float64Array.from(model.params);
  const ref = modelLoss64(model.config, model.layout, p64, b64, { R, layerToMemory: map, fetched: f64, seqSlot });
  assert.ok(Math.abs(loss - ref) / ref < 1e-5, `loss ${loss} vs ${ref}`);
  // gradient w.r.t. fetched memory rows: every entry
  const fdF = fdGrad((x) => modelLoss64(model.config, model.layout, p64, b64, { R, layerToMemory: map, fetched: x, seqSlot }), f64,
    [...Array(f64.length).keys()], 1e-5);
  let num = 0, den = 0;
  fdF.forEach((g, i) => { num += (dfetched[i]! - g) ** 2; den += g * g; });
  assert.ok(Math.sqrt(num / den) < 1e-3, `fetched grad rel err ${Math.sqrt(num / den)}`);
  // gradient w.r.t. anchor parameters: a subset of every tensor
  const idx: number[] = [];
  for (const s of model.layout) for (let i = 0; i < 6; i++) idx.push(s.offset + rng.int(s.size));
  const fdP = fdGrad((x) => modelLoss64(model.config, model.layout, x, b64, { R, layerToMemory: map, fetched: f64, seqSlot }), p64, idx, 1e-5);
  num = 0; den = 0;
  idx.forEach((g, j) => { num += (model.grads[g]! - fdP[j]!) ** 2; den += fdP[j]! ** 2; });
  assert.ok(Math.sqrt(num / den) < 1e-3, `anchor grad rel err ${Math.sqrt(num / den)}`);
  // the block gradients are the per-slot gradients added up (scatter-add)
  const { blocks, grads } = bank.blockGradients(dfetched, slotPaths);
  assert.deepEqual(Array.from(blocks), [0, 0, 0, 1, 1, 1, 1, 2]);
  const lm = 2, C = CFG.dModel;
  // block (1, 1) (level 2 node 1, 3 rows at offset 2) is used by slot 0 only
  const off = (2 * lm * 3 * C) * 2; // after blocks (0,0) and (0,1) of 2 rows each
  for (let m = 0; m < lm * 3; m++) for (let r = 0; r < 3; r++) for (let c = 0; c < C; c++) {
    assert.equal(grads[off + (m * 3 + r) * C + c], dfetched[(m * R + 2 + r) * C + c]);
  }
});

async function trainBoth(bank: MemoryBank, steps: number): Promise<number[]> {
  const anchor = AnchorModel.create(CFG, { maxBatch: 3 });
  const hm = HierarchicalModel.fromAnchor(anchor, bank);
  const opt = new AdamW(hm.anchor);
  const losses: number[] = [];
  for (let s = 0; s < steps; s++) {
    const batch = batchWithPaths(100 + s, [[s % 2, 2 * (s % 2) + 1], [1, 2], [s % 2, 2 * (s % 2) + 1]]);
    const r = await hm.trainStep(batch, opt, { anchorLr: 1e-2, memoryLr: 5e-2, memoryWeightDecay: 1e-3, freezeAnchor: s < 2 });
    losses.push(r.loss);
  }
  return losses;
}

test('RAM and memory-mapped banks train bit-identically; untouched blocks stay untouched', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'hiermem-bank-'));
  const spec = resolveMemorySpec({ k: 2, levels: [2, 3], generic: true }, CFG);
  const ram = MemoryBank.createInMemory(spec, CFG.dModel, { seed: 7 });
  const file = await MemoryBank.createFile(path.join(dir, 'bank.safetensors'), spec, CFG.dModel, { seed: 7 });
  const a = await trainBoth(ram, 6);
  const b = await trainBoth(file, 6);
  assert.deepEqual(a, b);
  assert.ok(a[5]! < a[0]!, `training should lower the loss: ${a}`);
  for (const [l, n] of [[0, 0], [0, 1], [1, 1], [1, 2], [1, 3]] as const) {
    assert.deepEqual(ram.readBlock(l, n), file.readBlock(l, n));
    assert.deepEqual(ram.readBlock(l, n, 'v'), file.readBlock(l, n, 'v'));
  }
  assert.equal(ram.blockSteps(1, 0), 0); // never fetched
  assert.equal(ram.blockSteps(1, 2), 6); // fetched every step
  assert.equal(ram.blockSteps(1, 1), 3);
  // save the RAM bank to a file, reopen read-only: identical blocks
  await ram.save(path.join(dir, 'saved.safetensors'));
  const reopened = await MemoryBank.openFile(path.join(dir, 'saved.safetensors'), { writable: false });
  assert.deepEqual(reopened.readBlock(1, 2), ram.readBlock(1, 2));
  assert.deepEqual(reopened.readBlock(0, 1, 'm'), ram.readBlock(0, 1, 'm'));
  file.flush();
  file.close();
  const again = await MemoryBank.openFile(path.join(dir, 'bank.safetensors'));
  assert.deepEqual(again.readBlock(1, 3), ram.readBlock(1, 3));
  assert.throws(() => file.readBlock(0, 0), isCode('E_DISPOSED'));
  // a bank of another spec is refused
  await assert.rejects(MemoryBank.openFile(path.join(dir, 'missing.safetensors')), isCode('E_IO'));
  await rm(dir, { recursive: true });
});

test('banks that cannot fit are refused before anything is allocated, with the numbers', async () => {
  const model = { nLayers: 8, dModel: 1024 };
  const spec = resolveMemorySpec({ k: 16, levels: [0, 0, 0, 512] }, model); // 65,536 leaves x 50 MiB
  assert.throws(() => MemoryBank.createInMemory(spec, model.dModel, { seed: 1 }), (e: unknown) => e instanceof HiermemError && e.code === 'E_CONFIG_INVALID' && /GiB/.test(e.message));
  const dir = await mkdtemp(path.join(tmpdir(), 'hiermem-nofit-'));
  await assert.rejects(MemoryBank.createFile(path.join(dir, 'b.safetensors'), spec, model.dModel, { seed: 1 }),
    (e: unknown) => e instanceof HiermemError && e.code === 'E_CONFIG_INVALID' && /on disk/.test(e.message));
  await rm(dir, { recursive: true });
});

test('a bank file far larger than the resident set opens and trains with small RSS', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'hiermem-big-'));
  const model = { nLayers: 2, dModel: 64 };
  // 3 levels of k = 16: 4096 leaves x 2 layers x 3 x 256 units x 64 = 402M floats of weights,
  // plus AdamW m and v: a ~4.8 GiB sparse file.
  const spec = resolveMemorySpec({ k: 16, levels: [0, 0, 256] }, model);
  const file = path.join(dir, 'big.safetensors');
  const bank = await MemoryBank.createFile(file, spec, model.dModel, { seed: 1, allowOvercommit: true });
  const size = (await stat(file)).size;
  assert.ok(size > 4.5 * 2 ** 30, `bank file is ${size} bytes`);
  const anchor = AnchorModel.create({ vocabSize: 50, dModel: 64, nLayers: 2, nHeads: 2, headDim: 32, ffnHidden: 128, seqLen: 16, seed: 1 }, { maxBatch: 4 });
  const hm = HierarchicalModel.fromAnchor(anchor, bank);
  const opt = new AdamW(hm.anchor);
  const rng = new Rng(3);
  const rssBefore = process.memoryUsage().rss;
  for (let s = 0; s < 4; s++) {
    const paths: number[] = [];
    for (let b = 0; b < 4; b++) {
      const leaf = rng.int(4096);
      paths.push(leaf >> 8, leaf >> 4, leaf);
    }
    const batch = { tokens: new Int32Array(64).map(() => rng.int(50)), targets: new Int32Array(64).map(() => rng.int(50)), batchSize: 4, paths: Int32Array.from(paths) };
    const r = await hm.trainStep(batch, opt, { anchorLr: 1e-3, memoryLr: 1e-3, memoryWeightDecay: 1e-3, freezeAnchor: false });
    assert.ok(Number.isFinite(r.loss));
  }
  const rss = process.memoryUsage().rss;
  assert.ok(rss - rssBefore < 256 * 2 ** 20, `RSS grew by ${((rss - rssBefore) / 2 ** 20).toFixed(1)} MiB for a ${(size / 2 ** 30).toFixed(1)} GiB bank`);
  bank.close();
  await rm(dir, { recursive: true });
});
