/**
 * Shared test utilities: a seeded PRNG, random array makers, float64 conversions,
 * comparison helpers and a finite-difference vector-Jacobian product.
 *
 * Nothing here touches the native addon, so every helper can be used by any test.
 */
import assert from 'node:assert/strict';
import type { PathBatch } from '../lib/memory/memory-model.js';

// ---- PRNG ------------------------------------------------------------------------------------

/** mulberry32: a tiny 32-bit seeded generator; returns floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Deterministic random source: uniforms, Box-Muller normals, integers, permutations. */
export class Rng {
  private readonly next: () => number;
  private spare: number | null = null;

  constructor(seed: number) {
    this.next = mulberry32(seed);
  }

  /** Uniform in [0, 1). */
  uniform(): number {
    return this.next();
  }

  /** Uniform in [lo, hi). */
  range(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  /** Standard normal (Box-Muller, second value cached). */
  normal(): number {
    if (this.spare !== null) {
      const s = this.spare;
      this.spare = null;
      return s;
    }
    let u1 = this.next();
    while (u1 <= 1e-300) u1 = this.next();
    const u2 = this.next();
    const r = Math.sqrt(-2 * Math.log(u1));
    this.spare = r * Math.sin(2 * Math.PI * u2);
    return r * Math.cos(2 * Math.PI * u2);
  }

  /** Integer in [lo, hi); with one argument, in [0, lo). */
  int(lo: number, hi?: number): number {
    if (hi === undefined) return Math.floor(this.next() * lo);
    return lo + Math.floor(this.next() * (hi - lo));
  }

  /** k distinct integers from [0, n), in increasing order (all of them when k >= n). */
  sample(n: number, k: number): number[] {
    if (k >= n) return Array.from({ length: n }, (_, i) => i);
    const idx = Array.from({ length: n }, (_, i) => i);
    for (let i = 0; i < k; i++) {
      const j = i + Math.floor(this.next() * (n - i));
      const t = idx[i] as number;
      idx[i] = idx[j] as number;
      idx[j] = t;
    }
    return idx.slice(0, k).sort((a, b) => a - b);
  }
}

// ---- array makers ----------------------------------------------------------------------------

/** Float32Array of n normals times `scale` (values are exactly float32, so f64 copies are exact). */
/** A batch of random tokens and targets in [0, vocab) for the given (B, levels) paths (-1: no memory). */
export function randomPathBatch(seed: number, paths: number[][], vocab: number, seqLen: number): PathBatch {
  const rng = new Rng(seed);
  const B = paths.length;
  return {
    tokens: new Int32Array(B * seqLen).map(() => rng.int(vocab)),
    targets: new Int32Array(B * seqLen).map(() => rng.int(vocab)),
    batchSize: B,
    paths: Int32Array.from(paths.flat()),
  };
}

export function randn32(rng: Rng, n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal() * scale;
  return a;
}

/** Float64Array of n normals times `scale`. */
export function randn64(rng: Rng, n: number, scale = 1): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal() * scale;
  return a;
}

/** Float32Array of n uniforms in [lo, hi). */
export function randu32(rng: Rng, n: number, lo: number, hi: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.range(lo, hi);
  return a;
}

/** Int32Array of n integers in [lo, hi). */
export function randInts(rng: Rng, n: number, lo: number, hi: number): Int32Array {
  const a = new Int32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.int(lo, hi);
  return a;
}

/** Float32Array filled with a recognisable junk value (to catch kernels that read their outputs). */
export function junk32(n: number, value = 1234.5): Float32Array {
  return new Float32Array(n).fill(value);
}

export function f64(a: ArrayLike<number>): Float64Array {
  return Float64Array.from(a as ArrayLike<number>);
}

export function f32(a: ArrayLike<number>): Float32Array {
  return Float32Array.from(a as ArrayLike<number>);
}

// ---- document layouts ------------------------------------------------------------------------

/** docStart for one row made of documents with the given lengths (must sum to the row length). */
export function docStartFromLengths(lengths: readonly number[]): Int32Array {
  const total = lengths.reduce((s, l) => s + l, 0);
  const ds = new Int32Array(total);
  let t = 0;
  for (const len of lengths) {
    for (let i = 0; i < len; i++) ds[t + i] = t;
    t += len;
  }
  return ds;
}

/** Concatenate per-row docStart arrays into one (B, T) array. */
export function concatRows(rows: readonly Int32Array[]): Int32Array {
  const total = rows.reduce((s, r) => s + r.length, 0);
  const out = new Int32Array(total);
  let o = 0;
  for (const r of rows) {
    out.set(r, o);
    o += r.length;
  }
  return out;
}

/** Random document segmentation of a row of length T. */
export function randomDocLengths(rng: Rng, T: number, maxLen: number): number[] {
  const out: number[] = [];
  let left = T;
  while (left > 0) {
    const l = Math.min(left, rng.int(1, maxLen + 1));
    out.push(l);
    left -= l;
  }
  return out;
}

// ---- comparisons -----------------------------------------------------------------------------

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] as number));
  return m;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'length mismatch');
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs((a[i] as number) - (b[i] as number));
    if (!(d <= m)) m = d; // NaN propagates as NaN
  }
  return m;
}

/**
 * The comparison measure used throughout: max_i |a_i - ref_i| / (max(max_i |ref_i|, floor) + 1e-6).
 * `floor` (default 0) is only for results that are tiny by cancellation of much larger terms, where
 * the magnitude of those terms is the honest yardstick for rounding error.
 * NaN anywhere yields NaN (which fails every `<= tol` check).
 */
export function maxRelErr(actual: ArrayLike<number>, ref: ArrayLike<number>, floor = 0): number {
  const d = maxAbsDiff(actual, ref);
  return d / (Math.max(maxAbs(ref), floor) + 1e-6);
}

/** Assert maxRelErr(actual, ref, floor) <= tol, with a message naming the worst element. */
export function assertClose(actual: ArrayLike<number>, ref: ArrayLike<number>, tol: number, label: string, floor = 0): number {
  assert.equal(actual.length, ref.length, `${label}: length ${actual.length} != ${ref.length}`);
  const err = maxRelErr(actual, ref, floor);
  if (!(err <= tol)) {
    let worst = 0;
    let wd = -1;
    for (let i = 0; i < ref.length; i++) {
      const d = Math.abs((actual[i] as number) - (ref[i] as number));
      if (Number.isNaN(d) || d > wd) {
        wd = Number.isNaN(d) ? Infinity : d;
        worst = i;
      }
    }
    assert.fail(
      `${label}: maxRelErr ${err.toExponential(3)} > tol ${tol.toExponential(1)}${floor > 0 ? ` (floor ${floor.toExponential(2)})` : ''} ` +
        `(worst index ${worst}: got ${actual[worst]}, ref ${ref[worst]}, max|ref| ${maxAbs(ref).toExponential(3)})`,
    );
  }
  return err;
}

/** Relative error of two scalars: |a - b| / (|b| + 1e-12). */
export function scalarRelErr(a: number, b: number): number {
  return Math.abs(a - b) / (Math.abs(b) + 1e-12);
}

export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'dot: length mismatch');
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] as number) * (b[i] as number);
  return s;
}

/** Pick the entries of `a` at `idx`. */
export function gather(a: ArrayLike<number>, idx: readonly number[]): Float64Array {
  const out = new Float64Array(idx.length);
  for (let i = 0; i < idx.length; i++) out[i] = a[idx[i] as number] as number;
  return out;
}

// ---- finite differences ----------------------------------------------------------------------

/**
 * Central-difference vector-Jacobian product of a float64 function.
 * For each i in `indices`, returns (phi(x + h e_i) - phi(x - h e_i)) / 2h where
 * phi(x) = scalar(x) (typically dot(dout, f(x))). `x` is restored afterwards.
 */
export function fdGrad(scalar: (x: Float64Array) => number, x: Float64Array, indices: readonly number[], h = 1e-6): Float64Array {
  const out = new Float64Array(indices.length);
  for (let n = 0; n < indices.length; n++) {
    const i = indices[n] as number;
    const x0 = x[i] as number;
    x[i] = x0 + h;
    const fp = scalar(x);
    x[i] = x0 - h;
    const fm = scalar(x);
    x[i] = x0;
    out[n] = (fp - fm) / (2 * h);
  }
  return out;
}

/** Indices to check by finite differences: all of [0, n) when n <= maxAll, else a seeded subset. */
export function fdIndices(rng: Rng, n: number, maxAll = 400, subset = 96): number[] {
  return n <= maxAll ? Array.from({ length: n }, (_, i) => i) : rng.sample(n, subset);
}

// ---- native error checks ---------------------------------------------------------------------

/**
 * Asserts `fn` throws an Error carrying `code`. The binding contract says the raw addon throws
 * Error("[E_CODE] ..."); lib/native.ts may instead rethrow a HiermemError whose `.code` is set and
 * whose message has the prefix stripped. Both forms are accepted, nothing else is.
 */
export function assertThrowsCode(fn: () => unknown, codes: string | readonly string[], label: string): void {
  const allowed = typeof codes === 'string' ? [codes] : codes;
  let threw = false;
  try {
    fn();
  } catch (err) {
    threw = true;
    assert.ok(err instanceof Error, `${label}: threw a non-Error ${String(err)}`);
    const msg = err.message;
    const code = (err as { code?: unknown }).code;
    const ok = allowed.some((c) => msg.startsWith(`[${c}] `) || code === c);
    assert.ok(ok, `${label}: expected an error with code ${allowed.join(' or ')}, got message ${JSON.stringify(msg)} code ${String(code)}`);
  }
  assert.ok(threw, `${label}: expected a throw with code ${allowed.join(' or ')}, but nothing was thrown`);
}

// ---- input immutability ----------------------------------------------------------------------

type Typed = Float32Array | Float64Array | Int32Array;

/**
 * Snapshots the bytes of the given arrays; the returned function asserts none of them changed
 * (bitwise, so NaN and -0 are compared exactly). Use it around kernels whose inputs are read-only.
 */
export function snapshot(arrays: Record<string, Typed | null>): () => void {
  const saved = Object.entries(arrays)
    .filter((e): e is [string, Typed] => e[1] !== null)
    .map(([name, a]) => [name, a, Buffer.from(new Uint8Array(a.buffer, a.byteOffset, a.byteLength))] as const);
  return () => {
    for (const [name, a, bytes] of saved) {
      const now = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
      assert.ok(bytes.equals(now), `input ${name} was modified by the kernel`);
    }
  };
}
