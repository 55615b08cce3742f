/**
 * hiermem vs PyTorch on the CPU (issue #5, item 2 and the peer rows of item 4), both sides in the
 * same invocation, alternating: a long-lived PyTorch process (bench/peers/torch_model.py) is
 * driven over JSON lines ("run N steps, report ms"), so hiermem's repetition and PyTorch's
 * repetition follow each other in the same window of machine time (the order flips every
 * repetition). Same model, same weights, same batches, same AdamW hyperparameters, fp32, same
 * thread count on both sides.
 *
 *   1. Equivalence first (bench/peer-check.ts): at every size, loss and all gradients of the first
 *      step agree (anchor, and anchor + memories incl. the fetched blocks' gradient).
 *   2. Training step tokens/s (zeroGrad + forward + backward + clip + AdamW; with memories also
 *      the gather, the per-block gradients and the row-sparse AdamW of fetched blocks) at three
 *      sizes (MODEL_PRESETS small / medium / large, byte vocabulary 259, batch 8), anchor alone and
 *      anchor + memories (k = 4, levels [32, 32]: R = 64 units in every layer; 4 distinct paths
 *      per batch of 8), at each thread count.
 *   3. Inference, batch 1: prompt processing (forward of a seqLen-token prompt, last logits) and
 *      greedy generation of --gen-tokens tokens after a seqLen/2-token prompt. Both sides keep a
 *      KV cache (hiermem: prefill once, then one single-position decodeStep per token); PyTorch is
 *      also timed without a cache (the whole context re-run per token: hiermem's algorithm before
 *      its cache, kept as the -nocache row). Anchor alone and with one memory path.
 *
 * Usage: node dist/bench/peer-train.js [--quick] [--sizes small,medium,large] [--threads 2,1]
 *        [--reps 5] [--infer-reps 3] [--seconds 1] [--no-memory] [--no-infer] [--gen-tokens 32]
 *        [--idle-wait 5] [--idle-budget 60] [--install | --no-install] [--out bench/results/peer.json]
 * PyTorch missing: installed with apt-get when running as root (default; --no-install to skip),
 * otherwise the PyTorch columns are n/a and a message says why.
 * The machine may be shared: before each measurement the bench waits (up to --idle-wait s, at
 * most --idle-budget s per run) for other processes to go below 0.25 busy cores and records the
 * reading; each side's CPU share (CPU time / (wall x threads)) is recorded too.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { performance } from 'node:perf_hooks';
import { loadNative, packageRoot } from '../lib/native.js';
import { AnchorModel } from '../lib/model/anchor.js';
import { MODEL_PRESETS, resolveModelConfig, trainFlopsPerToken, type ModelConfig } from '../lib/model/config.js';
import { AdamW, DEFAULT_ADAMW } from '../lib/train/adamw.js';
import { ByteTokenizer } from '../lib/data/tokenizer.js';
import { saveCheckpoint } from '../lib/train/checkpoint.js';
import { writeSafetensors, type TensorToWrite } from '../lib/io/safetensors.js';
import { MemoryBank } from '../lib/memory/bank.js';
import { HierarchicalModel, slotsOf, type PathBatch } from '../lib/memory/memory-model.js';
import { layerToMemory, memorySizes, resolveMemorySpec, type MemorySpec } from '../lib/memory/spec.js';
import { Rng } from '../lib/util/random.js';
import { IdleWaiter, TorchPeer, argmax, ensureTorch, machine, maxRel, stat, timeGreedyDecode, treePaths, type PeerInfo, type Stat } from './peer-common.js';
import { peerRow, type ContractRow } from './contract.js';
import { measure, ourRunner, type Measured, type Runner, type Side, type Timing } from './measure.js';
import { checkEquivalence, describe, randomizeDownRows, type EquivalenceResult } from './peer-check.js';

export const MEMORY: MemorySpec = { k: 4, levels: [32, 32] };
const DISTINCT_PATHS = 4;
const BATCH = 8;
const LR = 1e-4;
const MEMORY_WD = 1e-3;

/** Targets from issue #5 (hiermem / PyTorch tokens/s). */
/**
 * The sizes of issue #5: ≈0.5M (framework overhead dominates), the ≈3.4M config PyTorch was
 * measured on (4 layers, d 256, seq 256, batch 8; SwiGLU of width 704 so
 * the parameter count matches its 4x GELU MLP) and ≈10M. The model presets are accepted too.
 */
export const BENCH_SIZES: Record<string, Omit<ModelConfig, 'vocabSize' | 'seed'>> = {
  '0.5M': { dModel: 128, nLayers: 2, nHeads: 4, headDim: 32, ffnHidden: 384, seqLen: 128, normEps: 1e-5, ropeBase: 1e5 },
  '3.4M': { dModel: 256, nLayers: 4, nHeads: 4, headDim: 64, ffnHidden: 704, seqLen: 256, normEps: 1e-5, ropeBase: 1e5 },
  '10M': MODEL_PRESETS.large!,
};
export function benchConfig(size: string): ModelConfig {
  const shape = BENCH_SIZES[size] ?? MODEL_PRESETS[size];
  if (!shape) throw new Error(`unknown size ${size} (have ${[...Object.keys(BENCH_SIZES), ...Object.keys(MODEL_PRESETS)].join(', ')})`);
  return resolveModelConfig({ ...shape, vocabSize: ByteTokenizer.VOCAB_SIZE, seed: 1 });
}

/**
 * Targets from issue #5 (hiermem / PyTorch tokens/s), and issue #12's for the 10M model: ≥ 1.5
 * anchor only as with memories.
 */
function targetOf(size: string, memory: boolean, kind: 'train' | 'prefill' | 'generate'): number | null {
  if (kind !== 'train') return null;
  if (memory) return 1.5;
  if (size === 'small' || size === '0.5M') return 1.5;
  if (size === 'medium' || size === '3.4M') return 1.1;
  if (size === 'large' || size === '10M') return 1.5;
  return null;
}

export interface PeerOptions {
  sizes: string[];
  threads: number[];
  reps: number;
  seconds: number;
  warmup: number;
  memory: boolean;
  infer: boolean;
  genTokens: number;
  idleWait: number;
  idleBudget: number;
  /** Repetitions of the inference measurements (each one generates --gen-tokens tokens per call). */
  inferReps: number;
  install: boolean;
  out: string;
}

function parseArgs(argv: string[]): PeerOptions {
  const o: PeerOptions = {
    sizes: ['0.5M', '3.4M', '10M'], threads: [2, 1], reps: 5, seconds: 1, warmup: 2, memory: true, infer: true,
    genTokens: 32, idleWait: 5, idleBudget: 60, inferReps: 3, install: process.getuid?.() === 0,
    out: path.join(packageRoot(), 'bench', 'results', 'peer.json'),
  };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i]!;
    if (key === '--quick') {
      Object.assign(o, { sizes: ['0.5M', '3.4M'], threads: [2], reps: 3, inferReps: 3, seconds: 0.4, warmup: 1, genTokens: 16, idleWait: 3, idleBudget: 20 });
      continue;
    }
    if (key === '--no-memory') { o.memory = false; continue; }
    if (key === '--no-infer') { o.infer = false; continue; }
    if (key === '--install') { o.install = true; continue; }
    if (key === '--no-install') { o.install = false; continue; }
    const val = argv[++i];
    if (val === undefined) throw new Error(`missing value after ${key}`);
    const num = (): number => {
      const n = Number(val);
      if (!Number.isFinite(n) || n < 0) throw new Error(`${key} expects a number >= 0, got ${val}`);
      return n;
    };
    switch (key) {
      case '--sizes': o.sizes = val.split(','); break;
      case '--threads': o.threads = val.split(',').map(Number); break;
      case '--reps': o.reps = Math.max(1, Math.round(num())); break;
      case '--seconds': o.seconds = num(); break;
      case '--warmup': o.warmup = Math.round(num()); break;
      case '--gen-tokens': o.genTokens = Math.max(1, Math.round(num())); break;
      case '--idle-wait': o.idleWait = num(); break;
      case '--idle-budget': o.idleBudget = num(); break;
      case '--infer-reps': o.inferReps = Math.max(1, Math.round(num())); break;
      case '--out': o.out = path.resolve(val); break;
      default: throw new Error(`unknown option ${key}`);
    }
  }
  for (const s of o.sizes) benchConfig(s);
  for (const t of o.threads) if (!Number.isInteger(t) || t < 1) throw new Error(`bad thread count ${t}`);
  return o;
}

// ---- rows --------------------------------------------------------------------------------------

interface TrainRow {
  kind: 'train';
  size: string;
  memory: boolean;
  threads: number;
  params: number;
  fetchedParams: number;
  tokensPerStep: number;
  flopsPerToken: number;
  m: Measured;
  lossOurs: number;
  lossPeer: number;
}

interface InferRow {
  kind: 'prefill' | 'generate';
  size: string;
  memory: boolean;
  threads: number;
  tokens: number;
  promptLen: number;
  m: Measured;
  /** Greedy tokens: how many of ours agree with PyTorch's (KV cache) before the first difference. */
  greedyAgree?: number;
}

function randomTokens(rng: Rng, n: number, V: number): Int32Array {
  const t = new Int32Array(n);
  for (let i = 0; i < n; i++) t[i] = rng.int(V);
  return t;
}

async function trainRows(size: string, memory: boolean, cfg: ModelConfig, o: PeerOptions, peer: TorchPeer | null, idle: IdleWaiter, dir: string): Promise<TrainRow[]> {
  const native = loadNative();
  const rng = new Rng(42);
  const T = cfg.seqLen;
  const base = AnchorModel.create(cfg, { maxBatch: BATCH });
  const spec = resolveMemorySpec(MEMORY, cfg);
  const bank = memory ? MemoryBank.createInMemory(spec, cfg.dModel, { seed: 3 }) : null;
  const batches: PathBatch[] = [];
  for (let i = 0; i < 4; i++) {
    batches.push({
      tokens: randomTokens(rng, BATCH * T, cfg.vocabSize), targets: randomTokens(rng, BATCH * T, cfg.vocabSize), batchSize: BATCH,
      paths: treePaths(rng, BATCH, MEMORY.k, MEMORY.levels.length, DISTINCT_PATHS),
    });
  }
  const hm = bank ? HierarchicalModel.fromAnchor(base, bank, BATCH) : null;
  const model = hm ? hm.anchor : base;
  const opt = new AdamW(model);
  let k = 0;
  let lossOurs = NaN;
  const stepOurs = async (): Promise<void> => {
    const b = batches[k++ % batches.length]!;
    if (hm) {
      lossOurs = (await hm.trainStep(b, opt, { anchorLr: LR, memoryLr: LR, memoryWeightDecay: MEMORY_WD, freezeAnchor: false })).loss;
    } else {
      model.zeroGrad();
      lossOurs = await model.forwardBackward(b);
      await opt.step(model, LR);
    }
  };
  let lossPeer = NaN;
  if (peer) {
    const ckpt = path.join(dir, 'train.ckpt.safetensors');
    await saveCheckpoint(ckpt, { model: base, tokenizer: new ByteTokenizer() });
    await peer.request({ cmd: 'load', ckpt, memory: memory ? { layerToMemory: Array.from(layerToMemory(spec, cfg.nLayers)), R: spec.levels.reduce((a, b) => a + b, 0) } : null });
    const files: TensorToWrite[] = [];
    batches.forEach((b, i) => {
      files.push({ name: `${i}.tokens`, dtype: 'I32', shape: [BATCH, T], data: b.tokens }, { name: `${i}.targets`, dtype: 'I32', shape: [BATCH, T], data: b.targets });
      if (memory) {
        const { slotPaths, seqSlot } = slotsOf(b.paths, BATCH, spec.levels.length);
        files.push({ name: `${i}.slot_paths`, dtype: 'I32', shape: [slotPaths.length / spec.levels.length, spec.levels.length], data: slotPaths },
          { name: `${i}.seq_slot`, dtype: 'I32', shape: [BATCH], data: seqSlot });
      }
    });
    const bfile = path.join(dir, 'train.batches.safetensors');
    await writeSafetensors(bfile, files, { count: String(batches.length) });
    const a = DEFAULT_ADAMW;
    await peer.request({
      cmd: 'train_setup', batches: bfile,
      hp: { lr: LR, weightDecay: a.weightDecay, beta1: a.beta1, beta2: a.beta2, eps: a.eps, clipNorm: a.clipNorm },
      memory: memory ? { k: MEMORY.k, levels: MEMORY.levels, memoryLayers: spec.layers.length, seed: 3, lr: LR, weightDecay: MEMORY_WD } : null,
    });
    fs.rmSync(ckpt, { force: true });
    fs.rmSync(bfile, { force: true });
  }
  const rows: TrainRow[] = [];
  const fetchedParams = memory ? memorySizes(spec, cfg).fetchedParams : 0;
  const flopsPerToken = trainFlopsPerToken(cfg) + 6 * fetchedParams;
  for (const t of o.threads) {
    native.setNumThreads(t);
    const sides: { name: string; run: Runner }[] = [{ name: 'hiermem', run: await ourRunner(stepOurs) }];
    if (peer) {
      const peerRun: Runner = async (n) => {
        const r = await peer.request({ cmd: 'train', steps: n, threads: t });
        lossPeer = Number(r.loss);
        return { ms: Number(r.ms), cpuMs: Number(r.cpuMs) };
      };
      sides.push({ name: 'pytorch', run: peerRun });
    }
    const label = `train ${size}${memory ? '+memory' : ''} threads=${t}`;
    const m = await measure(label, BATCH * T, sides, t, o, idle);
    const row: TrainRow = { kind: 'train', size, memory, threads: t, params: base.paramCount, fetchedParams, tokensPerStep: BATCH * T, flopsPerToken, m, lossOurs, lossPeer };
    process.stderr.write(`  ${label}: ${summary(m)} (${m.callsPerRep} steps x ${o.reps}, others busy ${m.busyCoresBefore.toFixed(2)} cores)\n`);
    rows.push(row);
  }
  if (model !== base) model.dispose();
  base.dispose();
  bank?.close();
  return rows;
}

async function inferRows(size: string, cfg: ModelConfig, o: PeerOptions, peer: TorchPeer | null, idle: IdleWaiter, dir: string,
                         notes: Record<string, unknown>): Promise<InferRow[]> {
  const native = loadNative();
  const rng = new Rng(77);
  const T = cfg.seqLen;
  const base = AnchorModel.create(cfg, { maxBatch: 1 });
  const spec = resolveMemorySpec(MEMORY, cfg);
  const bank = MemoryBank.createInMemory(spec, cfg.dModel, { seed: 3 });
  const onePath = treePaths(rng, 1, MEMORY.k, MEMORY.levels.length, 1);
  randomizeDownRows(bank, onePath, rng);
  const hm = HierarchicalModel.fromAnchor(base, bank, 1);
  const fetched = bank.gather(onePath);
  const R = spec.levels.reduce((a, b) => a + b, 0);
  const fetchedFile = path.join(dir, 'infer.fetched.safetensors');
  await writeSafetensors(fetchedFile, [{ name: 'fetched', dtype: 'F32', shape: [1, spec.layers.length, 3, R, cfg.dModel], data: fetched }]);
  if (peer) {
    const ckpt = path.join(dir, 'infer.ckpt.safetensors');
    await saveCheckpoint(ckpt, { model: base, tokenizer: new ByteTokenizer() });
    await peer.request({ cmd: 'load', ckpt, memory: { layerToMemory: Array.from(layerToMemory(spec, cfg.nLayers)), R } });
    fs.rmSync(ckpt, { force: true });
  }
  const prompt = randomTokens(rng, T, cfg.vocabSize);
  const promptLen = Math.max(1, Math.min(T >> 1, T - o.genTokens));
  const genPrompt = prompt.subarray(0, promptLen);
  const G = Math.min(o.genTokens, T - promptLen);
  const rows: InferRow[] = [];
  for (const memory of o.memory ? [false, true] : [false]) {
    const forPath = memory ? hm.logitsForPath(onePath) : null;
    const logitsOf = forPath ?? ((ctx: Int32Array) => hm.anchor.nextTokenLogits(ctx));
    // KV-cached generation, as generate() does (one fetched slot for the whole sequence)
    const newDecoder = forPath ? forPath.decoder! : () => hm.anchor.decoder();
    const setup = async (p: Int32Array): Promise<Float32Array | null> => {
      if (!peer) return null;
      const r = await peer.request({ cmd: 'infer_setup', prompt: Array.from(p), fetched: memory ? fetchedFile : null });
      return Float32Array.from(r.logits as number[]);
    };
    let oursTokens: number[] = [];
    const genOurs: Runner = async (n) => {
      const r = timeGreedyDecode(newDecoder, genPrompt, G, n);
      oursTokens = r.tokens;
      return { ms: r.ms, cpuMs: r.cpuMs };
    };
    let peerTokens: number[] = [];
    const genPeer = (cache: boolean, t: number): Runner => async (n) => {
      let ms = 0;
      let cpuMs = 0;
      for (let c = 0; c < n; c++) {
        const r = await peer!.request({ cmd: 'generate', new: G, cache, threads: t });
        ms += Number(r.ms);
        cpuMs += Number(r.cpuMs);
        if (cache) peerTokens = r.tokens as number[];
      }
      return { ms, cpuMs };
    };
    for (const t of o.threads) {
      native.setNumThreads(t);
      const tag = `${size}${memory ? '+memory' : ''} threads=${t}`;
      // prompt processing
      const peerLogits = await setup(prompt);
      if (peerLogits && t === o.threads[0]) {
        notes[`logits-${size}${memory ? '-memory' : ''}`] = maxRel(logitsOf(prompt), peerLogits).rel;
      }
      const pre: { name: string; run: Runner }[] = [{ name: 'hiermem', run: await ourRunner(() => argmax(logitsOf(prompt))) }];
      if (peer) {
        pre.push({
          name: 'pytorch',
          run: async (n) => {
            const r = await peer.request({ cmd: 'prefill', reps: n, threads: t });
            return { ms: Number(r.ms), cpuMs: Number(r.cpuMs) };
          },
        });
      }
      const inferTiming = { reps: o.inferReps, warmup: Math.min(1, o.warmup), seconds: o.seconds };
      const mp = await measure(`prefill ${tag}`, T, pre, t, inferTiming, idle);
      process.stderr.write(`  prefill ${tag}: ${summary(mp)}\n`);
      rows.push({ kind: 'prefill', size, memory, threads: t, tokens: T, promptLen: T, m: mp });
      // generation
      await setup(genPrompt);
      if (peer && t === o.threads[0]) {
        const c = await peer.request({ cmd: 'cache_check', new: Math.min(G, 8), threads: t });
        notes[`kvcache-${size}${memory ? '-memory' : ''}`] = Number(c.maxRelDiff);
      }
      const gen: { name: string; run: Runner }[] = [{ name: 'hiermem (KV cache)', run: genOurs }];
      if (peer) gen.push({ name: 'pytorch (KV cache)', run: genPeer(true, t) }, { name: 'pytorch (no cache)', run: genPeer(false, t) });
      const mg = await measure(`generate ${tag}`, G, gen, t, inferTiming, idle);
      let agree = 0;
      while (agree < Math.min(oursTokens.length, peerTokens.length) && oursTokens[agree] === peerTokens[agree]) agree++;
      process.stderr.write(`  generate ${G} after ${promptLen} ${tag}: ${summary(mg)}${peer ? `; greedy tokens agree for ${agree}/${G}` : ''}\n`);
      const row: InferRow = { kind: 'generate', size, memory, threads: t, tokens: G, promptLen, m: mg };
      if (peer) row.greedyAgree = agree;
      rows.push(row);
    }
  }
  hm.anchor.dispose();
  base.dispose();
  bank.close();
  fs.rmSync(fetchedFile, { force: true });
  return rows;
}

// ---- report ------------------------------------------------------------------------------------

const fmt = (x: number, d = 0): string => x.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
const pct = (x: number): string => `${(100 * x).toFixed(0)}%`;
const rate = (s: Stat): string => `${fmt(s.median)} [${fmt(s.min)}–${fmt(s.max)}]`;

function ratioOf(m: Measured, i = 1): number | null {
  const a = m.sides[0], b = m.sides[i];
  return a && b ? a.perSec.median / b.perSec.median : null;
}

function summary(m: Measured): string {
  return m.sides.map((s, i) => `${s.name} ${fmt(s.perSec.median)} tok/s (spread ${pct(s.perSec.spread)}, CPU ${pct(s.cpuShare)})` +
    (i > 0 ? ` ratio ${ratioOf(m, i)!.toFixed(2)}` : '')).join(', ');
}

function markdown(train: TrainRow[], infer: InferRow[]): string {
  const L: string[] = [];
  L.push('| size | params (+ fetched) | memory | threads | hiermem tokens/s median [min–max] | PyTorch tokens/s median [min–max] | hiermem / PyTorch (paired reps min–max) | target | hiermem GFLOP/s | CPU share hiermem / PyTorch | others busy before |');
  L.push('|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of train) {
    const [a, b] = r.m.sides;
    const ratio = ratioOf(r.m);
    const tgt = targetOf(r.size, r.memory, 'train');
    const pr = r.m.paired[0];
    L.push(`| ${r.size} | ${(r.params / 1e6).toFixed(2)}M${r.fetchedParams ? ` (+${(r.fetchedParams / 1e6).toFixed(2)}M)` : ''} | ${r.memory ? 'k 4, [32, 32], R 64' : '—'} | ${r.threads} | ` +
      `${rate(a!.perSec)} | ${b ? rate(b.perSec) : 'n/a'} | ${ratio !== null ? `**${ratio.toFixed(2)}** (${pr!.min.toFixed(2)}–${pr!.max.toFixed(2)})` : 'n/a'} | ` +
      `${tgt !== null ? `≥ ${tgt} ${ratio !== null ? (ratio >= tgt ? 'met' : 'missed') : ''}` : '—'} | ${fmt((a!.perSec.median * r.flopsPerToken) / 1e9, 1)} | ` +
      `${pct(a!.cpuShare)} / ${b ? pct(b.cpuShare) : 'n/a'} | ${r.m.busyCoresBefore.toFixed(2)} |`);
  }
  if (!infer.length) return L.join('\n');
  L.push('');
  L.push('| size | memory | threads | prompt (T tokens, batch 1): hiermem tok/s | PyTorch tok/s | ratio | generation: hiermem tok/s (KV cache) | PyTorch, KV cache | ratio | PyTorch, no cache | ratio | greedy agree |');
  L.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  const pre = infer.filter((r) => r.kind === 'prefill');
  for (const p of pre) {
    const g = infer.find((r) => r.kind === 'generate' && r.size === p.size && r.memory === p.memory && r.threads === p.threads);
    const ps = p.m.sides, gs = g?.m.sides ?? [];
    const cell = (s: Side | undefined): string => (s ? rate(s.perSec) : 'n/a');
    const rat = (m: Measured | undefined, i: number): string => {
      const x = m ? ratioOf(m, i) : null;
      return x !== null ? x.toFixed(2) : 'n/a';
    };
    L.push(`| ${p.size} (T ${p.tokens}) | ${p.memory ? 'one path' : '—'} | ${p.threads} | ${cell(ps[0])} | ${cell(ps[1])} | ${rat(p.m, 1)} | ` +
      `${cell(gs[0])} | ${cell(gs[1])} | ${rat(g?.m, 1)} | ${cell(gs[2])} | ${rat(g?.m, 2)} | ${g?.greedyAgree !== undefined ? `${g.greedyAgree}/${g.tokens}` : 'n/a'} |`);
  }
  return L.join('\n');
}

export function contractRows(train: TrainRow[], infer: InferRow[]): ContractRow[] {
  const rows: ContractRow[] = [];
  const push = (name: string, m: Measured, target: number | null, i = 1, peerName = 'pytorch-cpu'): void => {
    const ours = m.sides[0]!.perSec;
    rows.push(peerRow(name, 'tokens/s', ours.median, peerName, m.sides[i]?.perSec.median ?? null, target, { spread: ours.spread }));
  };
  // the full-machine thread count carries the plain name (train-step-10M-memory); others get -t<n>
  const t = (n: number): string => (n === os.availableParallelism() ? '' : `-t${n}`);
  for (const r of train) push(`train-step-${r.size}-${r.memory ? 'memory' : 'anchor'}${t(r.threads)}`, r.m, targetOf(r.size, r.memory, 'train'));
  for (const r of infer) {
    const base = `${r.kind === 'prefill' ? 'prompt' : 'generate'}-${r.size}-${r.memory ? 'memory' : 'anchor'}${t(r.threads)}`;
    if (r.kind === 'prefill') push(base, r.m, null);
    else {
      push(base, r.m, null, 1, 'pytorch-cpu-kvcache');
      // hiermem (KV cache) against PyTorch re-running the whole context per token: not a like-for-like
      // pair any more (it was before hiermem had a cache); kept so the row names stay comparable
      push(`${base}-nocache`, r.m, null, 2, 'pytorch-cpu-nocache');
    }
  }
  return rows;
}

export function gitCommit(): string | null {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: packageRoot(), encoding: 'utf8' }).trim();
  } catch {
    return null;
  }
}

export interface PeerResult {
  machine: ReturnType<typeof machine>;
  started: Date;
  info: PeerInfo | null;
  peer: Record<string, unknown>;
  checks: EquivalenceResult[];
  train: TrainRow[];
  infer: InferRow[];
  notes: Record<string, unknown>;
  rows: ContractRow[];
  markdown: string;
}

/** The PyTorch comparison rows (equivalence checks first); used by bench/run.ts and by main below. */
export async function runPeerBench(o: PeerOptions): Promise<PeerResult> {
  const started = new Date();
  const native = loadNative();
  const savedThreads = native.getNumThreads();
  const mach = machine();
  const avail = ensureTorch(o.install);
  let peer: TorchPeer | null = null;
  let info: PeerInfo | null = null;
  if (avail.ok) {
    ({ peer, info } = await TorchPeer.start(o.threads[0]!));
    if (avail.message) process.stderr.write(`  ${avail.message}\n`);
  } else {
    process.stderr.write(`  ${avail.message}\n`);
  }
  process.stderr.write(`hiermem vs PyTorch: ${String(mach.cpuModel)}, ${String(mach.logicalCpus)} CPUs, node ${process.version}, addon ${native.version} (${native.blas}), ` +
    `PyTorch ${info?.torch ?? 'n/a'} (BLAS ${info?.blas.find((b) => b.includes('openblas')) ?? info?.blas.join(', ') ?? 'n/a'}), load avg ${(mach.loadAvgAtStart as number[]).join(' ')}\n`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hiermem-peer-bench-'));
  const idle = new IdleWaiter(o.idleWait, o.idleBudget);
  const checks: EquivalenceResult[] = [];
  const train: TrainRow[] = [];
  const infer: InferRow[] = [];
  const notes: Record<string, unknown> = {};
  try {
    for (const size of o.sizes) {
      const cfg = benchConfig(size);
      if (peer) {
        native.setNumThreads(o.threads[0]!);
        for (const memory of o.memory ? [false, true] : [false]) {
          const r = await checkEquivalence(peer, {
            label: `${size}-${memory ? 'memory' : 'anchor'}`, config: cfg, batchSize: BATCH, dir, step: !memory,
            memory: memory ? { ...MEMORY, distinct: DISTINCT_PATHS } as { k: number; levels: number[]; distinct: number } : null,
          }, o.threads[0]);
          process.stderr.write(`  check ${describe(r)}\n`);
          checks.push(r);
        }
      }
      for (const memory of o.memory ? [false, true] : [false]) train.push(...(await trainRows(size, memory, cfg, o, peer, idle, dir)));
      if (o.infer) infer.push(...(await inferRows(size, cfg, o, peer, idle, dir, notes)));
    }
  } finally {
    peer?.close();
    native.setNumThreads(savedThreads);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return {
    machine: mach, started, info, checks, train, infer, notes,
    peer: info ? { ...info, openmpBlas: avail.openmpBlas } : { unavailable: avail.message },
    rows: contractRows(train, infer), markdown: markdown(train, infer),
  };
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const r = await runPeerBench(o);
  const native = loadNative();
  process.stdout.write(`\n${r.markdown}\n\n`);
  for (const c of r.checks) process.stdout.write(`${describe(c)}\n`);
  for (const [k, v] of Object.entries(r.notes)) process.stdout.write(`${k}: ${typeof v === 'number' ? v.toExponential(2) : String(v)}\n`);
  const result = {
    machine: r.machine,
    date: r.started.toISOString(),
    durationS: Math.round((Date.now() - r.started.getTime()) / 100) / 10,
    commit: gitCommit(),
    loadAvgAtEnd: os.loadavg().map((x) => Math.round(x * 100) / 100),
    addon: { version: native.version, blas: native.blas },
    peer: r.peer,
    options: o,
    setup: { batch: BATCH, lr: LR, adamw: DEFAULT_ADAMW, memory: MEMORY, distinctPaths: DISTINCT_PATHS, memoryWeightDecay: MEMORY_WD },
    checks: r.checks.map(({ grads: _g, ...rest }) => rest),
    notes: r.notes,
    rows: r.rows,
    train: r.train.map((x) => ({ ...x })),
    infer: r.infer,
    markdown: r.markdown,
  };
  fs.mkdirSync(path.dirname(o.out), { recursive: true });
  fs.writeFileSync(o.out, JSON.stringify(result, null, 2) + '\n');
  process.stderr.write(`wrote ${path.relative(process.cwd(), o.out) || o.out} (${result.durationS} s)\n`);
  if (r.checks.some((c) => !c.pass)) {
    process.stderr.write('EQUIVALENCE CHECK FAILED: the timings above compare different computations\n');
    process.exitCode = 1;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  process.exit(1);
});
