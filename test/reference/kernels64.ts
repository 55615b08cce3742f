/**
 * Float64 reference implementations of every kernel in NativeAddon (lib/native-types.ts).
 *
 * These are written to be obviously correct, not fast: plain loops over the definitions, no
 * fusion, no blocking, fresh output arrays (never in place, never accumulating). Shapes and
 * layouts follow the binding contract exactly (row-major; attention q/k/v/out (B,T,H*hd),
 * lse (B,H,T); rope x (N,H,hd)).
 *
 * Analytic backward references are provided where the derivation is short; the tests check
 * them against central finite differences of the forward functions below, and check the native
 * kernels against both.
 */

// ---- helpers -----------------------------------------------------------------------------

function sigmoid(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

export function silu64(x: number): number {
  return x * sigmoid(x);
}

/** d silu / dx = s(x) (1 + x (1 - s(x))). */
export function siluGrad64(x: number): number {
  const s = sigmoid(x);
  return s * (1 + x * (1 - s));
}

function at(a: ArrayLike<number>, i: number): number {
  return a[i] as number;
}

// ---- embedding ---------------------------------------------------------------------------

/** out (N,C) = wte[tokens]; wte (V,C). */
export function embeddingForward64(tokens: ArrayLike<number>, wte: ArrayLike<number>, V: number, C: number): Float64Array {
  const N = tokens.length;
  const out = new Float64Array(N * C);
  for (let n = 0; n < N; n++) {
    const tok = at(tokens, n);
    if (!(tok >= 0 && tok < V)) throw new Error(`embeddingForward64: token ${tok} out of range`);
    for (let c = 0; c < C; c++) out[n * C + c] = at(wte, tok * C + c);
  }
  return out;
}

/** dwte (V,C) = scatter-add of dout (N,C) by tokens. */
export function embeddingBackward64(dout: ArrayLike<number>, tokens: ArrayLike<number>, V: number, C: number): Float64Array {
  const N = tokens.length;
  const dwte = new Float64Array(V * C);
  for (let n = 0; n < N; n++) {
    const tok = at(tokens, n);
    for (let c = 0; c < C; c++) dwte[tok * C + c] = at(dwte, tok * C + c) + at(dout, n * C + c);
  }
  return dwte;
}

// ---- rmsnorm -----------------------------------------------------------------------------

/** out = x / sqrt(mean(x^2) + eps) * w, per row; rstd (N) = 1 / sqrt(mean(x^2) + eps). */
export function rmsnormForward64(x: ArrayLike<number>, w: ArrayLike<number>, N: number, C: number, eps: number): { out: Float64Array; rstd: Float64Array } {
  const out = new Float64Array(N * C);
  const rstd = new Float64Array(N);
  for (let n = 0; n < N; n++) {
    let ss = 0;
    for (let c = 0; c < C; c++) ss += at(x, n * C + c) * at(x, n * C + c);
    const r = 1 / Math.sqrt(ss / C + eps);
    rstd[n] = r;
    for (let c = 0; c < C; c++) out[n * C + c] = at(x, n * C + c) * r * at(w, c);
  }
  return { out, rstd };
}

/**
 * Analytic rmsnorm backward.
 * dw_c = sum_n dout_nc x_nc r_n ; dx_nc = r_n w_c dout_nc - r_n^3 / C * x_nc * sum_j dout_nj w_j x_nj.
 */
export function rmsnormBackward64(dout: ArrayLike<number>, x: ArrayLike<number>, w: ArrayLike<number>, N: number, C: number, eps: number): { dx: Float64Array; dw: Float64Array } {
  const { rstd } = rmsnormForward64(x, w, N, C, eps);
  const dx = new Float64Array(N * C);
  const dw = new Float64Array(C);
  for (let n = 0; n < N; n++) {
    const r = at(rstd, n);
    let s = 0;
    for (let c = 0; c < C; c++) s += at(dout, n * C + c) * at(w, c) * at(x, n * C + c);
    for (let c = 0; c < C; c++) {
      const i = n * C + c;
      dx[i] = r * at(w, c) * at(dout, i) - ((r * r * r) / C) * at(x, i) * s;
      dw[c] = at(dw, c) + at(dout, i) * at(x, i) * r;
    }
  }
  return { dx, dw };
}

// ---- rope --------------------------------------------------------------------------------

/** Angle of pair i (0 <= i < hd/2) at position pos: pos * base^(-2i/hd). */
export function ropeAngle64(pos: number, i: number, hd: number, base: number): number {
  return pos * Math.pow(base, (-2 * i) / hd);
}

/** Rotate every head of every row by +angle (sign = 1) or -angle (sign = -1). Returns a new array. */
function ropeRotate64(x: ArrayLike<number>, pos: ArrayLike<number>, N: number, H: number, hd: number, base: number, sign: 1 | -1): Float64Array {
  if (hd % 2 !== 0) throw new Error('rope64: hd must be even');
  const half = hd / 2;
  const out = new Float64Array(N * H * hd);
  for (let n = 0; n < N; n++) {
    for (let h = 0; h < H; h++) {
      const o = (n * H + h) * hd;
      for (let i = 0; i < half; i++) {
        const a = sign * ropeAngle64(at(pos, n), i, hd, base);
        const c = Math.cos(a);
        const s = Math.sin(a);
        const x1 = at(x, o + i);
        const x2 = at(x, o + i + half);
        out[o + i] = x1 * c - x2 * s;
        out[o + i + half] = x1 * s + x2 * c;
      }
    }
  }
  return out;
}

/** x (N,H,hd) rotated with rotate-half pairing (i, i + hd/2); returns a new array. */
export function ropeForward64(x: ArrayLike<number>, pos: ArrayLike<number>, N: number, H: number, hd: number, base: number): Float64Array {
  return ropeRotate64(x, pos, N, H, hd, base, 1);
}

/** Transpose (= inverse) of the forward rotation applied to dx; returns a new array. */
export function ropeBackward64(dx: ArrayLike<number>, pos: ArrayLike<number>, N: number, H: number, hd: number, base: number): Float64Array {
  return ropeRotate64(dx, pos, N, H, hd, base, -1);
}

// ---- attention ---------------------------------------------------------------------------

/** First key index visible to query t of row b. */
function keyStart(docStart: ArrayLike<number> | null, b: number, T: number, t: number): number {
  if (docStart === null) return 0;
  const s = at(docStart, b * T + t);
  if (!(s >= 0 && s <= t)) throw new Error(`attention64: docStart ${s} invalid at t=${t}`);
  return s;
}

/**
 * Causal attention, q,k,v,out (B,T,H*hd), lse (B,H,T). Query t attends keys j with
 * docStart[t] <= j <= t; scores scaled by 1/sqrt(hd); lse = log sum_j exp(score_tj).
 */
export function attentionForward64(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, docStart: ArrayLike<number> | null, B: number, T: number, H: number, hd: number): { out: Float64Array; lse: Float64Array } {
  const C = H * hd;
  const scale = 1 / Math.sqrt(hd);
  const out = new Float64Array(B * T * C);
  const lse = new Float64Array(B * H * T);
  const scores = new Float64Array(T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        const j0 = keyStart(docStart, b, T, t);
        const qo = (b * T + t) * C + h * hd;
        let mx = -Infinity;
        for (let j = j0; j <= t; j++) {
          const ko = (b * T + j) * C + h * hd;
          let s = 0;
          for (let d = 0; d < hd; d++) s += at(q, qo + d) * at(k, ko + d);
          s *= scale;
          scores[j] = s;
          if (s > mx) mx = s;
        }
        let z = 0;
        for (let j = j0; j <= t; j++) z += Math.exp(at(scores, j) - mx);
        const l = mx + Math.log(z);
        lse[(b * H + h) * T + t] = l;
        for (let j = j0; j <= t; j++) {
          const p = Math.exp(at(scores, j) - l);
          const vo = (b * T + j) * C + h * hd;
          for (let d = 0; d < hd; d++) out[qo + d] = at(out, qo + d) + p * at(v, vo + d);
        }
      }
    }
  }
  return { out, lse };
}

/** Analytic attention backward (softmax Jacobian written out), dq, dk, dv (B,T,H*hd). */
export function attentionBackward64(dout: ArrayLike<number>, q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, docStart: ArrayLike<number> | null, B: number, T: number, H: number, hd: number): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const C = H * hd;
  const scale = 1 / Math.sqrt(hd);
  const { lse } = attentionForward64(q, k, v, docStart, B, T, H, hd);
  const dq = new Float64Array(B * T * C);
  const dk = new Float64Array(B * T * C);
  const dv = new Float64Array(B * T * C);
  const p = new Float64Array(T);
  const dp = new Float64Array(T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        const j0 = keyStart(docStart, b, T, t);
        const qo = (b * T + t) * C + h * hd;
        const l = at(lse, (b * H + h) * T + t);
        // probabilities and dP
        let D = 0;
        for (let j = j0; j <= t; j++) {
          const ko = (b * T + j) * C + h * hd;
          let s = 0;
          let g = 0;
          for (let d = 0; d < hd; d++) {
            s += at(q, qo + d) * at(k, ko + d);
            g += at(dout, qo + d) * at(v, ko + d);
          }
          p[j] = Math.exp(s * scale - l);
          dp[j] = g;
          D += at(p, j) * g;
        }
        for (let j = j0; j <= t; j++) {
          const ko = (b * T + j) * C + h * hd;
          const ds = at(p, j) * (at(dp, j) - D); // d loss / d score
          for (let d = 0; d < hd; d++) {
            dv[ko + d] = at(dv, ko + d) + at(p, j) * at(dout, qo + d);
            dq[qo + d] = at(dq, qo + d) + scale * ds * at(k, ko + d);
            dk[ko + d] = at(dk, ko + d) + scale * ds * at(q, qo + d);
          }
        }
      }
    }
  }
  return { dq, dk, dv };
}

// ---- swiglu ------------------------------------------------------------------------------

/** h = silu(gate) * up, elementwise. */
export function swigluForward64(gate: ArrayLike<number>, up: ArrayLike<number>): Float64Array {
  const h = new Float64Array(gate.length);
  for (let i = 0; i < gate.length; i++) h[i] = silu64(at(gate, i)) * at(up, i);
  return h;
}

export function swigluBackward64(dh: ArrayLike<number>, gate: ArrayLike<number>, up: ArrayLike<number>): { dgate: Float64Array; dup: Float64Array } {
  const n = gate.length;
  const dgate = new Float64Array(n);
  const dup = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    dgate[i] = at(dh, i) * at(up, i) * siluGrad64(at(gate, i));
    dup[i] = at(dh, i) * silu64(at(gate, i));
  }
  return { dgate, dup };
}

// ---- matmul / ffn --------------------------------------------------------------------------

/** C (M,N) = A (M,K) * B^T, B (N,K). */
export function matmulNT64(a: ArrayLike<number>, b: ArrayLike<number>, M: number, N: number, K: number): Float64Array {
  const c = new Float64Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let p = 0; p < K; p++) s += at(a, i * K + p) * at(b, j * K + p);
      c[i * N + j] = s;
    }
  }
  return c;
}

/**
 * FFN written directly from the definition (no matmul helper, so it can be checked against the
 * matmulNT64 + swigluForward64 composition): gate = W1 x, up = W2 x (pre-activation, (N,F)),
 * y = W3 (silu(gate) * up), W1, W2 (F,C), W3 (C,F).
 */
export function ffnForward64(x: ArrayLike<number>, w1: ArrayLike<number>, w2: ArrayLike<number>, w3: ArrayLike<number>, N: number, C: number, F: number): { y: Float64Array; gate: Float64Array; up: Float64Array } {
  const gate = new Float64Array(N * F);
  const up = new Float64Array(N * F);
  const y = new Float64Array(N * C);
  const hid = new Float64Array(F);
  for (let n = 0; n < N; n++) {
    for (let f = 0; f < F; f++) {
      let g = 0;
      let u = 0;
      for (let c = 0; c < C; c++) {
        g += at(w1, f * C + c) * at(x, n * C + c);
        u += at(w2, f * C + c) * at(x, n * C + c);
      }
      gate[n * F + f] = g;
      up[n * F + f] = u;
      hid[f] = (g / (1 + Math.exp(-g))) * u;
    }
    for (let c = 0; c < C; c++) {
      let s = 0;
      for (let f = 0; f < F; f++) s += at(w3, c * F + f) * at(hid, f);
      y[n * C + c] = s;
    }
  }
  return { y, gate, up };
}

export function ffnBackward64(dy: ArrayLike<number>, x: ArrayLike<number>, w1: ArrayLike<number>, w2: ArrayLike<number>, w3: ArrayLike<number>, N: number, C: number, F: number): { dx: Float64Array; dw1: Float64Array; dw2: Float64Array; dw3: Float64Array } {
  const { gate, up } = ffnForward64(x, w1, w2, w3, N, C, F);
  const hid = swigluForward64(gate, up);
  const dx = new Float64Array(N * C);
  const dw1 = new Float64Array(F * C);
  const dw2 = new Float64Array(F * C);
  const dw3 = new Float64Array(C * F);
  const dh = new Float64Array(N * F);
  for (let n = 0; n < N; n++) {
    for (let f = 0; f < F; f++) {
      let s = 0;
      for (let c = 0; c < C; c++) s += at(dy, n * C + c) * at(w3, c * F + f);
      dh[n * F + f] = s;
    }
    for (let c = 0; c < C; c++) {
      for (let f = 0; f < F; f++) dw3[c * F + f] = at(dw3, c * F + f) + at(dy, n * C + c) * at(hid, n * F + f);
    }
  }
  const { dgate, dup } = swigluBackward64(dh, gate, up);
  for (let n = 0; n < N; n++) {
    for (let f = 0; f < F; f++) {
      const dg = at(dgate, n * F + f);
      const du = at(dup, n * F + f);
      for (let c = 0; c < C; c++) {
        dw1[f * C + c] = at(dw1, f * C + c) + dg * at(x, n * C + c);
        dw2[f * C + c] = at(dw2, f * C + c) + du * at(x, n * C + c);
        dx[n * C + c] = at(dx, n * C + c) + dg * at(w1, f * C + c) + du * at(w2, f * C + c);
      }
    }
  }
  return { dx, dw1, dw2, dw3 };
}

// ---- classifier ----------------------------------------------------------------------------

/**
 * logits (N,V) = x wte^T; losses (N) = logsumexp(logits_n) - logits_n[target_n], 0 when target = -1.
 */
export function classifierForward64(x: ArrayLike<number>, wte: ArrayLike<number>, targets: ArrayLike<number>, N: number, C: number, V: number): { losses: Float64Array; logits: Float64Array; lse: Float64Array } {
  const logits = new Float64Array(N * V);
  const losses = new Float64Array(N);
  const lse = new Float64Array(N);
  for (let n = 0; n < N; n++) {
    let mx = -Infinity;
    for (let v = 0; v < V; v++) {
      let s = 0;
      for (let c = 0; c < C; c++) s += at(x, n * C + c) * at(wte, v * C + c);
      logits[n * V + v] = s;
      if (s > mx) mx = s;
    }
    let z = 0;
    for (let v = 0; v < V; v++) z += Math.exp(at(logits, n * V + v) - mx);
    const l = mx + Math.log(z);
    lse[n] = l;
    const tgt = at(targets, n);
    if (tgt === -1) losses[n] = 0;
    else if (tgt >= 0 && tgt < V) losses[n] = l - at(logits, n * V + tgt);
    else throw new Error(`classifier64: target ${tgt} out of range`);
  }
  return { losses, logits, lse };
}

/** Gradient of gradScale * sum(losses) w.r.t. x (N,C) and wte (V,C). */
export function classifierBackward64(x: ArrayLike<number>, wte: ArrayLike<number>, targets: ArrayLike<number>, N: number, C: number, V: number, gradScale: number): { dx: Float64Array; dwte: Float64Array } {
  const { logits, lse } = classifierForward64(x, wte, targets, N, C, V);
  const dx = new Float64Array(N * C);
  const dwte = new Float64Array(V * C);
  for (let n = 0; n < N; n++) {
    const tgt = at(targets, n);
    if (tgt === -1) continue;
    for (let v = 0; v < V; v++) {
      const g = gradScale * (Math.exp(at(logits, n * V + v) - at(lse, n)) - (v === tgt ? 1 : 0));
      for (let c = 0; c < C; c++) {
        dx[n * C + c] = at(dx, n * C + c) + g * at(wte, v * C + c);
        dwte[v * C + c] = at(dwte, v * C + c) + g * at(x, n * C + c);
      }
    }
  }
  return { dx, dwte };
}

// ---- optimizer -----------------------------------------------------------------------------

export interface AdamWHyper64 {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  step: number;
  gradScale: number;
}

/**
 * One AdamW step IN PLACE on float64 state (params, m, v), over segments (offset, length, wd)
 * triples. Elements outside every segment are untouched.
 *   g' = g * gradScale; m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2;
 *   mhat = m / (1 - b1^t); vhat = v / (1 - b2^t); p -= lr (mhat / (sqrt(vhat) + eps) + wd p).
 */
export function adamwStep64(params: Float64Array, grads: ArrayLike<number>, m: Float64Array, v: Float64Array, segments: ArrayLike<number>, hp: AdamWHyper64): void {
  const bc1 = 1 - Math.pow(hp.beta1, hp.step);
  const bc2 = 1 - Math.pow(hp.beta2, hp.step);
  for (let s = 0; s + 2 < segments.length; s += 3) {
    const off = at(segments, s);
    const len = at(segments, s + 1);
    const wd = at(segments, s + 2);
    for (let i = off; i < off + len; i++) {
      const g = at(grads, i) * hp.gradScale;
      m[i] = hp.beta1 * at(m, i) + (1 - hp.beta1) * g;
      v[i] = hp.beta2 * at(v, i) + (1 - hp.beta2) * g * g;
      const mhat = at(m, i) / bc1;
      const vhat = at(v, i) / bc2;
      params[i] = at(params, i) - hp.lr * (mhat / (Math.sqrt(vhat) + hp.eps) + wd * at(params, i));
    }
  }
}

/** sqrt(sum g^2) in float64. */
export function globalNorm64(g: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < g.length; i++) s += at(g, i) * at(g, i);
  return Math.sqrt(s);
}
