/**
 * The raw native binding, typed. This file is the whole boundary between TypeScript and C++:
 * nothing else in lib/ may call into the addon except through these signatures.
 *
 * Conventions (mirrored in cpp/kernels/*.h):
 *  - Tensors are row-major Float32Array; shapes are given in the comments, N = B*T rows.
 *  - Backward kernels ADD into every gradient output (llm.c style), so callers zero them first
 *    when they want a plain gradient. In-place kernels (rope) say so.
 *  - Every length, id and shape is checked by the binding; a violation throws an Error whose
 *    message starts with "[E_CODE] " (turned into HiermemError by lib/native.ts).
 */

export interface AnchorDims {
  vocabSize: number;
  dModel: number;
  nLayers: number;
  nHeads: number;
  headDim: number;
  ffnHidden: number;
  seqLen: number;
  /** RMSNorm epsilon. */
  normEps: number;
  /** RoPE base frequency (paper: 1e5). */
  ropeBase: number;
  /** Key/value heads (grouped-query attention); omitted = nHeads. */
  nKvHeads?: number;
  /** RMSNorm of the q and k rows before RoPE; omitted = true. */
  qkNorm?: boolean;
  /** q/k/v projection biases; omitted = false. */
  qkvBias?: boolean;
  /** Output head = token embedding; omitted = true. */
  tieEmbeddings?: boolean;
  /** Llama-3.1 RoPE frequency scaling; omitted or null = none. */
  ropeScaling?: { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number } | null;
}

/** One named parameter tensor inside the flat parameter buffer. */
export interface TensorSlot {
  name: string;
  shape: number[];
  offset: number; // in floats
  size: number; // in floats
  /** true for matrices (weight decay applies), false for norm gains. */
  decay: boolean;
}

export interface AdamWHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** 1-based step count used for bias correction. */
  step: number;
  /** Multiplies every gradient before the update (gradient clipping passes min(1, clip/norm)). */
  gradScale: number;
}

/** Shape of a memory bank (paper §3.4): k-ary tree of p = levels.length levels. */
export interface NativeMemorySpec {
  k: number;
  /** r_l per level (hidden units a level-l block adds to each memory layer); 0 = no memory at that level. */
  levels: number[];
  /** Number of layers that carry memories (Lm). */
  memoryLayers: number;
  dModel: number;
  /** One extra block of R = sum(levels) units: the paper's generic-memory control. */
  generic: boolean;
  /** Carry AdamW m, v and per-block step counts in the bank. */
  optimizer: boolean;
}

/** One tensor of the bank file (safetensors); byteOffset is relative to the data section. */
export interface BankTensorSlot {
  name: string;
  dtype: 'F32' | 'I32';
  shape: number[];
  /** 0-based level; levels.length = the generic block. */
  level: number;
  byteOffset: number;
  byteSize: number;
}

export type BankStorage = { kind: 'ram' } | { kind: 'file'; path: string; dataStart: number; writable: boolean };

export interface NativeMemoryBank {
  /** fetched (S, Lm, 3, R, d) from paths (S, p); a path starting with -1 takes the generic block. */
  gather(fetched: Float32Array, paths: Int32Array): void;
  /** gather on a worker thread (a file bank may wait on the disk); the bank is busy until it settles. */
  gatherAsync(fetched: Float32Array, paths: Int32Array): Promise<void>;
  /** Sorted unique (level, node) pairs the paths fetch, flattened. */
  uniqueBlocks(paths: Int32Array): Int32Array;
  /** dblocks (blocks back to back, [Lm][3][r_l][d] each) += the matching rows of dfetched. */
  scatterAdd(dblocks: Float32Array, blocks: Int32Array, dfetched: Float32Array, paths: Int32Array): void;
  scatterAddAsync(dblocks: Float32Array, blocks: Int32Array, dfetched: Float32Array, paths: Int32Array): Promise<void>;
  /** Row-sparse AdamW on the listed blocks; each block's own step count drives its bias correction. */
  adamwUpdate(blocks: Int32Array, dblocks: Float32Array, hyper: Omit<AdamWHyper, 'step'>, weightDecay: number): void;
  adamwUpdateAsync(blocks: Int32Array, dblocks: Float32Array, hyper: Omit<AdamWHyper, 'step'>, weightDecay: number): Promise<void>;
  readBlock(kind: 'weight' | 'm' | 'v', level: number, node: number, out: Float32Array): void;
  writeBlock(kind: 'weight' | 'm' | 'v', level: number, node: number, data: Float32Array): void;
  blockSteps(level: number, node: number): number;
  prefetch(paths: Int32Array): void;
  /** mlock the first `levels` levels (best effort); returns an error text or null. */
  pinLevels(levels: number): string | null;
  flush(): void;
  releasePageCache(): void;
  residentBytes(): number;
  /** Writes the data section into the existing file at dataStart and fsyncs it. */
  saveData(path: string, dataStart: number): void;
  loadData(path: string, dataStart: number): void;
  close(): void;
  readonly bytes: number;
  readonly isFile: boolean;
  /** True while an async call runs: calls that touch the bank's data are rejected with E_BUSY. */
  readonly busy: boolean;
}

/** Memory inputs of one batch. */
export interface NativeMemoryBatch {
  /** (numSlots, Lm, 3, R, C), from NativeMemoryBank.gather. */
  fetched: Float32Array;
  /** Same shape; ADDED to by forwardBackward; null for forward only. */
  dfetched: Float32Array | null;
  /** (B): slot of each sequence, -1 = no memory. Consecutive equal slots share one GEMM. */
  seqSlot: Int32Array;
  numSlots: number;
}

/** A batch handed to the native model. */
export interface NativeBatch {
  /** (B, T) token ids in [0, vocab). */
  tokens: Int32Array;
  /** (B, T) next-token targets, -1 = ignored position. */
  targets: Int32Array;
  /**
   * (B, T) or null. For every position t, the index in its row where its document starts
   * (0 <= docStart[t] <= t, and each position either continues the previous position's document or
   * starts a new one at t). Attention is masked to [docStart[t], t] and rotary positions restart at
   * each document. null = one document per row.
   */
  docStart: Int32Array | null;
  batchSize: number;
  memory?: NativeMemoryBatch | null;
}

export interface NativeModel {
  /** Forward + backward; grads are ADDED into the grads buffer. Returns mean loss over non-ignored targets. */
  forwardBackward(batch: NativeBatch): number;
  forwardBackwardAsync(batch: NativeBatch): Promise<number>;
  /** Forward only; returns mean loss (NaN if every target is ignored). */
  forwardLoss(batch: NativeBatch): number;
  forwardLossAsync(batch: NativeBatch): Promise<number>;
  /** Logits (V) of the last position of row 0 of a (1, T') prompt, T' <= seqLen. */
  lastLogits(tokens: Int32Array, memory?: NativeMemoryBatch | null): Float32Array;
  /** True while an async call runs. */
  readonly busy: boolean;
  /** A K/V cache for one sequence of this model ((nLayers, seqLen, nHeads * headDim) keys and values). */
  kvCacheCreate(): NativeKVCache;
  /**
   * Runs a prompt of T' in [1, seqLen] tokens into `cache` (replacing what it held) and writes the
   * last position's logits (V) into logitsOut, the same as lastLogits; returns logitsOut.
   * memory: one sequence (seqSlot of length 1); pass the same one to every call on this cache.
   */
  prefill(cache: NativeKVCache, tokens: Int32Array, logitsOut: Float32Array, memory?: NativeMemoryBatch | null): Float32Array;
  /**
   * Appends `token` at position cache.length and writes its next-token logits into logitsOut
   * (equal to lastLogits over the whole sequence up to float rounding); returns logitsOut.
   * E_CACHE_FULL when cache.length === seqLen; E_INVALID_ARGUMENT for another model's cache.
   */
  decodeStep(cache: NativeKVCache, token: number, logitsOut: Float32Array, memory?: NativeMemoryBatch | null): Float32Array;
}

/** KV cache of one generated sequence (NativeModel.kvCacheCreate); usable only with its model. */
export interface NativeKVCache {
  /** Positions held (0 until prefill). */
  readonly length: number;
  /** The model's seqLen: decodeStep refuses (E_CACHE_FULL) once length reaches it. */
  readonly capacity: number;
}

// ---- CUDA backend (binding/cuda_lib.cc, cuda_model.cc; the kernels live in hiermem_cuda.so, opened on request) ----

/** cudaOpen's answer: loaded, or why not (dlopen text, missing entry point, ABI mismatch). */
export interface CudaOpenResult {
  loaded: boolean;
  path: string;
  error?: string;
}

/** What hiermem_cuda.so's device query found. status 0 = usable; 35 = no driver / too old. */
export interface CudaDeviceInfo {
  /** cudaError_t of the first failing runtime call, 0 when the device is usable. */
  status: number;
  statusText: string;
  deviceCount: number;
  /** e.g. 13000 for CUDA 13.0; 0 when no driver is installed. */
  driverVersion: number;
  runtimeVersion: number;
  name: string;
  /** "major.minor", e.g. "9.0" for H100. */
  computeCapability: string;
  freeBytes: number;
  totalBytes: number;
}

/** AdamW on the device: the global-norm clip (clipNorm, 0 = none) happens inside the call. */
export interface CudaAdamWHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** 1-based step count used for bias correction. */
  step: number;
  clipNorm: number;
  /** Clip by this norm (finite, >= 0) instead of the device gradients' own: a joint norm with memory gradients. */
  gradNorm?: number;
}

/**
 * The anchor model with parameters, gradients and AdamW state in device memory (device 0).
 * Batches are checked like NativeModel's; gradients are ADDED like the CPU model's.
 */
export interface NativeCudaModel {
  readonly paramCount: number;
  readonly busy: boolean;
  uploadParams(params: Float32Array): void;
  downloadParams(): Float32Array;
  downloadGrads(): Float32Array;
  zeroGrad(): void;
  forwardBackward(batch: NativeBatch): Promise<number>;
  forwardLoss(batch: NativeBatch): Promise<number>;
  /** segments: (offset, length, weightDecay) triples as in adamwStep. Rejects E_NON_FINITE on a non-finite norm. */
  adamwStep(segments: Float64Array, hyper: CudaAdamWHyper): Promise<{ gradNorm: number; gradScale: number }>;
  /** sqrt(sum g^2) of the device gradients (the reduction adamwStep uses); synchronous. */
  gradNorm(): number;
  /** Copies the device AdamW m, v into m, v (paramCount floats each). */
  downloadAdamState(m: Float32Array, v: Float32Array): void;
  /** Replaces the device AdamW m, v. */
  uploadAdamState(m: Float32Array, v: Float32Array): void;
  dispose(): void;
}

export interface NativeAddon {
  readonly version: string;
  /** "none (own gemm)": the addon links no BLAS (kept for readers of `hiermem info --json`). */
  readonly blas: string;
  /** The GEMM micro-kernel chosen at load: "avx512", "avx2" or "generic" (HIERMEM_SIMD lowers it). */
  readonly gemmKernel: string;

  // ---- CUDA backend (absent from addons built before it: check before calling) ---------------
  /** HMC_ABI_VERSION the addon was built against. */
  readonly cudaAbiVersion: number;
  /** dlopen + hmc_get_api + ABI check; one library per process, kept open once accepted. */
  cudaOpen(libPath: string): CudaOpenResult;
  cudaStatus(): { loaded: boolean; path: string | null };
  /** Needs a loaded library (else E_BACKEND_UNAVAILABLE). */
  cudaDeviceInfo(device: number): CudaDeviceInfo;
  /** gemmMode: 0 fp32 (reference), 1 tf32, 2 bf16 (tensor cores, fp32 accumulation). */
  createCudaAnchorModel(dims: AnchorDims, maxBatch: number, memory?: { R: number; layerToMemory: Int32Array } | null,
                        gemmMode?: number): NativeCudaModel;

  setNumThreads(n: number): void;
  getNumThreads(): number;

  /** Layout of the flat parameter buffer for these dims (same order as the safetensors file). */
  anchorLayout(dims: AnchorDims): TensorSlot[];
  /** params/grads are flat Float32Arrays of the layout's total size; the model keeps references. */
  createAnchorModel(dims: AnchorDims, params: Float32Array, grads: Float32Array, maxBatch: number,
                    memory?: { R: number; layerToMemory: Int32Array } | null): NativeModel;

  // ---- memory bank ---------------------------------------------------------------------------
  memoryBankTensors(spec: NativeMemorySpec): BankTensorSlot[];
  createMemoryBank(spec: NativeMemorySpec, seed: number, storage: BankStorage): NativeMemoryBank;
  /** Memory units of one layer's FFN: y (B*T, C) += ...; fetched (S, 3, R, C); gateM, upM (B*T, R) written. */
  ffnMemoryForward(y: Float32Array, gateM: Float32Array, upM: Float32Array, x: Float32Array, fetched: Float32Array,
                   seqSlot: Int32Array, B: number, T: number, C: number, R: number, S: number): void;
  /** dx (B*T, C), dfetched (S, 3, R, C) += ... */
  ffnMemoryBackward(dx: Float32Array, dfetched: Float32Array, dy: Float32Array, x: Float32Array, gateM: Float32Array,
                    upM: Float32Array, fetched: Float32Array, seqSlot: Int32Array, B: number, T: number, C: number,
                    R: number, S: number): void;

  // ---- optimizer -------------------------------------------------------------------------
  /** sqrt(sum g^2) accumulated in float64. */
  globalNorm(grads: Float32Array): number;
  /**
   * AdamW over segments of the flat buffers: `segments` holds triples (offset, length, weightDecay).
   * Decoupled weight decay: p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p).
   */
  adamwStep(params: Float32Array, grads: Float32Array, m: Float32Array, v: Float32Array,
            segments: Float64Array, hyper: AdamWHyper): void;
  adamwStepAsync(params: Float32Array, grads: Float32Array, m: Float32Array, v: Float32Array,
                 segments: Float64Array, hyper: AdamWHyper): Promise<void>;

  // ---- single kernels, exposed for tests and references --------------------------------
  /** out (N,C) = wte[tokens] ; wte (V,C). */
  embeddingForward(out: Float32Array, tokens: Int32Array, wte: Float32Array, V: number, C: number): void;
  /** dwte (V,C) += scatter of dout (N,C) by tokens. */
  embeddingBackward(dwte: Float32Array, dout: Float32Array, tokens: Int32Array, V: number, C: number): void;
  /** out (N,C) = x * rstd * w ; rstd (N). */
  rmsnormForward(out: Float32Array, rstd: Float32Array, x: Float32Array, w: Float32Array, N: number, C: number, eps: number): void;
  /** dx (N,C) += ..., dw (C) += ... */
  rmsnormBackward(dx: Float32Array, dw: Float32Array, dout: Float32Array, x: Float32Array, w: Float32Array,
                  rstd: Float32Array, N: number, C: number): void;
  /** In place on x (N, H, hd) with per-row positions pos (N) in [0, 2^24]; rotate-half pairing (i, i + hd/2); base > 1. */
  ropeForward(x: Float32Array, pos: Int32Array, N: number, H: number, hd: number, base: number): void;
  /** In place: dx (N,H,hd) rotated back (the transpose of the forward rotation). */
  ropeBackward(dx: Float32Array, pos: Int32Array, N: number, H: number, hd: number, base: number): void;
  /**
   * Causal attention. q,k,v,out (B,T,H*hd); lse (B,H,T) log-sum-exp of the scaled scores.
   * Scale 1/sqrt(hd). docStart as in NativeBatch (or null).
   */
  attentionForward(out: Float32Array, lse: Float32Array, q: Float32Array, k: Float32Array, v: Float32Array,
                   docStart: Int32Array | null, B: number, T: number, H: number, hd: number): void;
  /** dq, dk, dv (B,T,H*hd) += ... */
  attentionBackward(dq: Float32Array, dk: Float32Array, dv: Float32Array, dout: Float32Array,
                    q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, lse: Float32Array,
                    docStart: Int32Array | null, B: number, T: number, H: number, hd: number): void;
  /** h (n) = silu(gate) * up. */
  swigluForward(h: Float32Array, gate: Float32Array, up: Float32Array, n: number): void;
  /** dgate, dup (n) += ... */
  swigluBackward(dgate: Float32Array, dup: Float32Array, dh: Float32Array, gate: Float32Array, up: Float32Array, n: number): void;
  /**
   * y (N,C) = W3 (silu(W1 x) * (W2 x)); W1,W2 (F,C), W3 (C,F).
   * gate, up (N,F) are written (kept for backward).
   */
  ffnForward(y: Float32Array, gate: Float32Array, up: Float32Array, x: Float32Array,
             w1: Float32Array, w2: Float32Array, w3: Float32Array, N: number, C: number, F: number): void;
  /** dx (N,C), dw1, dw2 (F,C), dw3 (C,F) += ... */
  ffnBackward(dx: Float32Array, dw1: Float32Array, dw2: Float32Array, dw3: Float32Array, dy: Float32Array,
              x: Float32Array, gate: Float32Array, up: Float32Array,
              w1: Float32Array, w2: Float32Array, w3: Float32Array, N: number, C: number, F: number): void;
  /**
   * Tied classifier + softmax cross-entropy, fused: logits = x wte^T never leave a row chunk.
   * losses (N) written (0 where target = -1). If dx/dwte are non-null, the gradient of
   * gradScale * sum(losses) is ADDED into them.
   */
  classifierForwardBackward(losses: Float32Array, dx: Float32Array | null, dwte: Float32Array | null,
                            x: Float32Array, wte: Float32Array, targets: Int32Array,
                            N: number, C: number, V: number, gradScale: number): void;
  /** C (M,N) = A (M,K) * B^T where B is (N,K) — the product every linear layer's forward uses. */
  matmulNT(c: Float32Array, a: Float32Array, b: Float32Array, M: number, N: number, K: number): void;
  /**
   * Row-major C (M,N) = alpha op(A) op(B) + beta C, our GEMM with every transposition case and
   * leading dimensions (op(A) = A (M,K) or, transA, A^T with A stored (K,M); likewise B (K,N) or
   * (N,K)). beta = 0 writes C without reading it. Each array must hold its strided view.
   */
  gemm(transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number,
       a: Float32Array, lda: number, b: Float32Array, ldb: number, beta: number, c: Float32Array, ldc: number): void;
  /** dst = src split over the thread pool (the benchmark's memcpy limit). */
  copyParallel(dst: Float32Array, src: Float32Array): void;
  /**
   * The fp32 FMA peak probe (the benchmark's FLOP/s ceiling): `iters` iterations of a register-bound
   * loop of independent FMA chains on every pool thread, at the GEMM's SIMD level. flops counts an
   * FMA lane as 2; seconds is the wall time of the parallel region.
   */
  fmaPeak(iters: number): { flops: number; seconds: number; threads: number; lanes: number; chains: number; level: string; sink: number };
}
