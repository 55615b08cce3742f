/**
 * The machine's limits, measured in the same run as the rows they bound (issue #5, item 3):
 * fp32 GEMM rate (OpenBLAS sgemm through our pool, all threads, large square product and the
 * model's own GEMM shapes) and memcpy bandwidth (our pool's threads each copying a slice).
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

/** GFLOP/s of C (M,N) = A (M,K) · B (N,K)^T, `reps` repetitions of ~`seconds` each. */
export function sgemmGflops(M: number, N: number, K: number, reps: number, seconds: number): Stat {
  const native = loadNative();
  const rng = new Rng(7);
  const a = randomMatrix(rng, M * K), b = randomMatrix(rng, N * K), c = new Float32Array(M * N);
  for (let i = 0; i < 2; i++) native.matmulNT(c, a, b, M, N, K);
  let t0 = performance.now();
  native.matmulNT(c, a, b, M, N, K);
  const one = Math.max((performance.now() - t0) / 1000, 1e-5);
  const calls = Math.max(2, Math.round(seconds / one));
  const samples: number[] = [];
  for (let r = 0; r < reps; r++) {
    t0 = performance.now();
    for (let i = 0; i < calls; i++) native.matmulNT(c, a, b, M, N, K);
    samples.push((2 * M * N * K * calls) / ((performance.now() - t0) / 1000) / 1e9);
  }
  return stat(samples);
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
