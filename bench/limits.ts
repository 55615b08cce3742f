/**
 * The machine's limits, measured in the same run as the rows they bound (issue #5 item 3, issue #12):
 * the fp32 FMA peak (a register-bound FMA loop on every pool thread at the SIMD level our GEMM
 * uses: the ceiling of every FLOP/s row), our own GEMM's rate (large square product and the
 * model's own GEMM shapes; `sgemmGflops` in the limits object, which meant OpenBLAS sgemm before
 * the addon had its own GEMM) and memcpy bandwidth (our pool's threads each copying a slice).
 */
import { performance } from 'node:perf_hooks';
import { loadNative } from '../lib/native.js';
import { Rng } from '../lib/util/random.js';
import { stat, type Stat } from './machine.js';

function randomMatrix(rng: Rng, n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.uniform() - 0.5;
  return a;
}

/**
 * GFLOP/s of our GEMM, C (M,N) = op(A) op(B) (default A (M,K) · B (N,K)^T, the forward's NT form),
 * `reps` repetitions of ~`seconds` each.
 */
export function gemmGflops(M: number, N: number, K: number, reps: number, seconds: number, transA = false, transB = true): Stat {
  const native = loadNative();
  const rng = new Rng(7);
  const a = randomMatrix(rng, M * K), b = randomMatrix(rng, N * K), c = new Float32Array(M * N);
  const lda = transA ? M : K, ldb = transB ? K : N;
  const call = (): void => native.gemm(transA, transB, M, N, K, 1, a, lda, b, ldb, 0, c, N);
  for (let i = 0; i < 2; i++) call();
  let t0 = performance.now();
  call();
  const one = Math.max((performance.now() - t0) / 1000, 1e-5);
  const calls = Math.max(2, Math.round(seconds / one));
  const samples: number[] = [];
  for (let r = 0; r < reps; r++) {
    t0 = performance.now();
    for (let i = 0; i < calls; i++) call();
    samples.push((2 * M * N * K * calls) / ((performance.now() - t0) / 1000) / 1e9);
  }
  return stat(samples);
}

/** The old name: the GEMM limit was OpenBLAS sgemm until the addon had its own GEMM. */
export const sgemmGflops = gemmGflops;

export interface FmaPeak extends Stat {
  /** SIMD level of the loop (the GEMM's): avx512, avx2 or generic. */
  level: string;
  threads: number;
  lanes: number;
  chains: number;
}

/**
 * The machine's fp32 FMA peak in GFLOP/s: the addon's register-bound FMA loop (cpp/kernels/fma_peak.cc)
 * on every pool thread, `reps` repetitions of ~`seconds` each; the median is the limit (the best
 * repetition is kept in `max`).
 */
export function fmaPeakGflops(reps: number, seconds: number): FmaPeak {
  const native = loadNative();
  if (typeof native.fmaPeak !== 'function') throw new Error('the loaded addon has no fmaPeak (built before issue #12): rebuild it with npm run build:native');
  native.fmaPeak(1e5); // warm up: wakes the pool and the vector units
  const probe = native.fmaPeak(1e6);
  const iters = Math.max(1e5, Math.round((1e6 * seconds) / Math.max(probe.seconds, 1e-6)));
  const samples: number[] = [];
  let last = probe;
  for (let r = 0; r < reps; r++) {
    last = native.fmaPeak(iters);
    samples.push(last.flops / last.seconds / 1e9);
  }
  return { ...stat(samples), level: last.level, threads: last.threads, lanes: last.lanes, chains: last.chains };
}

/**
 * GB/s of memcpy (bytes read + bytes written, the same accounting as the gather row), split over
 * the addon's thread pool like the gather it bounds.
 */
export function memcpyGBs(bytes: number, reps: number): Stat {
  const native = loadNative();
  const n = Math.floor(bytes / 4);
  const src = new Float32Array(n).fill(1), dst = new Float32Array(n);
  for (let i = 0; i < 3; i++) native.copyParallel(dst, src);
  const samples: number[] = [];
  for (let r = 0; r < reps; r++) {
    const calls = 8;
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) native.copyParallel(dst, src);
    samples.push((2 * n * 4 * calls) / ((performance.now() - t0) / 1000) / 1e9);
  }
  return stat(samples);
}
