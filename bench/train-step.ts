/**
 * Training-step throughput of the anchor model on the native CPU core.
 *
 * For each preset (byte vocabulary, batch 8, random tokens) and thread count, one step is what the
 * trainer does: zeroGrad + forwardBackward + AdamW step (global norm, clip, update). After 3 warm-up
 * steps, `reps` repetitions of N steps each are timed (N sized so that one repetition takes about
 * `--seconds`); we report the median and the spread (min..max) over repetitions.
 * Model FLOPs come from trainFlopsPerToken (lib/model/config.ts). The same run measures the fp32
 * GEMM rate of our own addon's BLAS (matmulNT, n = 1024) and reports the step's GFLOP/s against it.
 *
 * Usage: node dist/bench/train-step.js [--presets small,medium,large] [--threads 1,2] [--reps 5]
 *        [--seconds 2] [--gemm-n 1024] [--idle-wait 120] [--out bench/results/latest.json]
 *
 * The machine this runs on may be shared: before each measurement the bench waits (up to
 * --idle-wait seconds) until other processes use less than a quarter of a core, and records how
 * busy the machine was (busyCoresBefore) and how much CPU our own threads got (cpuShare).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { loadNative, packageRoot } from '../lib/native.js';
import { AnchorModel, type Batch } from '../lib/model/anchor.js';
import { MODEL_PRESETS, resolveModelConfig, trainFlopsPerToken, type ModelConfig } from '../lib/model/config.js';
import { AdamW } from '../lib/train/adamw.js';
import { ByteTokenizer } from '../lib/data/tokenizer.js';
import { Rng } from '../lib/util/random.js';
import { busyCores, machine, stat, type Stat } from './machine.js';

interface Options {
  presets: string[];
  threads: number[];
  reps: number;
  seconds: number;
  gemmN: number;
  batch: number;
  warmup: number;
  /** Before each measurement, wait up to this many seconds for the other processes to go quiet. */
  idleWait: number;
  out: string;
}

function parseArgs(argv: string[]): Options {
  const opts: Options = {
    presets: ['small', 'medium', 'large'],
    threads: [1, 2],
    reps: 5,
    seconds: 2,
    gemmN: 1024,
    batch: 8,
    warmup: 3,
    idleWait: 120,
    out: path.join(packageRoot(), 'bench', 'results', 'latest.json'),
  };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i];
    const val = argv[i + 1];
    if (val === undefined) throw new Error(`missing value after ${key}`);
    const num = (): number => {
      const n = Number(val);
      if (!Number.isFinite(n) || n <= 0) throw new Error(`${key} expects a positive number, got ${val}`);
      return n;
    };
    switch (key) {
      case '--presets': opts.presets = val.split(','); break;
      case '--threads': opts.threads = val.split(',').map((s) => Number(s)); break;
      case '--reps': opts.reps = Math.round(num()); break;
      case '--seconds': opts.seconds = num(); break;
      case '--gemm-n': opts.gemmN = Math.round(num()); break;
      case '--batch': opts.batch = Math.round(num()); break;
      case '--warmup': opts.warmup = Math.round(num()); break;
      case '--idle-wait':
        opts.idleWait = Number(val);
        if (!(opts.idleWait >= 0)) throw new Error(`--idle-wait expects seconds >= 0, got ${val}`);
        break;
      case '--out': opts.out = path.resolve(val); break;
      default: throw new Error(`unknown option ${key}`);
    }
    i++;
  }
  for (const p of opts.presets) if (!(p in MODEL_PRESETS)) throw new Error(`unknown preset ${p} (have ${Object.keys(MODEL_PRESETS).join(', ')})`);
  for (const t of opts.threads) if (!Number.isInteger(t) || t < 1) throw new Error(`bad thread count ${t}`);
  return opts;
}

// ---- statistics -------------------------------------------------------------------------------

// ---- machine load ------------------------------------------------------------------------------

/** Waits until other processes use < 0.25 cores (or maxS passes); returns the last reading. */
async function waitForIdle(maxS: number, what: string): Promise<number> {
  const deadline = Date.now() + maxS * 1000;
  let busy = await busyCores(1000);
  let warned = false;
  while (busy >= 0.25 && Date.now() < deadline) {
    if (!warned) process.stderr.write(`  (machine busy: ${busy.toFixed(2)} cores used by others; waiting before ${what})\n`);
    warned = true;
    busy = await busyCores(2000);
  }
  if (busy >= 0.25) process.stderr.write(`  (still busy, ${busy.toFixed(2)} cores: measuring ${what} anyway)\n`);
  return busy;
}

// ---- GEMM reference ---------------------------------------------------------------------------

interface GemmResult {
  threads: number;
  n: number;
  gflops: Stat;
  busyCoresBefore?: number;
}

function measureGemm(threads: number, n: number, reps: number): GemmResult {
  const native = loadNative();
  native.setNumThreads(threads);
  const rng = new Rng(7);
  const a = new Float32Array(n * n);
  const b = new Float32Array(n * n);
  for (let i = 0; i < a.length; i++) a[i] = rng.uniform() - 0.5;
  for (let i = 0; i < b.length; i++) b[i] = rng.uniform() - 0.5;
  const c = new Float32Array(n * n);
  const flop = 2 * n * n * n;
  for (let i = 0; i < 3; i++) native.matmulNT(c, a, b, n, n, n);
  // calls per repetition: about 0.5 s
  let t0 = performance.now();
  native.matmulNT(c, a, b, n, n, n);
  const one = Math.max((performance.now() - t0) / 1000, 1e-4);
  const calls = Math.max(3, Math.round(0.5 / one));
  const samples: number[] = [];
  for (let r = 0; r < reps; r++) {
    t0 = performance.now();
    for (let i = 0; i < calls; i++) native.matmulNT(c, a, b, n, n, n);
    const dt = (performance.now() - t0) / 1000;
    samples.push((flop * calls) / dt / 1e9);
  }
  return { threads, n, gflops: stat(samples) };
}

// ---- training step ----------------------------------------------------------------------------

interface StepResult {
  preset: string;
  threads: number;
  params: number;
  config: ModelConfig;
  batch: number;
  tokensPerStep: number;
  flopsPerToken: number;
  stepsPerRep: number;
  reps: number;
  msPerStep: Stat;
  tokensPerSec: Stat;
  gflops: Stat;
  /**
   * CPU time this process got during the timed repetitions / (wall time x threads). Well below 1
   * means other processes took our cores (a noisy, shared machine) or our threads sat idle.
   */
  cpuShare: number;
  /** Cores other processes used just before the measurement (see waitForIdle). */
  busyCoresBefore: number;
  finalLoss: number;
}

function randomBatch(rng: Rng, batch: number, seqLen: number, vocab: number): Batch {
  const tokens = new Int32Array(batch * seqLen);
  const targets = new Int32Array(batch * seqLen);
  for (let i = 0; i < tokens.length; i++) {
    tokens[i] = rng.int(vocab);
    targets[i] = rng.int(vocab);
  }
  return { tokens, targets, batchSize: batch };
}

async function measureStep(preset: string, threads: number, opts: Options): Promise<StepResult> {
  const native = loadNative();
  native.setNumThreads(threads);
  const vocabSize = ByteTokenizer.VOCAB_SIZE;
  const config = resolveModelConfig({ ...MODEL_PRESETS[preset]!, vocabSize, seed: 1 });
  const model = AnchorModel.create(config, { maxBatch: opts.batch });
  const optimizer = new AdamW(model);
  const rng = new Rng(42);
  const batches = Array.from({ length: 4 }, () => randomBatch(rng, opts.batch, config.seqLen, vocabSize));
  let k = 0;
  let loss = NaN;
  const step = async (): Promise<void> => {
    model.zeroGrad();
    loss = await model.forwardBackward(batches[k++ % batches.length]!);
    await optimizer.step(model, 1e-4);
  };
  const busyCoresBefore = await waitForIdle(opts.idleWait, `${preset} threads=${threads}`);
  for (let i = 0; i < opts.warmup; i++) await step();
  let t0 = performance.now();
  await step();
  const one = (performance.now() - t0) / 1000;
  const stepsPerRep = Math.max(1, Math.round(opts.seconds / one));

  const tokensPerStep = opts.batch * config.seqLen;
  const flopsPerToken = trainFlopsPerToken(config);
  const ms: number[] = [];
  const tps: number[] = [];
  const gf: number[] = [];
  const cpu0 = process.cpuUsage();
  const wall0 = performance.now();
  for (let r = 0; r < opts.reps; r++) {
    t0 = performance.now();
    for (let i = 0; i < stepsPerRep; i++) await step();
    const dt = (performance.now() - t0) / 1000;
    ms.push((dt * 1000) / stepsPerRep);
    tps.push((tokensPerStep * stepsPerRep) / dt);
    gf.push((tokensPerStep * stepsPerRep * flopsPerToken) / dt / 1e9);
  }
  const cpu = process.cpuUsage(cpu0);
  const cpuShare = (cpu.user + cpu.system) / 1e3 / ((performance.now() - wall0) * threads);
  if (!Number.isFinite(loss)) throw new Error(`${preset}: loss became ${loss}`);
  const result: StepResult = {
    preset,
    threads,
    params: model.paramCount,
    config,
    batch: opts.batch,
    tokensPerStep,
    flopsPerToken,
    stepsPerRep,
    reps: opts.reps,
    msPerStep: stat(ms),
    tokensPerSec: stat(tps),
    gflops: stat(gf),
    cpuShare,
    busyCoresBefore,
    finalLoss: loss,
  };
  model.dispose();
  return result;
}

// ---- report -----------------------------------------------------------------------------------

const fmt = (x: number, d = 0): string => x.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
const pct = (x: number): string => `${(100 * x).toFixed(0)}%`;

function markdown(steps: StepResult[], gemm: GemmResult[], allThreads: number): string {
  const g = new Map(gemm.map((r) => [r.threads, r.gflops.median]));
  const gAll = g.get(allThreads) ?? NaN;
  const lines: string[] = [];
  lines.push(`| preset | params | threads | ms/step (median) | tokens/s median [min–max] | GFLOP/s median [min–max] | % of GEMM, same threads | % of GEMM, ${allThreads} threads | CPU share |`);
  lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const s of steps) {
    const gs = g.get(s.threads) ?? NaN;
    lines.push(
      `| ${s.preset} | ${(s.params / 1e6).toFixed(2)}M | ${s.threads} | ${fmt(s.msPerStep.median, 1)} | ` +
        `${fmt(s.tokensPerSec.median)} [${fmt(s.tokensPerSec.min)}–${fmt(s.tokensPerSec.max)}] | ` +
        `${fmt(s.gflops.median, 1)} [${fmt(s.gflops.min, 1)}–${fmt(s.gflops.max, 1)}] | ` +
        `${Number.isFinite(gs) ? pct(s.gflops.median / gs) : 'n/a'} | ${Number.isFinite(gAll) ? pct(s.gflops.median / gAll) : 'n/a'} | ${pct(s.cpuShare)} |`,
    );
  }
  lines.push('');
  lines.push('| fp32 GEMM (matmulNT, our addon) | threads | GFLOP/s median [min–max] |');
  lines.push('|---|---:|---:|');
  for (const r of gemm) {
    lines.push(`| ${r.n}×${r.n}×${r.n} | ${r.threads} | ${fmt(r.gflops.median, 1)} [${fmt(r.gflops.min, 1)}–${fmt(r.gflops.max, 1)}] |`);
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const native = loadNative();
  const savedThreads = native.getNumThreads();
  const allThreads = os.availableParallelism();
  const mach = machine();
  const started = new Date();
  process.stderr.write(
    `hiermem train-step bench: ${mach.cpuModel}, ${mach.logicalCpus} CPUs, node ${mach.node}, addon ${native.version} (${native.blas}), ` +
      `load avg ${mach.loadAvgAtStart.join(' ')}\n`,
  );

  const gemmThreads = [...new Set([...opts.threads, allThreads])].sort((a, b) => a - b);
  const gemm: GemmResult[] = [];
  for (const t of gemmThreads) {
    const busy = await waitForIdle(opts.idleWait, `GEMM threads=${t}`);
    const r = { ...measureGemm(t, opts.gemmN, opts.reps), busyCoresBefore: busy };
    process.stderr.write(`  GEMM n=${opts.gemmN} threads=${t}: ${r.gflops.median.toFixed(1)} GFLOP/s (spread ${pct(r.gflops.spread)})\n`);
    gemm.push(r);
  }

  const steps: StepResult[] = [];
  for (const preset of opts.presets) {
    for (const t of opts.threads) {
      const r = await measureStep(preset, t, opts);
      process.stderr.write(
        `  ${preset} (${(r.params / 1e6).toFixed(2)}M) threads=${t}: ${r.msPerStep.median.toFixed(1)} ms/step, ` +
          `${fmt(r.tokensPerSec.median)} tok/s, ${r.gflops.median.toFixed(1)} GFLOP/s (spread ${pct(r.tokensPerSec.spread)}, CPU share ${pct(r.cpuShare)}, ${r.stepsPerRep} steps x ${r.reps})\n`,
      );
      steps.push(r);
    }
  }

  // GEMM again at the end: if the machine's load changed during the run, the two differ.
  const gemmAfter = measureGemm(allThreads, opts.gemmN, opts.reps);
  const loadAvgAtEnd = os.loadavg().map((x) => Math.round(x * 100) / 100);
  native.setNumThreads(savedThreads);

  const table = markdown(steps, gemm, allThreads);
  process.stdout.write(`\n${table}\n\nGEMM (${allThreads} threads) re-measured after the steps: ${gemmAfter.gflops.median.toFixed(1)} GFLOP/s\n`);

  const result = {
    date: started.toISOString(),
    durationS: Math.round((Date.now() - started.getTime()) / 100) / 10,
    machine: { ...mach, loadAvgAtEnd },
    addon: { version: native.version, blas: native.blas },
    options: opts,
    gemm,
    gemmAfter,
    steps,
    markdown: table,
  };
  fs.mkdirSync(path.dirname(opts.out), { recursive: true });
  fs.writeFileSync(opts.out, JSON.stringify(result, null, 2) + '\n');
  process.stderr.write(`wrote ${path.relative(process.cwd(), opts.out) || opts.out}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  process.exit(1);
});
