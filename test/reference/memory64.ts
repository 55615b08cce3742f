/**
 * Plain and float64 references for the memory bank and its kernels (lib/native-types.ts:
 * NativeMemorySpec, NativeMemoryBank, ffnMemoryForward/Backward), written from the definitions in
 * design.md / paper §2.3, §3.4 and never from the C++:
 *
 *  - level l (0-based) of a k-ary tree of p levels has k^(l+1) nodes; its block holds r_l units for
 *    each of the Lm memory layers, stored [Lm][3][r_l][d] (gate rows, up rows, down rows);
 *  - a fetched slot is [Lm][3][R][d], R = sum r_l, level l's rows at sum_{j<l} r_j inside each
 *    (layer, gate|up|down); the optional generic block (addressed as level p) holds R rows;
 *  - the memory FFN of one sequence is one SwiGLU of inner width F + R with weights
 *    W1cat = [W1; Wg], W2cat = [W2; Wu], W3cat = [W3, Wd^T].
 *
 * Bookkeeping helpers are exact integer code; gather / scatter-add references are plain copies and
 * float32 sums in slot order (so the native kernels must match them bitwise); AdamW and the FFN are
 * float64.
 */
import type { BankTensorSlot, NativeMemorySpec } from '../../lib/native-types.js';
import type { Rng } from '../helpers.js';
import { ffnBackward64, ffnForward64 } from './kernels64.js';

// ---- shapes ----------------------------------------------------------------------------------

export function specP(spec: NativeMemorySpec): number {
  return spec.levels.length;
}

/** R = sum r_l. */
export function specR(spec: NativeMemorySpec): number {
  return spec.levels.reduce((s, r) => s + r, 0);
}

/** Nodes of level l: k^(l+1); the generic level p has one. */
export function levelNodes(spec: NativeMemorySpec, l: number): number {
  return l === specP(spec) ? 1 : spec.k ** (l + 1);
}

/** Rows (units) of a block of level l: r_l, or R for the generic level p. */
export function levelRows(spec: NativeMemorySpec, l: number): number {
  return l === specP(spec) ? specR(spec) : (spec.levels[l] as number);
}

/** First row of level l inside a fetched slot (the generic block starts at 0). */
export function rowOffset(spec: NativeMemorySpec, l: number): number {
  if (l === specP(spec)) return 0;
  let s = 0;
  for (let j = 0; j < l; j++) s += spec.levels[j] as number;
  return s;
}

export function blockFloats(spec: NativeMemorySpec, l: number): number {
  return spec.memoryLayers * 3 * levelRows(spec, l) * spec.dModel;
}

export function slotFloats(spec: NativeMemorySpec): number {
  return spec.memoryLayers * 3 * specR(spec) * spec.dModel;
}

/** Levels that hold blocks: l < p with r_l > 0, then p if the bank has a generic block. */
export function blockLevels(spec: NativeMemorySpec): number[] {
  const out: number[] = [];
  for (let l = 0; l < specP(spec); l++) if ((spec.levels[l] as number) > 0) out.push(l);
  if (spec.generic) out.push(specP(spec));
  return out;
}

/** Every (level, node) block of the bank, sorted. */
export function allBlocks(spec: NativeMemorySpec): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const l of blockLevels(spec)) for (let n = 0; n < levelNodes(spec, l); n++) out.push([l, n]);
  return out;
}

/**
 * The bank tensors as the contract describes them, in data order: F32 weights per level
 * (generic last), then with the optimizer adam_m, adam_v (F32, same shapes) and steps (I32 [nodes]),
 * then initialized (I32 [nodes]); back to back with no holes. Names are not derived here.
 */
export function expectedBankTensors(spec: NativeMemorySpec): Array<Omit<BankTensorSlot, 'name'> & { kind: string }> {
  const out: Array<Omit<BankTensorSlot, 'name'> & { kind: string }> = [];
  let off = 0;
  const levels = blockLevels(spec);
  const f32 = (kind: string) => {
    for (const l of levels) {
      const shape = [levelNodes(spec, l), spec.memoryLayers, 3, levelRows(spec, l), spec.dModel];
      const byteSize = 4 * shape.reduce((a, b) => a * b, 1);
      out.push({ kind, dtype: 'F32', shape, level: l, byteOffset: off, byteSize });
      off += byteSize;
    }
  };
  const i32 = (kind: string) => {
    for (const l of levels) {
      const byteSize = 4 * levelNodes(spec, l);
      out.push({ kind, dtype: 'I32', shape: [levelNodes(spec, l)], level: l, byteOffset: off, byteSize });
      off += byteSize;
    }
  };
  f32('weight');
  if (spec.optimizer) {
    f32('adam_m');
    f32('adam_v');
    i32('steps');
  }
  i32('initialized');
  return out;
}

// ---- paths -----------------------------------------------------------------------------------

/** A random consistent root-to-leaf path: node_{l+1} in [node_l * k, node_l * k + k). */
export function randomPath(rng: Rng, k: number, p: number): number[] {
  const out: number[] = [];
  let node = rng.int(k);
  out.push(node);
  for (let l = 1; l < p; l++) {
    node = node * k + rng.int(k);
    out.push(node);
  }
  return out;
}

/** Block (level, node) slot s fetches at level l, or null if it fetches none there. */
function slotBlock(spec: NativeMemorySpec, paths: ArrayLike<number>, s: number, l: number): number | null {
  const p = specP(spec);
  const generic = (paths[s * p] as number) < 0;
  if (l === p) return generic ? 0 : null;
  if (generic || (spec.levels[l] as number) === 0) return null;
  return paths[s * p + l] as number;
}

/** Sorted unique (level, node) pairs the paths fetch, flattened. */
export function uniqueBlocksRef(spec: NativeMemorySpec, paths: ArrayLike<number>): Int32Array {
  const p = specP(spec);
  const S = paths.length / p;
  const keys = new Set<string>();
  const list: Array<[number, number]> = [];
  for (let s = 0; s < S; s++) {
    for (let l = 0; l <= p; l++) {
      const node = slotBlock(spec, paths, s, l);
      if (node === null) continue;
      const key = `${l}:${node}`;
      if (!keys.has(key)) {
        keys.add(key);
        list.push([l, node]);
      }
    }
  }
  list.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  return Int32Array.from(list.flat());
}

/** Offsets (floats) of each block of a flattened block list inside a dblocks buffer, and the total. */
export function blockOffsets(spec: NativeMemorySpec, blocks: ArrayLike<number>): { offsets: number[]; total: number } {
  const offsets: number[] = [];
  let total = 0;
  for (let i = 0; i < blocks.length; i += 2) {
    offsets.push(total);
    total += blockFloats(spec, blocks[i] as number);
  }
  return { offsets, total };
}

// ---- gather / scatter-add --------------------------------------------------------------------

export type BlockReader = (level: number, node: number) => Float32Array;

/** fetched (S, Lm, 3, R, d) built by plain copies from each block ([Lm][3][rows][d]). */
export function gatherRef(spec: NativeMemorySpec, paths: ArrayLike<number>, read: BlockReader): Float32Array {
  const out = new Float32Array((paths.length / specP(spec)) * slotFloats(spec));
  gatherInto(out, spec, paths, read);
  return out;
}

/** The same in float64 (for finite differences through the bank). */
export function gatherRef64(spec: NativeMemorySpec, paths: ArrayLike<number>, read: (level: number, node: number) => ArrayLike<number>): Float64Array {
  const out = new Float64Array((paths.length / specP(spec)) * slotFloats(spec));
  gatherInto(out, spec, paths, read);
  return out;
}

function gatherInto(out: Float32Array | Float64Array, spec: NativeMemorySpec, paths: ArrayLike<number>, read: (level: number, node: number) => ArrayLike<number>): void {
  const p = specP(spec);
  const S = paths.length / p;
  const R = specR(spec);
  const d = spec.dModel;
  for (let s = 0; s < S; s++) {
    for (let l = 0; l <= p; l++) {
      const node = slotBlock(spec, paths, s, l);
      if (node === null) continue;
      const blk = read(l, node);
      const rows = levelRows(spec, l);
      const r0 = rowOffset(spec, l);
      for (let m = 0; m < spec.memoryLayers * 3; m++) {
        for (let i = 0; i < rows; i++) {
          for (let c = 0; c < d; c++) {
            out[s * slotFloats(spec) + (m * R + r0 + i) * d + c] = blk[(m * rows + i) * d + c] as number;
          }
        }
      }
    }
  }
}

/**
 * dblocks (copied, then returned) += for each listed block, the matching rows of every slot that
 * fetched it, added in slot order in float32 (Math.fround after every addition).
 */
export function scatterAddRef(spec: NativeMemorySpec, dblocks0: Float32Array, blocks: ArrayLike<number>,
                              dfetched: ArrayLike<number>, paths: ArrayLike<number>): Float32Array {
  const out = Float32Array.from(dblocks0);
  const p = specP(spec);
  const S = paths.length / p;
  const R = specR(spec);
  const d = spec.dModel;
  const { offsets } = blockOffsets(spec, blocks);
  for (let u = 0; u < blocks.length / 2; u++) {
    const l = blocks[2 * u] as number;
    const node = blocks[2 * u + 1] as number;
    const rows = levelRows(spec, l);
    const r0 = rowOffset(spec, l);
    const o = offsets[u] as number;
    for (let s = 0; s < S; s++) {
      if (slotBlock(spec, paths, s, l) !== node) continue;
      for (let m = 0; m < spec.memoryLayers * 3; m++) {
        for (let i = 0; i < rows; i++) {
          for (let c = 0; c < d; c++) {
            const j = o + (m * rows + i) * d + c;
            out[j] = Math.fround((out[j] as number) + (dfetched[s * slotFloats(spec) + (m * R + r0 + i) * d + c] as number));
          }
        }
      }
    }
  }
  return out;
}

// ---- AdamW on one block ----------------------------------------------------------------------

export interface BlockAdamHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  gradScale: number;
}

/**
 * One dense AdamW step in float64 on one block with its own step count `step` (1-based).
 * Returns fresh (p, m, v). Decoupled decay: p -= lr (mhat / (sqrt(vhat) + eps) + wd p).
 */
export function adamwBlock64(p0: ArrayLike<number>, g: ArrayLike<number>, m0: ArrayLike<number>, v0: ArrayLike<number>,
                             step: number, h: BlockAdamHyper, wd: number): { p: Float64Array; m: Float64Array; v: Float64Array } {
  const n = p0.length;
  const p = new Float64Array(n);
  const m = new Float64Array(n);
  const v = new Float64Array(n);
  const bc1 = 1 - Math.pow(h.beta1, step);
  const bc2 = 1 - Math.pow(h.beta2, step);
  for (let i = 0; i < n; i++) {
    const gi = (g[i] as number) * h.gradScale;
    m[i] = h.beta1 * (m0[i] as number) + (1 - h.beta1) * gi;
    v[i] = h.beta2 * (v0[i] as number) + (1 - h.beta2) * gi * gi;
    const mhat = (m[i] as number) / bc1;
    const vhat = (v[i] as number) / bc2;
    p[i] = (p0[i] as number) - h.lr * (mhat / (Math.sqrt(vhat) + h.eps) + wd * (p0[i] as number));
  }
  return { p, m, v };
}

// ---- FFN with memory -------------------------------------------------------------------------

/**
 * Concatenated SwiGLU weights of one slot: fetched slot (3, R, C) = [Wg; Wu; Wd] (rows).
 * W1cat = [W1; Wg] (F+R, C), W2cat = [W2; Wu] (F+R, C), W3cat = [W3, Wd^T] (C, F+R).
 */
export function concatFfnWeights(w1: ArrayLike<number>, w2: ArrayLike<number>, w3: ArrayLike<number>,
                                 slot: ArrayLike<number>, C: number, F: number, R: number): { w1: Float64Array; w2: Float64Array; w3: Float64Array } {
  const G = F + R;
  const a = new Float64Array(G * C);
  const b = new Float64Array(G * C);
  const c3 = new Float64Array(C * G);
  for (let f = 0; f < F; f++) {
    for (let c = 0; c < C; c++) {
      a[f * C + c] = w1[f * C + c] as number;
      b[f * C + c] = w2[f * C + c] as number;
      c3[c * G + f] = w3[c * F + f] as number;
    }
  }
  for (let j = 0; j < R; j++) {
    for (let c = 0; c < C; c++) {
      a[(F + j) * C + c] = slot[j * C + c] as number;
      b[(F + j) * C + c] = slot[(R + j) * C + c] as number;
      c3[c * G + F + j] = slot[(2 * R + j) * C + c] as number;
    }
  }
  return { w1: a, w2: b, w3: c3 };
}

/**
 * y (B*T, C) of the anchor FFN plus each sequence's memory slot, per sequence as one float64 SwiGLU
 * of width F + R (seqSlot -1: width F, anchor only). fetched (S, 3, R, C).
 */
export function ffnWithMemory64(x: ArrayLike<number>, w1: ArrayLike<number>, w2: ArrayLike<number>, w3: ArrayLike<number>,
                                fetched: ArrayLike<number>, seqSlot: ArrayLike<number>, B: number, T: number,
                                C: number, F: number, R: number): Float64Array {
  const y = new Float64Array(B * T * C);
  for (let b = 0; b < B; b++) {
    const xs = Array.prototype.slice.call(x, b * T * C, (b + 1) * T * C) as number[];
    const s = seqSlot[b] as number;
    let yb: Float64Array;
    if (s < 0) {
      yb = ffnForward64(xs, w1, w2, w3, T, C, F).y;
    } else {
      const slot = Array.prototype.slice.call(fetched, s * 3 * R * C, (s + 1) * 3 * R * C) as number[];
      const w = concatFfnWeights(w1, w2, w3, slot, C, F, R);
      yb = ffnForward64(xs, w.w1, w.w2, w.w3, T, C, F + R).y;
    }
    y.set(yb, b * T * C);
  }
  return y;
}

/**
 * Gradients of sum(dy * ffnWithMemory64(...)) w.r.t. x (B*T, C) and fetched (S, 3, R, C), from the
 * analytic float64 SwiGLU backward on the concatenated weights, split back into the slot layout.
 */
export function ffnWithMemoryBackward64(dy: ArrayLike<number>, x: ArrayLike<number>, w1: ArrayLike<number>, w2: ArrayLike<number>,
                                        w3: ArrayLike<number>, fetched: ArrayLike<number>, seqSlot: ArrayLike<number>,
                                        B: number, T: number, C: number, F: number, R: number, S: number): { dx: Float64Array; dfetched: Float64Array } {
  const dx = new Float64Array(B * T * C);
  const dfetched = new Float64Array(S * 3 * R * C);
  for (let b = 0; b < B; b++) {
    const xs = Array.prototype.slice.call(x, b * T * C, (b + 1) * T * C) as number[];
    const dys = Array.prototype.slice.call(dy, b * T * C, (b + 1) * T * C) as number[];
    const s = seqSlot[b] as number;
    if (s < 0) {
      dx.set(ffnBackward64(dys, xs, w1, w2, w3, T, C, F).dx, b * T * C);
      continue;
    }
    const slot = Array.prototype.slice.call(fetched, s * 3 * R * C, (s + 1) * 3 * R * C) as number[];
    const w = concatFfnWeights(w1, w2, w3, slot, C, F, R);
    const g = ffnBackward64(dys, xs, w.w1, w.w2, w.w3, T, C, F + R);
    dx.set(g.dx, b * T * C);
    const G = F + R;
    const base = s * 3 * R * C;
    for (let j = 0; j < R; j++) {
      for (let c = 0; c < C; c++) {
        dfetched[base + j * C + c] = (dfetched[base + j * C + c] as number) + (g.dw1[(F + j) * C + c] as number);
        dfetched[base + (R + j) * C + c] = (dfetched[base + (R + j) * C + c] as number) + (g.dw2[(F + j) * C + c] as number);
        dfetched[base + (2 * R + j) * C + c] = (dfetched[base + (2 * R + j) * C + c] as number) + (g.dw3[c * G + F + j] as number);
      }
    }
  }
  return { dx, dfetched };
}
