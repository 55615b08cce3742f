/**
 * The memory bank and its kernels (lib/native-types.ts: memoryBankTensors, createMemoryBank,
 * NativeMemoryBank, ffnMemoryForward/Backward) against the plain / float64 references in
 * test/reference/memory64.ts.
 *
 *  1. layout of the bank tensors (shapes, dtypes, order, contiguous byte offsets);
 *  2. gather: bitwise equal to plain copies of readBlock('weight') into the (S, Lm, 3, R, d) slots;
 *  3. fresh blocks: down rows exactly 0, gate/up truncated N(0, 1/d), deterministic in (seed, block);
 *  4. uniqueBlocks / scatterAdd: bitwise equal to float32 sums in slot order, ADD semantics;
 *  5. row-sparse AdamW: each touched block = dense float64 AdamW with the block's own step count,
 *     untouched blocks bit-identical;
 *  6. ffnMemoryForward/Backward: anchor ffn + memory = one float64 SwiGLU of width F + R per sequence;
 *  7. file-backed bank (sparse safetensors file) = RAM bank, bitwise; persistence; read-only;
 *  8. bad input: typed errors, never a crash.
 *
 * Error measure (helpers.maxRelErr): max_i |got_i - ref_i| / (max_i |ref_i| + 1e-6).
 */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { loadNative } from '../lib/native.js';
import type { BankStorage, NativeAddon, NativeMemoryBank, NativeMemorySpec } from '../lib/native-types.js';
import { Rng, assertClose, assertThrowsCode, dot, f64, fdGrad, fdIndices, gather, junk32, maxAbs, maxRelErr, randn32, snapshot } from './helpers.js';
import { ffnForward64 } from './reference/kernels64.js';
import {
  adamwBlock64,
  allBlocks,
  blockFloats,
  blockOffsets,
  concatFfnWeights,
  expectedBankTensors,
  ffnWithMemory64,
  ffnWithMemoryBackward64,
  gatherRef,
  gatherRef64,
  levelNodes,
  levelRows,
  randomPath,
  scatterAddRef,
  slotFloats,
  specP,
  specR,
  uniqueBlocksRef,
  type BlockAdamHyper,
} from './reference/memory64.js';

const native: NativeAddon = loadNative();

const FWD_TOL = 1e-5;
const GRAD_TOL = 1e-4;

/** Largest error seen per check, printed at the end (the numbers of the report). */
const worst = new Map<string, number>();
function note(label: string, err: number): void {
  worst.set(label, Math.max(worst.get(label) ?? 0, err));
}
after(() => {
  if (worst.size) {
    const lines = [...worst].map(([k, v]) => `  ${k}: ${v.toExponential(2)}`);
    console.log(`memory-kernels max errors (maxRelErr):\n${lines.join('\n')}`);
  }
});

const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hiermem-memory-test-'));
after(() => fs.rmSync(tmpDir, { recursive: true, force: true }));

// ---- helpers -----------------------------------------------------------------------------------

function spec(k: number, levels: number[], memoryLayers: number, dModel: number, generic: boolean, optimizer: boolean): NativeMemorySpec {
  return { k, levels, memoryLayers, dModel, generic, optimizer };
}

function specName(s: NativeMemorySpec): string {
  return `k=${s.k} r=(${s.levels.join(',')}) Lm=${s.memoryLayers} d=${s.dModel}${s.generic ? ' +generic' : ''}${s.optimizer ? ' +adam' : ''}`;
}

function ramBank(s: NativeMemorySpec, seed: number): NativeMemoryBank {
  return native.createMemoryBank(s, seed, { kind: 'ram' });
}

/** Bitwise equality of two typed arrays; the message names the first differing element. */
function assertBitEqual(a: Float32Array | Int32Array, b: Float32Array | Int32Array, label: string): void {
  assert.equal(a.length, b.length, `${label}: length ${a.length} != ${b.length}`);
  const ba = Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  const bb = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  if (ba.equals(bb)) return;
  let i = 0;
  while (i < a.length && Object.is(a[i], b[i])) i++;
  assert.fail(`${label}: differs first at element ${i} of ${a.length}: ${a[i]} vs ${b[i]}`);
}

function readBlock(bank: NativeMemoryBank, s: NativeMemorySpec, kind: 'weight' | 'm' | 'v', l: number, node: number): Float32Array {
  const out = junk32(blockFloats(s, l));
  bank.readBlock(kind, l, node, out);
  return out;
}

interface BankState {
  w: Map<string, Float32Array>;
  m: Map<string, Float32Array>;
  v: Map<string, Float32Array>;
  steps: Map<string, number>;
}

/** Every block of the bank (weights, and m, v, steps with the optimizer) via readBlock / blockSteps. */
function readState(bank: NativeMemoryBank, s: NativeMemorySpec): BankState {
  const st: BankState = { w: new Map(), m: new Map(), v: new Map(), steps: new Map() };
  for (const [l, n] of allBlocks(s)) {
    const key = `${l}:${n}`;
    st.w.set(key, readBlock(bank, s, 'weight', l, n));
    if (s.optimizer) {
      st.m.set(key, readBlock(bank, s, 'm', l, n));
      st.v.set(key, readBlock(bank, s, 'v', l, n));
    }
    st.steps.set(key, bank.blockSteps(l, n));
  }
  return st;
}

function assertStatesEqual(a: BankState, b: BankState, label: string): void {
  for (const [key, w] of a.w) assertBitEqual(w, b.w.get(key) as Float32Array, `${label}: weight of block ${key}`);
  for (const [key, m] of a.m) assertBitEqual(m, b.m.get(key) as Float32Array, `${label}: adam m of block ${key}`);
  for (const [key, v] of a.v) assertBitEqual(v, b.v.get(key) as Float32Array, `${label}: adam v of block ${key}`);
  for (const [key, n] of a.steps) assert.equal(b.steps.get(key), n, `${label}: steps of block ${key}`);
}

/** S random paths (flattened (S, p)) with repeats and, if the bank has one, generic slots (rows of -1). */
function randomPaths(rng: Rng, s: NativeMemorySpec, S: number, pGeneric = 0.2, pRepeat = 0.3): Int32Array {
  const p = specP(s);
  const rows: number[][] = [];
  for (let i = 0; i < S; i++) {
    if (s.generic && rng.uniform() < pGeneric) rows.push(new Array<number>(p).fill(-1));
    else if (rows.length > 0 && rng.uniform() < pRepeat) rows.push([...(rows[rng.int(rows.length)] as number[])]);
    else rows.push(randomPath(rng, s.k, p));
  }
  return Int32Array.from(rows.flat());
}

/** A random spec: k 2..4, p 1..3, r_l in 0..3 (R > 0), Lm 1..3, odd d. */
function randomSpec(rng: Rng, optimizer = false): NativeMemorySpec {
  const p = rng.int(1, 4);
  const levels: number[] = Array.from({ length: p }, () => rng.int(0, 4));
  if (levels.every((r: number): boolean => r === 0)) levels[rng.int(p)] = rng.int(1, 4);
  const ds = [3, 5, 7];
  return spec(rng.int(2, 5), levels, rng.int(1, 4), ds[rng.int(ds.length)] as number, rng.int(2) === 1, optimizer);
}

/** Writes random values into about half of the bank's weight blocks (so placement errors show in every row kind). */
function scribble(bank: NativeMemoryBank, s: NativeMemorySpec, rng: Rng): void {
  for (const [l, n] of allBlocks(s)) if (rng.uniform() < 0.5) bank.writeBlock('weight', l, n, randn32(rng, blockFloats(s, l)));
}

// ---- safetensors bank files ----------------------------------------------------------------------

/**
 * Writes the safetensors header of memoryBankTensors(spec) (8-byte LE length, JSON padded with
 * spaces so the data start is a multiple of 8) and extends the file sparsely to the full size.
 */
function createBankFile(file: string, s: NativeMemorySpec, extraBytes = 0): { dataStart: number; total: number } {
  const tensors = native.memoryBankTensors(s);
  const header: Record<string, unknown> = { __metadata__: { format: 'hiermem-memory-bank', k: String(s.k) } };
  for (const t of tensors) header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [t.byteOffset, t.byteOffset + t.byteSize] };
  let json = JSON.stringify(header);
  while ((8 + Buffer.byteLength(json)) % 8 !== 0) json += ' ';
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  fs.writeFileSync(file, Buffer.concat([len, Buffer.from(json)]));
  const dataStart = 8 + Buffer.byteLength(json);
  const last = tensors[tensors.length - 1];
  const total = last ? last.byteOffset + last.byteSize : 0;
  fs.truncateSync(file, dataStart + total + extraBytes);
  return { dataStart, total };
}

/** Reads tensor `name`'s bytes for block `node` straight from the file (what a safetensors reader sees). */
function rawFileBlock(file: string, dataStart: number, s: NativeMemorySpec, name: string, node: number): Buffer {
  const t = native.memoryBankTensors(s).find((x) => x.name === name);
  assert.ok(t, `no tensor ${name}`);
  const per = t.byteSize / (t.shape[0] as number);
  const buf = Buffer.alloc(per);
  const fd = fs.openSync(file, 'r');
  try {
    fs.readSync(fd, buf, 0, per, dataStart + t.byteOffset + node * per);
  } finally {
    fs.closeSync(fd);
  }
  return buf;
}

// ---- 1. layout ---------------------------------------------------------------------------------

describe('memory bank layout', () => {
  const specs = [
    spec(3, [2, 0, 1], 2, 5, true, true),
    spec(2, [0, 3], 1, 7, false, false),
    spec(4, [1], 3, 4, false, true),
    spec(2, [4, 2, 1], 1, 3, true, false),
    spec(16, [256, 64, 16, 0], 12, 768, false, true), // the paper's 160M-anchor shape (a 4.6B-parameter bank), layout only
  ];
  for (const s of specs) {
    test(specName(s), () => {
      const got = native.memoryBankTensors(s);
      const want = expectedBankTensors(s);
      assert.equal(got.length, want.length, 'number of tensors');
      const names = new Set<string>();
      let off = 0;
      for (let i = 0; i < want.length; i++) {
        const g = got[i]!;
        const w = want[i]!;
        const label = `tensor ${i} (${g.name})`;
        assert.equal(g.dtype, w.dtype, `${label}: dtype`);
        assert.deepEqual(g.shape, w.shape, `${label}: shape`);
        assert.equal(g.level, w.level, `${label}: level`);
        assert.equal(g.byteOffset, off, `${label}: byteOffset (contiguous, no holes)`);
        assert.equal(g.byteSize, w.byteSize, `${label}: byteSize`);
        assert.equal(g.byteOffset, w.byteOffset, `${label}: byteOffset`);
        assert.ok(g.name.endsWith(w.kind), `${label}: name should end with ${w.kind}`);
        assert.ok(!names.has(g.name), `${label}: duplicate name`);
        names.add(g.name);
        off += g.byteSize;
      }
      // the paper's 160M bank (r = 256, 64, 16, 0; c0 = 3 L d = 27,648 for L = 12, d = 768 here) in fp32
      const weights = got.filter((t) => t.name.endsWith('weight')).reduce((a, t) => a + t.byteSize / 4, 0);
      const want64 = [0, 1, 2, 3].reduce((a, l) => a + (l < s.levels.length ? s.k ** (l + 1) * 3 * s.memoryLayers * s.dModel * (s.levels[l] as number) : 0), 0) +
        (s.generic ? 3 * s.memoryLayers * s.dModel * specR(s) : 0);
      assert.equal(weights, want64, 'weight parameters = sum_l k^l 3 Lm d r_l (+ generic)');
      if (off < 1e8) {
        const bank = ramBank(s, 1);
        assert.equal(bank.bytes, off, 'bank.bytes = data section size');
        assert.equal(bank.isFile, false);
        bank.close();
      }
    });
  }
});

// ---- 2. gather ---------------------------------------------------------------------------------

describe('gather', () => {
  for (let c = 0; c < 12; c++) {
    const rng = new Rng(1000 + c);
    const s = randomSpec(rng);
    test(`random bank ${c}: ${specName(s)}`, () => {
      const bank = ramBank(s, 77 + c);
      scribble(bank, s, rng);
      for (let round = 0; round < 3; round++) {
        const S = rng.int(1, 10);
        const paths = randomPaths(rng, s, S);
        const unchanged = snapshot({ paths });
        const fetched = junk32(S * slotFloats(s)); // every element must be overwritten
        bank.gather(fetched, paths);
        unchanged();
        const ref = gatherRef(s, paths, (l, n) => readBlock(bank, s, 'weight', l, n));
        assertBitEqual(fetched, ref, `gather round ${round}`);
      }
      bank.close();
    });
  }

  test('explicit layout: level rows at sum_{j<l} r_j in each (layer, gate|up|down); generic fills all R rows', () => {
    const s = spec(2, [2, 0, 1], 2, 3, true, false); // R = 3; level 1 has no memory
    const bank = ramBank(s, 5);
    // block values encode (level, node, layer, kind, row, col)
    const code = (l: number, n: number, m: number, row: number, c: number) => l * 1e4 + n * 1e3 + m * 100 + row * 10 + c;
    for (const [l, n] of allBlocks(s)) {
      const rows = levelRows(s, l);
      const b = new Float32Array(blockFloats(s, l));
      for (let m = 0; m < 6; m++) for (let r = 0; r < rows; r++) for (let c = 0; c < 3; c++) b[(m * rows + r) * 3 + c] = code(l, n, m, r, c);
      bank.writeBlock('weight', l, n, b);
    }
    const paths = Int32Array.from([1, 3, 7, -1, -1, -1, 0, 1, 2]);
    const fetched = junk32(3 * slotFloats(s));
    bank.gather(fetched, paths);
    const at = (slot: number, m: number, row: number, c: number) => fetched[slot * slotFloats(s) + (m * 3 + row) * 3 + c];
    for (let m = 0; m < 6; m++) {
      for (let c = 0; c < 3; c++) {
        // slot 0: level 0 node 1 in rows 0, 1; level 2 node 7 in row 2
        assert.equal(at(0, m, 0, c), code(0, 1, m, 0, c));
        assert.equal(at(0, m, 1, c), code(0, 1, m, 1, c));
        assert.equal(at(0, m, 2, c), code(2, 7, m, 0, c));
        // slot 1: generic (level p = 3) rows 0..2
        for (let r = 0; r < 3; r++) assert.equal(at(1, m, r, c), code(3, 0, m, r, c));
        assert.equal(at(2, m, 0, c), code(0, 0, m, 0, c));
        assert.equal(at(2, m, 2, c), code(2, 2, m, 0, c));
      }
    }
    bank.close();
  });

  test('empty batch: nothing fetched, no blocks', () => {
    const s = spec(2, [1, 1], 1, 3, true, true);
    const bank = ramBank(s, 1);
    bank.gather(new Float32Array(0), new Int32Array(0));
    assert.equal(bank.uniqueBlocks(new Int32Array(0)).length, 0);
    bank.scatterAdd(new Float32Array(0), new Int32Array(0), new Float32Array(0), new Int32Array(0));
    bank.adamwUpdate(new Int32Array(0), new Float32Array(0), { lr: 0.1, beta1: 0.9, beta2: 0.95, eps: 1e-8, gradScale: 1 }, 0);
    bank.close();
  });
});

// ---- 3. fresh memory ---------------------------------------------------------------------------

describe('fresh memory is a no-op', () => {
  const s = spec(2, [32, 16], 2, 64, true, false);

  test('down rows exactly 0, gate/up truncated N(0, 1/sqrt(d)) at ±3σ', () => {
    const bank = ramBank(s, 2024);
    const d = s.dModel;
    const sd = 1 / Math.sqrt(d);
    for (const [l, n] of [[0, 1], [1, 3], [2, 0]] as const) {
      const rows = levelRows(s, l);
      const blk = readBlock(bank, s, 'weight', l, n);
      const gu: number[] = [];
      for (let m = 0; m < s.memoryLayers; m++) {
        const base = m * 3 * rows * d;
        for (let i = 0; i < 2 * rows * d; i++) gu.push(blk[base + i] as number);
        for (let i = 2 * rows * d; i < 3 * rows * d; i++) assert.ok(Object.is(blk[base + i], 0), `block (${l},${n}) layer ${m}: down element ${i} = ${blk[base + i]}, not +0`);
      }
      const mean = gu.reduce((a, x) => a + x, 0) / gu.length;
      const std = Math.sqrt(gu.reduce((a, x) => a + (x - mean) ** 2, 0) / gu.length);
      const mx = maxAbs(gu);
      // a normal truncated at ±3σ has std 0.9866σ
      assert.ok(Math.abs(mean) < 5 * sd / Math.sqrt(gu.length), `block (${l},${n}): mean ${mean} (n=${gu.length})`);
      assert.ok(std > 0.95 * sd && std < 1.02 * sd, `block (${l},${n}): std ${std} vs 1/sqrt(d) = ${sd}`);
      assert.ok(mx <= 3 * sd * (1 + 1e-6), `block (${l},${n}): |x| max ${mx} > 3/sqrt(d) = ${3 * sd}`);
      assert.ok(mx > 2.5 * sd, `block (${l},${n}): |x| max ${mx}: no tail at all?`);
      note('fresh gate/up std / (1/sqrt d) - 1', Math.abs(std / sd - 1));
    }
    bank.close();
  });

  test('deterministic in (seed, level, node): same seed bit-identical whatever the fetch order, other seeds differ', () => {
    const small = spec(3, [2, 1], 2, 5, true, false);
    for (const seed of [0, 1, 2 ** 40]) {
      const a = ramBank(small, seed);
      const b = ramBank(small, seed);
      const c = ramBank(small, seed + 1);
      const blocks = allBlocks(small);
      // readBlock on never-fetched blocks of a; b initialises its blocks by gathers in reverse order first
      const rng = new Rng(seed % 1000);
      for (let i = blocks.length - 1; i >= 0; i--) {
        const [l, n] = blocks[i]!;
        if (l === specP(small)) b.gather(new Float32Array(slotFloats(small)), Int32Array.from([-1, -1]));
        else if (l === 1) b.gather(new Float32Array(slotFloats(small)), Int32Array.from([Math.floor(n / 3), n]));
        else b.gather(new Float32Array(slotFloats(small)), Int32Array.from([n, n * 3 + rng.int(3)]));
      }
      const seen = new Set<string>();
      for (const [l, n] of blocks) {
        const wa = readBlock(a, small, 'weight', l, n);
        const wb = readBlock(b, small, 'weight', l, n);
        const wc = readBlock(c, small, 'weight', l, n);
        assertBitEqual(wa, wb, `seed ${seed}: block (${l},${n}) read fresh vs after gather in another bank`);
        assert.ok(maxAbs(wa.map((x, i) => x - (wc[i] as number))) > 0, `seed ${seed} vs ${seed + 1}: block (${l},${n}) identical`);
        const key = Array.from(wa.subarray(0, 4)).join(',');
        assert.ok(!seen.has(key), `seed ${seed}: block (${l},${n}) starts like another block`);
        seen.add(key);
      }
      a.close();
      b.close();
      c.close();
    }
  });

  test('readBlock of an uninitialised block = what gather returns; a fresh fetched memory leaves the FFN output bitwise unchanged', () => {
    const one = spec(2, [3, 2], 1, 13, true, false); // Lm = 1 so a slot is the (3, R, C) buffer of ffnMemoryForward
    const bank = ramBank(one, 99);
    const paths = Int32Array.from([1, 2, -1, -1, 0, 1, 1, 3]);
    const S = 4;
    const before = gatherRef(one, paths, (l, n) => readBlock(bank, one, 'weight', l, n)); // all still uninitialised
    const fetched = junk32(S * slotFloats(one));
    bank.gather(fetched, paths);
    assertBitEqual(fetched, before, 'gather vs readBlock of the uninitialised blocks');
    const after = gatherRef(one, paths, (l, n) => readBlock(bank, one, 'weight', l, n));
    assertBitEqual(fetched, after, 'gather vs readBlock after initialisation');

    const rng = new Rng(5);
    const B = 5;
    const T = 3;
    const C = 13;
    const F = 8;
    const R = specR(one);
    const x = randn32(rng, B * T * C);
    const w1 = randn32(rng, F * C, 0.3);
    const w2 = randn32(rng, F * C, 0.3);
    const w3 = randn32(rng, C * F, 0.3);
    const y = new Float32Array(B * T * C);
    native.ffnForward(y, new Float32Array(B * T * F), new Float32Array(B * T * F), x, w1, w2, w3, B * T, C, F);
    const yAnchor = Float32Array.from(y);
    native.ffnMemoryForward(y, new Float32Array(B * T * R), new Float32Array(B * T * R), x, fetched, Int32Array.from([0, 1, 2, 3, -1]), B, T, C, R, S);
    assertBitEqual(y, yAnchor, 'y with an untrained memory vs anchor only');
    bank.close();
  });
});

// ---- 4. uniqueBlocks / scatterAdd --------------------------------------------------------------

describe('uniqueBlocks and scatterAdd', () => {
  for (let c = 0; c < 12; c++) {
    const rng = new Rng(2000 + c);
    const s = randomSpec(rng);
    test(`random bank ${c}: ${specName(s)}`, () => {
      const bank = ramBank(s, 3);
      for (let round = 0; round < 3; round++) {
        const S = rng.int(1, 12);
        const paths = randomPaths(rng, s, S, 0.25, 0.4);
        const blocks = bank.uniqueBlocks(paths);
        assert.ok(blocks instanceof Int32Array, 'uniqueBlocks returns an Int32Array');
        assert.deepEqual(Array.from(blocks), Array.from(uniqueBlocksRef(s, paths)), 'uniqueBlocks vs reference');
        for (let i = 2; i < blocks.length; i += 2) {
          const prev = [blocks[i - 2] as number, blocks[i - 1] as number];
          const cur = [blocks[i] as number, blocks[i + 1] as number];
          assert.ok(prev[0]! < cur[0]! || (prev[0] === cur[0] && prev[1]! < cur[1]!), `blocks not sorted/unique at ${i / 2}`);
        }
        const dfetched = randn32(rng, S * slotFloats(s));
        const { total } = blockOffsets(s, blocks);
        const d0 = randn32(rng, total); // prefilled: scatterAdd ADDS
        const dblocks = Float32Array.from(d0);
        const unchanged = snapshot({ blocks, dfetched, paths });
        bank.scatterAdd(dblocks, blocks, dfetched, paths);
        unchanged();
        const ref = scatterAddRef(s, d0, blocks, dfetched, paths);
        assertBitEqual(dblocks, ref, `scatterAdd round ${round}`);
        bank.scatterAdd(dblocks, blocks, dfetched, paths);
        assertBitEqual(dblocks, scatterAddRef(s, ref, blocks, dfetched, paths), `scatterAdd round ${round}, second call`);
      }
      bank.close();
    });
  }

  test('repeated paths add (not overwrite); generic block sums its slots; listed unfetched blocks stay untouched', () => {
    const s = spec(2, [1, 2], 1, 2, true, false); // R = 3, level-0 block 6 floats, level-1 12, generic 18
    const bank = ramBank(s, 1);
    const paths = Int32Array.from([1, 2, -1, -1, 1, 2, 1, 3, -1, -1]);
    assert.deepEqual(Array.from(bank.uniqueBlocks(paths)), [0, 1, 1, 2, 1, 3, 2, 0]);
    const S = 5;
    const slot = slotFloats(s); // 18
    const dfetched = new Float32Array(S * slot);
    for (let i = 0; i < dfetched.length; i++) dfetched[i] = (Math.floor(i / slot) + 1) * 1000 + (i % slot); // slot s holds (s+1)*1000 + index
    // list (0,0) (unfetched), (0,1), (1,2), (1,3), generic
    const blocks = Int32Array.from([0, 0, 0, 1, 1, 2, 1, 3, 2, 0]);
    const { offsets, total } = blockOffsets(s, blocks);
    const dblocks = new Float32Array(total).fill(0.5);
    bank.scatterAdd(dblocks, blocks, dfetched, paths);
    // (0,0): untouched
    for (let i = 0; i < 6; i++) assert.equal(dblocks[offsets[0]! + i], 0.5);
    // (0,1): slots 0, 2, 3; rows: row 0 of each (layer-0, kind m) -> slot index m*3*2 + c
    for (let m = 0; m < 3; m++) for (let c = 0; c < 2; c++) {
      const idx = m * 3 * 2 + c;
      assert.equal(dblocks[offsets[1]! + m * 2 + c], 0.5 + (1000 + idx) + (3000 + idx) + (4000 + idx), `(0,1) kind ${m} col ${c}`);
    }
    // (1,2): slots 0 and 2, rows 1..2
    for (let m = 0; m < 3; m++) for (let r = 0; r < 2; r++) for (let c = 0; c < 2; c++) {
      const idx = (m * 3 + 1 + r) * 2 + c;
      assert.equal(dblocks[offsets[2]! + (m * 2 + r) * 2 + c], 0.5 + (1000 + idx) + (3000 + idx), `(1,2) kind ${m} row ${r} col ${c}`);
    }
    // (1,3): slot 3 only
    for (let m = 0; m < 3; m++) for (let r = 0; r < 2; r++) for (let c = 0; c < 2; c++) {
      const idx = (m * 3 + 1 + r) * 2 + c;
      assert.equal(dblocks[offsets[3]! + (m * 2 + r) * 2 + c], 0.5 + (4000 + idx), `(1,3)`);
    }
    // generic: slots 1 and 4, all rows
    for (let i = 0; i < slot; i++) assert.equal(dblocks[offsets[4]! + i], 0.5 + (2000 + i) + (5000 + i), `generic ${i}`);
    bank.close();
  });
});

// ---- 5. row-sparse AdamW -----------------------------------------------------------------------

describe('row-sparse AdamW', () => {
  test('touched blocks = dense float64 AdamW with their own step count; untouched blocks bit-identical', () => {
    const s = spec(3, [2, 1], 2, 5, true, true);
    const bank = ramBank(s, 11);
    const rng = new Rng(31);
    const hyper: BlockAdamHyper = { lr: 0.01, beta1: 0.9, beta2: 0.95, eps: 1e-8, gradScale: 0.5 };
    const wd = 0.1;
    const counts = new Map<string, number>();
    let sensitive = 0;
    for (let round = 0; round < 8; round++) {
      // restrict the batch to one subtree now and then so step counts diverge
      const S = rng.int(1, 5);
      let paths = randomPaths(rng, s, S, round % 3 === 0 ? 0.5 : 0, 0.3);
      if (round % 2 === 1) paths = paths.map((x, i) => (i % 2 === 0 ? (x < 0 ? x : 0) : x < 0 ? x : (x % 3)));
      if (round % 4 === 2) bank.gather(new Float32Array(S * slotFloats(s)), paths); // some blocks initialised by a fetch first
      const blocks = bank.uniqueBlocks(paths);
      const { offsets, total } = blockOffsets(s, blocks);
      const dblocks = new Float32Array(total);
      bank.scatterAdd(dblocks, blocks, randn32(rng, S * slotFloats(s)), paths);
      const before = readState(bank, s);
      bank.adamwUpdate(blocks, dblocks, hyper, wd);
      const afterSt = readState(bank, s);
      const touched = new Set<string>();
      for (let u = 0; u < blocks.length / 2; u++) {
        const l = blocks[2 * u]!;
        const n = blocks[2 * u + 1]!;
        const key = `${l}:${n}`;
        touched.add(key);
        counts.set(key, (counts.get(key) ?? 0) + 1);
        const step = afterSt.steps.get(key)!;
        assert.equal(step, before.steps.get(key)! + 1, `block ${key}: step count +1`);
        assert.equal(step, counts.get(key), `block ${key}: step count = number of updates that touched it`);
        const g = dblocks.subarray(offsets[u]!, offsets[u]! + blockFloats(s, l));
        const w0 = before.w.get(key)!;
        const ref = adamwBlock64(w0, g, before.m.get(key)!, before.v.get(key)!, step, hyper, wd);
        const w1 = afterSt.w.get(key)!;
        note('adamw m', assertClose(afterSt.m.get(key)!, ref.m, 1e-6, `round ${round} block ${key}: m`));
        note('adamw v', assertClose(afterSt.v.get(key)!, ref.v, 1e-6, `round ${round} block ${key}: v`));
        note('adamw weight', assertClose(w1, ref.p, 1e-6, `round ${round} block ${key}: weight`));
        const dRef = ref.p.map((x, i) => x - (w0[i] as number));
        const dGot = f64(w1).map((x, i) => x - (w0[i] as number));
        note('adamw update (w1 - w0)', assertClose(dGot, dRef, 1e-4, `round ${round} block ${key}: update w1 - w0`));
        // the check would notice a wrong (global) step count
        if (step !== round + 1) {
          const wrong = adamwBlock64(w0, g, before.m.get(key)!, before.v.get(key)!, round + 1, hyper, wd);
          const e = maxRelErr(dGot, wrong.p.map((x, i) => x - (w0[i] as number)));
          assert.ok(e > 1e-2, `block ${key}: step ${step} vs global ${round + 1} indistinguishable (${e})`);
          sensitive++;
        }
      }
      for (const [key, w] of before.w) {
        if (touched.has(key)) continue;
        assertBitEqual(afterSt.w.get(key)!, w, `round ${round}: untouched block ${key} weight`);
        assertBitEqual(afterSt.m.get(key)!, before.m.get(key)!, `round ${round}: untouched block ${key} m`);
        assertBitEqual(afterSt.v.get(key)!, before.v.get(key)!, `round ${round}: untouched block ${key} v`);
        assert.equal(afterSt.steps.get(key), before.steps.get(key), `round ${round}: untouched block ${key} steps`);
      }
    }
    const distinct = new Set(counts.values());
    assert.ok(distinct.size >= 3, `step counts did not diverge enough: ${[...counts]}`);
    assert.ok(sensitive > 0, 'no block had a step count different from the global one');
    // never-touched blocks: fresh weights, zero moments, step 0
    const never = allBlocks(s).filter(([l, n]) => !counts.has(`${l}:${n}`));
    assert.ok(never.length > 0, 'every block was touched; the untouched case is vacuous');
    const fresh = ramBank(s, 11);
    for (const [l, n] of never) {
      assertBitEqual(readBlock(bank, s, 'weight', l, n), readBlock(fresh, s, 'weight', l, n), `never-touched block (${l},${n}) weight`);
      assert.equal(maxAbs(readBlock(bank, s, 'm', l, n)), 0);
      assert.equal(maxAbs(readBlock(bank, s, 'v', l, n)), 0);
      assert.equal(bank.blockSteps(l, n), 0);
    }
    fresh.close();
    bank.close();
  });

  test('gradScale and zero weight decay; a bank without optimizer reports steps 0 and refuses adamwUpdate', () => {
    const s = spec(2, [2], 1, 3, false, true);
    const bank = ramBank(s, 4);
    const rng = new Rng(8);
    const blocks = Int32Array.from([0, 1]);
    const hyper: BlockAdamHyper = { lr: 0.05, beta1: 0.8, beta2: 0.99, eps: 1e-6, gradScale: 3 };
    for (let k = 1; k <= 3; k++) {
      const g = randn32(rng, blockFloats(s, 0), 0.1);
      const w0 = readBlock(bank, s, 'weight', 0, 1);
      const ref = adamwBlock64(w0, g, readBlock(bank, s, 'm', 0, 1), readBlock(bank, s, 'v', 0, 1), k, hyper, 0);
      bank.adamwUpdate(blocks, g, hyper, 0);
      note('adamw weight', assertClose(readBlock(bank, s, 'weight', 0, 1), ref.p, 1e-6, `step ${k}: weight`));
      assert.equal(bank.blockSteps(0, 1), k);
      assert.equal(bank.blockSteps(0, 0), 0);
    }
    bank.close();
    const noOpt = ramBank(spec(2, [2], 1, 3, false, false), 4);
    assert.equal(noOpt.blockSteps(0, 1), 0);
    assertThrowsCode(() => noOpt.adamwUpdate(blocks, new Float32Array(blockFloats(s, 0)), hyper, 0), 'E_CONFIG_INVALID', 'adamw without optimizer state');
    assertThrowsCode(() => noOpt.readBlock('m', 0, 1, new Float32Array(blockFloats(s, 0))), 'E_CONFIG_INVALID', 'readBlock m without optimizer state');
    noOpt.close();
  });
});

// ---- 6. FFN with memory ------------------------------------------------------------------------

describe('ffnMemoryForward / ffnMemoryBackward', () => {
  const cases = [
    { B: 5, T: 7, C: 13, F: 10, R: 3, seqSlot: [1, 0, 0, 2, -1], S: 4 }, // slot 3 unused
    { B: 5, T: 1, C: 13, F: 6, R: 3, seqSlot: [2, 2, -1, 0, 2], S: 3 }, // slot 2 in two non-adjacent groups
    { B: 3, T: 4, C: 8, F: 5, R: 1, seqSlot: [-1, -1, 0], S: 1 },
    { B: 4, T: 9, C: 16, F: 24, R: 11, seqSlot: [0, 1, 1, 0], S: 2 },
  ];
  for (const { B, T, C, F, R, seqSlot, S } of cases) {
    test(`B=${B} T=${T} C=${C} F=${F} R=${R} seqSlot=[${seqSlot.join(',')}] S=${S}`, () => {
      const rng = new Rng(B * 1000 + T * 100 + C + R);
      const N = B * T;
      const x = randn32(rng, N * C);
      const w1 = randn32(rng, F * C, 1 / Math.sqrt(C));
      const w2 = randn32(rng, F * C, 1 / Math.sqrt(C));
      const w3 = randn32(rng, C * F, 1 / Math.sqrt(F));
      const fetched = randn32(rng, S * 3 * R * C, 1 / Math.sqrt(C));
      const slots = Int32Array.from(seqSlot);
      const dy = randn32(rng, N * C);
      const unchanged = snapshot({ x, w1, w2, w3, fetched, slots, dy });

      // forward: anchor then memory, into the same y
      const y = junk32(N * C);
      const gate = junk32(N * F);
      const up = junk32(N * F);
      native.ffnForward(y, gate, up, x, w1, w2, w3, N, C, F);
      const yAnchor = Float32Array.from(y);
      const gateM = junk32(N * R);
      const upM = junk32(N * R);
      native.ffnMemoryForward(y, gateM, upM, x, fetched, slots, B, T, C, R, S);
      const ref = ffnWithMemory64(x, w1, w2, w3, fetched, slots, B, T, C, F, R);
      note('ffn+memory y', assertClose(y, ref, FWD_TOL, 'y = anchor + memory vs concatenated SwiGLU'));
      for (let b = 0; b < B; b++) {
        const sl = seqSlot[b]!;
        if (sl < 0) {
          assertBitEqual(y.subarray(b * T * C, (b + 1) * T * C), yAnchor.subarray(b * T * C, (b + 1) * T * C), `sequence ${b} (no memory): y = anchor`);
          continue;
        }
        // gateM / upM = the memory columns of the concatenated pre-activations
        const w = concatFfnWeights(w1, w2, w3, fetched.subarray(sl * 3 * R * C, (sl + 1) * 3 * R * C), C, F, R);
        const r64 = ffnForward64(x.subarray(b * T * C, (b + 1) * T * C), w.w1, w.w2, w.w3, T, C, F + R);
        const gRef = new Float64Array(T * R);
        const uRef = new Float64Array(T * R);
        for (let t = 0; t < T; t++) for (let j = 0; j < R; j++) {
          gRef[t * R + j] = r64.gate[t * (F + R) + F + j]!;
          uRef[t * R + j] = r64.up[t * (F + R) + F + j]!;
        }
        note('ffn+memory gateM/upM', assertClose(gateM.subarray(b * T * R, (b + 1) * T * R), gRef, FWD_TOL, `sequence ${b}: gateM`));
        note('ffn+memory gateM/upM', assertClose(upM.subarray(b * T * R, (b + 1) * T * R), uRef, FWD_TOL, `sequence ${b}: upM`));
      }

      // backward: ADD into prefilled dx, dfetched; twice
      const dx0 = randn32(rng, N * C);
      const df0 = randn32(rng, S * 3 * R * C);
      const dx = Float32Array.from(dx0);
      const dfetched = Float32Array.from(df0);
      const fwdState = snapshot({ gate, up, gateM, upM });
      native.ffnBackward(dx, new Float32Array(F * C), new Float32Array(F * C), new Float32Array(C * F), dy, x, gate, up, w1, w2, w3, N, C, F);
      native.ffnMemoryBackward(dx, dfetched, dy, x, gateM, upM, fetched, slots, B, T, C, R, S);
      fwdState();
      const g = ffnWithMemoryBackward64(dy, x, w1, w2, w3, fetched, slots, B, T, C, F, R, S);
      const minus = (a: Float32Array, b: Float32Array) => f64(a).map((v, i) => v - (b[i] as number));
      note('ffn+memory dx', assertClose(minus(dx, dx0), g.dx, GRAD_TOL, 'dx (anchor + memory) vs concatenated analytic'));
      note('ffn+memory dfetched', assertClose(minus(dfetched, df0), g.dfetched, GRAD_TOL, 'dfetched vs concatenated analytic'));
      for (let sl = 0; sl < S; sl++) {
        if (seqSlot.includes(sl)) continue;
        assertBitEqual(dfetched.subarray(sl * 3 * R * C, (sl + 1) * 3 * R * C), df0.subarray(sl * 3 * R * C, (sl + 1) * 3 * R * C), `unused slot ${sl}: dfetched untouched`);
      }
      native.ffnMemoryBackward(dx, dfetched, dy, x, gateM, upM, fetched, slots, B, T, C, R, S);
      const memOnlyDx = minus(dx, dx0).map((v, i) => v - (g.dx[i] as number)); // = the memory part of dx
      const dfTwice = minus(dfetched, df0);
      note('ffn+memory dfetched', assertClose(dfTwice, g.dfetched.map((v) => 2 * v), GRAD_TOL, 'dfetched after two calls = 2 x gradient'));
      // the memory part of dx added twice: dx_total(2 calls) - dx_total(1 call) = the memory part
      const memRef = ffnWithMemoryBackward64(dy, x, w1, w2, w3, fetched, Int32Array.from(seqSlot.map(() => -1)), B, T, C, F, R, S).dx;
      note('ffn+memory dx', assertClose(memOnlyDx, g.dx.map((v, i) => v - (memRef[i] as number)), GRAD_TOL, 'dx after two memory calls', maxAbs(g.dx)));

      // finite differences of the float64 forward (x and fetched)
      const x64 = f64(x);
      const f64v = f64(fetched);
      const dy64 = f64(dy);
      const idxF = fdIndices(rng, f64v.length, 300, 80);
      const fdF = fdGrad((t) => dot(dy64, ffnWithMemory64(x64, w1, w2, w3, t, slots, B, T, C, F, R)), f64v, idxF);
      note('ffn+memory dfetched vs FD', assertClose(gather(g.dfetched, idxF), fdF, 1e-6, 'reference dfetched vs finite differences'));
      note('ffn+memory dfetched vs FD', assertClose(gather(minus(dfetched, df0).map((v) => v / 2), idxF), fdF, GRAD_TOL, 'native dfetched vs finite differences'));
      const idxX = fdIndices(rng, x64.length, 300, 80);
      const fdX = fdGrad((t) => dot(dy64, ffnWithMemory64(t, w1, w2, w3, f64v, slots, B, T, C, F, R)), x64, idxX);
      note('ffn+memory dx vs FD', assertClose(gather(g.dx, idxX), fdX, 1e-6, 'reference dx vs finite differences'));
      unchanged();
    });
  }

  test('all-zero down rows: y equals the anchor-only output bitwise; gradients still reach Wd', () => {
    const rng = new Rng(42);
    const B = 3;
    const T = 5;
    const C = 13;
    const F = 7;
    const R = 3;
    const S = 2;
    const N = B * T;
    const x = randn32(rng, N * C);
    const w1 = randn32(rng, F * C, 0.3);
    const w2 = randn32(rng, F * C, 0.3);
    const w3 = randn32(rng, C * F, 0.3);
    const fetched = randn32(rng, S * 3 * R * C, 0.3);
    for (let sl = 0; sl < S; sl++) fetched.fill(0, sl * 3 * R * C + 2 * R * C, (sl + 1) * 3 * R * C);
    const slots = Int32Array.from([1, 0, 1]);
    const y = new Float32Array(N * C);
    native.ffnForward(y, new Float32Array(N * F), new Float32Array(N * F), x, w1, w2, w3, N, C, F);
    const yAnchor = Float32Array.from(y);
    const gateM = new Float32Array(N * R);
    const upM = new Float32Array(N * R);
    native.ffnMemoryForward(y, gateM, upM, x, fetched, slots, B, T, C, R, S);
    assertBitEqual(y, yAnchor, 'y with Wd = 0');
    const dy = randn32(rng, N * C);
    const dx = new Float32Array(N * C);
    const dfetched = new Float32Array(S * 3 * R * C);
    native.ffnMemoryBackward(dx, dfetched, dy, x, gateM, upM, fetched, slots, B, T, C, R, S);
    assert.equal(maxAbs(dx), 0, 'dx from a memory with Wd = 0 is 0');
    const g = ffnWithMemoryBackward64(dy, x, w1, w2, w3, fetched, slots, B, T, C, F, R, S);
    note('ffn+memory dfetched', assertClose(dfetched, g.dfetched, GRAD_TOL, 'dfetched with Wd = 0 (only dWd non-zero)'));
    assert.ok(maxAbs(dfetched) > 0, 'Wd must receive a gradient');
  });

  test('chain: gather (Lm = 1) -> ffnMemoryForward/Backward -> scatterAdd = gradient of each bank block', () => {
    const s = spec(2, [2, 1], 1, 6, true, true);
    const bank = ramBank(s, 8);
    const rng = new Rng(9);
    scribble(bank, s, rng);
    const paths = Int32Array.from([0, 1, 1, 2, -1, -1]);
    const S = 3;
    const R = specR(s);
    const C = s.dModel;
    const B = 4;
    const T = 2;
    const F = 4;
    const slots = Int32Array.from([0, 2, 1, 0]);
    const fetched = new Float32Array(S * slotFloats(s));
    bank.gather(fetched, paths);
    const x = randn32(rng, B * T * C);
    const w1 = randn32(rng, F * C, 0.4);
    const w2 = randn32(rng, F * C, 0.4);
    const w3 = randn32(rng, C * F, 0.4);
    const dy = randn32(rng, B * T * C);
    const gateM = new Float32Array(B * T * R);
    const upM = new Float32Array(B * T * R);
    native.ffnMemoryForward(new Float32Array(B * T * C), gateM, upM, x, fetched, slots, B, T, C, R, S);
    const dfetched = new Float32Array(S * slotFloats(s));
    native.ffnMemoryBackward(new Float32Array(B * T * C), dfetched, dy, x, gateM, upM, fetched, slots, B, T, C, R, S);
    const blocks = bank.uniqueBlocks(paths);
    const { offsets, total } = blockOffsets(s, blocks);
    const dblocks = new Float32Array(total);
    bank.scatterAdd(dblocks, blocks, dfetched, paths);
    // finite differences through the bank: perturb one block, re-gather in float64 by the reference
    const blockVals = new Map<string, Float64Array>();
    for (let u = 0; u < blocks.length / 2; u++) blockVals.set(`${blocks[2 * u]}:${blocks[2 * u + 1]}`, f64(readBlock(bank, s, 'weight', blocks[2 * u]!, blocks[2 * u + 1]!)));
    for (let u = 0; u < blocks.length / 2; u++) {
      const key = `${blocks[2 * u]}:${blocks[2 * u + 1]}`;
      const vals = blockVals.get(key)!;
      const phi = (t: Float64Array) => {
        blockVals.set(key, t);
        const f = gatherRef64(s, paths, (l, n) => blockVals.get(`${l}:${n}`) as Float64Array);
        const yv = ffnWithMemory64(x, w1, w2, w3, f, slots, B, T, C, F, R);
        blockVals.set(key, vals);
        return dot(dy, yv);
      };
      const idx = fdIndices(rng, vals.length, 200, 60);
      const fd = fdGrad(phi, Float64Array.from(vals), idx);
      note('chain dblocks vs FD', assertClose(gather(dblocks.subarray(offsets[u]!), idx), fd, GRAD_TOL, `block ${key}: dblocks vs finite differences`));
    }
    bank.close();
  });
});

// ---- 7. file-backed bank -----------------------------------------------------------------------

describe('file-backed bank', () => {
  const s = spec(3, [2, 0, 1], 2, 5, true, true);
  const seed = 123;
  const hyper: BlockAdamHyper = { lr: 0.02, beta1: 0.9, beta2: 0.95, eps: 1e-8, gradScale: 1 };

  test('sparse safetensors file = RAM bank bitwise; updates persist; read-only reopen', () => {
    const file = path.join(tmpDir, 'bank.safetensors');
    const { dataStart, total } = createBankFile(file, s);
    assert.equal(dataStart % 8, 0);
    const storage: BankStorage = { kind: 'file', path: file, dataStart, writable: true };
    const fb = native.createMemoryBank(s, seed, storage);
    const rb = ramBank(s, seed);
    assert.equal(fb.isFile, true);
    assert.equal(fb.bytes, total);
    const rng = new Rng(17);
    for (let round = 0; round < 4; round++) {
      const S = rng.int(1, 6);
      const paths = randomPaths(rng, s, S);
      const ff = junk32(S * slotFloats(s));
      const fr = junk32(S * slotFloats(s));
      fb.gather(ff, paths);
      rb.gather(fr, paths);
      assertBitEqual(ff, fr, `round ${round}: gather file vs RAM`);
      const blocks = fb.uniqueBlocks(paths);
      const dfetched = randn32(rng, S * slotFloats(s));
      const { total: n } = blockOffsets(s, blocks);
      const gf = new Float32Array(n);
      const gr = new Float32Array(n);
      fb.scatterAdd(gf, blocks, dfetched, paths);
      rb.scatterAdd(gr, blocks, dfetched, paths);
      assertBitEqual(gf, gr, `round ${round}: scatterAdd file vs RAM`);
      fb.adamwUpdate(blocks, gf, hyper, 0.01);
      rb.adamwUpdate(blocks, gr, hyper, 0.01);
      assertStatesEqual(readState(rb, s), readState(fb, s), `round ${round}: file vs RAM bank`);
    }
    const ramState = readState(rb, s);
    // the file holds the values where a safetensors reader expects them
    const touched = allBlocks(s).filter(([l, n]) => rb.blockSteps(l, n) > 0);
    assert.ok(touched.length > 0);
    const names = native.memoryBankTensors(s);
    for (const [l, n] of touched) {
      const wName = names.find((t) => t.level === l && t.name.endsWith('weight'))!.name;
      const w = ramState.w.get(`${l}:${n}`)!;
      assert.ok(rawFileBlock(file, dataStart, s, wName, n).equals(Buffer.from(w.buffer, w.byteOffset, w.byteLength)), `raw file bytes of ${wName}[${n}]`);
      const stName = names.find((t) => t.level === l && t.name.endsWith('steps'))!.name;
      assert.equal(rawFileBlock(file, dataStart, s, stName, n).readInt32LE(0), rb.blockSteps(l, n), `raw ${stName}[${n}]`);
    }
    fb.flush();
    fb.close();
    assert.equal(fs.statSync(file).size, dataStart + total, 'file size unchanged');

    const ro = native.createMemoryBank(s, seed, { kind: 'file', path: file, dataStart, writable: false });
    assertStatesEqual(ramState, readState(ro, s), 'read-only reopen vs RAM bank');
    const paths = Int32Array.from([2, 7, 22, -1, -1, -1, 0, 0, 0]);
    const a = junk32(3 * slotFloats(s));
    const b = junk32(3 * slotFloats(s));
    ro.gather(a, paths); // includes never-initialised blocks: generated on the fly
    rb.gather(b, paths);
    assertBitEqual(a, b, 'gather from the read-only file vs RAM');
    const blocks = ro.uniqueBlocks(paths);
    const g = new Float32Array(blockOffsets(s, blocks).total);
    ro.scatterAdd(g, blocks, randn32(rng, 3 * slotFloats(s)), paths); // reading is fine
    const roState = readState(ro, s);
    assertThrowsCode(() => ro.adamwUpdate(blocks, g, hyper, 0), ['E_INVALID_ARGUMENT', 'E_IO'], 'adamwUpdate on a read-only bank');
    assertThrowsCode(() => ro.writeBlock('weight', 0, 0, new Float32Array(blockFloats(s, 0))), ['E_INVALID_ARGUMENT', 'E_IO'], 'writeBlock on a read-only bank');
    assertThrowsCode(() => ro.writeBlock('m', 2, 4, new Float32Array(blockFloats(s, 2))), ['E_INVALID_ARGUMENT', 'E_IO'], 'writeBlock m on a read-only bank');
    ro.flush();
    assertStatesEqual(roState, readState(ro, s), 'read-only bank unchanged by the refused calls');
    ro.close();
    rb.close();
  });

  test('saveData of a RAM bank -> open as a file bank gives the same blocks; loadData restores', () => {
    const file = path.join(tmpDir, 'saved.safetensors');
    const { dataStart } = createBankFile(file, s);
    const rb = ramBank(s, seed);
    const rng = new Rng(3);
    scribble(rb, s, rng);
    const paths = randomPaths(rng, s, 4);
    const blocks = rb.uniqueBlocks(paths);
    rb.adamwUpdate(blocks, randn32(rng, blockOffsets(s, blocks).total), hyper, 0);
    rb.saveData(file, dataStart);
    const want = readState(rb, s);
    const fb = native.createMemoryBank(s, seed, { kind: 'file', path: file, dataStart, writable: false });
    assertStatesEqual(want, readState(fb, s), 'file bank opened on saved data');
    fb.close();
    const other = ramBank(s, seed);
    other.loadData(file, dataStart);
    assertStatesEqual(want, readState(other, s), 'RAM bank after loadData');
    other.close();
    rb.close();
  });

  test('size mismatch, missing file, bad dataStart: typed errors', () => {
    const good = path.join(tmpDir, 'sized.safetensors');
    const { dataStart, total } = createBankFile(good, s);
    fs.truncateSync(good, dataStart + total - 1);
    assertThrowsCode(() => native.createMemoryBank(s, 1, { kind: 'file', path: good, dataStart, writable: true }), 'E_CHECKPOINT_CORRUPT', 'file one byte short');
    fs.truncateSync(good, dataStart + total + 8);
    assertThrowsCode(() => native.createMemoryBank(s, 1, { kind: 'file', path: good, dataStart, writable: false }), 'E_CHECKPOINT_CORRUPT', 'file 8 bytes long');
    fs.truncateSync(good, dataStart + total);
    const other = spec(3, [2, 0, 2], 2, 5, true, true); // a different layout
    assertThrowsCode(() => native.createMemoryBank(other, 1, { kind: 'file', path: good, dataStart, writable: false }), 'E_CHECKPOINT_CORRUPT', 'file of another layout');
    assertThrowsCode(() => native.createMemoryBank(s, 1, { kind: 'file', path: path.join(tmpDir, 'missing.safetensors'), dataStart, writable: false }), ['E_CHECKPOINT_CORRUPT', 'E_IO'], 'missing file');
    assertThrowsCode(() => native.createMemoryBank(s, 1, { kind: 'file', path: good, dataStart: 4, writable: false }), ['E_INVALID_ARGUMENT', 'E_CHECKPOINT_CORRUPT'], 'dataStart < 8');
    assertThrowsCode(() => native.createMemoryBank(s, 1, { kind: 'file', path: good, dataStart: dataStart + 2, writable: false }), ['E_INVALID_ARGUMENT', 'E_CHECKPOINT_CORRUPT'], 'dataStart not aligned');
    assertThrowsCode(() => native.createMemoryBank(s, 1, { kind: 'file', path: good, dataStart: 0.5 + dataStart, writable: false }), 'E_INVALID_ARGUMENT', 'fractional dataStart');
    const ok = native.createMemoryBank(s, 1, { kind: 'file', path: good, dataStart, writable: false });
    ok.close();
  });

  // Regression: pin_levels once initialised blocks in place, writing into a PROT_READ mapping.
  test('pinLevels on a read-only file bank with uninitialised blocks does not crash', () => {
    const file = path.join(tmpDir, 'pin.safetensors');
    const { dataStart } = createBankFile(file, s);
    const url = new URL('../lib/native.js', import.meta.url).href;
    const script = `
      import { loadNative } from ${JSON.stringify(url)};
      const b = loadNative().createMemoryBank(${JSON.stringify(s)}, 1, { kind: 'file', path: ${JSON.stringify(file)}, dataStart: ${dataStart}, writable: false });
      let r;
      try { r = b.pinLevels(2); } catch (e) { r = 'threw ' + e.code; }
      console.log('survived', r);
    `;
    const out = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(out.signal, null, `child died with ${out.signal}`);
    assert.equal(out.status, 0, out.stderr);
    assert.match(out.stdout, /survived/);
  });
});

// ---- 8. bad input ------------------------------------------------------------------------------

describe('bad input: typed errors, never a crash', () => {
  const s = spec(3, [2, 0, 1], 1, 4, false, true);
  const sg = spec(3, [2, 0, 1], 1, 4, true, true);

  test('paths: out of range, inconsistent, generic without a generic block, wrong lengths', () => {
    const bank = ramBank(s, 1);
    const one = new Float32Array(slotFloats(s));
    const bad: Array<[number[], string]> = [
      [[3, 9, 27], 'level-0 node 3 of 3 nodes'],
      [[0, 9, 27], 'level-1 node 9 of 9'],
      [[0, 0, 27], 'level-2 node 27 of 27'],
      [[-2, 0, 0], 'negative node'],
      [[0, -1, 0], '-1 below the root'],
      [[0, 3, 9], 'level-1 node 3 not a child of node 0'],
      [[1, 3, 8], 'level-2 node 8 not a child of node 3 (level 1 has r = 0 but paths must still be consistent)'],
      [[-1, -1, -1], 'generic slot on a bank without a generic block'],
      [[2 ** 31 - 1, 0, 0], 'node 2^31-1'],
    ];
    for (const [p, label] of bad) {
      const paths = Int32Array.from(p);
      assertThrowsCode(() => bank.gather(one, paths), 'E_INVALID_ARGUMENT', `gather: ${label}`);
      assertThrowsCode(() => bank.uniqueBlocks(paths), 'E_INVALID_ARGUMENT', `uniqueBlocks: ${label}`);
      assertThrowsCode(() => bank.prefetch(paths), 'E_INVALID_ARGUMENT', `prefetch: ${label}`);
      assertThrowsCode(() => bank.scatterAdd(new Float32Array(0), new Int32Array(0), one, paths), 'E_INVALID_ARGUMENT', `scatterAdd: ${label}`);
    }
    // a bad path after a good one is still caught, and nothing was initialised by the failed call
    assertThrowsCode(() => bank.gather(new Float32Array(2 * slotFloats(s)), Int32Array.from([0, 0, 0, 0, 3, 9])), 'E_INVALID_ARGUMENT', 'second path bad');
    assertThrowsCode(() => bank.gather(one, Int32Array.from([0, 0])), 'E_SHAPE_MISMATCH', 'paths length not a multiple of p');
    assertThrowsCode(() => bank.gather(new Float32Array(slotFloats(s) - 1), Int32Array.from([0, 0, 0])), 'E_SHAPE_MISMATCH', 'fetched one short');
    assertThrowsCode(() => bank.gather(new Float32Array(2 * slotFloats(s)), Int32Array.from([0, 0, 0])), 'E_SHAPE_MISMATCH', 'fetched too long');
    assertThrowsCode(() => bank.gather(one, Float32Array.from([0, 0, 0]) as unknown as Int32Array), 'E_INVALID_ARGUMENT', 'paths as Float32Array');
    assertThrowsCode(() => bank.gather(new Float64Array(slotFloats(s)) as unknown as Float32Array, Int32Array.from([0, 0, 0])), 'E_INVALID_ARGUMENT', 'fetched as Float64Array');
    assertThrowsCode(() => bank.gather(one, [0, 0, 0] as unknown as Int32Array), 'E_INVALID_ARGUMENT', 'paths as a plain array');
    // with a generic block, a -1 row is fine and a -2 row is not
    const bg = ramBank(sg, 1);
    bg.gather(new Float32Array(slotFloats(sg)), Int32Array.from([-1, -1, -1]));
    assertThrowsCode(() => bg.gather(new Float32Array(slotFloats(sg)), Int32Array.from([-2, -2, -2])), 'E_INVALID_ARGUMENT', '-2 row');
    bg.close();
    bank.close();
  });

  test('blocks: unsorted, duplicated, nonexistent; wrong gradient lengths; bad hyper-parameters', () => {
    const bank = ramBank(sg, 1);
    const paths = Int32Array.from([0, 1, 4]);
    const df = new Float32Array(slotFloats(sg));
    const h = { lr: 0.1, beta1: 0.9, beta2: 0.95, eps: 1e-8, gradScale: 1 };
    const badBlocks: Array<[number[], string]> = [
      [[2, 4, 0, 0], 'unsorted'],
      [[0, 1, 0, 0], 'unsorted within a level'],
      [[0, 0, 0, 0], 'duplicated'],
      [[1, 0], 'level 1 has r = 0'],
      [[0, 3], 'node out of range'],
      [[0, -1], 'negative node'],
      [[-1, 0], 'negative level'],
      [[4, 0], 'level > p'],
      [[2 ** 31 - 1, 0], 'huge level'],
    ];
    for (const [b, label] of badBlocks) {
      const blocks = Int32Array.from(b);
      let n = 0;
      for (let i = 0; i < b.length; i += 2) n += b[i]! >= 0 && b[i]! <= 3 ? blockFloats(sg, b[i]!) : 0;
      assertThrowsCode(() => bank.scatterAdd(new Float32Array(n), blocks, df, paths), 'E_INVALID_ARGUMENT', `scatterAdd: ${label}`);
      assertThrowsCode(() => bank.adamwUpdate(blocks, new Float32Array(n), h, 0), 'E_INVALID_ARGUMENT', `adamwUpdate: ${label}`);
    }
    const noGeneric = ramBank(s, 1);
    assertThrowsCode(() => noGeneric.adamwUpdate(Int32Array.from([3, 0]), new Float32Array(3 * 4 * 3), h, 0), 'E_INVALID_ARGUMENT', 'generic block on a bank without one');
    noGeneric.close();
    const blocks = bank.uniqueBlocks(paths);
    const n = blockOffsets(sg, blocks).total;
    assertThrowsCode(() => bank.scatterAdd(new Float32Array(n), Int32Array.from([0, 0, 2]), df, paths), 'E_SHAPE_MISMATCH', 'odd blocks length');
    assertThrowsCode(() => bank.scatterAdd(new Float32Array(n + 1), blocks, df, paths), 'E_SHAPE_MISMATCH', 'dblocks too long');
    assertThrowsCode(() => bank.scatterAdd(new Float32Array(n), blocks, new Float32Array(df.length - 1), paths), 'E_SHAPE_MISMATCH', 'dfetched too short');
    assertThrowsCode(() => bank.adamwUpdate(blocks, new Float32Array(n - 1), h, 0), 'E_SHAPE_MISMATCH', 'adamw dblocks too short');
    for (const [key, value] of [['lr', NaN], ['beta1', 1], ['beta2', -0.1], ['eps', 0], ['gradScale', Infinity], ['lr', undefined]] as const) {
      assertThrowsCode(() => bank.adamwUpdate(blocks, new Float32Array(n), { ...h, [key]: value } as unknown as typeof h, 0), 'E_INVALID_ARGUMENT', `hyper.${key} = ${value}`);
    }
    assertThrowsCode(() => bank.adamwUpdate(blocks, new Float32Array(n), h, -1), 'E_INVALID_ARGUMENT', 'negative weight decay');
    assertThrowsCode(() => bank.adamwUpdate(blocks, new Float32Array(n), null as unknown as typeof h, 0), 'E_INVALID_ARGUMENT', 'hyper null');
    // nothing above changed the bank
    for (const [l, nd] of allBlocks(sg)) assert.equal(bank.blockSteps(l, nd), 0, `block (${l},${nd}) steps after refused calls`);
    bank.close();
  });

  test('readBlock / writeBlock / blockSteps: bad level, node, kind, length', () => {
    const bank = ramBank(s, 1);
    const out = new Float32Array(blockFloats(s, 0));
    for (const [l, n, label] of [[-1, 0, 'level -1'], [1, 0, 'level with r = 0'], [3, 0, 'generic level on a bank without one'], [4, 0, 'level p+1'],
      [1e9, 0, 'level 1e9'], [2 ** 53, 0, 'level 2^53'], [NaN, 0, 'level NaN'], [0.5, 0, 'level 0.5'], [0, 3, 'node out of range'], [0, -1, 'node -1'],
      [0, 2 ** 40, 'node 2^40']] as const) {
      assertThrowsCode(() => bank.readBlock('weight', l, n, out), 'E_INVALID_ARGUMENT', `readBlock ${label}`);
      assertThrowsCode(() => bank.writeBlock('weight', l, n, out), 'E_INVALID_ARGUMENT', `writeBlock ${label}`);
      assertThrowsCode(() => bank.blockSteps(l, n), 'E_INVALID_ARGUMENT', `blockSteps ${label}`);
    }
    assertThrowsCode(() => bank.readBlock('weight', 0, 0, new Float32Array(out.length + 1)), 'E_SHAPE_MISMATCH', 'readBlock out too long');
    assertThrowsCode(() => bank.writeBlock('weight', 0, 0, new Float32Array(out.length - 1)), 'E_SHAPE_MISMATCH', 'writeBlock data too short');
    assertThrowsCode(() => bank.readBlock('adam' as 'm', 0, 0, out), 'E_INVALID_ARGUMENT', 'readBlock kind adam');
    assertThrowsCode(() => bank.writeBlock('grad' as 'm', 0, 0, out), 'E_INVALID_ARGUMENT', 'writeBlock kind grad');
    // refused writes did not initialise or change anything
    const fresh = ramBank(s, 1);
    assertStatesEqual(readState(fresh, s), readState(bank, s), 'bank after refused calls');
    fresh.close();
    bank.close();
  });

  test('closed bank: every method throws E_DISPOSED', () => {
    const bank = ramBank(sg, 1);
    const paths = Int32Array.from([0, 0, 0]);
    bank.gather(new Float32Array(slotFloats(sg)), paths);
    bank.close();
    const h = { lr: 0.1, beta1: 0.9, beta2: 0.95, eps: 1e-8, gradScale: 1 };
    const calls: Array<[string, () => unknown]> = [
      ['gather', () => bank.gather(new Float32Array(slotFloats(sg)), paths)],
      ['uniqueBlocks', () => bank.uniqueBlocks(paths)],
      ['scatterAdd', () => bank.scatterAdd(new Float32Array(blockFloats(sg, 0)), Int32Array.from([0, 0]), new Float32Array(slotFloats(sg)), paths)],
      ['adamwUpdate', () => bank.adamwUpdate(Int32Array.from([0, 0]), new Float32Array(blockFloats(sg, 0)), h, 0)],
      ['readBlock', () => bank.readBlock('weight', 0, 0, new Float32Array(blockFloats(sg, 0)))],
      ['writeBlock', () => bank.writeBlock('weight', 0, 0, new Float32Array(blockFloats(sg, 0)))],
      ['blockSteps', () => bank.blockSteps(0, 0)],
      ['prefetch', () => bank.prefetch(paths)],
      ['pinLevels', () => bank.pinLevels(1)],
      ['flush', () => bank.flush()],
      ['saveData', () => bank.saveData(path.join(tmpDir, 'nope'), 8)],
      ['loadData', () => bank.loadData(path.join(tmpDir, 'nope'), 8)],
      ['bytes', () => bank.bytes],
      ['isFile', () => bank.isFile],
    ];
    for (const [name, fn] of calls) assertThrowsCode(fn, 'E_DISPOSED', `${name} after close`);
    bank.close(); // closing twice is harmless
  });

  test('specs: all r = 0, k = 1, p = 0 and other invalid shapes -> E_CONFIG_INVALID', () => {
    const base = spec(2, [1, 1], 1, 4, false, false);
    const bad: Array<[Partial<Record<keyof NativeMemorySpec, unknown>>, string]> = [
      [{ levels: [0, 0, 0] }, 'all r = 0'],
      [{ k: 1 }, 'k = 1'],
      [{ k: 0 }, 'k = 0'],
      [{ k: -2 }, 'k < 0'],
      [{ k: 2.5 }, 'fractional k'],
      [{ levels: [] }, 'p = 0'],
      [{ levels: [1, -1] }, 'negative r'],
      [{ levels: [1.5] }, 'fractional r'],
      [{ levels: [2 ** 31] }, 'huge r'],
      [{ levels: [NaN] }, 'NaN r'],
      [{ levels: '1,1' }, 'levels not an array'],
      [{ levels: new Array(17).fill(1) }, 'p = 17'],
      [{ k: 65536, levels: [1, 1] }, 'k^p > 2^31 nodes'],
      [{ memoryLayers: 0 }, 'Lm = 0'],
      [{ dModel: 0 }, 'd = 0'],
      [{ dModel: undefined }, 'd missing'],
      [{ k: 65536, levels: [1 << 20], memoryLayers: 4096, dModel: 65536 }, 'bank size overflows'],
    ];
    for (const [patch, label] of bad) {
      const sp = { ...base, ...patch } as NativeMemorySpec;
      assertThrowsCode(() => native.memoryBankTensors(sp), 'E_CONFIG_INVALID', `memoryBankTensors: ${label}`);
      assertThrowsCode(() => native.createMemoryBank(sp, 1, { kind: 'ram' }), 'E_CONFIG_INVALID', `createMemoryBank: ${label}`);
    }
    assertThrowsCode(() => native.memoryBankTensors(null as unknown as NativeMemorySpec), ['E_INVALID_ARGUMENT', 'E_CONFIG_INVALID'], 'spec null');
    assertThrowsCode(() => native.createMemoryBank(base, -1, { kind: 'ram' }), 'E_INVALID_ARGUMENT', 'negative seed');
    assertThrowsCode(() => native.createMemoryBank(base, 1.5, { kind: 'ram' }), 'E_INVALID_ARGUMENT', 'fractional seed');
    assertThrowsCode(() => native.createMemoryBank(base, 1, { kind: 'disk' } as unknown as BankStorage), 'E_INVALID_ARGUMENT', 'storage kind disk');
    assertThrowsCode(() => native.createMemoryBank(base, 1, null as unknown as BankStorage), 'E_INVALID_ARGUMENT', 'storage null');
    // p = 16 levels with k = 2 is allowed (65,536 leaves)
    const deep = spec(2, new Array(16).fill(0).map((_, i) => (i === 15 ? 1 : 0)), 1, 1, false, false);
    assert.equal(native.memoryBankTensors(deep).length, 2);
    // a valid layout too large to allocate: a typed error, not an abort
    const huge = spec(65536, [1 << 20], 1, 65536, false, false); // ~5.4e16 bytes
    assertThrowsCode(() => native.createMemoryBank(huge, 1, { kind: 'ram' }), ['E_IO', 'E_CONFIG_INVALID'], 'unallocatable RAM bank');
  });

  test('ffnMemoryForward / Backward: bad slots and lengths', () => {
    const B = 2;
    const T = 3;
    const C = 4;
    const R = 2;
    const S = 2;
    const N = B * T;
    const y = new Float32Array(N * C);
    const gm = new Float32Array(N * R);
    const um = new Float32Array(N * R);
    const x = new Float32Array(N * C);
    const f = new Float32Array(S * 3 * R * C);
    const fwd = (o: { slots?: Int32Array; y?: Float32Array; gm?: Float32Array; x?: Float32Array; f?: Float32Array; R?: number; S?: number; T?: number }) =>
      native.ffnMemoryForward(o.y ?? y, o.gm ?? gm, um, o.x ?? x, o.f ?? f, o.slots ?? Int32Array.from([0, 1]), B, o.T ?? T, C, o.R ?? R, o.S ?? S);
    fwd({});
    assertThrowsCode(() => fwd({ slots: Int32Array.from([0, 2]) }), 'E_INVALID_ARGUMENT', 'seqSlot = S');
    assertThrowsCode(() => fwd({ slots: Int32Array.from([-2, 0]) }), 'E_INVALID_ARGUMENT', 'seqSlot = -2');
    assertThrowsCode(() => fwd({ slots: Int32Array.from([0]) }), 'E_SHAPE_MISMATCH', 'seqSlot too short');
    assertThrowsCode(() => fwd({ y: new Float32Array(N * C - 1) }), 'E_SHAPE_MISMATCH', 'y short');
    assertThrowsCode(() => fwd({ gm: new Float32Array(N * R + 1) }), 'E_SHAPE_MISMATCH', 'gateM long');
    assertThrowsCode(() => fwd({ f: new Float32Array(S * 3 * R * C - 1) }), 'E_SHAPE_MISMATCH', 'fetched short');
    assertThrowsCode(() => fwd({ R: 0 }), ['E_INVALID_ARGUMENT', 'E_SHAPE_MISMATCH'], 'R = 0');
    assertThrowsCode(() => fwd({ S: 0 }), ['E_INVALID_ARGUMENT', 'E_SHAPE_MISMATCH'], 'S = 0');
    assertThrowsCode(() => fwd({ T: -1 }), ['E_INVALID_ARGUMENT', 'E_SHAPE_MISMATCH'], 'T = -1');
    assertThrowsCode(() => fwd({ T: 2 ** 40 }), ['E_INVALID_ARGUMENT', 'E_SHAPE_MISMATCH'], 'T = 2^40');
    const bwd = (slots: Int32Array, df = f) => native.ffnMemoryBackward(new Float32Array(N * C), df, y, x, gm, um, f, slots, B, T, C, R, S);
    bwd(Int32Array.from([1, -1]));
    assertThrowsCode(() => bwd(Int32Array.from([1, 5])), 'E_INVALID_ARGUMENT', 'backward seqSlot = 5');
    assertThrowsCode(() => bwd(Int32Array.from([1, 0]), new Float32Array(3)), 'E_SHAPE_MISMATCH', 'backward dfetched short');
  });
});
