/**
 * Thread-count handling of the native core: setNumThreads/getNumThreads round-trip, changing the
 * thread count after parallel work has run, and kernel results at several thread counts against the
 * float64 references. Kept in its own file: a crash here (it runs native thread-pool code) must not
 * hide the per-kernel results of kernels.test.ts.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { loadNative } from '../lib/native.js';
import type { NativeAddon } from '../lib/native-types.js';
import { Rng, assertClose, concatRows, docStartFromLengths, f64, randInts, randn32, scalarRelErr } from './helpers.js';
import {
  attentionForward64,
  classifierBackward64,
  classifierForward64,
  globalNorm64,
  matmulNT64,
} from './reference/kernels64.js';

const native: NativeAddon = loadNative();
const FWD_TOL = 1e-5;
const GRAD_TOL = 1e-4;

describe('native thread count', () => {
  let saved = 1;
  before(() => {
    saved = native.getNumThreads();
  });
  after(() => {
    native.setNumThreads(saved);
  });

  test('getNumThreads is a positive integer and round-trips setNumThreads', () => {
    assert.ok(Number.isInteger(saved) && saved >= 1, `getNumThreads() = ${saved}`);
    native.setNumThreads(1);
    assert.equal(native.getNumThreads(), 1);
    native.setNumThreads(3);
    assert.equal(native.getNumThreads(), 3);
  });

  test('changing the thread count after parallel work has run (repeatedly) is safe', () => {
    const g = new Float32Array(1_000_003).fill(0.5);
    const ref = globalNorm64(g);
    for (const t of [2, 3, 1, 2, 4, 2, 3]) {
      assert.ok(scalarRelErr(native.globalNorm(g), ref) < 1e-9); // parallel work at the current count
      native.setNumThreads(t);
      assert.equal(native.getNumThreads(), t);
    }
    assert.ok(scalarRelErr(native.globalNorm(g), ref) < 1e-9);
  });

  for (const threads of [1, 2, 3]) {
    test(`kernels at threads=${threads} match the float64 references`, () => {
      native.setNumThreads(threads);
      assert.equal(native.getNumThreads(), threads);
      const rng = new Rng(1100);
      const B = 3;
      const T = 21;
      const H = 3;
      const hd = 8;
      const n = B * T * H * hd;
      const q = randn32(rng, n);
      const k = randn32(rng, n);
      const v = randn32(rng, n);
      const ds = concatRows([docStartFromLengths([5, 16]), docStartFromLengths([21]), docStartFromLengths([1, 1, 19])]);
      const out = new Float32Array(n);
      const lse = new Float32Array(B * H * T);
      native.attentionForward(out, lse, q, k, v, ds, B, T, H, hd);
      const ra = attentionForward64(f64(q), f64(k), f64(v), ds, B, T, H, hd);
      assertClose(out, ra.out, FWD_TOL, 'attention out');
      assertClose(lse, ra.lse, FWD_TOL, 'attention lse');
      const M = 65;
      const N = 33;
      const K = 70;
      const a = randn32(rng, M * K);
      const b = randn32(rng, N * K);
      const c = new Float32Array(M * N);
      native.matmulNT(c, a, b, M, N, K);
      assertClose(c, matmulNT64(f64(a), f64(b), M, N, K), FWD_TOL, 'matmulNT');
      const V = 257;
      const C = 24;
      const Nr = 40;
      const x = randn32(rng, Nr * C);
      const wte = randn32(rng, V * C);
      const targets = randInts(rng, Nr, -1, V);
      const losses = new Float32Array(Nr);
      const dx = new Float32Array(Nr * C);
      const dwte = new Float32Array(V * C);
      native.classifierForwardBackward(losses, dx, dwte, x, wte, targets, Nr, C, V, 1 / Nr);
      assertClose(losses, classifierForward64(f64(x), f64(wte), targets, Nr, C, V).losses, FWD_TOL, 'classifier losses');
      const g = classifierBackward64(f64(x), f64(wte), targets, Nr, C, V, 1 / Nr);
      assertClose(dx, g.dx, GRAD_TOL, 'classifier dx');
      assertClose(dwte, g.dwte, GRAD_TOL, 'classifier dwte');
    });
  }
});
