/**
 * Native kernel correctness: every kernel of NativeAddon (lib/native-types.ts) against the float64
 * references in test/reference/kernels64.ts.
 *
 *  - Forward: fp32 kernel output vs float64 reference on identical (fp32-representable) inputs.
 *  - Backward: kernel gradient vs (a) the analytic float64 backward on every element and (b) central
 *    finite differences (h = 1e-6, float64) of the float64 forward projected on a random upstream
 *    gradient, i.e. the vector-Jacobian product, on every element for small tensors and a seeded
 *    random subset for larger ones.
 *  - Backward kernels ADD into their gradient buffers: checked with non-zero prefilled buffers and
 *    two consecutive calls.
 *
 * Error measure everywhere (helpers.maxRelErr): max_i |kernel_i - ref_i| / (max_i |ref_i| + 1e-6).
 * Tolerances: forward FWD_TOL = 1e-5, gradients GRAD_TOL = 1e-4 (fp32 vs exact).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { loadNative } from '../lib/native.js';
import type { AdamWHyper, NativeAddon } from '../lib/native-types.js';
import {
  Rng,
  assertClose,
  assertThrowsCode,
  concatRows,
  docStartFromLengths,
  dot,
  f32,
  f64,
  fdGrad,
  fdIndices,
  gather,
  junk32,
  maxAbs,
  randInts,
  randn32,
  randomDocLengths,
  randu32,
  scalarRelErr,
  snapshot,
} from './helpers.js';
import {
  adamwStep64,
  attentionBackward64,
  attentionForward64,
  classifierBackward64,
  classifierForward64,
  embeddingBackward64,
  embeddingForward64,
  ffnBackward64,
  ffnForward64,
  globalNorm64,
  matmulNT64,
  rmsnormBackward64,
  rmsnormForward64,
  ropeBackward64,
  ropeForward64,
  swigluBackward64,
  swigluForward64,
} from './reference/kernels64.js';

const native: NativeAddon = loadNative();

/** fp32 forward vs float64 reference, measure maxRelErr. */
const FWD_TOL = 1e-5;
/** fp32 gradients vs analytic float64 / finite differences, measure maxRelErr. */
const GRAD_TOL = 1e-4;

// ---- generic checks ----------------------------------------------------------------------------

/**
 * Kernel gradient vs central finite differences of a float64 scalar function of `x`
 * (phi(x) = <dout, f(x)>), on all indices for small x or a seeded subset.
 */
function checkFd(label: string, rng: Rng, kernelGrad: Float32Array, x: Float64Array, scalar: (x: Float64Array) => number, tol = GRAD_TOL, floor = 0): void {
  const idx = fdIndices(rng, x.length);
  const fd = fdGrad(scalar, x, idx);
  assertClose(gather(kernelGrad, idx), fd, tol, `${label} vs finite differences`, floor);
}

/**
 * ADD semantics: `run(bufs)` is a backward call writing into `bufs` (in the order of `sizes`).
 * With zeroed buffers it yields G; with buffers prefilled with P it must yield P + G, and a second
 * call P + 2G.
 */
function checkAccumulates(label: string, rng: Rng, sizes: number[], run: (bufs: Float32Array[]) => void): void {
  const zero = sizes.map((n) => new Float32Array(n));
  run(zero);
  const pre = sizes.map((n) => randn32(rng, n));
  const bufs = pre.map((p) => Float32Array.from(p));
  run(bufs);
  for (let i = 0; i < sizes.length; i++) {
    const expect = f64(pre[i] as Float32Array).map((p, j) => p + ((zero[i] as Float32Array)[j] as number));
    assertClose(bufs[i] as Float32Array, expect, 1e-6, `${label} buffer ${i}: prefilled + 1 call`);
  }
  assert.ok(zero.some((z) => maxAbs(z) > 0), `${label}: every gradient is identically 0, ADD test is vacuous`);
  run(bufs);
  for (let i = 0; i < sizes.length; i++) {
    const expect = f64(pre[i] as Float32Array).map((p, j) => p + 2 * ((zero[i] as Float32Array)[j] as number));
    assertClose(bufs[i] as Float32Array, expect, 1e-6, `${label} buffer ${i}: prefilled + 2 calls`);
  }
}

function sum(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] as number;
  return s;
}

// ---- embedding ---------------------------------------------------------------------------------

describe('embedding', () => {
  const shapes = [
    { N: 1, V: 5, C: 13 },
    { N: 7, V: 11, C: 8 },
    { N: 33, V: 7, C: 37 }, // many repeated tokens
    { N: 64, V: 300, C: 20 },
    { N: 2000, V: 3, C: 9 }, // every row hits one of 3 ids: concurrent scatter must not lose adds
  ];
  for (const { N, V, C } of shapes) {
    test(`forward/backward N=${N} V=${V} C=${C}`, () => {
      const rng = new Rng(100 + N * 7 + C);
      const tokens = randInts(rng, N, 0, V);
      if (N > 1) tokens[N - 1] = V - 1; // the last id is legal
      tokens[0] = 0;
      const wte = randn32(rng, V * C);
      const dout = randn32(rng, N * C);
      const unchanged = snapshot({ tokens, wte, dout });
      const out = junk32(N * C);
      native.embeddingForward(out, tokens, wte, V, C);
      const ref = embeddingForward64(tokens, f64(wte), V, C);
      assert.deepEqual(Array.from(out), Array.from(ref), 'embedding forward is an exact copy');

      const dwte = new Float32Array(V * C);
      native.embeddingBackward(dwte, dout, tokens, V, C);
      assertClose(dwte, embeddingBackward64(f64(dout), tokens, V, C), 1e-6, 'embedding dwte vs scatter');
      const d64 = f64(dout);
      checkFd('embedding dwte', rng, dwte, f64(wte), (w) => dot(d64, embeddingForward64(tokens, w, V, C)));
      checkAccumulates('embeddingBackward', rng, [V * C], ([g]) => native.embeddingBackward(g as Float32Array, dout, tokens, V, C));
      unchanged();
    });
  }
});

// ---- rmsnorm -----------------------------------------------------------------------------------

describe('rmsnorm', () => {
  const shapes = [
    { N: 1, C: 13, eps: 1e-5 },
    { N: 7, C: 8, eps: 1e-5 },
    { N: 33, C: 37, eps: 1e-6 },
    { N: 5, C: 1, eps: 1e-5 },
    { N: 3, C: 1000, eps: 1e-5 },
    { N: 4, C: 13, eps: 0.5 }, // eps large enough to matter
    { N: 257, C: 24, eps: 1e-5 }, // several row chunks
  ];
  for (const { N, C, eps } of shapes) {
    test(`forward/backward N=${N} C=${C} eps=${eps}`, () => {
      const rng = new Rng(200 + N * 13 + C);
      const x = randn32(rng, N * C);
      for (let n = 0; n < N; n++) {
        const s = Math.exp(rng.range(Math.log(0.01), Math.log(10))); // rows of very different scale
        for (let c = 0; c < C; c++) x[n * C + c] = (x[n * C + c] as number) * s;
      }
      const w = randn32(rng, C);
      const dout = randn32(rng, N * C);
      const unchanged = snapshot({ x, w, dout });
      const out = junk32(N * C);
      const rstd = junk32(N);
      native.rmsnormForward(out, rstd, x, w, N, C, eps);
      const x64 = f64(x);
      const w64 = f64(w);
      const ref = rmsnormForward64(x64, w64, N, C, eps);
      assertClose(out, ref.out, FWD_TOL, 'rmsnorm out');
      for (let n = 0; n < N; n++) {
        assert.ok(scalarRelErr(rstd[n] as number, ref.rstd[n] as number) < FWD_TOL, `rstd[${n}] ${rstd[n]} vs ${ref.rstd[n]}`);
      }

      const d64 = f64(dout);
      const savedUnchanged = snapshot({ out, rstd });
      const dx = new Float32Array(N * C);
      const dw = new Float32Array(C);
      native.rmsnormBackward(dx, dw, dout, x, w, rstd, N, C);
      savedUnchanged();
      const g = rmsnormBackward64(d64, x64, w64, N, C, eps);
      // for C = 1 the exact dx is an eps-sized remainder of two O(rstd |w| |dout|) terms; fp32
      // rounding is judged against those terms there
      const floor = C === 1 ? maxAbs(ref.rstd) * maxAbs(w) * maxAbs(dout) : 0;
      assertClose(dx, g.dx, GRAD_TOL, 'rmsnorm dx vs analytic', floor);
      assertClose(dw, g.dw, GRAD_TOL, 'rmsnorm dw vs analytic');
      checkFd('rmsnorm dx', rng, dx, f64(x), (xx) => dot(d64, rmsnormForward64(xx, w64, N, C, eps).out), GRAD_TOL, floor);
      checkFd('rmsnorm dw', rng, dw, f64(w), (ww) => dot(d64, rmsnormForward64(x64, ww, N, C, eps).out));
      checkAccumulates('rmsnormBackward', rng, [N * C, C], ([a, b]) =>
        native.rmsnormBackward(a as Float32Array, b as Float32Array, dout, x, w, rstd, N, C),
      );
      unchanged();
    });
  }
});

// ---- rope --------------------------------------------------------------------------------------

describe('rope', () => {
  const shapes = [
    { N: 1, H: 1, hd: 2, base: 1e5, maxPos: 1 },
    { N: 7, H: 3, hd: 6, base: 1e5, maxPos: 64 },
    { N: 33, H: 5, hd: 10, base: 1e4, maxPos: 64 },
    { N: 9, H: 2, hd: 64, base: 1e5, maxPos: 300 },
    { N: 16, H: 3, hd: 8, base: 1e5, maxPos: 2048 },
  ];
  for (const { N, H, hd, base, maxPos } of shapes) {
    test(`forward/backward N=${N} H=${H} hd=${hd} base=${base} pos<${maxPos}`, () => {
      const rng = new Rng(300 + N + H * 17 + hd);
      const n = N * H * hd;
      const pos = randInts(rng, N, 0, maxPos);
      pos[0] = 0;
      const x = randn32(rng, n);
      const x64 = f64(x);
      const y = Float32Array.from(x);
      native.ropeForward(y, pos, N, H, hd, base);
      assertClose(y, ropeForward64(x64, pos, N, H, hd, base), FWD_TOL, 'rope forward');
      // pos 0 rows are left exactly unchanged (up to cos(0)=1, sin(0)=0)
      assertClose(y.subarray(0, H * hd), x.subarray(0, H * hd), 1e-7, 'rope pos 0');

      const dout = randn32(rng, n);
      const d64 = f64(dout);
      const dx = Float32Array.from(dout);
      const posUnchanged = snapshot({ pos });
      native.ropeBackward(dx, pos, N, H, hd, base);
      posUnchanged();
      assertClose(dx, ropeBackward64(d64, pos, N, H, hd, base), GRAD_TOL, 'rope backward vs analytic');
      checkFd('rope backward', rng, dx, f64(x), (xx) => dot(d64, ropeForward64(xx, pos, N, H, hd, base)));

      // backward undoes forward (the rotation is orthogonal)
      const round = Float32Array.from(y);
      native.ropeBackward(round, pos, N, H, hd, base);
      assertClose(round, x, 1e-6, 'rope backward(forward(x)) = x');
    });
  }

  test('large positions keep fp32 accuracy (pos up to 2^20)', () => {
    const rng = new Rng(399);
    const N = 13;
    const H = 2;
    const hd = 16;
    const pos = Int32Array.from([0, 1, 2, 511, 1023, 2047, 2048, 4095, 4096, 8191, 65535, 654321, 1 << 20]);
    const x = randn32(rng, N * H * hd);
    const y = Float32Array.from(x);
    native.ropeForward(y, pos, N, H, hd, 1e5);
    // angles reach 1e6 rad: an fp32 angle (pos * inv_freq in float) would be off by ~0.03 there
    assertClose(y, ropeForward64(f64(x), pos, N, H, hd, 1e5), FWD_TOL, 'rope forward large pos');
    native.ropeBackward(y, pos, N, H, hd, 1e5);
    assertClose(y, x, 1e-6, 'rope round trip at large pos');
  });
});

// ---- attention -----------------------------------------------------------------------------------

interface AttnCase {
  name: string;
  B: number;
  T: number;
  H: number;
  hd: number;
  docStart: Int32Array | null;
  qScale?: number;
  tol?: number;
}

function attnCases(): AttnCase[] {
  const rng = new Rng(4000);
  return [
    { name: 'T=1', B: 1, T: 1, H: 1, hd: 8, docStart: null },
    { name: 'T=1 B=3 H=3 docStart zeros', B: 3, T: 1, H: 3, hd: 4, docStart: new Int32Array(3) },
    { name: 'T=7 odd heads', B: 2, T: 7, H: 3, hd: 6, docStart: null },
    { name: 'T=33', B: 1, T: 33, H: 3, hd: 10, docStart: null },
    { name: 'T=33 hd=2 H=5', B: 2, T: 33, H: 5, hd: 2, docStart: null },
    {
      name: 'docs 3,1,5 | every token own doc',
      B: 2,
      T: 9,
      H: 3,
      hd: 4,
      docStart: concatRows([docStartFromLengths([3, 1, 5]), docStartFromLengths([1, 1, 1, 1, 1, 1, 1, 1, 1])]),
    },
    {
      name: 'T=33 random docs | one doc | own docs',
      B: 3,
      T: 33,
      H: 3,
      hd: 6,
      docStart: concatRows([
        docStartFromLengths(randomDocLengths(rng, 33, 9)),
        docStartFromLengths([33]),
        docStartFromLengths(Array.from({ length: 33 }, () => 1)),
      ]),
    },
    {
      name: 'T=7 docs 1,6 | 6,1',
      B: 2,
      T: 7,
      H: 1,
      hd: 12,
      docStart: concatRows([docStartFromLengths([1, 6]), docStartFromLengths([6, 1])]),
    },
    { name: 'T=64 hd=32', B: 1, T: 64, H: 2, hd: 32, docStart: null },
    { name: 'T=130 docs', B: 2, T: 130, H: 2, hd: 8, docStart: concatRows([docStartFromLengths([1, 64, 65]), docStartFromLengths(randomDocLengths(rng, 130, 40))]) },
    {
      name: 'T=70 hd=64 docs',
      B: 1,
      T: 70,
      H: 1,
      hd: 64,
      docStart: docStartFromLengths([20, 3, 40, 7]),
    },
    // large scores (|score| ~ 100s): needs a max-shifted softmax; tolerance widened since fp32
    // rounding of a score of size S moves probabilities by ~S * 6e-8 relative
    { name: 'large scores', B: 1, T: 17, H: 2, hd: 8, docStart: docStartFromLengths([5, 12]), qScale: 30, tol: 1e-4 },
  ];
}

describe('attention', () => {
  for (const c of attnCases()) {
    const { B, T, H, hd, docStart } = c;
    test(`forward/backward ${c.name} (B=${B} T=${T} H=${H} hd=${hd})`, () => {
      const rng = new Rng(400 + B * 31 + T * 7 + H * 3 + hd);
      const n = B * T * H * hd;
      const q = randn32(rng, n, c.qScale ?? 1);
      const k = randn32(rng, n);
      const v = randn32(rng, n);
      const dout = randn32(rng, n);
      const unchanged = snapshot({ q, k, v, dout, docStart });
      const out = junk32(n);
      const lse = junk32(B * H * T);
      native.attentionForward(out, lse, q, k, v, docStart, B, T, H, hd);
      const q64 = f64(q);
      const k64 = f64(k);
      const v64 = f64(v);
      const ref = attentionForward64(q64, k64, v64, docStart, B, T, H, hd);
      const tol = c.tol ?? FWD_TOL;
      assertClose(out, ref.out, tol, 'attention out');
      assertClose(lse, ref.lse, tol, 'attention lse');

      const d64 = f64(dout);
      const savedUnchanged = snapshot({ out, lse });
      const dq = new Float32Array(n);
      const dk = new Float32Array(n);
      const dv = new Float32Array(n);
      native.attentionBackward(dq, dk, dv, dout, q, k, v, out, lse, docStart, B, T, H, hd);
      savedUnchanged();
      const g = attentionBackward64(d64, q64, k64, v64, docStart, B, T, H, hd);
      const gtol = c.tol !== undefined ? 10 * c.tol : GRAD_TOL;
      // dq and dk vanish when every query sees a single key (T = 1, own-document tokens) while
      // their fp32 rounding does not: judge them against 0.1 x the largest attention gradient
      const floor = 0.1 * Math.max(maxAbs(g.dq), maxAbs(g.dk), maxAbs(g.dv));
      assertClose(dq, g.dq, gtol, 'attention dq vs analytic', floor);
      assertClose(dk, g.dk, gtol, 'attention dk vs analytic', floor);
      assertClose(dv, g.dv, gtol, 'attention dv vs analytic', floor);
      const f = (qq: Float64Array, kk: Float64Array, vv: Float64Array) => dot(d64, attentionForward64(qq, kk, vv, docStart, B, T, H, hd).out);
      checkFd('attention dq', rng, dq, f64(q), (x) => f(x, k64, v64), gtol, floor);
      checkFd('attention dk', rng, dk, f64(k), (x) => f(q64, x, v64), gtol, floor);
      checkFd('attention dv', rng, dv, f64(v), (x) => f(q64, k64, x), gtol, floor);
      checkAccumulates('attentionBackward', rng, [n, n, n], ([a, b, d]) =>
        native.attentionBackward(a as Float32Array, b as Float32Array, d as Float32Array, dout, q, k, v, out, lse, docStart, B, T, H, hd),
      );
      unchanged();
    });
  }

  test('docStart null and all-zero docStart give identical results', () => {
    const rng = new Rng(499);
    const B = 2;
    const T = 13;
    const H = 3;
    const hd = 6;
    const n = B * T * H * hd;
    const q = randn32(rng, n);
    const k = randn32(rng, n);
    const v = randn32(rng, n);
    const o1 = new Float32Array(n);
    const l1 = new Float32Array(B * H * T);
    const o2 = junk32(n);
    const l2 = junk32(B * H * T);
    native.attentionForward(o1, l1, q, k, v, null, B, T, H, hd);
    native.attentionForward(o2, l2, q, k, v, new Int32Array(B * T), B, T, H, hd);
    assertClose(o2, o1, 1e-6, 'null vs zero docStart out');
    assertClose(l2, l1, 1e-6, 'null vs zero docStart lse');
    // and masking really happens: documents change the result of later tokens
    const ds = concatRows([docStartFromLengths([4, 9]), docStartFromLengths([13])]);
    const o3 = new Float32Array(n);
    native.attentionForward(o3, new Float32Array(B * H * T), q, k, v, ds, B, T, H, hd);
    const C = H * hd;
    assertClose(o3.subarray(0, 4 * C), o1.subarray(0, 4 * C), 1e-6, 'first document unaffected');
    assert.ok(maxAbs(o3.subarray(4 * C, T * C).map((x, i) => x - (o1[4 * C + i] as number))) > 1e-3, 'second document is masked');
  });
});

// ---- swiglu --------------------------------------------------------------------------------------

describe('swiglu', () => {
  for (const n of [1, 7, 33, 1000, 4099]) {
    test(`forward/backward n=${n}`, () => {
      const rng = new Rng(500 + n);
      const gate = randn32(rng, n, 3);
      const up = randn32(rng, n);
      const dh = randn32(rng, n);
      const unchanged = snapshot({ gate, up, dh });
      const h = junk32(n);
      native.swigluForward(h, gate, up, n);
      const g64 = f64(gate);
      const u64 = f64(up);
      assertClose(h, swigluForward64(g64, u64), FWD_TOL, 'swiglu forward');

      const dh64 = f64(dh);
      const dgate = new Float32Array(n);
      const dup = new Float32Array(n);
      native.swigluBackward(dgate, dup, dh, gate, up, n);
      const ref = swigluBackward64(dh64, g64, u64);
      assertClose(dgate, ref.dgate, GRAD_TOL, 'swiglu dgate vs analytic');
      assertClose(dup, ref.dup, GRAD_TOL, 'swiglu dup vs analytic');
      checkFd('swiglu dgate', rng, dgate, f64(gate), (x) => dot(dh64, swigluForward64(x, u64)));
      checkFd('swiglu dup', rng, dup, f64(up), (x) => dot(dh64, swigluForward64(g64, x)));
      checkAccumulates('swigluBackward', rng, [n, n], ([a, b]) => native.swigluBackward(a as Float32Array, b as Float32Array, dh, gate, up, n));
      unchanged();
    });
  }

  test('extreme gate values stay finite and exact', () => {
    const gate = f32([-1000, -100, -88, -30, -1e-3, 0, 1e-3, 30, 88, 100, 1000]);
    const n = gate.length;
    const up = f32(Array.from({ length: n }, (_, i) => 1 + 0.1 * i));
    const h = junk32(n);
    native.swigluForward(h, gate, up, n);
    const dh = new Float32Array(n).fill(1);
    const dgate = new Float32Array(n);
    const dup = new Float32Array(n);
    native.swigluBackward(dgate, dup, dh, gate, up, n);
    const ref = swigluBackward64(f64(dh), f64(gate), f64(up));
    const hr = swigluForward64(f64(gate), f64(up));
    for (let i = 0; i < n; i++) {
      assert.ok(Number.isFinite(h[i]) && Number.isFinite(dgate[i]) && Number.isFinite(dup[i]), `non-finite at gate=${gate[i]}`);
      assert.ok(Math.abs((h[i] as number) - (hr[i] as number)) <= 1e-5 * Math.max(1, Math.abs(hr[i] as number)), `h at gate=${gate[i]}`);
      assert.ok(Math.abs((dgate[i] as number) - (ref.dgate[i] as number)) <= 1e-5 * Math.max(1, Math.abs(ref.dgate[i] as number)), `dgate at gate=${gate[i]}: ${dgate[i]} vs ${ref.dgate[i]}`);
      assert.ok(Math.abs((dup[i] as number) - (ref.dup[i] as number)) <= 1e-5 * Math.max(1, Math.abs(ref.dup[i] as number)), `dup at gate=${gate[i]}`);
    }
  });
});

// ---- matmulNT ------------------------------------------------------------------------------------

describe('matmulNT', () => {
  const shapes = [
    { M: 1, N: 1, K: 1 },
    { M: 7, N: 13, K: 5 },
    { M: 33, N: 37, K: 19 },
    { M: 64, N: 48, K: 128 },
    { M: 3, N: 1000, K: 13 },
    { M: 129, N: 65, K: 257 },
  ];
  for (const { M, N, K } of shapes) {
    test(`C = A B^T M=${M} N=${N} K=${K}`, () => {
      const rng = new Rng(600 + M + N + K);
      const a = randn32(rng, M * K);
      const b = randn32(rng, N * K);
      const unchanged = snapshot({ a, b });
      const c = junk32(M * N); // must be overwritten, not accumulated into
      native.matmulNT(c, a, b, M, N, K);
      assertClose(c, matmulNT64(f64(a), f64(b), M, N, K), FWD_TOL, 'matmulNT');
      unchanged();
    });
  }
});

// ---- ffn -----------------------------------------------------------------------------------------

describe('ffn', () => {
  const shapes = [
    { N: 1, C: 13, F: 20 },
    { N: 7, C: 8, F: 24 },
    { N: 33, C: 13, F: 35 },
    { N: 5, C: 37, F: 11 },
    { N: 16, C: 64, F: 172 },
    { N: 70, C: 24, F: 40 },
  ];
  for (const { N, C, F } of shapes) {
    test(`forward/backward N=${N} C=${C} F=${F}`, () => {
      const rng = new Rng(700 + N * 5 + C + F);
      const x = randn32(rng, N * C);
      const w1 = randn32(rng, F * C, 1 / Math.sqrt(C));
      const w2 = randn32(rng, F * C, 1 / Math.sqrt(C));
      const w3 = randn32(rng, C * F, 1 / Math.sqrt(F));
      const dy = randn32(rng, N * C);
      const unchanged = snapshot({ x, w1, w2, w3, dy });
      const y = junk32(N * C);
      const gate = junk32(N * F);
      const up = junk32(N * F);
      native.ffnForward(y, gate, up, x, w1, w2, w3, N, C, F);
      const x64 = f64(x);
      const a64 = f64(w1);
      const b64 = f64(w2);
      const c64 = f64(w3);
      const ref = ffnForward64(x64, a64, b64, c64, N, C, F);
      assertClose(y, ref.y, FWD_TOL, 'ffn y');
      assertClose(gate, ref.gate, FWD_TOL, 'ffn gate (= W1 x, pre-activation)');
      assertClose(up, ref.up, FWD_TOL, 'ffn up (= W2 x)');

      const dy64 = f64(dy);
      const savedUnchanged = snapshot({ gate, up });
      const dx = new Float32Array(N * C);
      const dw1 = new Float32Array(F * C);
      const dw2 = new Float32Array(F * C);
      const dw3 = new Float32Array(C * F);
      native.ffnBackward(dx, dw1, dw2, dw3, dy, x, gate, up, w1, w2, w3, N, C, F);
      savedUnchanged();
      const g = ffnBackward64(dy64, x64, a64, b64, c64, N, C, F);
      assertClose(dx, g.dx, GRAD_TOL, 'ffn dx vs analytic');
      assertClose(dw1, g.dw1, GRAD_TOL, 'ffn dw1 vs analytic');
      assertClose(dw2, g.dw2, GRAD_TOL, 'ffn dw2 vs analytic');
      assertClose(dw3, g.dw3, GRAD_TOL, 'ffn dw3 vs analytic');
      const f = (xx: Float64Array, p: Float64Array, q: Float64Array, r: Float64Array) => dot(dy64, ffnForward64(xx, p, q, r, N, C, F).y);
      checkFd('ffn dx', rng, dx, f64(x), (t) => f(t, a64, b64, c64));
      checkFd('ffn dw1', rng, dw1, f64(w1), (t) => f(x64, t, b64, c64));
      checkFd('ffn dw2', rng, dw2, f64(w2), (t) => f(x64, a64, t, c64));
      checkFd('ffn dw3', rng, dw3, f64(w3), (t) => f(x64, a64, b64, t));
      checkAccumulates('ffnBackward', rng, [N * C, F * C, F * C, C * F], ([p, q, r, s]) =>
        native.ffnBackward(p as Float32Array, q as Float32Array, r as Float32Array, s as Float32Array, dy, x, gate, up, w1, w2, w3, N, C, F),
      );
      unchanged();
    });
  }
});

// ---- classifier ----------------------------------------------------------------------------------

describe('classifier', () => {
  const shapes = [
    { N: 1, C: 13, V: 5, scale: 1, xScale: 1 },
    { N: 7, C: 8, V: 37, scale: 1 / 7, xScale: 1 },
    { N: 33, C: 13, V: 300, scale: 0.37, xScale: 1 },
    { N: 4, C: 37, V: 1001, scale: 1, xScale: 1 },
    { N: 9, C: 16, V: 50, scale: 1, xScale: 10 }, // logits ~ +-100s: needs a shifted logsumexp
    { N: 130, C: 13, V: 97, scale: 1 / 130, xScale: 1 }, // several row chunks
  ];
  for (const { N, C, V, scale, xScale } of shapes) {
    test(`forward/backward N=${N} C=${C} V=${V} gradScale=${scale.toFixed(3)} xScale=${xScale}`, () => {
      const rng = new Rng(800 + N + C + V);
      const x = randn32(rng, N * C, xScale);
      const wte = randn32(rng, V * C);
      const targets = randInts(rng, N, 0, V);
      if (N > 2) {
        targets[1] = -1;
        targets[N - 1] = V - 1;
      }
      const unchanged = snapshot({ x, wte, targets });
      const x64 = f64(x);
      const w64 = f64(wte);
      const ref = classifierForward64(x64, w64, targets, N, C, V);

      // forward only (null gradients)
      const losses0 = junk32(N);
      native.classifierForwardBackward(losses0, null, null, x, wte, targets, N, C, V, scale);
      assertClose(losses0, ref.losses, FWD_TOL, 'classifier losses (forward only)');
      for (let n = 0; n < N; n++) if (targets[n] === -1) assert.equal(losses0[n], 0, 'ignored row loss is 0');

      const losses = junk32(N);
      const dx = new Float32Array(N * C);
      const dwte = new Float32Array(V * C);
      native.classifierForwardBackward(losses, dx, dwte, x, wte, targets, N, C, V, scale);
      assertClose(losses, ref.losses, FWD_TOL, 'classifier losses (with backward)');
      for (let n = 0; n < N; n++) if (targets[n] === -1) assert.equal(losses[n], 0, 'ignored row loss is 0');
      const g = classifierBackward64(x64, w64, targets, N, C, V, scale);
      assertClose(dx, g.dx, GRAD_TOL, 'classifier dx vs analytic');
      assertClose(dwte, g.dwte, GRAD_TOL, 'classifier dwte vs analytic');
      const total = (xx: Float64Array, ww: Float64Array) => scale * sum(classifierForward64(xx, ww, targets, N, C, V).losses);
      checkFd('classifier dx', rng, dx, f64(x), (t) => total(t, w64));
      checkFd('classifier dwte', rng, dwte, f64(wte), (t) => total(x64, t));
      checkAccumulates('classifierForwardBackward', rng, [N * C, V * C], ([a, b]) =>
        native.classifierForwardBackward(new Float32Array(N), a as Float32Array, b as Float32Array, x, wte, targets, N, C, V, scale),
      );
      unchanged();
    });
  }

  test('every target ignored: zero losses and no gradient', () => {
    const rng = new Rng(899);
    const N = 5;
    const C = 7;
    const V = 9;
    const x = randn32(rng, N * C);
    const wte = randn32(rng, V * C);
    const targets = new Int32Array(N).fill(-1);
    const losses = junk32(N);
    const dx = randn32(rng, N * C);
    const dwte = randn32(rng, V * C);
    const dx0 = Float32Array.from(dx);
    const dwte0 = Float32Array.from(dwte);
    native.classifierForwardBackward(losses, dx, dwte, x, wte, targets, N, C, V, 1);
    assert.deepEqual(Array.from(losses), new Array(N).fill(0));
    assert.deepEqual(Array.from(dx), Array.from(dx0));
    assert.deepEqual(Array.from(dwte), Array.from(dwte0));
  });
});

// ---- optimizer -----------------------------------------------------------------------------------

/**
 * Parameters after an optimizer step vs the float64 reference: the update p_new - p_old must be
 * accurate to 1e-4 of the largest update, on top of the unavoidable fp32 rounding of
 * p_old - update (~1 ulp of p); and params overall to 1e-6 (maxRelErr).
 */
function assertUpdate(p: Float32Array, rp: Float64Array, pBefore: Float32Array, tag: string): void {
  const dpRef = rp.map((x, i) => x - (pBefore[i] as number));
  const updTol = 1e-4 * maxAbs(dpRef);
  for (let i = 0; i < p.length; i++) {
    const err = Math.abs((p[i] as number) - (rp[i] as number));
    const allowed = updTol + 1.2e-7 * Math.abs(rp[i] as number);
    if (!(err <= allowed)) {
      assert.fail(`${tag}: params[${i}] = ${p[i]}, ref ${rp[i]} (update ${(p[i] as number) - (pBefore[i] as number)} vs ${dpRef[i]}), |err| ${err} > ${allowed}`);
    }
  }
  assertClose(p, rp, 1e-6, `${tag} params`);
}

describe('adamw', () => {
  async function runSteps(size: number, segs: number[], seed: number, useAsync: boolean): Promise<void> {
    const rng = new Rng(seed);
    const segments = Float64Array.from(segs);
    const inSeg = new Uint8Array(size);
    for (let s = 0; s < segs.length; s += 3) {
      for (let i = segs[s] as number; i < (segs[s] as number) + (segs[s + 1] as number); i++) inSeg[i] = 1;
    }
    const p = randn32(rng, size);
    const m = new Float32Array(size);
    const v = new Float32Array(size);
    // float64 trajectory from the same start
    const tp = f64(p);
    const tm = new Float64Array(size);
    const tv = new Float64Array(size);
    const schedule = [
      { lr: 1e-2, gradScale: 1 },
      { lr: 5e-3, gradScale: 0.5 },
      { lr: 1e-2, gradScale: 2.5 },
      { lr: 2e-3, gradScale: 1 },
      { lr: 1e-2, gradScale: 0.1 },
      { lr: 1e-3, gradScale: 0.73 },
    ];
    for (let st = 0; st < schedule.length; st++) {
      const { lr, gradScale } = schedule[st] as { lr: number; gradScale: number };
      const g = randn32(rng, size, st === 2 ? 1e-3 : 1);
      if (st === 3) for (let i = 0; i < size; i += 5) g[i] = 0; // some exact zeros
      const hp: AdamWHyper = { lr, beta1: 0.9, beta2: 0.95, eps: 1e-8, step: st + 1, gradScale };
      const pBefore = Float32Array.from(p);
      const mBefore = Float32Array.from(m);
      const vBefore = Float32Array.from(v);
      const gBefore = Float32Array.from(g);
      const gUnchanged = snapshot({ g, segments });
      if (useAsync) await native.adamwStepAsync(p, g, m, v, segments, hp);
      else native.adamwStep(p, g, m, v, segments, hp);
      gUnchanged(); // gradScale is applied on the fly, the gradient buffer is read-only
      // reference: one step from the kernel's previous state
      const rp = f64(pBefore);
      const rm = f64(mBefore);
      const rv = f64(vBefore);
      adamwStep64(rp, f64(gBefore), rm, rv, segments, hp);
      const tag = `step ${st + 1} (lr ${lr}, gradScale ${gradScale})`;
      assertClose(m, rm, 1e-6, `${tag} m`);
      assertClose(v, rv, 1e-6, `${tag} v`);
      assertUpdate(p, rp, pBefore, tag);
      for (let i = 0; i < size; i++) {
        if (inSeg[i]) continue;
        assert.ok(p[i] === pBefore[i] && m[i] === mBefore[i] && v[i] === vBefore[i], `${tag}: element ${i} outside every segment changed`);
      }
      adamwStep64(tp, f64(gBefore), tm, tv, segments, hp);
    }
    assertClose(p, tp, 1e-5, 'params after 6 steps vs float64 trajectory');
    assertClose(m, tm, 1e-5, 'm after 6 steps vs float64 trajectory');
    assertClose(v, tv, 1e-5, 'v after 6 steps vs float64 trajectory');
  }

  test('segments with different weight decay, gaps, gradScale != 1 (sync)', async () => {
    await runSteps(61, [0, 13, 0.1, 13, 20, 0, 40, 7, 0.01, 50, 11, 0.3], 900, false);
  });

  test('large buffer (threaded path), async', async () => {
    await runSteps(100_003, [0, 40_000, 0.1, 40_000, 17, 0, 50_000, 50_003, 0.05], 901, true);
  });

  test('bias correction at late steps and beta2 = 0.999 / 0.9999 (from a random state)', () => {
    const rng = new Rng(903);
    const size = 5003;
    const segments = Float64Array.from([0, 3000, 0.1, 3000, 2003, 0]);
    const cases = [
      { beta1: 0.9, beta2: 0.999, step: 1, fresh: true },
      { beta1: 0.9, beta2: 0.999, step: 2, fresh: false },
      { beta1: 0.9, beta2: 0.999, step: 1000, fresh: false },
      { beta1: 0.9, beta2: 0.9999, step: 3, fresh: false },
      { beta1: 0.95, beta2: 0.999, step: 100_000, fresh: false },
    ];
    for (const { beta1, beta2, step, fresh } of cases) {
      const p = randn32(rng, size);
      const g = randn32(rng, size);
      const m = fresh ? new Float32Array(size) : randn32(rng, size, 0.1);
      const v = fresh ? new Float32Array(size) : randu32(rng, size, 0.5, 1.5);
      const hp: AdamWHyper = { lr: 1e-3, beta1, beta2, eps: 1e-8, step, gradScale: 0.9 };
      const pBefore = Float32Array.from(p);
      const rp = f64(p);
      const rm = f64(m);
      const rv = f64(v);
      native.adamwStep(p, g, m, v, segments, hp);
      adamwStep64(rp, f64(g), rm, rv, segments, hp);
      const tag = `beta1 ${beta1} beta2 ${beta2} step ${step}`;
      assertClose(m, rm, 1e-6, `${tag} m`);
      // 2e-5, not 1e-6: with fp32 hyperparameters, 1 - beta2 at beta2 = 0.999 is off by 1.3e-5
      // relative, which shows in v when v starts at 0 (it cancels in the bias-corrected update)
      assertClose(v, rv, 2e-5, `${tag} v`);
      assertUpdate(p, rp, pBefore, tag);
    }
  });

  test('async and sync give bit-identical results', async () => {
    const rng = new Rng(902);
    const size = 10_007;
    const segments = Float64Array.from([0, 5000, 0.1, 5000, 5007, 0]);
    const p = randn32(rng, size);
    const g = randn32(rng, size);
    const m = randn32(rng, size, 0.1);
    const v = randu32(rng, size, 0, 0.1);
    const hp: AdamWHyper = { lr: 3e-3, beta1: 0.9, beta2: 0.99, eps: 1e-8, step: 7, gradScale: 0.8 };
    const a = [p, g, m, v].map((t) => Float32Array.from(t));
    const b = [p, g, m, v].map((t) => Float32Array.from(t));
    native.adamwStep(a[0] as Float32Array, a[1] as Float32Array, a[2] as Float32Array, a[3] as Float32Array, segments, hp);
    await native.adamwStepAsync(b[0] as Float32Array, b[1] as Float32Array, b[2] as Float32Array, b[3] as Float32Array, segments, hp);
    for (let i = 0; i < 4; i++) assert.deepEqual(Array.from(b[i] as Float32Array), Array.from(a[i] as Float32Array), `buffer ${i}`);
    // and both match the reference
    const rp = f64(p);
    const rm = f64(m);
    const rv = f64(v);
    adamwStep64(rp, f64(g), rm, rv, segments, hp);
    assertClose(a[0] as Float32Array, rp, 1e-6, 'params');
    assertClose(a[2] as Float32Array, rm, 1e-6, 'm');
    assertClose(a[3] as Float32Array, rv, 1e-6, 'v');
  });
});

describe('globalNorm', () => {
  for (const n of [1, 13, 1000, 1_000_003]) {
    test(`random gradients n=${n}`, () => {
      const g = randn32(new Rng(1000 + n), n);
      assert.ok(scalarRelErr(native.globalNorm(g), globalNorm64(g)) < 1e-7);
    });
  }

  test('accumulates in float64 (one large value followed by a million ones)', () => {
    const n = 1_000_001;
    const g = new Float32Array(n).fill(1);
    g[0] = 1e4; // 1e8 + 1e6 * 1: a float32 accumulator loses every 1
    const ref = globalNorm64(g);
    assert.ok(scalarRelErr(native.globalNorm(g), ref) < 1e-9, `${native.globalNorm(g)} vs ${ref}`);
  });

  test('empty, zero and non-finite', () => {
    assert.equal(native.globalNorm(new Float32Array(0)), 0);
    assert.equal(native.globalNorm(new Float32Array(17)), 0);
    assert.equal(native.globalNorm(f32([3, 4])), 5);
    const g = randn32(new Rng(1099), 1000);
    g[500] = NaN;
    assert.ok(Number.isNaN(native.globalNorm(g)), 'NaN gradient gives NaN norm');
    g[500] = Infinity;
    assert.equal(native.globalNorm(g), Infinity);
  });
});

// ---- bad input -----------------------------------------------------------------------------------

describe('bad input is rejected with a coded error', () => {
  const rng = new Rng(1200);
  const SHAPE = 'E_SHAPE_MISMATCH';
  const TOKEN = 'E_TOKEN_OUT_OF_RANGE';
  const INVALID = 'E_INVALID_ARGUMENT';

  test('embedding', () => {
    const V = 10;
    const C = 4;
    const wte = randn32(rng, V * C);
    const tokens = Int32Array.from([1, 2, 3]);
    assertThrowsCode(() => native.embeddingForward(new Float32Array(3 * C - 1), tokens, wte, V, C), SHAPE, 'out too short');
    assertThrowsCode(() => native.embeddingForward(new Float32Array(3 * C), tokens, wte.subarray(1), V, C), SHAPE, 'wte wrong length');
    assertThrowsCode(() => native.embeddingForward(new Float32Array(3 * C), Int32Array.from([1, V, 2]), wte, V, C), TOKEN, 'token == V');
    assertThrowsCode(() => native.embeddingForward(new Float32Array(3 * C), Int32Array.from([1, -1, 2]), wte, V, C), TOKEN, 'token -1');
    assertThrowsCode(() => native.embeddingBackward(new Float32Array(V * C), new Float32Array(3 * C), Int32Array.from([0, 99, 2]), V, C), TOKEN, 'backward token 99');
    assertThrowsCode(() => native.embeddingBackward(new Float32Array(V * C + 1), new Float32Array(3 * C), tokens, V, C), SHAPE, 'dwte wrong length');
  });

  test('rmsnorm / swiglu / matmul / ffn lengths', () => {
    const N = 3;
    const C = 5;
    const F = 6;
    const x = randn32(rng, N * C);
    assertThrowsCode(() => native.rmsnormForward(new Float32Array(N * C), new Float32Array(N + 1), x, new Float32Array(C), N, C, 1e-5), SHAPE, 'rstd wrong');
    assertThrowsCode(() => native.rmsnormForward(new Float32Array(N * C), new Float32Array(N), x, new Float32Array(C - 1), N, C, 1e-5), SHAPE, 'w wrong');
    assertThrowsCode(() => native.swigluForward(new Float32Array(7), new Float32Array(7), new Float32Array(6), 7), SHAPE, 'up wrong');
    assertThrowsCode(() => native.matmulNT(new Float32Array(4 * 3), new Float32Array(4 * 5), new Float32Array(3 * 5 + 1), 4, 3, 5), SHAPE, 'b wrong');
    assertThrowsCode(() => native.matmulNT(new Float32Array(4 * 3 - 1), new Float32Array(4 * 5), new Float32Array(3 * 5), 4, 3, 5), SHAPE, 'c wrong');
    const w = new Float32Array(F * C);
    assertThrowsCode(
      () => native.ffnForward(new Float32Array(N * C), new Float32Array(N * F), new Float32Array(N * F), x, w, w, new Float32Array(C * F - 1), N, C, F),
      SHAPE,
      'w3 wrong',
    );
  });

  test('rope', () => {
    const x = new Float32Array(2 * 3 * 6);
    assertThrowsCode(() => native.ropeForward(x, new Int32Array(3), 2, 3, 6, 1e5), SHAPE, 'pos wrong');
    assertThrowsCode(() => native.ropeForward(new Float32Array(2 * 3 * 5), new Int32Array(2), 2, 3, 5, 1e5), [INVALID, SHAPE], 'odd hd');
  });

  test('attention shapes and docStart', () => {
    const B = 2;
    const T = 5;
    const H = 2;
    const hd = 4;
    const n = B * T * H * hd;
    const q = randn32(rng, n);
    const out = new Float32Array(n);
    const lse = new Float32Array(B * H * T);
    const fwd = (ds: Int32Array | null, o = out, l = lse) => native.attentionForward(o, l, q, q, q, ds, B, T, H, hd);
    assertThrowsCode(() => fwd(null, out, new Float32Array(B * T)), SHAPE, 'lse wrong');
    assertThrowsCode(() => fwd(new Int32Array(B * T - 1)), SHAPE, 'docStart wrong length');
    const ahead = new Int32Array(B * T);
    ahead[T + 2] = 3; // docStart[t] > t
    assertThrowsCode(() => fwd(ahead), INVALID, 'docStart[t] > t');
    const neg = new Int32Array(B * T);
    neg[3] = -1;
    assertThrowsCode(() => fwd(neg), INVALID, 'docStart < 0');
    const rowLocal = new Int32Array(B * T);
    rowLocal[0] = 1; // first position of a row must start at 0
    assertThrowsCode(() => fwd(rowLocal), INVALID, 'docStart[0] = 1');
    assertThrowsCode(
      () => native.attentionBackward(new Float32Array(n), new Float32Array(n), new Float32Array(n), q, q, q, q, out, lse, ahead, B, T, H, hd),
      INVALID,
      'backward docStart[t] > t',
    );
    // a valid pattern is accepted
    fwd(concatRows([docStartFromLengths([2, 3]), docStartFromLengths([1, 1, 1, 1, 1])]));
  });

  test('classifier targets', () => {
    const N = 4;
    const C = 3;
    const V = 6;
    const x = randn32(rng, N * C);
    const wte = randn32(rng, V * C);
    const call = (t: number[], losses = new Float32Array(N)) =>
      native.classifierForwardBackward(losses, new Float32Array(N * C), new Float32Array(V * C), x, wte, Int32Array.from(t), N, C, V, 1);
    assertThrowsCode(() => call([0, 1, V, 2]), TOKEN, 'target == V');
    assertThrowsCode(() => call([0, -2, 1, 2]), TOKEN, 'target -2');
    assertThrowsCode(() => native.classifierForwardBackward(new Float32Array(N), null, null, x, wte, Int32Array.from([0, 1, 2, 7]), N, C, V, 1), TOKEN, 'forward-only target 7');
    assertThrowsCode(() => call([0, 1, 2, 3], new Float32Array(N - 1)), SHAPE, 'losses wrong');
    call([-1, 0, V - 1, -1]); // -1 and V-1 are legal
  });

  test('adamw', () => {
    const n = 10;
    const p = new Float32Array(n);
    const hp: AdamWHyper = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, step: 1, gradScale: 1 };
    const seg = Float64Array.from([0, n, 0.1]);
    assertThrowsCode(() => native.adamwStep(p, new Float32Array(n), new Float32Array(n - 1), new Float32Array(n), seg, hp), SHAPE, 'm wrong');
    assertThrowsCode(
      () => native.adamwStep(p, new Float32Array(n), new Float32Array(n), new Float32Array(n), Float64Array.from([5, 6, 0]), hp),
      [SHAPE, INVALID],
      'segment past the end',
    );
  });
});
