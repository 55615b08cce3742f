/**
 * Self-checks of the float64 references in test/reference/kernels64.ts (no native code involved):
 * analytic backward vs central finite differences, and each forward against an independent
 * formulation (composition, segmentation, closed forms, group properties).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Rng,
  assertClose,
  concatRows,
  docStartFromLengths,
  dot,
  fdGrad,
  fdIndices,
  gather,
  maxAbs,
  maxRelErr,
  randn64,
  randomDocLengths,
  scalarRelErr,
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
  silu64,
  swigluBackward64,
  swigluForward64,
} from './reference/kernels64.js';

/** Analytic-vs-finite-difference tolerance inside float64 (FD truncation + rounding ~1e-9). */
const REF_FD_TOL = 1e-6;

function checkVjp(label: string, rng: Rng, analytic: Float64Array, x: Float64Array, scalar: (x: Float64Array) => number, floor = 0): void {
  const idx = fdIndices(rng, x.length, 600, 150);
  const fd = fdGrad(scalar, x, idx);
  assertClose(gather(analytic, idx), fd, REF_FD_TOL, label, floor);
}

describe('helpers', () => {
  test('PRNG is deterministic and normals have unit moments', () => {
    const a = new Rng(42);
    const b = new Rng(42);
    const c = new Rng(43);
    const xa = Array.from({ length: 10 }, () => a.uniform());
    const xb = Array.from({ length: 10 }, () => b.uniform());
    const xc = Array.from({ length: 10 }, () => c.uniform());
    assert.deepEqual(xa, xb);
    assert.notDeepEqual(xa, xc);
    for (const u of xa) assert.ok(u >= 0 && u < 1);
    const z = randn64(new Rng(7), 200000);
    let m = 0;
    for (const v of z) m += v;
    m /= z.length;
    let s2 = 0;
    for (const v of z) s2 += (v - m) * (v - m);
    s2 /= z.length;
    assert.ok(Math.abs(m) < 0.01, `mean ${m}`);
    assert.ok(Math.abs(s2 - 1) < 0.02, `var ${s2}`);
  });

  test('sample() returns distinct sorted indices in range', () => {
    const s = new Rng(3).sample(1000, 50);
    assert.equal(s.length, 50);
    for (let i = 1; i < s.length; i++) assert.ok((s[i] as number) > (s[i - 1] as number));
    assert.ok((s[0] as number) >= 0 && (s[49] as number) < 1000);
  });

  test('maxRelErr measure and fdGrad on a known function', () => {
    assert.equal(maxRelErr([1, 2, 3], [1, 2, 3]), 0);
    assert.ok(Math.abs(maxRelErr([1, 2, 3.5], [1, 2, 3]) - 0.5 / (3 + 1e-6)) < 1e-12);
    assert.ok(Number.isNaN(maxRelErr([NaN], [1])));
    const x = Float64Array.from([0.3, -1.2, 2]);
    const g = fdGrad((v) => (v[0] as number) ** 3 + Math.sin(v[1] as number) * (v[2] as number), x, [0, 1, 2]);
    assertClose(g, [3 * 0.09, Math.cos(-1.2) * 2, Math.sin(-1.2)], 1e-8, 'fdGrad');
    assert.deepEqual(Array.from(x), [0.3, -1.2, 2]);
    assert.deepEqual(Array.from(docStartFromLengths([3, 1, 5])), [0, 0, 0, 3, 4, 4, 4, 4, 4]);
  });
});

describe('float64 references', () => {
  test('embedding: gather and scatter are adjoint', () => {
    const rng = new Rng(1);
    const V = 7;
    const C = 5;
    const tokens = [3, 0, 3, 6, 3, 1];
    const wte = randn64(rng, V * C);
    const out = embeddingForward64(tokens, wte, V, C);
    for (let n = 0; n < tokens.length; n++) {
      for (let c = 0; c < C; c++) assert.equal(out[n * C + c], wte[(tokens[n] as number) * C + c]);
    }
    const dout = randn64(rng, tokens.length * C);
    const dwte = embeddingBackward64(dout, tokens, V, C);
    checkVjp('embedding dwte', rng, dwte, wte, (w) => dot(dout, embeddingForward64(tokens, w, V, C)));
    // rows of unused tokens are zero, token 3 received three rows
    for (let c = 0; c < C; c++) assert.equal(dwte[2 * C + c], 0);
  });

  test('rmsnorm: unit gain gives unit mean-square rows; backward matches FD', () => {
    const rng = new Rng(2);
    for (const [N, C] of [[1, 1], [3, 13], [7, 8]] as const) {
      const x = randn64(rng, N * C, 3);
      const ones = new Float64Array(C).fill(1);
      const eps = 1e-5;
      const { out, rstd } = rmsnormForward64(x, ones, N, C, eps);
      for (let n = 0; n < N; n++) {
        let ms = 0;
        for (let c = 0; c < C; c++) ms += (x[n * C + c] as number) ** 2;
        ms /= C;
        let oms = 0;
        for (let c = 0; c < C; c++) oms += (out[n * C + c] as number) ** 2;
        oms /= C;
        assert.ok(scalarRelErr(oms, ms / (ms + eps)) < 1e-12);
        assert.ok(scalarRelErr(rstd[n] as number, 1 / Math.sqrt(ms + eps)) < 1e-12);
      }
      const w = randn64(rng, C);
      const dout = randn64(rng, N * C);
      const { dx, dw } = rmsnormBackward64(dout, x, w, N, C, eps);
      // for C = 1, dx = eps-sized remainder of two O(1) terms: FD rounding (~1e-10) is judged
      // against the size of those terms (max rstd * max|w| * max|dout|)
      const floor = C === 1 ? maxAbs(rstd) * maxAbs(w) * maxAbs(dout) : 0;
      checkVjp(`rmsnorm dx N=${N} C=${C}`, rng, dx, x, (xx) => dot(dout, rmsnormForward64(xx, w, N, C, eps).out), floor);
      checkVjp(`rmsnorm dw N=${N} C=${C}`, rng, dw, w, (ww) => dot(dout, rmsnormForward64(x, ww, N, C, eps).out));
    }
  });

  test('rope: identity at pos 0, inverse, group property, norm-preserving, FD', () => {
    const rng = new Rng(3);
    const N = 5;
    const H = 3;
    const hd = 6;
    const base = 1e5;
    const x = randn64(rng, N * H * hd);
    const zeros = new Int32Array(N);
    assertClose(ropeForward64(x, zeros, N, H, hd, base), x, 1e-15, 'rope pos 0');
    const pa = Int32Array.from([0, 1, 7, 33, 500]);
    const pb = Int32Array.from([4, 0, 2, 100, 9]);
    const pab = Int32Array.from(pa.map((p, i) => p + (pb[i] as number)));
    const ya = ropeForward64(x, pa, N, H, hd, base);
    assertClose(ropeBackward64(ya, pa, N, H, hd, base), x, 1e-13, 'rope inverse');
    assertClose(ropeForward64(ya, pb, N, H, hd, base), ropeForward64(x, pab, N, H, hd, base), 1e-11, 'rope group');
    // each pair (i, i + hd/2) keeps its norm; pair 0 rotates by exactly pos radians
    for (let n = 0; n < N; n++) {
      for (let h = 0; h < H; h++) {
        const o = (n * H + h) * hd;
        for (let i = 0; i < hd / 2; i++) {
          const a = Math.hypot(x[o + i] as number, x[o + i + hd / 2] as number);
          const b = Math.hypot(ya[o + i] as number, ya[o + i + hd / 2] as number);
          assert.ok(Math.abs(a - b) < 1e-12);
        }
        const p = pa[n] as number;
        const x1 = x[o] as number;
        const x2 = x[o + hd / 2] as number;
        assert.ok(Math.abs((ya[o] as number) - (x1 * Math.cos(p) - x2 * Math.sin(p))) < 1e-12);
        // last pair (i = hd/2 - 1) uses frequency base^(-(hd-2)/hd)
        const f = p * Math.pow(base, -(hd - 2) / hd);
        const y1 = x[o + hd / 2 - 1] as number;
        const y2 = x[o + hd - 1] as number;
        assert.ok(Math.abs((ya[o + hd - 1] as number) - (y1 * Math.sin(f) + y2 * Math.cos(f))) < 1e-12);
      }
    }
    const dout = randn64(rng, N * H * hd);
    checkVjp('rope vjp', rng, ropeBackward64(dout, pa, N, H, hd, base), x, (xx) => dot(dout, ropeForward64(xx, pa, N, H, hd, base)));
  });

  test('attention: null docStart == all-zero docStart; T=1 gives v; own-doc tokens give v', () => {
    const rng = new Rng(4);
    const B = 2;
    const T = 7;
    const H = 3;
    const hd = 4;
    const n = B * T * H * hd;
    const q = randn64(rng, n);
    const k = randn64(rng, n);
    const v = randn64(rng, n);
    const a = attentionForward64(q, k, v, null, B, T, H, hd);
    const b = attentionForward64(q, k, v, new Int32Array(B * T), B, T, H, hd);
    assert.deepEqual(Array.from(a.out), Array.from(b.out));
    assert.deepEqual(Array.from(a.lse), Array.from(b.lse));
    // every token its own document: out = v, lse = q.k / sqrt(hd)
    const own = Int32Array.from({ length: B * T }, (_, i) => i % T);
    const c = attentionForward64(q, k, v, own, B, T, H, hd);
    assertClose(c.out, v, 1e-15, 'own-doc out');
    for (let bb = 0; bb < B; bb++) {
      for (let h = 0; h < H; h++) {
        for (let t = 0; t < T; t++) {
          const o = (bb * T + t) * H * hd + h * hd;
          let s = 0;
          for (let d = 0; d < hd; d++) s += (q[o + d] as number) * (k[o + d] as number);
          assert.ok(Math.abs((c.lse[(bb * H + h) * T + t] as number) - s / Math.sqrt(hd)) < 1e-12);
        }
      }
    }
    // T = 1
    const q1 = randn64(rng, H * hd);
    const k1 = randn64(rng, H * hd);
    const v1 = randn64(rng, H * hd);
    assertClose(attentionForward64(q1, k1, v1, null, 1, 1, H, hd).out, v1, 1e-15, 'T=1');
    // first query of every row only sees itself
    for (let bb = 0; bb < B; bb++) {
      const o = bb * T * H * hd;
      assertClose(a.out.subarray(o, o + H * hd), v.subarray(o, o + H * hd), 1e-15, 't=0 row');
    }
  });

  test('attention: document masking equals running each document as its own sequence', () => {
    const rng = new Rng(5);
    const H = 3;
    const hd = 6;
    const C = H * hd;
    const rowsLens = [[3, 1, 5], [9], [1, 1, 1, 1, 1, 1, 1, 1, 1], randomDocLengths(rng, 9, 4)];
    const T = 9;
    const B = rowsLens.length;
    const ds = concatRows(rowsLens.map((l) => docStartFromLengths(l)));
    const q = randn64(rng, B * T * C);
    const k = randn64(rng, B * T * C);
    const v = randn64(rng, B * T * C);
    const full = attentionForward64(q, k, v, ds, B, T, H, hd);
    for (let b = 0; b < B; b++) {
      let t0 = 0;
      for (const len of rowsLens[b] as number[]) {
        const sl = (a: Float64Array) => a.slice((b * T + t0) * C, (b * T + t0 + len) * C);
        const seg = attentionForward64(sl(q), sl(k), sl(v), null, 1, len, H, hd);
        assertClose(full.out.subarray((b * T + t0) * C, (b * T + t0 + len) * C), seg.out, 1e-14, `doc b=${b} t0=${t0}`);
        for (let h = 0; h < H; h++) {
          for (let t = 0; t < len; t++) {
            assert.ok(Math.abs((full.lse[(b * H + h) * T + t0 + t] as number) - (seg.lse[h * len + t] as number)) < 1e-12);
          }
        }
        t0 += len;
      }
    }
  });

  test('attention: analytic backward matches FD (with and without documents)', () => {
    const rng = new Rng(6);
    const cases: { B: number; T: number; H: number; hd: number; ds: Int32Array | null }[] = [
      { B: 1, T: 1, H: 1, hd: 2, ds: null },
      { B: 2, T: 7, H: 3, hd: 4, ds: null },
      { B: 2, T: 9, H: 1, hd: 6, ds: concatRows([docStartFromLengths([3, 1, 5]), docStartFromLengths([2, 7])]) },
    ];
    for (const { B, T, H, hd, ds } of cases) {
      const n = B * T * H * hd;
      const q = randn64(rng, n);
      const k = randn64(rng, n);
      const v = randn64(rng, n);
      const dout = randn64(rng, n);
      const g = attentionBackward64(dout, q, k, v, ds, B, T, H, hd);
      const f = (qq: Float64Array, kk: Float64Array, vv: Float64Array) => dot(dout, attentionForward64(qq, kk, vv, ds, B, T, H, hd).out);
      const tag = `B=${B} T=${T} H=${H} hd=${hd}`;
      checkVjp(`attn dq ${tag}`, rng, g.dq, q, (x) => f(x, k, v));
      checkVjp(`attn dk ${tag}`, rng, g.dk, k, (x) => f(q, x, v));
      checkVjp(`attn dv ${tag}`, rng, g.dv, v, (x) => f(q, k, x));
    }
  });

  test('swiglu: silu values, backward matches FD', () => {
    assert.equal(silu64(0), 0);
    assert.ok(Math.abs(silu64(1) - 1 / (1 + Math.exp(-1))) < 1e-15);
    assert.ok(Math.abs(silu64(-50)) < 1e-19);
    const rng = new Rng(7);
    const n = 31;
    const g = randn64(rng, n, 3);
    const u = randn64(rng, n);
    const dh = randn64(rng, n);
    const { dgate, dup } = swigluBackward64(dh, g, u);
    checkVjp('swiglu dgate', rng, dgate, g, (x) => dot(dh, swigluForward64(x, u)));
    checkVjp('swiglu dup', rng, dup, u, (x) => dot(dh, swigluForward64(g, x)));
  });

  test('ffn equals matmulNT + swiglu composition; backward matches FD', () => {
    const rng = new Rng(8);
    for (const [N, C, F] of [[1, 3, 4], [7, 13, 9], [4, 8, 20]] as const) {
      const x = randn64(rng, N * C);
      const w1 = randn64(rng, F * C, 0.3);
      const w2 = randn64(rng, F * C, 0.3);
      const w3 = randn64(rng, C * F, 0.3);
      const r = ffnForward64(x, w1, w2, w3, N, C, F);
      const gate = matmulNT64(x, w1, N, F, C);
      const up = matmulNT64(x, w2, N, F, C);
      const y = matmulNT64(swigluForward64(gate, up), w3, N, C, F);
      assertClose(r.gate, gate, 1e-14, 'ffn gate');
      assertClose(r.up, up, 1e-14, 'ffn up');
      assertClose(r.y, y, 1e-14, 'ffn y');
      const dy = randn64(rng, N * C);
      const g = ffnBackward64(dy, x, w1, w2, w3, N, C, F);
      const f = (xx: Float64Array, a: Float64Array, b: Float64Array, c: Float64Array) => dot(dy, ffnForward64(xx, a, b, c, N, C, F).y);
      checkVjp('ffn dx', rng, g.dx, x, (t) => f(t, w1, w2, w3));
      checkVjp('ffn dw1', rng, g.dw1, w1, (t) => f(x, t, w2, w3));
      checkVjp('ffn dw2', rng, g.dw2, w2, (t) => f(x, w1, t, w3));
      checkVjp('ffn dw3', rng, g.dw3, w3, (t) => f(x, w1, w2, t));
    }
  });

  test('matmulNT64 on a hand example', () => {
    // A (2,3), B (2,3): C = A B^T
    const c = matmulNT64([1, 2, 3, 4, 5, 6], [1, 0, -1, 2, 1, 0], 2, 2, 3);
    assert.deepEqual(Array.from(c), [1 - 3, 2 + 2, 4 - 6, 8 + 5]);
  });

  test('classifier: losses = -log softmax(target), ignored rows are 0, backward matches FD', () => {
    const rng = new Rng(9);
    const N = 6;
    const C = 5;
    const V = 11;
    const x = randn64(rng, N * C);
    const wte = randn64(rng, V * C);
    const targets = Int32Array.from([3, -1, 0, 10, 10, -1]);
    const { losses, logits } = classifierForward64(x, wte, targets, N, C, V);
    for (let n = 0; n < N; n++) {
      const t = targets[n] as number;
      if (t === -1) {
        assert.equal(losses[n], 0);
        continue;
      }
      // -log(p_t) computed without a max shift: log(sum_v exp(l_v - l_t))
      let s = 0;
      for (let v = 0; v < V; v++) s += Math.exp((logits[n * V + v] as number) - (logits[n * V + t] as number));
      assert.ok(Math.abs((losses[n] as number) - Math.log(s)) < 1e-12);
      assert.ok((losses[n] as number) > 0);
    }
    const scale = 0.37;
    const { dx, dwte } = classifierBackward64(x, wte, targets, N, C, V, scale);
    const sumLoss = (xx: Float64Array, ww: Float64Array) => {
      const l = classifierForward64(xx, ww, targets, N, C, V).losses;
      let s = 0;
      for (const e of l) s += e;
      return scale * s;
    };
    checkVjp('classifier dx', rng, dx, x, (t) => sumLoss(t, wte));
    checkVjp('classifier dwte', rng, dwte, wte, (t) => sumLoss(x, t));
    // ignored rows get no gradient
    for (let c = 0; c < C; c++) assert.equal(dx[1 * C + c], 0);
  });

  test('adamw: step 1 closed form, decoupled decay, untouched outside segments', () => {
    const rng = new Rng(10);
    const n = 20;
    const p = randn64(rng, n);
    const p0 = Float64Array.from(p);
    const g = randn64(rng, n);
    const m = new Float64Array(n);
    const v = new Float64Array(n);
    const hp = { lr: 0.01, beta1: 0.9, beta2: 0.95, eps: 1e-8, step: 1, gradScale: 0.5 };
    adamwStep64(p, g, m, v, [0, 8, 0.1, 10, 6, 0], hp);
    for (let i = 0; i < n; i++) {
      const inSeg = i < 8 || (i >= 10 && i < 16);
      if (!inSeg) {
        assert.equal(p[i], p0[i]);
        assert.equal(m[i], 0);
        assert.equal(v[i], 0);
        continue;
      }
      const wd = i < 8 ? 0.1 : 0;
      const gs = (g[i] as number) * 0.5;
      // at step 1, mhat = g s and vhat = (g s)^2
      const expect = (p0[i] as number) - 0.01 * (gs / (Math.abs(gs) + 1e-8) + wd * (p0[i] as number));
      assert.ok(Math.abs((p[i] as number) - expect) < 1e-14, `i=${i}`);
      assert.ok(Math.abs((m[i] as number) - 0.1 * gs) < 1e-15);
      assert.ok(Math.abs((v[i] as number) - 0.05 * gs * gs) < 1e-15);
    }
  });

  test('globalNorm64', () => {
    assert.equal(globalNorm64([3, 4]), 5);
    assert.equal(globalNorm64([]), 0);
    const g = randn64(new Rng(11), 1000);
    assert.ok(scalarRelErr(globalNorm64(g) ** 2, dot(g, g)) < 1e-14);
    assert.ok(maxAbs(g) <= globalNorm64(g));
  });
});
