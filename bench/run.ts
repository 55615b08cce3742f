/**
 * `npm run bench` — every benchmark of issue #5 in one invocation, the machine's limits measured in
 * the same run, results in bench/results/latest.json (the contract in bench/contract.ts) and a
 * Markdown table on stdout.
 *
 * Usage: npm run bench -- [--quick] [--only=limits,gather,scatter,ffn,tiers,scaling,gemm,train,infer,size,data,dist,hf]
 *        [--threads N] [--no-install] [--out FILE]
 *   --quick   fewer sizes and repetitions (< 3 min); the full run takes < 15 min on 2 cores
 *   --only    sections to run (the limits always run: other rows are fractions of them); data
 *             (the streaming pipeline on generated corpora up to 1 GB, bench/data.ts) and dist (2 MPI ranks, a
 *             sharded bank, bench/dist.ts) run only when named; so does hf (issue #15: an imported
 *             GQA Llama vs a PyTorch Llama on the same weights, and the HF tokenizer; bench/hf.ts)
 * Limits (issue #12): the fp32 FMA peak (register-bound FMA loop on every thread: the ceiling of
 * every FLOP/s row), our GEMM at a large square product (`gemmGflops`, also under its old name
 * `sgemmGflops`) and memcpy.
 * PyTorch (the peer of the gemm/train/infer rows) is installed with apt-get when missing and running
 * as root, else those rows carry peer null and a message says why.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadNative, nativeAddonPath, packageRoot } from '../lib/native.js';
import { limitRow, type ContractRow, type Limits } from './contract.js';
import { machine } from './machine.js';
import { dataRows } from './data.js';
import { distRows } from './dist.js';
import { hfRows, type HfBenchResult } from './hf.js';
import { fmaPeakGflops, gemmGflops, memcpyGBs } from './limits.js';
import { benchModelShapes, gemmRows, rateAtModelShapes, type ShapeRates } from './gemm.js';
import { ffnRows, gatherRows, scalingRows, tierRows, type MemoryBenchContext } from './memory.js';
import { IdleWaiter } from './peer-common.js';
import { benchConfig, gitCommit, runPeerBench, type PeerOptions, type PeerResult } from './peer-train.js';

const SECTIONS = ['limits', 'gather', 'scatter', 'ffn', 'tiers', 'scaling', 'gemm', 'train', 'infer', 'size', 'data', 'dist', 'hf'] as const;
type Section = (typeof SECTIONS)[number];

interface Options {
  quick: boolean;
  only: Set<Section>;
  threads: number;
  install: boolean;
  out: string;
}

function parseArgs(argv: string[]): Options {
  const o: Options = {
    // data (bench/data.ts) writes and prepares up to a 1 GB corpus: only when asked for
    quick: false, only: new Set(SECTIONS.filter((x) => x !== 'data' && x !== 'dist' && x !== 'hf')), threads: os.availableParallelism(), install: process.getuid?.() === 0,
    out: path.join(packageRoot(), 'bench', 'results', 'latest.json'),
  };
  for (let i = 0; i < argv.length; i++) {
    const [key, inline] = argv[i]!.split(/=(.*)/s, 2) as [string, string | undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`missing value after ${key}`);
      return v;
    };
    switch (key) {
      case '--quick': o.quick = true; break;
      case '--no-install': o.install = false; break;
      case '--install': o.install = true; break;
      case '--threads': o.threads = Number(value()); break;
      case '--out': o.out = path.resolve(value()); break;
      case '--only': {
        const names = value().split(',').map((s) => s.trim()).filter(Boolean);
        for (const n of names) if (!(SECTIONS as readonly string[]).includes(n)) throw new Error(`unknown section ${n} (have ${SECTIONS.join(', ')})`);
        o.only = new Set(['limits', ...names] as Section[]);
        break;
      }
      default: throw new Error(`unknown option ${key} (see the usage in bench/run.ts)`);
    }
  }
  if (!Number.isInteger(o.threads) || o.threads < 1) throw new Error(`--threads expects a positive integer`);
  return o;
}

const f = (x: number | null | undefined, d = 2): string => (x === null || x === undefined || !Number.isFinite(x) ? 'n/a' : Math.abs(x) >= 100 ? x.toFixed(0) : x.toFixed(d));

function table(rows: ContractRow[]): string {
  const L = ['| row | unit | ours | peer | peer value | ratio | fraction of limit | target | met |', '|---|---|---:|---|---:|---:|---:|---:|---|'];
  for (const r of rows) {
    const tgt = r.target === null ? '—' : r.band ? `1 ± ${f(1 - r.target)}` : r.upperBound ? `≤ ${f(r.target)}` : `≥ ${f(r.target)}`;
    const met = r.met === null ? '—' : r.met ? 'met' : '**missed**';
    L.push(`| ${r.name} | ${r.unit} | ${f(r.ours)} | ${r.peer ?? '—'} | ${f(r.peerValue)} | ${f(r.ratio)} | ${r.fractionOfLimit !== undefined ? `${f(r.fractionOfLimit)} of ${r.limit}` : '—'} | ${tgt} | ${met} |`);
  }
  return L.join('\n');
}

/**
 * Adds FLOP/s rows to the training rows: each training row's fraction of the FMA peak, and per model
 * (anchor only) its FLOP/s against our own GEMM's rate at that model's shapes (every shape of its
 * step, weighted by FLOPs; from the gemm section's measurements when it ran, else measured here).
 */
function flopRows(peer: PeerResult, limits: Limits, threads: number, quick: boolean, gemmRates: ShapeRates): { rows: ContractRow[]; shapeGemm: Record<string, number> } {
  const rows: ContractRow[] = [];
  const shapeGemm: Record<string, number> = {};
  for (const t of peer.train.filter((x) => x.threads === threads)) {
    const gflops = (t.m.sides[0]!.perSec.median * t.flopsPerToken) / 1e9;
    const row = peer.rows.find((r) => r.name === `train-step-${t.size}-${t.memory ? 'memory' : 'anchor'}`);
    if (row) Object.assign(row, { fractionOfLimit: gflops / limits.fmaPeakGflops, limit: 'fmaPeakGflops' });
    if (t.memory) continue;
    const atShapes = rateAtModelShapes(t.size, (s) => gemmRates.get(`${t.size}:${s.name}`) ??
      gemmGflops(s.M, s.N, s.K, quick ? 2 : 3, quick ? 0.1 : 0.25, s.transA, s.transB).median);
    shapeGemm[t.size] = atShapes;
    const target = t.size === '0.5M' ? null : 0.85;
    rows.push(limitRow(`train-step-${t.size}-anchor-gflops`, 'GFLOP/s', gflops, 'gemmAtModelShapes', atShapes, target, {
      spread: t.m.sides[0]!.perSec.spread,
      note: `model FLOPs (6·params·tokens + attention) per second; our GEMM at this model's ${benchModelShapes(t.size).length} step shapes ${f(atShapes, 1)} GFLOP/s, ` +
        `at 1536³ ${f(limits.gemmGflops, 1)}; FMA peak ${f(limits.fmaPeakGflops, 1)} (${f(gflops / limits.fmaPeakGflops)} of it)`,
    }));
  }
  return { rows, shapeGemm };
}

/** The CPU addon this run loaded, stripped as a prebuild is (strip --strip-unneeded into a temp file): < 5 MB. */
function prebuildSizeRow(): ContractRow | null {
  const file = nativeAddonPath();
  if (!file) return null;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hiermem-bench-strip-'));
  try {
    const out = path.join(dir, path.basename(file));
    let stripped = true;
    try {
      execFileSync('strip', ['--strip-unneeded', '-o', out, file], { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch {
      fs.copyFileSync(file, out);
      stripped = false;
    }
    const mb = fs.statSync(out).size / 1e6;
    const target = 5;
    return {
      name: 'prebuild-size', unit: 'MB', ours: mb, peer: null, peerValue: null, ratio: null, target, met: mb <= target, upperBound: true,
      note: `${path.relative(packageRoot(), file) || file}, ${stripped ? 'strip --strip-unneeded' : 'NOT stripped (no strip binary)'}; unstripped ${f(fs.statSync(file).size / 1e6)} MB`,
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const started = new Date();
  const native = loadNative();
  const saved = native.getNumThreads();
  native.setNumThreads(o.threads);
  const mach = machine();
  process.stderr.write(`hiermem bench${o.quick ? ' --quick' : ''}: ${mach.cpuModel}, ${mach.logicalCpus} CPUs, ${o.threads} threads, node ${process.version}, sections ${[...o.only].join(',')}\n`);
  const timing = o.quick ? { reps: 3, warmup: 1, seconds: 0.3 } : { reps: 5, warmup: 2, seconds: 0.8 };
  const idle = new IdleWaiter(o.quick ? 2 : 5, o.quick ? 10 : 60);

  // limits first: every fraction below refers to them
  const n = o.quick ? 768 : 1536;
  const fma = fmaPeakGflops(o.quick ? 5 : 9, o.quick ? 0.1 : 0.3);
  const gemm = gemmGflops(n, n, n, o.quick ? 3 : 5, o.quick ? 0.3 : 0.6);
  const memcpy = memcpyGBs(64 * 2 ** 20, o.quick ? 5 : 9);
  const limits: Limits = { fmaPeakGflops: fma.median, gemmGflops: gemm.median, sgemmGflops: gemm.median, memcpyGBs: memcpy.median };
  process.stderr.write(`  limits: FMA peak (${fma.level}, ${fma.threads} threads) ${f(fma.median, 1)} GFLOP/s [${f(fma.min, 1)}–${f(fma.max, 1)}], ` +
    `our gemm (${native.gemmKernel}) ${n}^3 ${f(gemm.median, 1)} GFLOP/s [${f(gemm.min, 1)}–${f(gemm.max, 1)}] = ${f(gemm.median / fma.median)} of peak, ` +
    `memcpy 64 MiB ${f(memcpy.median, 1)} GB/s [${f(memcpy.min, 1)}–${f(memcpy.max, 1)}]\n`);

  const rows: ContractRow[] = [];
  const detail: string[] = [];
  const ctx: MemoryBenchContext = { quick: o.quick, timing, idle, limits, threads: o.threads, detail };
  const log = (rs: ContractRow[]): void => {
    for (const r of rs) process.stderr.write(`  ${r.name}: ${f(r.ours)} ${r.unit}${r.ratio !== null ? `, ratio ${f(r.ratio)} vs ${r.peer}` : ''}${r.fractionOfLimit !== undefined ? `, ${f(r.fractionOfLimit)} of ${r.limit}` : ''}${r.met === false ? ' (target missed)' : ''}\n`);
    rows.push(...rs);
  };
  if (o.only.has('gather') || o.only.has('scatter')) log(await gatherRows(ctx, { gather: o.only.has('gather'), scatter: o.only.has('scatter') }));
  if (o.only.has('ffn')) log(await ffnRows(ctx));
  if (o.only.has('tiers')) log(await tierRows(ctx));
  if (o.only.has('scaling')) log(await scalingRows(ctx));
  let gemmRates: ShapeRates = new Map();
  let gemmPeer: string | null = null;
  if (o.only.has('gemm')) {
    const g = await gemmRows({ ...ctx, install: o.install }, o.quick ? ['0.5M'] : ['0.5M', '3.4M', '10M']);
    gemmRates = g.ours;
    gemmPeer = g.peer;
    log(g.rows);
  }
  let peer: PeerResult | null = null;
  let shapeGemm: Record<string, number> = {};
  if (o.only.has('train') || o.only.has('infer')) {
    const po: PeerOptions = {
      sizes: o.quick ? ['0.5M', '3.4M'] : ['0.5M', '3.4M', '10M'], threads: [o.threads], ...timing,
      memory: true, infer: o.only.has('infer'), genTokens: o.quick ? 8 : 32, idleWait: o.quick ? 2 : 5, idleBudget: o.quick ? 10 : 60,
      inferReps: 3, install: o.install, out: '',
    };
    peer = await runPeerBench(po);
    const fr = flopRows(peer, limits, o.threads, o.quick, gemmRates);
    shapeGemm = fr.shapeGemm;
    log([...(o.only.has('train') ? peer.rows.filter((r) => r.name.startsWith('train-step')) : []), ...fr.rows,
      ...peer.rows.filter((r) => !r.name.startsWith('train-step'))]);
    if (peer.checks.some((c) => !c.pass)) process.exitCode = 1;
  }
  if (o.only.has('size')) {
    const r = prebuildSizeRow();
    if (r) log([r]);
  }
  if (o.only.has('data')) log(await dataRows({ quick: o.quick, log: (s) => process.stderr.write(`${s}\n`) }));
  if (o.only.has('dist')) log(await distRows({ quick: o.quick, log: (s) => process.stderr.write(`${s}\n`) }));
  let hf: HfBenchResult | null = null;
  if (o.only.has('hf')) {
    hf = await hfRows({ quick: o.quick, threads: [...new Set([o.threads, 1])], install: o.install, log: (s) => process.stderr.write(`${s}\n`) });
    log(hf.rows);
    if (hf.checks.some((c) => !c.pass)) process.exitCode = 1;
  }
  native.setNumThreads(saved);

  const md = table(rows);
  process.stdout.write(`\n${md}\n`);
  if (hf) process.stdout.write(`\n${hf.markdown}\n`);
  if (detail.length) process.stdout.write(`\n| detail | ours | same-run comparison | ratio |\n|---|---|---|---|\n${detail.join('\n')}\n`);
  const result = {
    machine: `${mach.cpuModel}, ${mach.logicalCpus} CPUs, ${mach.memGiB} GiB, ${mach.platform}, node ${mach.node}`,
    date: started.toISOString(),
    commit: gitCommit(),
    rows,
    limits,
    // fields beyond the contract: how the run went
    durationS: Math.round((Date.now() - started.getTime()) / 100) / 10,
    quick: o.quick,
    threads: o.threads,
    sections: [...o.only],
    machineDetail: { ...mach, loadAvgAtEnd: os.loadavg().map((x) => Math.round(x * 100) / 100) },
    addon: { version: native.version, blas: native.blas, gemmKernel: native.gemmKernel, path: nativeAddonPath() },
    limitsDetail: {
      fmaPeak: fma, gemm: { n, ...gemm }, memcpy: { bytes: 64 * 2 ** 20, ...memcpy }, gemmAtModelShapes: shapeGemm,
      // the old names (OpenBLAS sgemm before issue #12), same values as gemm / gemmAtModelShapes
      sgemm: { n, ...gemm }, sgemmAtModelShapes: shapeGemm,
    },
    gemmPeer,
    peer: peer ? { ...peer.peer, checks: peer.checks.map(({ grads: _g, ...rest }) => rest), notes: peer.notes, markdown: peer.markdown } : null,
    markdown: md,
    detail,
    hf: hf ? { peer: hf.peer, checks: hf.checks, markdown: hf.markdown } : undefined,
  };
  fs.mkdirSync(path.dirname(o.out), { recursive: true });
  const tmp = `${o.out}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, JSON.stringify(result, null, 2) + '\n');
  fs.renameSync(tmp, o.out);
  process.stderr.write(`wrote ${path.relative(process.cwd(), o.out) || o.out} (${result.durationS} s)\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`hiermem bench: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  process.exit(1);
});
