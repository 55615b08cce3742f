/**
 * Our GEMM (cpp/kernels/gemm.cc) against a float64 reference: every transposition, alpha and beta,
 * leading dimensions wider than the rows, a grid of small and odd sizes (M, N, K in 1..70) and every
 * GEMM shape of the 0.5M / 3.4M / 10M models' forward and backward passes (sampled elements there).
 * Also: beta = 0 never reads C, NaN and Inf in an input reach the output, reruns are bit-identical
 * at 1 and 2 threads (and equal across them: threads split output tiles only), and bad arguments
 * fail with typed errors. The SIMD level is the process's (HIERMEM_SIMD): test/simd-paths.test.ts
 * reruns this file at each lower level.
 *
 * Error bound per element: |c - ref| <= (K + 2) * 2^-23 * (|alpha| * sum_k |a_ik b_kj| + |beta c_ij|),
 * the classic fp32 dot-product bound with a factor ~2 of slack; a wrong index or a lost k block
 * gives errors of order 1 and fails.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { loadNative } from '../lib/native.js';
import { MODEL_PRESETS } from '../lib/model/config.js';
import { modelGemmShapes } from '../bench/gemm-shapes.js';
import { Rng, assertThrowsCode, randn32 } from './helpers.js';

const native = loadNative();
const threads0 = native.getNumThreads();
after(() => native.setNumThreads(threads0));

const EPS = 2 ** -23;

interface Case {
  ta: boolean;
  tb: boolean;
  M: number;
  N: number;
  K: number;
  alpha: number;
  beta: number;
  lda: number;
  ldb: number;
  ldc: number;
  a: Float32Array;
  b: Float32Array;
  c: Float32Array;
}

function makeCase(rng: Rng, ta: boolean, tb: boolean, M: number, N: number, K: number, alpha: number, beta: number, pad: number): Case {
  const lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
  return {
    ta, tb, M, N, K, alpha, beta, lda, ldb, ldc,
    a: randn32(rng, Math.max(1, (ta ? K : M) * lda)),
    b: randn32(rng, Math.max(1, (tb ? N : K) * ldb)),
    c: randn32(rng, Math.max(1, M * ldc)),
  };
}

const opA = (c: Case, i: number, k: number) => (c.ta ? c.a[k * c.lda + i]! : c.a[i * c.lda + k]!);
const opB = (c: Case, k: number, j: number) => (c.tb ? c.b[j * c.ldb + k]! : c.b[k * c.ldb + j]!);

function runGemm(c: Case, out: Float32Array): void {
  native.gemm(c.ta, c.tb, c.M, c.N, c.K, c.alpha, c.a, c.lda, c.b, c.ldb, c.beta, out, c.ldc);
}

/** Checks elements (all, or `sample` random ones) of `got` (the product of c, C prefilled with c.c). */
function checkElements(c: Case, got: Float32Array, label: string, rng: Rng, sample = 0): void {
  const check = (i: number, j: number) => {
    let s = 0, mag = 0;
    for (let k = 0; k < c.K; k++) {
      const p = opA(c, i, k) * opB(c, k, j);
      s += p;
      mag += Math.abs(p);
    }
    const c0 = c.c[i * c.ldc + j]!;
    const ref = c.alpha * s + (c.beta === 0 ? 0 : c.beta * c0);
    const bound = (c.K + 2) * EPS * (Math.abs(c.alpha) * mag + Math.abs(c.beta * c0)) + 1e-30;
    const v = got[i * c.ldc + j]!;
    if (!(Math.abs(v - ref) <= bound))
      assert.fail(`${label}: C[${i}][${j}] = ${v}, float64 reference ${ref} (bound ${bound.toExponential(2)})`);
  };
  if (sample > 0) for (let t = 0; t < sample; t++) check(rng.int(0, c.M), rng.int(0, c.N));
  else for (let i = 0; i < c.M; i++) for (let j = 0; j < c.N; j++) check(i, j);
  // the padding between rows of C is never written
  for (let i = 0; i < c.M; i++)
    for (let j = c.N; j < c.ldc && i * c.ldc + j < got.length; j++)
      assert.equal(got[i * c.ldc + j], c.c[i * c.ldc + j], `${label}: C padding at row ${i} column ${j} was written`);
}

const TRANS: [boolean, boolean][] = [[false, false], [false, true], [true, false], [true, true]];
const tname = (ta: boolean, tb: boolean) => `${ta ? 'T' : 'N'}${tb ? 'T' : 'N'}`;

describe(`gemm (${native.gemmKernel})`, () => {
  test('reports its kernel, and links no BLAS', () => {
    assert.ok(['avx512', 'avx2', 'generic'].includes(native.gemmKernel), native.gemmKernel);
    const want = process.env.HIERMEM_SIMD;
    if (want === 'avx2' || want === 'generic') assert.ok(native.gemmKernel === want || native.gemmKernel === 'generic', `HIERMEM_SIMD=${want} but the kernel is ${native.gemmKernel}`);
    assert.equal(native.blas, 'none (own gemm)');
  });

  test('small and odd sizes (1..70), every transposition, alpha/beta, padded leading dims, 1 and 2 threads', () => {
    const rng = new Rng(1201);
    const sizes = [1, 2, 3, 5, 7, 11, 12, 13, 16, 17, 31, 32, 33, 47, 64, 69, 70];
    const ab: [number, number][] = [[1, 0], [0.7, 0.3], [-1.5, 1], [2, -0.5]];
    for (const th of [1, 2]) {
      native.setNumThreads(th);
      for (let n = 0; n < 48; n++) {
        const [ta, tb] = TRANS[n % 4]!;
        const [alpha, beta] = ab[(n >> 2) % 4]!;
        const M = sizes[rng.int(0, sizes.length)]!, N = sizes[rng.int(0, sizes.length)]!, K = sizes[rng.int(0, sizes.length)]!;
        const c = makeCase(rng, ta, tb, M, N, K, alpha, beta, n % 3);
        const got = c.c.slice();
        runGemm(c, got);
        checkElements(c, got, `${tname(ta, tb)} ${M}x${N}x${K} alpha ${alpha} beta ${beta} threads ${th}`, rng);
      }
    }
  });

  test('sizes that cross the k block and span many tiles with ragged edges', () => {
    const rng = new Rng(1202);
    native.setNumThreads(2);
    for (const [M, N, K] of [[131, 97, 385], [25, 257, 800], [300, 33, 769], [2, 1000, 1], [1000, 2, 3]] as const)
      for (const [ta, tb] of TRANS) {
        const c = makeCase(rng, ta, tb, M, N, K, 0.9, 0.5, 1);
        const got = c.c.slice();
        runGemm(c, got);
        checkElements(c, got, `${tname(ta, tb)} ${M}x${N}x${K}`, rng, 400);
      }
  });

  test('every GEMM shape of the 0.5M, 3.4M and 10M models (forward and backward), sampled elements', () => {
    const rng = new Rng(1203);
    native.setNumThreads(2);
    const models = [
      { dModel: 128, nHeads: 4, headDim: 32, ffnHidden: 384, seqLen: 128 },  // 0.5M
      { dModel: 256, nHeads: 4, headDim: 64, ffnHidden: 704, seqLen: 256 },  // 3.4M
      MODEL_PRESETS.large!,  // 10M
    ];
    for (const dims of models)
      for (const s of modelGemmShapes(dims, 8, 259)) {
        const beta = s.transA ? 1 : 0;  // weight gradients accumulate, like the model's
        const c = makeCase(rng, s.transA, s.transB, s.M, s.N, s.K, 1, beta, 0);
        const got = c.c.slice();
        runGemm(c, got);
        checkElements(c, got, `d${dims.dModel} ${s.name} ${s.M}x${s.N}x${s.K}`, rng, 150);
      }
  });

  test('beta = 0 writes C without reading it (NaN in C does not survive); K = 0 and alpha = 0 scale C', () => {
    const rng = new Rng(1204);
    for (const [M, N, K] of [[5, 7, 3], [100, 64, 130]] as const) {
      const c = makeCase(rng, false, true, M, N, K, 1, 0, 0);
      const got = new Float32Array(c.c.length).fill(NaN);
      runGemm(c, got);
      assert.ok(got.every(Number.isFinite), `${M}x${N}x${K}: NaN in C leaked through beta = 0`);
    }
    const c = makeCase(rng, false, false, 4, 5, 6, 1, 0.5, 0);
    const got = c.c.slice();
    native.gemm(false, false, 4, 5, 0, 1, c.a, 1, c.b, 5, 0.5, got, 5);
    assert.deepEqual(got, c.c.map((v) => Math.fround(0.5 * v)));
    native.gemm(false, false, 4, 5, 6, 0, c.a, 6, c.b, 5, 0, got, 5);
    assert.ok(got.every((v) => v === 0));
  });

  test('NaN and Inf in A or B reach the output (small and packed multi-block sizes, 2 threads)', () => {
    const rng = new Rng(1205);
    native.setNumThreads(2);
    for (const [M, N, K] of [[6, 9, 5], [257, 130, 800]] as const)
      for (const [ta, tb] of TRANS) {
        const c = makeCase(rng, ta, tb, M, N, K, 1, 0, 0);
        const i = rng.int(0, M), k = rng.int(0, K), j = rng.int(0, N);
        c.a[ta ? k * c.lda + i : i * c.lda + k] = NaN;  // row i of C becomes NaN
        const k2 = (k + 1) % K;
        c.b[tb ? j * c.ldb + k2 : k2 * c.ldb + j] = Infinity;  // column j non-finite
        const got = c.c.slice();
        runGemm(c, got);
        for (let jj = 0; jj < N; jj++) assert.ok(Number.isNaN(got[i * c.ldc + jj]), `${tname(ta, tb)} ${M}x${N}x${K}: C[${i}][${jj}] = ${got[i * c.ldc + jj]}, expected NaN`);
        for (let ii = 0; ii < M; ii++) assert.ok(!Number.isFinite(got[ii * c.ldc + j]!), `${tname(ta, tb)} ${M}x${N}x${K}: C[${ii}][${j}] is finite despite Inf in B`);
        const finite = got.filter((_, e) => Math.floor(e / c.ldc) !== i && e % c.ldc !== j);
        assert.ok(finite.every(Number.isFinite), `${tname(ta, tb)}: a non-finite value spread beyond its row and column`);
      }
  });

  test('bit-identical reruns at 1 and 2 threads, and across them', () => {
    const rng = new Rng(1206);
    for (const [ta, tb, M, N, K] of [[false, true, 1024, 384, 128], [true, false, 256, 128, 2048], [false, false, 333, 200, 777], [false, true, 1, 1152, 384], [true, false, 3, 700, 300]] as const) {
      const c = makeCase(rng, ta, tb, M, N, K, 1, 0.25, 0);
      const runs: Float32Array[] = [];
      for (const th of [1, 1, 2, 2]) {
        native.setNumThreads(th);
        const got = c.c.slice();
        runGemm(c, got);
        runs.push(got);
      }
      const bits = runs.map((r) => Buffer.from(r.buffer));
      assert.ok(bits[0]!.equals(bits[1]!), `${tname(ta, tb)} ${M}x${N}x${K}: two runs at 1 thread differ`);
      assert.ok(bits[2]!.equals(bits[3]!), `${tname(ta, tb)} ${M}x${N}x${K}: two runs at 2 threads differ`);
      assert.ok(bits[0]!.equals(bits[2]!), `${tname(ta, tb)} ${M}x${N}x${K}: 1 and 2 threads differ`);
    }
  });

  test('bad arguments fail with typed errors and leave C untouched', () => {
    const a = new Float32Array(12), b = new Float32Array(12), c = new Float32Array(9).fill(7);
    assertThrowsCode(() => native.gemm(false, false, 3, 3, 4, 1, a.subarray(0, 11), 4, b, 3, 0, c, 3), 'E_SHAPE_MISMATCH', 'a too short');
    assertThrowsCode(() => native.gemm(false, true, 3, 3, 4, 1, a, 4, b.subarray(0, 5), 4, 0, c, 3), 'E_SHAPE_MISMATCH', 'b too short');
    assertThrowsCode(() => native.gemm(false, false, 3, 3, 4, 1, a, 4, b, 3, 0, c.subarray(0, 8), 3), 'E_SHAPE_MISMATCH', 'c too short');
    assertThrowsCode(() => native.gemm(false, false, 3, 3, 4, 1, a, 3, b, 3, 0, c, 3), 'E_INVALID_ARGUMENT', 'lda < K');
    assertThrowsCode(() => native.gemm(true, false, 3, 3, 4, 1, a, 2, b, 3, 0, c, 3), 'E_INVALID_ARGUMENT', 'lda < M (transposed)');
    assertThrowsCode(() => native.gemm(false, false, -1, 3, 4, 1, a, 4, b, 3, 0, c, 3), 'E_INVALID_ARGUMENT', 'negative M');
    assertThrowsCode(() => native.gemm(false, false, 3, 3, 4, NaN, a, 4, b, 3, 0, c, 3), 'E_INVALID_ARGUMENT', 'NaN alpha');
    assertThrowsCode(() => native.gemm(false, false, 3, 3, 4, 1, a, 4, b, 3, 0, new Float64Array(9) as unknown as Float32Array, 3), 'E_INVALID_ARGUMENT', 'Float64Array c');
    const shared = new Float32Array(24);
    assertThrowsCode(() => native.gemm(false, false, 2, 2, 2, 1, shared.subarray(0, 4), 2, shared.subarray(8, 12), 2, 0, shared.subarray(2, 6), 2), 'E_INVALID_ARGUMENT', 'c overlapping a');
    assert.ok(c.every((v) => v === 7), 'a failed call wrote into C');
  });
});
