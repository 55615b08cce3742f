/**
 * The anchor model on a CUDA device (issue #8): the twin of AnchorModel that a trainer needs
 * (forwardBackward, loss, zeroGrad, tensor downloads; AdamW state for CudaAdamW in
 * lib/train/cuda-adamw.ts). Experimental: the kernels have not yet run on a GPU. Training reaches
 * it through CudaAnchorRunner (lib/backend/cuda-runner.ts).
 */
import { HiermemError, check } from '../errors.js';
import { loadNative } from '../native.js';
import type { NativeAddon, NativeCudaModel, NativeMemoryBatch, TensorSlot } from '../native-types.js';
import { resolveBackend } from '../backend/detect.js';
import { type ModelConfig, type ResolvedModelConfig, resolveModelConfig, toDims, anchorParamCount } from './config.js';
import { initAnchorParams } from './init.js';
import type { Batch, CreateModelOptions } from './anchor.js';

// ---- the device model ----------------------------------------------------------------------

export type GemmPrecision = 'fp32' | 'tf32' | 'bf16';
const GEMM_MODE: Record<GemmPrecision, number> = { fp32: 0, tf32: 1, bf16: 2 };

export interface CudaModelOptions extends CreateModelOptions {
  /** Dense products: 'fp32' (reference, default), 'tf32' or 'bf16' (tensor cores, fp32 accumulation). */
  gemm?: GemmPrecision;
}

/**
 * The anchor model on the GPU: parameters, gradients and AdamW state live in device memory;
 * `tensor` / `gradTensor` / `downloadParams` return host COPIES. Same config, layout, init and
 * batch contract as AnchorModel (gradients are ADDED; zeroGrad clears them).
 */
export class CudaAnchorModel {
  readonly backend = 'cuda' as const;
  readonly config: ResolvedModelConfig;
  readonly layout: readonly TensorSlot[];
  readonly maxBatch: number;
  readonly memory: { R: number; layerToMemory: Int32Array } | null;
  private native: NativeCudaModel | null;
  private readonly byName: Map<string, TensorSlot>;

  private constructor(config: ResolvedModelConfig, addon: NativeAddon, options: CudaModelOptions) {
    this.config = config;
    this.layout = addon.anchorLayout(toDims(config));
    this.byName = new Map(this.layout.map((s) => [s.name, s]));
    this.maxBatch = options.maxBatch ?? 8;
    this.memory = options.memory ?? null;
    const gemm = options.gemm ?? 'fp32';
    check(Object.hasOwn(GEMM_MODE, gemm), 'E_INVALID_ARGUMENT', `gemm must be "fp32", "tf32" or "bf16", got "${String(gemm)}"`);
    this.native = addon.createCudaAnchorModel(toDims(config), this.maxBatch, this.memory, GEMM_MODE[gemm]);
    if (this.native.paramCount !== anchorParamCount(config)) {
      this.native.dispose();
      throw new HiermemError('E_CONFIG_INVALID', `CUDA model has ${this.native.paramCount} parameters, expected ${anchorParamCount(config)}`);
    }
    if (!options.skipInit) {
      const params = new Float32Array(anchorParamCount(config));
      initAnchorParams(config, this.layout as TensorSlot[], params); // the CPU model's init, bit for bit
      this.native.uploadParams(params);
    }
  }

  /**
   * A model on the GPU with freshly initialised parameters (the same values AnchorModel.create
   * gives for this config). Throws E_BACKEND_UNAVAILABLE where CUDA cannot be used.
   */
  static create(config: Partial<ModelConfig> & { vocabSize: number }, options: CudaModelOptions = {}): CudaAnchorModel {
    const cfg = resolveModelConfig(config);
    const maxBatch = options.maxBatch ?? 8;
    check(Number.isInteger(maxBatch) && maxBatch >= 1, 'E_INVALID_ARGUMENT', `maxBatch must be a positive integer, got ${maxBatch}`);
    resolveBackend('cuda');
    return new CudaAnchorModel(cfg, loadNative(), options);
  }

  get paramCount(): number {
    return this.live().paramCount;
  }

  /** Forward + backward (gradients ADDED on the device); resolves to the mean loss. */
  async forwardBackward(batch: Batch): Promise<number> {
    return this.live().forwardBackward(toNativeBatch(batch));
  }

  /** Mean loss without gradients. */
  async loss(batch: Batch): Promise<number> {
    return this.live().forwardLoss(toNativeBatch(batch));
  }

  zeroGrad(): void {
    this.live().zeroGrad();
  }

  /** Replaces every parameter (flat buffer in layout order, e.g. an AnchorModel's params). */
  uploadParams(params: Float32Array): void {
    this.live().uploadParams(params);
  }

  downloadParams(): Float32Array {
    return this.live().downloadParams();
  }

  downloadGrads(): Float32Array {
    return this.live().downloadGrads();
  }

  /** sqrt(sum g^2) of the gradients, reduced on the device (as CudaAdamW clips by). */
  gradNorm(): number {
    return this.live().gradNorm();
  }

  /** Copies the device AdamW moments into m, v (paramCount floats each). */
  downloadAdamState(m: Float32Array, v: Float32Array): void {
    this.live().downloadAdamState(m, v);
  }

  /** Replaces the device AdamW moments (e.g. from a checkpoint). */
  uploadAdamState(m: Float32Array, v: Float32Array): void {
    this.live().uploadAdamState(m, v);
  }

  /**
   * Data-parallel: the gradients all-reduced in place on the device by NCCL (the sum, or the mean,
   * over ranks), ordered on this model's stream after the backward pass and before the AdamW
   * update. NCCL must be initialised (NcclCommunicator.create, lib/dist/nccl.ts).
   */
  async allReduceGradients(mean: boolean): Promise<void> {
    const native = this.live() as NativeCudaModel & { allReduceGradients?: (mean: boolean) => Promise<void> };
    if (typeof native.allReduceGradients !== 'function') {
      throw new HiermemError('E_BACKEND_UNAVAILABLE', 'this hiermem addon predates NCCL gradient all-reduces: rebuild it (npm rebuild hiermem)');
    }
    await native.allReduceGradients(mean);
  }

  /** A host copy of one named parameter tensor. */
  tensor(name: string): Float32Array {
    const s = this.slot(name);
    return this.downloadParams().slice(s.offset, s.offset + s.size);
  }

  /** A host copy of one named gradient tensor. */
  gradTensor(name: string): Float32Array {
    const s = this.slot(name);
    return this.downloadGrads().slice(s.offset, s.offset + s.size);
  }

  /** @internal the native model (CudaAdamW drives its device AdamW state). */
  nativeModel(): NativeCudaModel {
    return this.live();
  }

  /** Frees the device memory; further calls throw E_DISPOSED. */
  dispose(): void {
    if (this.native?.busy) throw new HiermemError('E_BUSY', 'cannot dispose a model while an asynchronous call runs');
    this.native?.dispose();
    this.native = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  private slot(name: string): TensorSlot {
    const s = this.byName.get(name);
    if (!s) throw new HiermemError('E_INVALID_ARGUMENT', `no parameter named "${name}"`);
    return s;
  }

  private live(): NativeCudaModel {
    if (!this.native) throw new HiermemError('E_DISPOSED', 'this model was disposed');
    return this.native;
  }
}

function toNativeBatch(b: Batch) {
  return { tokens: b.tokens, targets: b.targets, docStart: b.docStart ?? null, batchSize: b.batchSize, memory: (b.memory ?? null) as NativeMemoryBatch | null };
}
