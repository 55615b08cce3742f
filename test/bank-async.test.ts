/**
 * The bank's half of a training step runs off the event loop (issue #13): gather, scatter-add and
 * row-sparse AdamW are async workers, a training step makes no synchronous bank call, the bank is
 * busy (E_BUSY) while one runs, and the async path is bit-identical to the synchronous one.
 * And lazy block initialisation lives in the bank (before the gather copies): a gather initialises
 * exactly the blocks it fetches, a read-only bank generates them without writing, and the values
 * follow the per-block RNG stream keyed by (seed, level, node).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { AnchorModel } from '../lib/model/anchor.js';
import { AdamW } from '../lib/train/adamw.js';
import { MemoryBank } from '../lib/memory/bank.js';
import { HierarchicalModel, type PathBatch } from '../lib/memory/memory-model.js';
import { resolveMemorySpec } from '../lib/memory/spec.js';
import { readSafetensorsHeader } from '../lib/io/safetensors.js';
import { loadNative } from '../lib/native.js';
import type { NativeMemoryBank } from '../lib/native-types.js';
import { HiermemError } from '../lib/errors.js';
import { randomPathBatch } from './helpers.js';

const isCode = (code: string) => (e: unknown) => e instanceof HiermemError && e.code === code;
const CFG = { vocabSize: 13, dModel: 10, nLayers: 3, nHeads: 2, headDim: 4, ffnHidden: 14, seqLen: 6, seed: 2 };
const SPEC = resolveMemorySpec({ k: 3, levels: [2, 3, 1], generic: true }, CFG);
const STEP = { anchorLr: 1e-2, memoryLr: 5e-2, memoryWeightDecay: 1e-3, freezeAnchor: false };
const HYPER = { lr: 0.02, beta1: 0.9, beta2: 0.95, eps: 1e-8, gradScale: 1 };

const batch = (seed: number, paths: number[][]): PathBatch => randomPathBatch(seed, paths, CFG.vocabSize, CFG.seqLen);
const batchPaths = (s: number) => [[s % 3, 3 * (s % 3) + 1, 9 * (s % 3) + 4], [-1, -1, -1], [1, 4, 13]];

/** The native object behind a MemoryBank (its calls are what "synchronous bank call" means). */
const nativeOf = (bank: MemoryBank) => (bank as unknown as { native: NativeMemoryBank }).native;
const SYNC_DATA_CALLS = ['gather', 'scatterAdd', 'adamwUpdate', 'readBlock', 'writeBlock', 'flush', 'pinLevels', 'saveData', 'loadData'] as const;

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'hiermem-bank-async-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The old, synchronous step (every bank call on the event loop): the reference for the async one. */
async function syncStep(hm: HierarchicalModel, b: PathBatch, opt: AdamW): Promise<{ loss: number; gradNorm: number }> {
  const { mem, slotPaths } = hm.memoryFor(b, true);
  hm.anchor.zeroGrad();
  const loss = await hm.anchor.forwardBackward({ ...b, memory: mem });
  const g = hm.bank.blockGradients(mem!.dfetched!, slotPaths);
  const native = loadNative();
  const memNorm = native.globalNorm(g.grads), anchorNorm = native.globalNorm(hm.anchor.grads);
  const gradNorm = Math.sqrt(memNorm * memNorm + anchorNorm * anchorNorm);
  await opt.step(hm.anchor, STEP.anchorLr, gradNorm);
  const o = opt.options;
  hm.bank.adamwUpdate(g.blocks, g.grads, { lr: STEP.memoryLr, beta1: o.beta1, beta2: o.beta2, eps: o.eps, gradScale: opt.clipScale(gradNorm) },
    STEP.memoryWeightDecay);
  return { loss, gradNorm };
}

test('a training step makes no synchronous bank call, and equals the synchronous step bit for bit', async () => {
  await withTempDir(async (dir) => {
    const bank = await MemoryBank.createFile(path.join(dir, 'a.safetensors'), SPEC, CFG.dModel, { seed: 3 });
    const ref = MemoryBank.createInMemory(SPEC, CFG.dModel, { seed: 3 });
    const hm = HierarchicalModel.fromAnchor(AnchorModel.create(CFG, { maxBatch: 3 }), bank);
    const hr = HierarchicalModel.fromAnchor(AnchorModel.create(CFG, { maxBatch: 3 }), ref);
    const opt = new AdamW(hm.anchor), optRef = new AdamW(hr.anchor);
    const nb = nativeOf(bank) as unknown as Record<string, unknown>;
    for (const name of SYNC_DATA_CALLS) {
      // own properties shadow the (read-only) prototype methods of the native class
      Object.defineProperty(nb, name, {
        configurable: true, value: () => { throw new Error(`synchronous bank.${name} during a training step`); },
      });
    }
    bank.releasePageCache(); // a cold file bank: its gather reads the disk
    for (let s = 0; s < 4; s++) {
      const b = batch(50 + s, batchPaths(s));
      const pending = hm.trainStep(b, opt, STEP);
      assert.equal(bank.busy, true, 'the step queued its gather on a worker thread before returning');
      const r = await pending;
      assert.equal(bank.busy, false);
      const want = await syncStep(hr, b, optRef);
      assert.equal(r.loss, want.loss, `step ${s}: loss`);
      assert.equal(r.gradNorm, want.gradNorm, `step ${s}: gradient norm`);
    }
    for (const name of SYNC_DATA_CALLS) delete nb[name];
    assert.deepEqual(hm.anchor.params, hr.anchor.params);
    for (const [l, n] of [[0, 0], [0, 1], [1, 4], [2, 13], [3, 0]] as const) {
      assert.deepEqual(bank.readBlock(l, n), ref.readBlock(l, n), `block (${l}, ${n})`);
      assert.deepEqual(bank.readBlock(l, n, 'v'), ref.readBlock(l, n, 'v'), `block (${l}, ${n}) v`);
      assert.equal(bank.blockSteps(l, n), ref.blockSteps(l, n));
    }
    assert.equal(await hm.loss(batch(9, batchPaths(1))), await hr.loss(batch(9, batchPaths(1))));
    bank.close();
    ref.close();
  });
});

test('while an async bank call runs, calls that touch its data are E_BUSY; hints and sizes are not', async () => {
  const bank = MemoryBank.createInMemory(SPEC, CFG.dModel, { seed: 5 });
  const paths = Int32Array.from([0, 1, 5, -1, -1, -1, 2, 8, 25]);
  const pending = bank.gatherAsync(paths);
  assert.equal(bank.busy, true);
  assert.throws(() => bank.gather(paths), isCode('E_BUSY'));
  assert.throws(() => bank.readBlock(0, 0), isCode('E_BUSY'));
  assert.throws(() => bank.writeBlock(0, 0, new Float32Array(bank.blockFloats(0))), isCode('E_BUSY'));
  assert.throws(() => bank.blockGradients(new Float32Array(3 * bank.slotFloats), paths), isCode('E_BUSY'));
  assert.throws(() => bank.close(), isCode('E_BUSY'));
  await assert.rejects(bank.gatherAsync(paths), isCode('E_BUSY'));
  await assert.rejects(bank.blockGradientsAsync(new Float32Array(3 * bank.slotFloats), paths), isCode('E_BUSY'));
  await assert.rejects(bank.adamwUpdateAsync(Int32Array.of(0, 0), new Float32Array(bank.blockFloats(0)), HYPER, 0), isCode('E_BUSY'));
  bank.prefetch(paths); // a hint, and what the sampler may do while a step runs
  assert.ok(bank.bytes > 0);
  assert.ok(bank.residentBytes() > 0);
  const fetched = await pending;
  assert.equal(bank.busy, false);
  assert.deepEqual(fetched, bank.gather(paths));
  // bad arguments reject (typed) and leave the bank idle
  await assert.rejects(bank.gatherAsync(Int32Array.from([0, 7, 1])), isCode('E_INVALID_ARGUMENT'));
  await assert.rejects(bank.gatherIntoAsync(new Float32Array(1), paths), isCode('E_SHAPE_MISMATCH'));
  assert.equal(bank.busy, false);
  bank.close();
  await assert.rejects(bank.gatherAsync(paths), isCode('E_DISPOSED'));
});

test('a corrupt step count found on the worker thread rejects with E_CHECKPOINT_CORRUPT and changes nothing', async () => {
  await withTempDir(async (dir) => {
    const file = path.join(dir, 'c.safetensors');
    const bank = await MemoryBank.createFile(file, SPEC, CFG.dModel, { seed: 1 });
    bank.close();
    const header = await readSafetensorsHeader(file);
    const steps = header.tensors.get('memory.level2.steps'); // level index 1
    assert.ok(steps, `no memory.level2.steps in ${[...header.tensors.keys()].join(', ')}`);
    const bytes = await readFile(file);
    bytes.writeInt32LE(-5, header.dataStart + steps.begin + 4 * 2); // node 2
    await writeFile(file, bytes);
    const bad = await MemoryBank.openFile(file);
    const blocks = Int32Array.of(0, 0, 1, 2);
    const grads = new Float32Array(bad.blockFloats(0) + bad.blockFloats(1)).fill(0.5);
    const before = bad.readBlock(0, 0);
    await assert.rejects(bad.adamwUpdateAsync(blocks, grads, HYPER, 0), isCode('E_CHECKPOINT_CORRUPT'));
    assert.equal(bad.busy, false);
    assert.throws(() => bad.adamwUpdate(blocks, grads, HYPER, 0), isCode('E_CHECKPOINT_CORRUPT'));
    assert.deepEqual(bad.readBlock(0, 0), before, 'block (0, 0) was not updated');
    assert.equal(bad.blockSteps(0, 0), 0);
    bad.close();
  });
});

/** The `.initialized` flags of every level, read from the bank file. */
async function initFlags(file: string): Promise<Map<string, number[]>> {
  const header = await readSafetensorsHeader(file);
  const bytes = await readFile(file);
  const out = new Map<string, number[]>();
  for (const [name, t] of header.tensors) {
    if (!name.endsWith('.initialized')) continue;
    const flags: number[] = [];
    for (let o = t.begin; o < t.end; o += 4) flags.push(bytes.readInt32LE(header.dataStart + o));
    out.set(name, flags);
  }
  return out;
}

const sha = async (file: string) => createHash('sha256').update(await readFile(file)).digest('hex');

test('lazy initialisation is the bank\'s: a gather initialises exactly the blocks it fetches; a read-only bank generates them and writes nothing', async () => {
  await withTempDir(async (dir) => {
    const file = path.join(dir, 'lazy.safetensors');
    const bank = await MemoryBank.createFile(file, SPEC, CFG.dModel, { seed: 11 });
    const ram = MemoryBank.createInMemory(SPEC, CFG.dModel, { seed: 11 });
    bank.flush();
    const fresh = await initFlags(file);
    assert.equal(fresh.size, 4, 'three tree levels and the generic one');
    for (const flags of fresh.values()) assert.ok(flags.every((f) => f === 0), 'nothing initialised at creation');

    const paths = Int32Array.from([0, 1, 5, 2, 8, 25, 0, 1, 4]);
    const fetched = await bank.gatherAsync(paths);
    bank.flush();
    const flags = await initFlags(file);
    const names = [...flags.keys()];
    const want = new Set<string>();
    const blocks = nativeOf(bank).uniqueBlocks(paths);
    for (let i = 0; i < blocks.length; i += 2) want.add(`${blocks[i]}:${blocks[i + 1]}`);
    names.forEach((name, l) => flags.get(name)!.forEach((f, n) => {
      assert.equal(f, want.has(`${l}:${n}`) ? 1 : 0, `${name}[${n}]`);
    }));
    assert.deepEqual(fetched, ram.gather(paths), 'file bank gather = RAM bank gather');
    bank.close();

    // read-only: never-trained blocks (and the generic one) come out with their init values, the file is untouched
    const before = await sha(file);
    const ro = await MemoryBank.openFile(file, { writable: false });
    const more = Int32Array.from([2, 7, 22, -1, -1, -1, 0, 1, 5]);
    assert.deepEqual(await ro.gatherAsync(more), ram.gather(more), 'read-only gather = RAM gather');
    assert.deepEqual(ro.gather(more), ram.gather(more));
    assert.deepEqual(ro.readBlock(2, 22), ram.readBlock(2, 22));
    ro.close();
    assert.equal(await sha(file), before, 'a read-only gather wrote nothing');
    ram.close();
  });
});

// ---- the init values: the per-block RNG stream (cpp/memory/bank.cc, MemoryBank::init_values) -----

const M64 = (1n << 64n) - 1n;
function splitmix64(state: { x: bigint }): bigint {
  state.x = (state.x + 0x9e3779b97f4a7c15n) & M64;
  let z = state.x;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
  return z ^ (z >> 31n);
}
const uniform01 = (s: { x: bigint }) => (Number(splitmix64(s) >> 11n) + 0.5) * (1 / 9007199254740992);

/** Block (l, node) of a bank with this seed: gate/up truncated normal std 1/sqrt(d), down rows zero. */
function initValues(seed: number, l: number, node: number, rows: number, d: number, lm: number): Float32Array {
  const out = new Float32Array(lm * 3 * rows * d);
  const stdv = Math.fround(1 / Math.sqrt(d));
  const s = { x: BigInt(seed) ^ ((0x51ed270b27a8f3c9n * BigInt(l + 1)) & M64) ^ ((0x2545f4914f6cdd1dn * BigInt(node + 1)) & M64) };
  splitmix64(s);
  for (let layer = 0; layer < lm; layer++) {
    for (let i = 0; i < 2 * rows * d; i++) {
      let z: number;
      do {
        const u1 = uniform01(s), u2 = uniform01(s);
        z = Math.sqrt(-2 * Math.log(u1)) * Math.cos(6.283185307179586 * u2);
      } while (z < -3 || z > 3);
      out[layer * 3 * rows * d + i] = Math.fround(Math.fround(z) * stdv);
    }
  }
  return out;
}

test('init values follow the per-block RNG stream keyed by (seed, level, node), whatever fetched them', async () => {
  const seed = 4242;
  const bank = MemoryBank.createInMemory(SPEC, CFG.dModel, { seed });
  const lm = SPEC.layers.length, d = CFG.dModel;
  // gathered (initialised in the bank before the copy) and read back, in a scrambled order
  await bank.gatherAsync(Int32Array.from([2, 8, 25, -1, -1, -1]));
  for (const [l, node] of [[2, 25], [0, 0], [1, 4], [3, 0], [2, 13], [0, 2]] as const) {
    const rows = l < SPEC.levels.length ? SPEC.levels[l]! : bank.unitsPerLayer;
    const want = initValues(seed, l, node, rows, d, lm);
    const got = bank.readBlock(l, node);
    assert.equal(got.length, want.length);
    for (let i = 0; i < got.length; i++) {
      // libm and V8 may differ in the last bit of log/cos: allow one float ulp or so, exact zeros
      const ok = want[i] === 0 ? got[i] === 0 : Math.abs(got[i]! - want[i]!) <= 1e-6 * Math.abs(want[i]!);
      assert.ok(ok, `block (${l}, ${node})[${i}]: ${got[i]} vs ${want[i]}`);
    }
  }
  bank.close();
});
