/**
 * Whole anchor model in float64, composed from the kernel references: used for the model-level
 * loss comparison and finite-difference gradient checks. Mirrors cpp/anchor_model.cc's math
 * (QK-norm over the full q/k vectors, rotary positions restarting at each document).
 */
import type { ModelConfig } from '../../lib/model/config.js';
import type { TensorSlot } from '../../lib/native-types.js';
import {
  attentionForward64, classifierForward64, embeddingForward64, ffnForward64, matmulNT64,
  rmsnormForward64, ropeForward64,
} from './kernels64.js';

export interface Batch64 {
  tokens: ArrayLike<number>;
  targets: ArrayLike<number>;
  docStart: ArrayLike<number> | null;
  B: number;
  T: number;
}

/** Fetched FFN-memories: fetched (S, Lm, 3, R, C); seqSlot (B), -1 = none. */
export interface Memory64 {
  R: number;
  layerToMemory: ArrayLike<number>;
  fetched: Float64Array;
  seqSlot: ArrayLike<number>;
}

/**
 * Loss of the model; with `mem`, each sequence's FFN in a memory layer is ONE SwiGLU of width F + R
 * over concatenated weights [W1; Wg], [W2; Wu], [W3, Wd^T] — the unfused definition (paper §2.3).
 */
export function modelLoss64(cfg: ModelConfig, layout: readonly TensorSlot[], params: Float64Array, b: Batch64, mem?: Memory64): number {
  const get = (name: string): Float64Array => {
    const s = layout.find((x) => x.name === name);
    if (!s) throw new Error(`no tensor ${name}`);
    return params.subarray(s.offset, s.offset + s.size);
  };
  const { vocabSize: V, dModel: C, nLayers: L, nHeads: H, headDim: hd, ffnHidden: F, normEps: eps, ropeBase: base } = cfg;
  const D = H * hd;
  const N = b.B * b.T;
  const pos = new Int32Array(N);
  for (let n = 0; n < N; n++) pos[n] = (n % b.T) - (b.docStart ? (b.docStart[n] as number) : 0);
  let x = embeddingForward64(b.tokens, get('tok_embeddings.weight'), V, C);
  for (let l = 0; l < L; l++) {
    const p = `layers.${l}.`;
    const u = rmsnormForward64(x, get(p + 'attn_norm.weight'), N, C, eps).out;
    const wqkv = get(p + 'attn.wqkv');
    const qRaw = matmulNT64(u, wqkv.subarray(0, D * C), N, D, C);
    const kRaw = matmulNT64(u, wqkv.subarray(D * C, 2 * D * C), N, D, C);
    const v = matmulNT64(u, wqkv.subarray(2 * D * C), N, D, C);
    const q = ropeForward64(rmsnormForward64(qRaw, get(p + 'attn.q_norm.weight'), N, D, eps).out, pos, N, H, hd, base);
    const k = ropeForward64(rmsnormForward64(kRaw, get(p + 'attn.k_norm.weight'), N, D, eps).out, pos, N, H, hd, base);
    const att = attentionForward64(q, k, v, b.docStart, b.B, b.T, H, hd).out;
    const proj = matmulNT64(att, get(p + 'attn.wo'), N, C, D);
    const h = new Float64Array(N * C);
    for (let i = 0; i < N * C; i++) h[i] = x[i]! + proj[i]!;
    const u2 = rmsnormForward64(h, get(p + 'ffn_norm.weight'), N, C, eps).out;
    const j = mem ? (mem.layerToMemory[l] as number) : -1;
    let y: Float64Array;
    if (!mem || j < 0) {
      y = ffnForward64(u2, get(p + 'ffn.w1'), get(p + 'ffn.w2'), get(p + 'ffn.w3'), N, C, F).y;
    } else {
      y = new Float64Array(N * C);
      const R = mem.R;
      const slotFloats = (mem.fetched.length / Math.max(1, maxSlot(mem.seqSlot) + 1));
      for (let bi = 0; bi < b.B; bi++) {
        const rows = u2.subarray(bi * b.T * C, (bi + 1) * b.T * C);
        const s = mem.seqSlot[bi] as number;
        let yb: Float64Array;
        if (s < 0) {
          yb = ffnForward64(rows, get(p + 'ffn.w1'), get(p + 'ffn.w2'), get(p + 'ffn.w3'), b.T, C, F).y;
        } else {
          const base = s * slotFloats + j * 3 * R * C;
          const wg = mem.fetched.subarray(base, base + R * C);
          const wu = mem.fetched.subarray(base + R * C, base + 2 * R * C);
          const wd = mem.fetched.subarray(base + 2 * R * C, base + 3 * R * C);
          const w1 = concatRows64(get(p + 'ffn.w1'), wg);
          const w2 = concatRows64(get(p + 'ffn.w2'), wu);
          const w3 = new Float64Array(C * (F + R)); // [W3, Wd^T]: (C, F + R)
          const a3 = get(p + 'ffn.w3');
          for (let c = 0; c < C; c++) {
            for (let f = 0; f < F; f++) w3[c * (F + R) + f] = a3[c * F + f]!;
            for (let r = 0; r < R; r++) w3[c * (F + R) + F + r] = wd[r * C + c]!;
          }
          yb = ffnForward64(rows, w1, w2, w3, b.T, C, F + R).y;
        }
        y.set(yb, bi * b.T * C);
      }
    }
    x = new Float64Array(N * C);
    for (let i = 0; i < N * C; i++) x[i] = h[i]! + y[i]!;
  }
  const lnf = rmsnormForward64(x, get('final_norm.weight'), N, C, eps).out;
  const { losses } = classifierForward64(lnf, get('tok_embeddings.weight'), b.targets, N, C, V);
  let sum = 0;
  let count = 0;
  for (let n = 0; n < N; n++) {
    if ((b.targets[n] as number) >= 0) {
      sum += losses[n]!;
      count++;
    }
  }
  return sum / count;
}

function concatRows64(a: Float64Array, b: Float64Array): Float64Array {
  const out = new Float64Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function maxSlot(slots: ArrayLike<number>): number {
  let m = -1;
  for (let i = 0; i < slots.length; i++) m = Math.max(m, slots[i] as number);
  return m;
}
