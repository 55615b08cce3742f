/**
 * Memory benchmarks (issue #4): gather bandwidth vs a plain copy of the same bytes, the FFN with
 * memory units vs the unfused path (concatenated weights, one SwiGLU of width F + R), and the
 * training-step cost of a memory-mapped bank vs a RAM bank. Both sides of each comparison run
 * alternately in the same process; ratios are what to read (the machine is shared and noisy).
 */
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir, cpus } from 'node:os';
import path from 'node:path';
import { loadNative } from '../lib/native.js';
import { AnchorModel } from '../lib/model/anchor.js';
import { AdamW } from '../lib/train/adamw.js';
import { MemoryBank } from '../lib/memory/bank.js';
import { HierarchicalModel } from '../lib/memory/memory-model.js';
import { resolveMemorySpec } from '../lib/memory/spec.js';
import { Rng } from '../lib/util/random.js';
import { timePair, spread } from './stats.js';

const native = loadNative();
const rows: string[] = [];
const results: Record<string, unknown> = {};

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

async function gatherBench(): Promise<void> {
  // 8 paths of a k=16, 3-level bank with (64, 32, 16) units over 4 layers of d = 256
  const model = { nLayers: 4, dModel: 256 };
  const spec = resolveMemorySpec({ k: 16, levels: [64, 32, 16] }, model);
  const bank = MemoryBank.createInMemory(spec, model.dModel, { seed: 1 });
  const rng = new Rng(1);
  const paths = randomPaths(rng, 8, 16, 3);
  const fetched = bank.gather(paths); // also initialises the blocks
  const src = new Float32Array(fetched.length).fill(1);
  const dst = new Float32Array(fetched.length);
  const [tg, tc] = await timePair(() => bank.gatherInto(fetched, paths), () => dst.set(src), 21, 3);
  const bytes = fetched.length * 4 * 2; // read + write
  const gbG = bytes / (tg.medianMs / 1e3) / 1e9, gbC = bytes / (tc.medianMs / 1e3) / 1e9;
  rows.push(`| gather 8 paths (${(fetched.length * 4 / 2 ** 20).toFixed(1)} MiB) | ${spread(tg)} | ${gbG.toFixed(1)} GB/s | memcpy same bytes ${spread(tc)} = ${gbC.toFixed(1)} GB/s | ${(gbG / gbC).toFixed(2)} |`);
  results.gather = { ms: tg, memcpyMs: tc, gbPerSec: gbG, memcpyGbPerSec: gbC, ratio: gbG / gbC };
  const dfetched = new Float32Array(fetched.length).fill(0.5);
  const [ts, tc2] = await timePair(() => bank.blockGradients(dfetched, paths), () => dst.set(src), 21, 3);
  const gbS = bytes / (ts.medianMs / 1e3) / 1e9;
  rows.push(`| scatter-add 8 paths | ${spread(ts)} | ${gbS.toFixed(1)} GB/s | memcpy ${spread(tc2)} | ${(gbS / (bytes / (tc2.medianMs / 1e3) / 1e9)).toFixed(2)} |`);
  results.scatter = { ms: ts, gbPerSec: gbS };
}

async function ffnBench(): Promise<void> {
  // B = 8 sequences of T = 256, C = 256, F = 1024 anchor units, R = 112 memory units, 4 distinct paths
  const B = 8, T = 256, C = 256, F = 1024, R = 112, S = 4, N = B * T;
  const rng = new Rng(2);
  const rnd = (n: number, s: number) => Float32Array.from({ length: n }, () => s * rng.normal());
  const x = rnd(N * C, 1), w1 = rnd(F * C, 0.06), w2 = rnd(F * C, 0.06), w3 = rnd(C * F, 0.03);
  const fetched = rnd(S * 3 * R * C, 0.06);
  const seqSlot = Int32Array.from([0, 0, 1, 1, 2, 2, 3, 3]);
  const y = new Float32Array(N * C), gate = new Float32Array(N * F), up = new Float32Array(N * F);
  const gm = new Float32Array(N * R), um = new Float32Array(N * R);
  const ours = () => {
    native.ffnForward(y, gate, up, x, w1, w2, w3, N, C, F);
    native.ffnMemoryForward(y, gm, um, x, fetched, seqSlot, B, T, C, R, S);
  };
  // unfused: per group, build [W1; Wg], [W2; Wu], [W3, Wd^T] and run one SwiGLU of width F + R
  const W1 = new Float32Array((F + R) * C), W2 = new Float32Array((F + R) * C), W3 = new Float32Array(C * (F + R));
  const yg = new Float32Array(2 * T * C), gg = new Float32Array(2 * T * (F + R)), ug = new Float32Array(2 * T * (F + R));
  const unfused = () => {
    for (let s = 0; s < S; s++) {
      const base = s * 3 * R * C;
      W1.set(w1); W1.set(fetched.subarray(base, base + R * C), F * C);
      W2.set(w2); W2.set(fetched.subarray(base + R * C, base + 2 * R * C), F * C);
      for (let c = 0; c < C; c++) {
        W3.set(w3.subarray(c * F, (c + 1) * F), c * (F + R));
        for (let r = 0; r < R; r++) W3[c * (F + R) + F + r] = fetched[base + 2 * R * C + r * C + c]!;
      }
      native.ffnForward(yg, gg, ug, x.subarray(s * 2 * T * C, (s + 1) * 2 * T * C), W1, W2, W3, 2 * T, C, F + R);
    }
  };
  const [to, tu] = await timePair(ours, unfused, 9, 2);
  rows.push(`| FFN + memory fwd (N ${N}, C ${C}, F ${F}, R ${R}, 4 paths) | ${spread(to)} | | unfused (concatenated weights) ${spread(tu)} | ${(tu.medianMs / to.medianMs).toFixed(2)}x faster |`);
  results.ffn = { oursMs: to, unfusedMs: tu, speedup: tu.medianMs / to.medianMs };
}

async function bankTierBench(): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'hiermem-bench-'));
  const cfg = { vocabSize: 259, dModel: 256, nLayers: 4, nHeads: 4, headDim: 64, ffnHidden: 1024, seqLen: 256, seed: 1 };
  const spec = resolveMemorySpec({ k: 16, levels: [64, 32, 16] }, cfg);
  const ram = MemoryBank.createInMemory(spec, cfg.dModel, { seed: 3 });
  const file = await MemoryBank.createFile(path.join(dir, 'bank.safetensors'), spec, cfg.dModel, { seed: 3 });
  const anchor = AnchorModel.create(cfg, { maxBatch: 8 });
  const a = HierarchicalModel.fromAnchor(anchor, ram), b = HierarchicalModel.fromAnchor(anchor, file);
  const oa = new AdamW(a.anchor), ob = new AdamW(b.anchor);
  const rng = new Rng(4);
  const mk = () => ({ tokens: new Int32Array(8 * 256).map(() => rng.int(256)), targets: new Int32Array(8 * 256).map(() => rng.int(256)), batchSize: 8, paths: randomPaths(rng, 8, 16, 3) });
  const o = { anchorLr: 1e-3, memoryLr: 1e-3, memoryWeightDecay: 1e-3, freezeAnchor: false };
  const [tr, tf] = await timePair(() => a.trainStep(mk(), oa, o), () => b.trainStep(mk(), ob, o), 5, 1);
  rows.push(`| train step, bank in RAM (${(ram.bytes / 2 ** 20).toFixed(0)} MiB bank) | ${spread(tr)} | | memory-mapped file ${spread(tf)} | mmap/RAM ${(tf.medianMs / tr.medianMs).toFixed(3)} |`);
  results.bankTiers = { ramMs: tr, mmapMs: tf, ratio: tf.medianMs / tr.medianMs, bankBytes: ram.bytes };
  file.close();
  await rm(dir, { recursive: true });
}

async function main(): Promise<void> {
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  console.log(`hiermem memory bench — ${cpu}, ${cpus().length} cores, ${native.getNumThreads()} threads, ${new Date().toISOString()}`);
  await gatherBench();
  await ffnBench();
  await bankTierBench();
  console.log('\n| what | ours (median, min–max) | rate | peer in the same run | ratio |\n|---|---|---|---|---|');
  for (const r of rows) console.log(r);
  await mkdir('bench/results', { recursive: true });
  await writeFile('bench/results/memory.json', JSON.stringify({ machine: cpu, threads: native.getNumThreads(), date: new Date().toISOString(), ...results }, null, 2));
}

await main();
