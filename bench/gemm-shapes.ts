/**
 * The dense products one training step of an anchor makes, as (transA, transB, M, N, K): each
 * linear layer's forward y = x W^T (NT), input gradient dx = dy W (NN) and weight gradient
 * dW = dy^T x (TN). Used by the GEMM bench rows and by the GEMM tests (every model shape checked).
 */
export interface GemmShape {
  name: string;
  transA: boolean;
  transB: boolean;
  M: number;
  N: number;
  K: number;
}

export interface GemmModelDims {
  dModel: number;
  nHeads: number;
  headDim: number;
  ffnHidden: number;
  seqLen: number;
}

/** Shapes of one step at `batch` sequences; duplicates (same transposition and sizes) removed. */
export function modelGemmShapes(dims: GemmModelDims, batch: number, vocabSize: number): GemmShape[] {
  const T = batch * dims.seqLen, d = dims.dModel, hd = dims.nHeads * dims.headDim, F = dims.ffnHidden;
  // (name, output width, input width) of each linear layer; q/k/v and gate/up run fused
  const layers: [string, number, number][] = [
    ['qkv', 3 * hd, d],
    ['attn-out', d, hd],
    ['gate-up', 2 * F, d],
    ['down', d, F],
    ['classifier', vocabSize, d],
  ];
  const out: GemmShape[] = [];
  const seen = new Set<string>();
  const add = (s: GemmShape) => {
    const key = `${s.transA}${s.transB}${s.M}x${s.N}x${s.K}`;
    if (!seen.has(key)) {
      seen.add(key);
      out.push(s);
    }
  };
  for (const [name, nOut, nIn] of layers) {
    add({ name: `${name} fwd`, transA: false, transB: true, M: T, N: nOut, K: nIn });
    add({ name: `${name} dx`, transA: false, transB: false, M: T, N: nIn, K: nOut });
    add({ name: `${name} dW`, transA: true, transB: false, M: nOut, N: nIn, K: T });
  }
  return out;
}
