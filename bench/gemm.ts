/**
 * Our GEMM vs PyTorch's torch.mm (issue #12): every GEMM shape of the bench models' training step
 * (bench/gemm-shapes.ts: each linear layer's forward NT, input gradient NN and weight gradient TN,
 * batch 8, byte vocabulary 259) and a 1024³ square product. Both sides run the same product with
 * the same thread count, alternating in the same window (bench/measure.ts); the peer is the bench's
 * PyTorch process (bench/peers/torch_model.py, `gemm_setup` / `gemm`), which gets transposed
 * operands as .t() views so that it sees the same transposition. Rates are GFLOP/s (2·M·N·K per
 * product); each row also carries its fraction of the machine's FMA peak.
 */
import { loadNative } from '../lib/native.js';
import { Rng } from '../lib/util/random.js';
import { limitRow, peerRow, type ContractRow, type Limits } from './contract.js';
import { modelGemmShapes, type GemmShape } from './gemm-shapes.js';
import { measure, ourRunner, type Runner, type Timing } from './measure.js';
import { ensureTorch, TorchPeer, type IdleWaiter } from './peer-common.js';
import { benchConfig } from './peer-train.js';

export const GEMM_BATCH = 8;

export interface GemmBenchContext {
  quick: boolean;
  timing: Timing;
  idle: IdleWaiter;
  limits: Limits;
  threads: number;
  install: boolean;
  detail: string[];
}

/** Our GFLOP/s at one shape (median over the repetitions), keyed `${size}:${shape name}`. */
export type ShapeRates = Map<string, number>;

export interface GemmBenchResult {
  rows: ContractRow[];
  /** our median GFLOP/s per model shape, for the training rows' "GEMM at the model's shapes" */
  ours: ShapeRates;
  peer: string | null;
}

/** The GEMM shapes of one bench model's training step (batch 8, byte vocabulary). */
export function benchModelShapes(size: string): GemmShape[] {
  const cfg = benchConfig(size);
  return modelGemmShapes(cfg, GEMM_BATCH, cfg.vocabSize);
}

/** How often a step runs a shape: every layer's linear layers once per layer, the classifier once. */
export function shapeMultiplicity(size: string, s: GemmShape): number {
  return s.name.startsWith('classifier') ? 1 : benchConfig(size).nLayers;
}

/**
 * Our GEMM's rate at a model's own shapes: the step's GEMM FLOPs over the time our GEMM takes for
 * them (each shape weighted by how often the step runs it), from per-shape rates in GFLOP/s.
 */
export function rateAtModelShapes(size: string, rate: (s: GemmShape) => number): number {
  let flop = 0, sec = 0;
  for (const s of benchModelShapes(size)) {
    const f = 2 * s.M * s.N * s.K * shapeMultiplicity(size, s);
    flop += f;
    sec += f / (rate(s) * 1e9);
  }
  return flop / sec / 1e9;
}

const trans = (s: GemmShape): string => `${s.transA ? 'T' : 'N'}${s.transB ? 'T' : 'N'}`;
const f1 = (x: number): string => x.toFixed(1);

export async function gemmRows(c: GemmBenchContext, sizes: string[]): Promise<GemmBenchResult> {
  const native = loadNative();
  native.setNumThreads(c.threads);
  const avail = ensureTorch(c.install);
  let peer: TorchPeer | null = null;
  let peerName: string | null = null;
  if (avail.ok) {
    const started = await TorchPeer.start(c.threads);
    peer = started.peer;
    peerName = `PyTorch ${started.info.torch} (${started.info.blas.find((b) => b.includes('openblas')) ?? started.info.blas.join(', ')})`;
  } else {
    process.stderr.write(`  ${avail.message}\n`);
  }
  const rows: ContractRow[] = [];
  const ours: ShapeRates = new Map();
  const ratios: number[] = [];
  const oursModel: number[] = [], peerModel: number[] = [];
  let worst: { ratio: number; what: string } | null = null;
  const rng = new Rng(7);
  const fill = (n: number): Float32Array => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = rng.uniform() - 0.5;
    return a;
  };
  const peak = c.limits.fmaPeakGflops;
  const timing: Timing = c.quick ? { reps: 3, warmup: 1, seconds: 0.1 } : { reps: 5, warmup: 2, seconds: 0.25 };
  try {
    const cases: { size: string; shape: GemmShape }[] = [
      { size: 'square', shape: { name: '1024', transA: false, transB: false, M: 1024, N: 1024, K: 1024 } },
      ...sizes.flatMap((size) => benchModelShapes(size).map((shape) => ({ size, shape }))),
    ];
    for (const { size, shape: s } of cases) {
      const { M, N, K } = s;
      const a = fill(M * K), b = fill(N * K), cm = new Float32Array(M * N);
      const lda = s.transA ? M : K, ldb = s.transB ? K : N;
      const sides: { name: string; run: Runner }[] = [
        { name: 'hiermem', run: await ourRunner(() => native.gemm(s.transA, s.transB, M, N, K, 1, a, lda, b, ldb, 0, cm, N)) },
      ];
      if (peer) {
        await peer.request({ cmd: 'gemm_setup', transA: s.transA, transB: s.transB, M, N, K, threads: c.threads });
        sides.push({
          name: 'pytorch',
          run: async (n) => {
            const r = await peer!.request({ cmd: 'gemm', reps: n, threads: c.threads });
            return { ms: Number(r.ms), cpuMs: Number(r.cpuMs) };
          },
        });
      }
      const label = size === 'square' ? `gemm 1024³` : `gemm ${size} ${s.name} (${trans(s)} ${M}x${N}x${K})`;
      const m = await measure(label, (2 * M * N * K) / 1e9, sides, c.threads, timing, c.idle);
      const o = m.sides[0]!.perSec, p = m.sides[1]?.perSec ?? null;
      const ratio = p ? o.median / p.median : null;
      const note = `${trans(s)} ${M}x${N}x${K}, ${c.threads} threads; ${f1(o.median)} GFLOP/s = ${(100 * o.median / peak).toFixed(0)}% of the FMA peak`;
      process.stderr.write(`  ${label}: ours ${f1(o.median)} GFLOP/s [${f1(o.min)}–${f1(o.max)}]${p ? `, torch.mm ${f1(p.median)} [${f1(p.min)}–${f1(p.max)}], ratio ${ratio!.toFixed(2)}` : ''}\n`);
      c.detail.push(`| gemm ${size === 'square' ? '1024³' : `${size} ${s.name}`} (${trans(s)} ${M}×${N}×${K}) | ${f1(o.median)} GFLOP/s [${f1(o.min)}–${f1(o.max)}] | torch.mm ${p ? `${f1(p.median)} GFLOP/s` : 'n/a'} | ${ratio !== null ? ratio.toFixed(2) : 'n/a'} |`);
      const extra = { spread: o.spread, fractionOfLimit: o.median / peak, limit: 'fmaPeakGflops' as const, note };
      if (size === 'square') {
        rows.push(peerRow('gemm-1024', 'GFLOP/s', o.median, 'pytorch-cpu', p?.median ?? null, null, extra));
        rows.push(limitRow('gemm-1024-fma-peak', 'GFLOP/s', o.median, 'fmaPeakGflops', peak, 0.8, { spread: o.spread, note }));
        continue;
      }
      ours.set(`${size}:${s.name}`, o.median);
      rows.push(peerRow(`gemm-${size}-${s.name.replace(/\s+/g, '-')}`, 'GFLOP/s', o.median, 'pytorch-cpu', p?.median ?? null, 1.0, extra));
      oursModel.push(o.median);
      if (p && ratio !== null) {
        peerModel.push(p.median);
        ratios.push(ratio);
        if (!worst || ratio < worst.ratio) worst = { ratio, what: `${size} ${s.name} (${trans(s)} ${M}x${N}x${K})` };
      }
    }
  } finally {
    peer?.close();
  }
  if (oursModel.length) {
    const geo = (xs: number[]): number => Math.exp(xs.reduce((t, x) => t + Math.log(x), 0) / xs.length);
    const haveAll = ratios.length === oursModel.length;
    rows.push(peerRow('gemm-model-shapes-geomean', 'GFLOP/s', geo(oursModel), 'pytorch-cpu', haveAll ? geo(peerModel) : null, 1.1, {
      fractionOfLimit: geo(oursModel) / peak, limit: 'fmaPeakGflops',
      note: `geometric mean over ${oursModel.length} shapes of the ${sizes.join(' / ')} models (ratio = geometric mean of the per-shape ratios)` +
        (worst ? `; lowest ratio ${worst.ratio.toFixed(2)} at ${worst.what}` : ''),
    }));
  }
  return { rows, ours, peer: peerName };
}
