/**
 * The generalised anchor (the Llama family) in float64, written from the Hugging Face Llama / Qwen2
 * equations rather than from cpp/anchor_model.cc: q/k/v projections with optional biases, optional
 * RMSNorm of the full q and k rows (our anchor, Qwen3-style), rotary embedding with rotate_half and
 * the Llama-3.1 frequency scaling, grouped-query attention as `repeat_kv` (query head h reads key /
 * value head floor(h / (H / Hkv))), SwiGLU, tied or separate output head. Packed documents restart
 * their positions and attend within themselves; FFN-memories add R units to the SwiGLU of their
 * layers (the unfused definition: silu(Wg u) ⊙ (Wu u), then the down columns).
 *
 * Plain loops, fresh arrays, obviously correct rather than fast: the tests use it on tiny shapes,
 * and take its gradients by central finite differences (in float64 those are accurate to ~1e-9).
 */
import type { LlamaFields, ModelConfig, RopeScaling } from '../../lib/model/config.js';
import type { TensorSlot } from '../../lib/native-types.js';
import { embeddingForward64, matmulNT64, rmsnormForward64, silu64 } from './kernels64.js';

/** The resolved config the reference needs (every Llama-family field present). */
export type LlamaConfig64 = ModelConfig & LlamaFields;

export interface LlamaBatch64 {
  tokens: ArrayLike<number>;
  docStart: ArrayLike<number> | null;
  B: number;
  T: number;
}

/** Fetched FFN-memories: fetched (S, Lm, 3, R, C) = per slot and memory layer [gate rows; up rows; down rows]. */
export interface LlamaMemory64 {
  R: number;
  layerToMemory: ArrayLike<number>;
  fetched: Float64Array;
  /** (B): slot of each sequence, -1 = none. */
  seqSlot: ArrayLike<number>;
  numSlots: number;
}

/**
 * inv_freq of transformers' _compute_default_rope_parameters / _compute_llama3_parameters:
 * 1 / base^(2i / hd); with llama3 scaling, low frequencies (wavelength > original / lowFreqFactor)
 * divided by factor, high ones (wavelength < original / highFreqFactor) kept, and the band between
 * blended: (1 - s) inv / factor + s inv with s = (original / wavelength - low) / (high - low).
 */
export function ropeInvFreq64(hd: number, base: number, scaling: RopeScaling | null): Float64Array {
  const half = hd / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.pow(base, (2 * i) / hd);
  if (!scaling) return inv;
  const { factor, lowFreqFactor: lo, highFreqFactor: hi, originalMaxPositions: old } = scaling;
  const lowWavelen = old / lo;
  const highWavelen = old / hi;
  for (let i = 0; i < half; i++) {
    const f = inv[i]!;
    const wavelen = (2 * Math.PI) / f;
    const scaled = wavelen > lowWavelen ? f / factor : f;
    const isMedium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
    if (isMedium) {
      const smooth = (old / wavelen - lo) / (hi - lo);
      inv[i] = ((1 - smooth) * scaled) / factor + smooth * scaled;
    } else {
      inv[i] = scaled;
    }
  }
  return inv;
}

/** HF apply_rotary_pos_emb on x (N, nh, hd): x * cos + rotate_half(x) * sin, angle pos * invFreq[i mod half]. */
function rope64(x: Float64Array, pos: ArrayLike<number>, N: number, nh: number, hd: number, inv: Float64Array): Float64Array {
  const half = hd / 2;
  const out = new Float64Array(x.length);
  for (let n = 0; n < N; n++) {
    for (let h = 0; h < nh; h++) {
      const o = (n * nh + h) * hd;
      for (let i = 0; i < half; i++) {
        const a = (pos[n] as number) * inv[i]!;
        const c = Math.cos(a);
        const s = Math.sin(a);
        const x1 = x[o + i]!;
        const x2 = x[o + i + half]!;
        out[o + i] = x1 * c - x2 * s; // rotate_half(x)[i] = -x2
        out[o + i + half] = x2 * c + x1 * s; // rotate_half(x)[i + half] = x1
      }
    }
  }
  return out;
}

/** Causal softmax attention with GQA; q (N, H*hd), k / v (N, Hkv*hd); query t of row b sees keys [docStart, t]. */
function gqaAttention64(q: Float64Array, k: Float64Array, v: Float64Array, b: LlamaBatch64, H: number, Hkv: number, hd: number): Float64Array {
  const { B, T } = b;
  const G = H / Hkv;
  const out = new Float64Array(B * T * H * hd);
  const scale = 1 / Math.sqrt(hd);
  const s = new Float64Array(T);
  for (let bi = 0; bi < B; bi++) {
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / G);
      for (let t = 0; t < T; t++) {
        const lo = b.docStart ? (b.docStart[bi * T + t] as number) : 0;
        const qo = ((bi * T + t) * H + h) * hd;
        let mx = -Infinity;
        for (let j = lo; j <= t; j++) {
          const ko = ((bi * T + j) * Hkv + hk) * hd;
          let d = 0;
          for (let c = 0; c < hd; c++) d += q[qo + c]! * k[ko + c]!;
          s[j] = d * scale;
          mx = Math.max(mx, s[j]!);
        }
        let sum = 0;
        for (let j = lo; j <= t; j++) sum += (s[j] = Math.exp(s[j]! - mx));
        for (let j = lo; j <= t; j++) {
          const p = s[j]! / sum;
          const vo = ((bi * T + j) * Hkv + hk) * hd;
          for (let c = 0; c < hd; c++) out[qo + c] = out[qo + c]! + p * v[vo + c]!;
        }
      }
    }
  }
  return out;
}

/** Logits (B*T, V) of every position. `params` is the flat buffer in `layout` order. */
export function llamaLogits64(cfg: LlamaConfig64, layout: readonly TensorSlot[], params: Float64Array, b: LlamaBatch64, mem?: LlamaMemory64): Float64Array {
  const get = (name: string): Float64Array => {
    const sl = layout.find((x) => x.name === name);
    if (!sl) throw new Error(`llama64: no tensor ${name}`);
    return params.subarray(sl.offset, sl.offset + sl.size);
  };
  const { vocabSize: V, dModel: C, nLayers: L, nHeads: H, nKvHeads: Hkv, headDim: hd, ffnHidden: F, normEps: eps } = cfg;
  const D = H * hd;
  const Dkv = Hkv * hd;
  const N = b.B * b.T;
  const pos = new Float64Array(N);
  for (let n = 0; n < N; n++) pos[n] = (n % b.T) - (b.docStart ? (b.docStart[n] as number) : 0);
  const inv = ropeInvFreq64(hd, cfg.ropeBase, cfg.ropeScaling);
  let x = embeddingForward64(b.tokens, get('tok_embeddings.weight'), V, C);
  for (let l = 0; l < L; l++) {
    const p = `layers.${l}.`;
    const u = rmsnormForward64(x, get(p + 'attn_norm.weight'), N, C, eps).out;
    const wqkv = get(p + 'attn.wqkv');
    const bqkv = cfg.qkvBias ? get(p + 'attn.bqkv') : null;
    const proj = (row0: number, rows: number): Float64Array => {
      const y = matmulNT64(u, wqkv.subarray(row0 * C, (row0 + rows) * C), N, rows, C);
      if (bqkv) for (let n = 0; n < N; n++) for (let j = 0; j < rows; j++) y[n * rows + j] = y[n * rows + j]! + bqkv[row0 + j]!;
      return y;
    };
    let q = proj(0, D);
    let k = proj(D, Dkv);
    const v = proj(D + Dkv, Dkv);
    if (cfg.qkNorm) {
      q = rmsnormForward64(q, get(p + 'attn.q_norm.weight'), N, D, eps).out;
      k = rmsnormForward64(k, get(p + 'attn.k_norm.weight'), N, Dkv, eps).out;
    }
    q = rope64(q, pos, N, H, hd, inv);
    k = rope64(k, pos, N, Hkv, hd, inv);
    const att = gqaAttention64(q, k, v, b, H, Hkv, hd);
    const o = matmulNT64(att, get(p + 'attn.wo'), N, C, D);
    const h = new Float64Array(N * C);
    for (let i = 0; i < N * C; i++) h[i] = x[i]! + o[i]!;
    const u2 = rmsnormForward64(h, get(p + 'ffn_norm.weight'), N, C, eps).out;
    const gate = matmulNT64(u2, get(p + 'ffn.w1'), N, F, C);
    const up = matmulNT64(u2, get(p + 'ffn.w2'), N, F, C);
    const hid = new Float64Array(N * F);
    for (let i = 0; i < N * F; i++) hid[i] = silu64(gate[i]!) * up[i]!;
    const y = matmulNT64(hid, get(p + 'ffn.w3'), N, C, F);
    const j = mem ? (mem.layerToMemory[l] as number) : -1;
    if (mem && j >= 0) addMemory64(y, u2, mem, j, b, C);
    x = new Float64Array(N * C);
    for (let i = 0; i < N * C; i++) x[i] = h[i]! + y[i]!;
  }
  const lnf = rmsnormForward64(x, get('final_norm.weight'), N, C, eps).out;
  return matmulNT64(lnf, get(cfg.tieEmbeddings ? 'tok_embeddings.weight' : 'lm_head.weight'), N, V, C);
}

/** y (N, C) += the fetched units of each sequence's slot in memory layer j. */
function addMemory64(y: Float64Array, u: Float64Array, mem: LlamaMemory64, j: number, b: LlamaBatch64, C: number): void {
  const { R } = mem;
  const Lm = mem.fetched.length / (mem.numSlots * 3 * R * C);
  for (let bi = 0; bi < b.B; bi++) {
    const s = mem.seqSlot[bi] as number;
    if (s < 0) continue;
    const base = (s * Lm + j) * 3 * R * C;
    for (let t = 0; t < b.T; t++) {
      const n = bi * b.T + t;
      for (let r = 0; r < R; r++) {
        let g = 0;
        let uu = 0;
        for (let c = 0; c < C; c++) {
          g += mem.fetched[base + r * C + c]! * u[n * C + c]!;
          uu += mem.fetched[base + (R + r) * C + c]! * u[n * C + c]!;
        }
        const hr = silu64(g) * uu;
        for (let c = 0; c < C; c++) y[n * C + c] = y[n * C + c]! + hr * mem.fetched[base + (2 * R + r) * C + c]!;
      }
    }
  }
}

/** Mean cross-entropy over targets >= 0 (NaN if none), from llamaLogits64. */
export function llamaLoss64(cfg: LlamaConfig64, layout: readonly TensorSlot[], params: Float64Array, b: LlamaBatch64, targets: ArrayLike<number>, mem?: LlamaMemory64): number {
  const logits = llamaLogits64(cfg, layout, params, b, mem);
  const V = cfg.vocabSize;
  let sum = 0;
  let count = 0;
  for (let n = 0; n < b.B * b.T; n++) {
    const t = targets[n] as number;
    if (t < 0) continue;
    let mx = -Infinity;
    for (let v = 0; v < V; v++) mx = Math.max(mx, logits[n * V + v]!);
    let z = 0;
    for (let v = 0; v < V; v++) z += Math.exp(logits[n * V + v]! - mx);
    sum += mx + Math.log(z) - logits[n * V + t]!;
    count++;
  }
  return sum / count;
}
