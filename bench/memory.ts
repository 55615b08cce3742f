/**
 * Memory benchmarks (issue #5, item 4): gather and scatter-add bandwidth vs memcpy of the same
 * bytes, the FFN with memory units vs hiermem's unfused path (concatenated weights), bank tiers
 * (RAM vs memory-mapped file; fetch latency with a cold and a warm page cache) and scaling (step
 * time vs number of levels and vs bank size at a fixed fetched size). Every comparison runs its
 * sides alternately in this process (bench/measure.ts); ratios are what to read.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { loadNative } from '../lib/native.js';
import { AnchorModel } from '../lib/model/anchor.js';
import { type ModelConfig } from '../lib/model/config.js';
import { AdamW } from '../lib/train/adamw.js';
import { MemoryBank } from '../lib/memory/bank.js';
import { HierarchicalModel, type PathBatch } from '../lib/memory/memory-model.js';
import { memorySizes, resolveMemorySpec, type MemorySpec } from '../lib/memory/spec.js';
import { Rng } from '../lib/util/random.js';
import { limitRow, peerRow, type ContractRow, type Limits } from './contract.js';
import { measure, ourRunner, type Timing } from './measure.js';
import { treePaths, type IdleWaiter } from './peer-common.js';

export interface MemoryBenchContext {
  quick: boolean;
  timing: Timing;
  idle: IdleWaiter;
  limits: Limits;
  threads: number;
  /** markdown lines for the detail tables, by section */
  detail: string[];
}

const GB = 1e9;
const STEP_OPTIONS = { anchorLr: 1e-4, memoryLr: 1e-4, memoryWeightDecay: 1e-3, freezeAnchor: false };

function randomPaths(rng: Rng, S: number, k: number, p: number): Int32Array {
  const out = new Int32Array(S * p);
  for (let s = 0; s < S; s++) {
    let node = 0;
    for (let l = 0; l < p; l++) {
      node = (l === 0 ? 0 : node * k) + rng.int(k);
      out[s * p + l] = node;
    }
  }
  return out;
}

const fmt = (x: number, d = 1): string => x.toFixed(d);

/** The last-level cache size the CPU reports (sysfs, else getconf), 32 MiB where neither answers. */
export function lastLevelCacheBytes(): number {
  let best = 0;
  try {
    const dir = '/sys/devices/system/cpu/cpu0/cache';
    for (const e of readdirSync(dir)) {
      if (!e.startsWith('index')) continue;
      const m = /^(\d+)([KMG]?)/.exec(readFileSync(path.join(dir, e, 'size'), 'utf8').trim());
      if (m) best = Math.max(best, Number(m[1]) * ({ '': 1, K: 1024, M: 2 ** 20, G: 2 ** 30 }[m[2] as '' | 'K' | 'M' | 'G']));
    }
  } catch {
    /* no sysfs cache information (some VMs) */
  }
  if (!best) {
    try {
      for (const name of ['LEVEL3_CACHE_SIZE', 'LEVEL2_CACHE_SIZE']) {
        const v = Number(execFileSync('getconf', [name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
        if (v > 0) { best = v; break; }
      }
    } catch {
      /* no getconf */
    }
  }
  return best || 32 * 2 ** 20;
}

/**
 * Gather bandwidth against memcpy of the same bytes in the same cache state (issue #12): S paths
 * per call from a bank larger than the last-level cache, every block of a path distinct from every
 * other path's (one level of 112 units per memory layer: the same 1.38 MB per path as the
 * k 16 / 64-32-16 bank of the scatter row, without upper-level blocks shared between paths).
 *   cold: each call gathers the next S paths of a pool of distinct paths larger than the LLC (the
 *         pool wraps after ~1 GiB of traffic, so every block comes from DRAM); the memcpy reference
 *         copies the next S paths' worth of bytes from a source pool of the same size.
 *   warm: the same S paths again every call (S · 1.38 MB read + written, cache-resident on a
 *         machine with >= 32 MiB of LLC); the memcpy reference copies one fixed source region.
 * Both sides write into one reused destination buffer; bytes counted = read + written.
 * `memory-gather` (the contract row) is the cold gather as a fraction of the memcpy limit (64 MiB,
 * DRAM-bound): the same cache state on both sides.
 */
export async function gatherRows(c: MemoryBenchContext, which: { gather: boolean; scatter: boolean }): Promise<ContractRow[]> {
  const native = loadNative();
  const rows: ContractRow[] = [];
  if (which.gather) {
    const model = { nLayers: 4, dModel: 256 };
    const S = 8;
    // cold: a pool of at least twice the last-level cache the CPU reports (and 1 GiB); --quick keeps
    // it at 128 MiB to stay fast, which is cold only where the LLC is smaller than that
    const llc = lastLevelCacheBytes();
    const poolBytes = c.quick ? 128 * 2 ** 20 : Math.max(2 ** 30, 2 * llc);
    const pathBytes = 112 * 3 * model.dModel * 4 * model.nLayers;
    const P = Math.ceil(poolBytes / pathBytes / S) * S; // pool paths, a multiple of S
    const spec = resolveMemorySpec({ k: P, levels: [112] }, model);
    const bank = MemoryBank.createInMemory(spec, model.dModel, { seed: 1, allowOvercommit: true });
    const pool = Int32Array.from({ length: P }, (_, i) => i);
    // shuffle: consecutive calls read blocks scattered over the bank, not neighbours
    const rng = new Rng(1);
    for (let i = P - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [pool[i], pool[j]] = [pool[j]!, pool[i]!];
    }
    const fetched = new Float32Array(S * (pathBytes / 4));
    for (let i = 0; i < P; i += S) bank.gatherInto(fetched, pool.subarray(i, i + S)); // initialises every pool block
    const n = fetched.length, bytes = n * 4 * 2;
    const srcPool = new Float32Array((P / S) * n).fill(1);
    const warmPaths = pool.slice(0, S), warmSrc = srcPool.subarray(0, n);
    let gi = 0, mi = 0;
    const gatherCold = (): void => {
      bank.gatherInto(fetched, pool.subarray(gi, gi + S));
      gi = (gi + S) % P;
    };
    const copyCold = (): void => {
      native.copyParallel(fetched, srcPool.subarray(mi, mi + n));
      mi = (mi + n) % srcPool.length;
    };
    const cold = await measure('gather cold', bytes, [{ name: 'gather-cold', run: await ourRunner(gatherCold) }, { name: 'memcpy-cold', run: await ourRunner(copyCold) }], c.threads, c.timing, c.idle);
    const warm = await measure('gather warm', bytes, [{ name: 'gather-warm', run: await ourRunner(() => bank.gatherInto(fetched, warmPaths)) }, { name: 'memcpy-warm', run: await ourRunner(() => native.copyParallel(fetched, warmSrc)) }], c.threads, c.timing, c.idle);
    const gc = cold.sides[0]!.perSec, mc = cold.sides[1]!.perSec, gw = warm.sides[0]!.perSec, mw = warm.sides[1]!.perSec;
    const what = `${S} paths (${fmt(n * 4 / 2 ** 20)} MiB) per call from a ${fmt(P * pathBytes / 2 ** 30, 2)} GiB pool of distinct blocks (LLC ${fmt(llc / 2 ** 20, 0)} MiB as reported)`;
    rows.push(limitRow('memory-gather', 'GB/s', gc.median / GB, 'memcpyGBs', c.limits.memcpyGBs, 0.8, {
      spread: gc.spread, note: `cold (fresh random blocks from DRAM), ${what}; memcpy limit (64 MiB, DRAM) ${fmt(c.limits.memcpyGBs)} GB/s; same-run cold memcpy of the same bytes ${fmt(mc.median / GB)} GB/s`,
    }));
    rows.push(peerRow('memory-gather-cold', 'GB/s', gc.median / GB, 'hiermem-memcpy-cold', mc.median / GB, 0.8, {
      spread: gc.spread, note: `fresh random blocks every call, ${what}; memcpy copies the same bytes from a source pool of the same size`,
    }));
    rows.push(peerRow('memory-gather-warm', 'GB/s', gw.median / GB, 'hiermem-memcpy-warm', mw.median / GB, 0.8, {
      spread: gw.spread, note: `the same ${S} paths every call (${fmt(n * 4 / 2 ** 20)} MiB read + written, cache-resident); memcpy copies one fixed region of the same bytes`,
    }));
    c.detail.push(`| gather cold, ${what} | ${fmt(gc.median / GB)} GB/s [${fmt(gc.min / GB)}–${fmt(gc.max / GB)}] | memcpy same bytes, cold ${fmt(mc.median / GB)} GB/s | ${fmt(gc.median / mc.median, 2)} |`);
    c.detail.push(`| gather warm, the same ${S} paths again | ${fmt(gw.median / GB)} GB/s [${fmt(gw.min / GB)}–${fmt(gw.max / GB)}] | memcpy same bytes, warm ${fmt(mw.median / GB)} GB/s | ${fmt(gw.median / mw.median, 2)} |`);
    bank.close();
  }
  if (which.scatter) {
    // 4 memory layers of d = 256, k = 16, levels (64, 32, 16): 1.38 MB per path; 32 paths = 44 MB
    // (quick: 8 paths, 11 MB), against a memcpy of the same bytes
    const model = { nLayers: 4, dModel: 256 };
    const spec = resolveMemorySpec({ k: 16, levels: [64, 32, 16] }, model);
    const bank = MemoryBank.createInMemory(spec, model.dModel, { seed: 1 });
    const S = c.quick ? 8 : 32;
    const paths = randomPaths(new Rng(1), S, 16, 3);
    const fetched = bank.gather(paths); // also initialises the blocks
    const bytes = fetched.length * 4 * 2;
    const src = new Float32Array(fetched.length).fill(1), dst = new Float32Array(fetched.length);
    const copy = await ourRunner(() => native.copyParallel(dst, src));
    const dfetched = new Float32Array(fetched.length).fill(0.5);
    const m = await measure('scatter-add', bytes, [{ name: 'scatter', run: await ourRunner(() => bank.blockGradients(dfetched, paths)) }, { name: 'memcpy', run: copy }], c.threads, c.timing, c.idle);
    const g = m.sides[0]!.perSec, mc = m.sides[1]!.perSec;
    rows.push(limitRow('memory-scatter-add', 'GB/s', g.median / GB, 'memcpyGBs', c.limits.memcpyGBs, null, {
      spread: g.spread, note: `per-block gradients incl. their allocation; memcpy of the same bytes ${fmt(mc.median / GB)} GB/s`,
    }));
    c.detail.push(`| scatter-add ${S} paths | ${fmt(g.median / GB)} GB/s [${fmt(g.min / GB)}–${fmt(g.max / GB)}] | memcpy same bytes ${fmt(mc.median / GB)} GB/s | ${fmt(g.median / mc.median, 2)} |`);
    bank.close();
  }
  return rows;
}

/** FFN forward with R memory units per path group vs one SwiGLU of width F + R over concatenated weights. */
export async function ffnRows(c: MemoryBenchContext): Promise<ContractRow[]> {
  const native = loadNative();
  const B = 8, T = 256, C = 256, F = 704, R = 112, S = 4, N = B * T;
  const rng = new Rng(2);
  const rnd = (n: number, s: number): Float32Array => Float32Array.from({ length: n }, () => s * rng.normal());
  const x = rnd(N * C, 1), w1 = rnd(F * C, 0.06), w2 = rnd(F * C, 0.06), w3 = rnd(C * F, 0.03);
  const fetched = rnd(S * 3 * R * C, 0.06);
  const seqSlot = Int32Array.from([0, 0, 1, 1, 2, 2, 3, 3]);
  const y = new Float32Array(N * C), gate = new Float32Array(N * F), up = new Float32Array(N * F);
  const gm = new Float32Array(N * R), um = new Float32Array(N * R);
  const fused = (): void => {
    native.ffnForward(y, gate, up, x, w1, w2, w3, N, C, F);
    native.ffnMemoryForward(y, gm, um, x, fetched, seqSlot, B, T, C, R, S);
  };
  const W1 = new Float32Array((F + R) * C), W2 = new Float32Array((F + R) * C), W3 = new Float32Array(C * (F + R));
  const yg = new Float32Array(2 * T * C), gg = new Float32Array(2 * T * (F + R)), ug = new Float32Array(2 * T * (F + R));
  const unfused = (): void => {
    for (let s = 0; s < S; s++) {
      const base = s * 3 * R * C;
      W1.set(w1); W1.set(fetched.subarray(base, base + R * C), F * C);
      W2.set(w2); W2.set(fetched.subarray(base + R * C, base + 2 * R * C), F * C);
      for (let ch = 0; ch < C; ch++) {
        W3.set(w3.subarray(ch * F, (ch + 1) * F), ch * (F + R));
        for (let r = 0; r < R; r++) W3[ch * (F + R) + F + r] = fetched[base + 2 * R * C + r * C + ch]!;
      }
      native.ffnForward(yg, gg, ug, x.subarray(s * 2 * T * C, (s + 1) * 2 * T * C), W1, W2, W3, 2 * T, C, F + R);
    }
  };
  const m = await measure('ffn', N, [{ name: 'fused', run: await ourRunner(fused) }, { name: 'unfused', run: await ourRunner(unfused) }], c.threads, c.timing, c.idle);
  const a = m.sides[0]!.perSec, b = m.sides[1]!.perSec;
  c.detail.push(`| FFN + memory forward (N ${N}, C ${C}, F ${F}, R ${R}, ${S} paths) | ${fmt(a.median / 1e3)}k tok/s | unfused, concatenated weights ${fmt(b.median / 1e3)}k tok/s | ${fmt(a.median / b.median, 2)} |`);
  return [peerRow('ffn-memory-fused', 'tokens/s', a.median, 'hiermem-unfused', b.median, 1.0, { spread: a.spread, note: `forward, N ${N}, C ${C}, F ${F}, R ${R}, ${S} path groups` })];
}

/** The 3.4M bench model (4 layers, d 256, seq 256) with batch 8. */
export const TIER_MODEL: ModelConfig = {
  vocabSize: 259, dModel: 256, nLayers: 4, nHeads: 4, headDim: 64, ffnHidden: 704, seqLen: 256, seed: 1, normEps: 1e-5, ropeBase: 1e5,
};

function batches(rng: Rng, cfg: ModelConfig, n: number, k: number, p: number, distinct: number): PathBatch[] {
  const out: PathBatch[] = [];
  for (let i = 0; i < n; i++) {
    const tokens = new Int32Array(8 * cfg.seqLen).map(() => rng.int(256));
    out.push({ tokens, targets: tokens.map((t) => (t + 1) % 256), batchSize: 8, paths: treePaths(rng, 8, k, p, distinct) });
  }
  return out;
}

/** A training-step runner over a bank (anchor shared, own optimizer state). */
function stepper(anchor: AnchorModel, bank: MemoryBank, list: PathBatch[]): { model: HierarchicalModel; step: () => Promise<unknown> } {
  const model = HierarchicalModel.fromAnchor(anchor, bank, 8);
  const opt = new AdamW(model.anchor);
  let i = 0;
  return { model, step: () => model.trainStep(list[i++ % list.length]!, opt, STEP_OPTIONS) };
}

/** RAM vs mmap step time (warm), and per-path fetch latency from a file bank, cold and warm page cache. */
export async function tierRows(c: MemoryBenchContext): Promise<ContractRow[]> {
  const dir = await mkdtemp(path.join(tmpdir(), 'hiermem-bench-'));
  const rows: ContractRow[] = [];
  try {
    const cfg = TIER_MODEL;
    const spec = resolveMemorySpec({ k: 16, levels: [64, 32, 16] }, cfg);
    const ram = MemoryBank.createInMemory(spec, cfg.dModel, { seed: 3 });
    const file = await MemoryBank.createFile(path.join(dir, 'bank.safetensors'), spec, cfg.dModel, { seed: 3 });
    const anchor = AnchorModel.create(cfg, { maxBatch: 8 });
    const list = batches(new Rng(4), cfg, 6, 16, 3, 4);
    const a = stepper(anchor, ram, list), b = stepper(anchor, file, list);
    const m = await measure('bank tiers', 8 * cfg.seqLen, [{ name: 'ram', run: await ourRunner(a.step) }, { name: 'mmap', run: await ourRunner(b.step) }], c.threads, c.timing, c.idle);
    const r = m.sides[0]!.perSec, f = m.sides[1]!.perSec;
    rows.push(peerRow('bank-mmap-step', 'tokens/s', f.median, 'hiermem-ram-bank', r.median, 0.95, {
      spread: f.spread, note: `warm page cache, ${fmt(ram.bytes / 2 ** 30, 2)} GiB bank (k 16, levels 64/32/16, with AdamW state)`,
    }));
    c.detail.push(`| train step, bank memory-mapped vs in RAM (${fmt(ram.bytes / 2 ** 30, 2)} GiB bank, warm) | ${fmt(f.median / 1e3, 2)}k tok/s | RAM ${fmt(r.median / 1e3, 2)}k tok/s | ${fmt(f.median / r.median, 3)} |`);
    a.model.anchor.dispose();
    b.model.anchor.dispose();
    ram.close();
    file.close();

    // Fetch latency: a sparse file bank of ~8 GiB (k 32, levels 64/32/16) whose fetched blocks hold
    // data on disk; before each cold fetch the bank's pages are written back and dropped from the
    // page cache (MADV_PAGEOUT, verified with mincore), as for a bank larger than RAM.
    const bigSpec = resolveMemorySpec({ k: 32, levels: [64, 32, 16] }, cfg);
    const big = await MemoryBank.createFile(path.join(dir, 'big.safetensors'), bigSpec, cfg.dModel, { seed: 5, allowOvercommit: true });
    const rng = new Rng(6);
    const n = c.quick ? 16 : 64, levels = bigSpec.levels.length;
    const pool = randomPaths(rng, n, 32, levels); // one path per fetch
    big.gather(pool); // initialises (writes) the blocks these paths use
    big.flush();
    const cold: number[] = [], warm: number[] = [];
    let residentAfterRelease = 0;
    for (let i = 0; i < n; i++) {
      const one = pool.subarray(i * levels, (i + 1) * levels);
      big.releasePageCache();
      residentAfterRelease = Math.max(residentAfterRelease, big.residentBytes());
      let t0 = performance.now();
      big.gather(one);
      cold.push(performance.now() - t0);
      t0 = performance.now();
      big.gather(one);
      warm.push(performance.now() - t0);
    }
    const q = (xs: number[], p: number): number => [...xs].sort((x, y) => x - y)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;
    const pathMiB = (bigSpec.levels.reduce((s, r) => s + r, 0) * 3 * bigSpec.layers.length * cfg.dModel * 4) / 2 ** 20;
    const note = `one path (${fmt(pathMiB, 2)} MiB) from a ${fmt(big.bytes / 2 ** 30, 1)} GiB sparse bank file on ${process.platform === 'linux' ? 'the local disk' : 'disk'}; page cache dropped before each cold fetch (max resident after drop ${residentAfterRelease} B)`;
    for (const [name, xs] of [['cold', cold], ['warm', warm]] as const) {
      for (const p of [0.5, 0.99]) {
        const v = q(xs, p);
        rows.push({ name: `fetch-latency-${name}-p${p === 0.5 ? 50 : 99}`, unit: 'ms', ours: v, peer: null, peerValue: null, ratio: null, target: null, met: null, note });
      }
      c.detail.push(`| fetch one path, ${name} page cache (${n} fetches) | p50 ${fmt(q(xs, 0.5), 2)} ms, p99 ${fmt(q(xs, 0.99), 2)} ms | ${fmt(pathMiB / (q(xs, 0.5) / 1e3) / 1024, 2)} GiB/s at p50 | |`);
    }
    big.close();
    anchor.dispose();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return rows;
}

/**
 * Scaling at a fixed fetched size (R = 96 units in each of the 4 layers, 4 distinct paths per
 * batch): step time vs the number of levels the 96 units are split over, and vs bank size (k)
 * at two levels. The method's promise is that both stay flat.
 */
export async function scalingRows(c: MemoryBenchContext): Promise<ContractRow[]> {
  const cfg = TIER_MODEL;
  const anchor = AnchorModel.create(cfg, { maxBatch: 8 });
  const rows: ContractRow[] = [];
  const run = async (label: string, variants: { name: string; spec: MemorySpec }[]): Promise<void> => {
    const sides = [];
    const banks: MemoryBank[] = [];
    const models: HierarchicalModel[] = [];
    const specs = variants.map((v) => resolveMemorySpec(v.spec, cfg));
    for (const [i, v] of variants.entries()) {
      const spec = specs[i]!;
      const bank = MemoryBank.createInMemory(spec, cfg.dModel, { seed: 9, allowOvercommit: true });
      banks.push(bank);
      const s = stepper(anchor, bank, batches(new Rng(11), cfg, 4, v.spec.k, v.spec.levels.length, 4));
      models.push(s.model);
      sides.push({ name: v.name, run: await ourRunner(s.step) });
    }
    const m = await measure(label, 8 * cfg.seqLen, sides, c.threads, c.timing, c.idle);
    const base = m.sides[0]!.perSec;
    variants.forEach((v, i) => {
      const s = m.sides[i]!.perSec;
      const sizes = memorySizes(specs[i]!, cfg);
      const what = `${v.name}: bank ${fmt(sizes.bankParams / 1e6, 1)}M params (${fmt((banks[i]!.bytes) / 2 ** 30, 2)} GiB with AdamW state), fetched ${fmt(sizes.fetchedParams / 1e6, 2)}M`;
      if (i > 0) rows.push(peerRow(`scaling-${label}-${v.name}`, 'tokens/s', s.median, `hiermem-${variants[0]!.name}`, base.median, 0.95, { band: true, spread: s.spread, note: what }));
      c.detail.push(`| scaling ${label}: ${what} | ${fmt(s.median / 1e3, 2)}k tok/s [${fmt(s.min / 1e3, 2)}–${fmt(s.max / 1e3, 2)}] | vs ${variants[0]!.name} | ${fmt(s.median / base.median, 3)} |`);
    });
    for (const x of models) x.anchor.dispose();
    for (const b of banks) b.close();
  };
  await run('levels', [
    { name: '1-level', spec: { k: 8, levels: [96] } },
    { name: '2-levels', spec: { k: 8, levels: [48, 48] } },
    { name: '3-levels', spec: { k: 8, levels: [32, 32, 32] } },
    ...(c.quick ? [] : [{ name: '4-levels', spec: { k: 8, levels: [24, 24, 24, 24] } }]),
  ]);
  await run('bank', [
    { name: 'k4', spec: { k: 4, levels: [48, 48] } },
    { name: 'k16', spec: { k: 16, levels: [48, 48] } },
    ...(c.quick ? [] : [{ name: 'k64', spec: { k: 64, levels: [48, 48] } }]),
  ]);
  anchor.dispose();
  return rows;
}

