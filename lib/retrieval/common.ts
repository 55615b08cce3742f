/**
 * Small helpers shared by the retrieval modules: row normalisation, dot products, argument checks
 * and the integer hash behind the hashed features.
 */
import { HiermemError, check } from '../errors.js';

/** L2-normalises each row of (n, dim) in place; all-zero rows stay zero. */
export function normalizeRows(data: Float32Array, n: number, dim: number): void {
  for (let i = 0; i < n; i++) {
    const o = i * dim;
    let s = 0;
    for (let j = 0; j < dim; j++) s += data[o + j]! * data[o + j]!;
    if (s === 0) continue;
    const inv = 1 / Math.sqrt(s);
    for (let j = 0; j < dim; j++) data[o + j] = data[o + j]! * inv;
  }
}

/** a[ao .. ao+dim) · b[bo .. bo+dim), accumulated in float64. */
export function dotAt(a: Float32Array, ao: number, b: Float32Array, bo: number, dim: number): number {
  let s = 0;
  for (let j = 0; j < dim; j++) s += a[ao + j]! * b[bo + j]!;
  return s;
}

export function checkTexts(texts: unknown, who: string): asserts texts is readonly string[] {
  if (!Array.isArray(texts)) throw new HiermemError('E_INVALID_ARGUMENT', `${who}: texts must be an array of strings`);
  for (let i = 0; i < texts.length; i++) {
    if (typeof texts[i] !== 'string') {
      throw new HiermemError('E_INVALID_ARGUMENT', `${who}: texts[${i}] is ${typeof texts[i]}, not a string`);
    }
  }
}

/** murmur3's 32-bit finaliser: a cheap bijective mix with full avalanche. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** FNV-1a over the string's UTF-16 code units, then fmix32 (FNV alone mixes its low bits poorly). */
export function hashString(s: string, seed = 0): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return fmix32(h);
}

/** Throws `code` unless v is an integer in [lo, hi]. */
export function checkInt(v: unknown, lo: number, hi: number, what: string, code: 'E_INVALID_ARGUMENT' | 'E_CONFIG_INVALID' = 'E_INVALID_ARGUMENT'): number {
  check(typeof v === 'number' && Number.isInteger(v) && v >= lo && v <= hi, code, `${what} must be an integer in [${lo}, ${hi}], got ${String(v)}`);
  return v;
}
