/**
 * AnchorModel: the dense transformer (paper §2.1) over the native CPU core.
 * Parameters and gradients are flat Float32Arrays owned here; `tensor(name)` gives named views.
 * Heavy calls are async (run off the event loop); *Sync variants exist for tests.
 */
import { HiermemError, check } from '../errors.js';
import { loadNative } from '../native.js';
import type { NativeAddon, NativeBatch, NativeMemoryBatch, NativeModel, TensorSlot } from '../native-types.js';
import { type ModelConfig, type ResolvedModelConfig, resolveModelConfig, toDims, anchorParamCount } from './config.js';
import { initAnchorParams } from './init.js';

export interface Batch {
  /** (B, seqLen) token ids. */
  tokens: Int32Array;
  /** (B, seqLen) next-token targets; -1 = not scored. */
  targets: Int32Array;
  /** (B, seqLen) document start of each position (packed documents), or omitted. */
  docStart?: Int32Array | null;
  batchSize: number;
  /** Fetched memory blocks for this batch (models created with memory layers only). */
  memory?: NativeMemoryBatch | null;
}

export interface CreateModelOptions {
  /** Largest batch (sequences) this model will see; sizes the activation buffers. Default 8. */
  maxBatch?: number;
  /** Skip the random init (e.g. when loading a checkpoint next). */
  skipInit?: boolean;
  /** FFN-memory units: R per memory layer, and which layers carry them (-1 = none). */
  memory?: { R: number; layerToMemory: Int32Array } | null;
}

/**
 * Next-token logits of one growing sequence with a KV cache (AnchorModel.decoder): prefill(prompt)
 * runs the prompt once, step(token) appends one token in O(context) instead of re-running it all.
 * Logits equal nextTokenLogits of the same sequence up to float rounding while length <= capacity.
 */
export interface TokenDecoder {
  /** Positions held now. */
  readonly length: number;
  /** The model's seqLen: step() throws E_CACHE_FULL once length reaches it. */
  readonly capacity: number;
  /** Starts over with `prompt` (1..capacity tokens); returns the next-token logits (V). */
  prefill(prompt: Int32Array): Float32Array;
  /** Appends `token`; returns the next-token logits (V) after it. */
  step(token: number): Float32Array;
}

export class AnchorModel {
  readonly config: ResolvedModelConfig;
  readonly layout: readonly TensorSlot[];
  readonly params: Float32Array;
  readonly grads: Float32Array;
  readonly maxBatch: number;
  private native: NativeModel | null;
  private readonly byName: Map<string, TensorSlot>;

  readonly memory: { R: number; layerToMemory: Int32Array } | null;

  private constructor(config: ResolvedModelConfig, addon: NativeAddon, maxBatch: number, skipInit: boolean,
                      memory: { R: number; layerToMemory: Int32Array } | null) {
    this.config = config;
    this.layout = addon.anchorLayout(toDims(config));
    const last = this.layout[this.layout.length - 1]!;
    const n = last.offset + last.size;
    if (n !== anchorParamCount(config)) {
      throw new HiermemError('E_CONFIG_INVALID', `native layout has ${n} parameters, expected ${anchorParamCount(config)}`);
    }
    this.params = new Float32Array(n);
    this.grads = new Float32Array(n);
    this.byName = new Map(this.layout.map((s) => [s.name, s]));
    if (!skipInit) initAnchorParams(config, this.layout as TensorSlot[], this.params);
    this.maxBatch = maxBatch;
    this.memory = memory;
    this.native = addon.createAnchorModel(toDims(config), this.params, this.grads, maxBatch, memory);
  }

  /** Creates a model with freshly initialised parameters (deterministic from config.seed). */
  static create(config: Partial<ModelConfig> & { vocabSize: number }, options: CreateModelOptions = {}): AnchorModel {
    const cfg = resolveModelConfig(config);
    const maxBatch = options.maxBatch ?? 8;
    check(Number.isInteger(maxBatch) && maxBatch >= 1, 'E_INVALID_ARGUMENT', `maxBatch must be a positive integer, got ${maxBatch}`);
    return new AnchorModel(cfg, loadNative(), maxBatch, options.skipInit ?? false, options.memory ?? null);
  }

  get paramCount(): number {
    return this.params.length;
  }

  /** A view of one named parameter tensor (writes go to the model). */
  tensor(name: string): Float32Array {
    const s = this.byName.get(name);
    if (!s) throw new HiermemError('E_INVALID_ARGUMENT', `no parameter named "${name}"`);
    return this.params.subarray(s.offset, s.offset + s.size);
  }

  /** A view of one named gradient tensor. */
  gradTensor(name: string): Float32Array {
    const s = this.byName.get(name);
    if (!s) throw new HiermemError('E_INVALID_ARGUMENT', `no parameter named "${name}"`);
    return this.grads.subarray(s.offset, s.offset + s.size);
  }

  zeroGrad(): void {
    this.grads.fill(0);
  }

  /** Forward + backward (gradients ADDED to `grads`); resolves to the mean loss. */
  async forwardBackward(batch: Batch): Promise<number> {
    return this.live().forwardBackwardAsync(this.toNative(batch));
  }

  forwardBackwardSync(batch: Batch): number {
    return this.live().forwardBackward(this.toNative(batch));
  }

  /** Mean loss without gradients. */
  async loss(batch: Batch): Promise<number> {
    return this.live().forwardLossAsync(this.toNative(batch));
  }

  lossSync(batch: Batch): number {
    return this.live().forwardLoss(this.toNative(batch));
  }

  /** Next-token logits after a prompt (its last seqLen tokens are used). */
  nextTokenLogits(prompt: Int32Array, memory?: NativeMemoryBatch | null): Float32Array {
    check(prompt.length > 0, 'E_INVALID_ARGUMENT', 'prompt must hold at least one token');
    const ctx = prompt.length > this.config.seqLen ? prompt.subarray(prompt.length - this.config.seqLen) : prompt;
    return this.live().lastLogits(ctx, memory ?? null);
  }

  /**
   * A KV-cached decoder for one sequence (batch 1). `memory`: one fetched slot (seqSlot [0]) used
   * for every position, as with nextTokenLogits(ctx, memory).
   */
  decoder(memory?: NativeMemoryBatch | null): TokenDecoder {
    const cache = this.live().kvCacheCreate();
    const V = this.config.vocabSize;
    const mem = memory ?? null;
    return {
      get length() {
        return cache.length;
      },
      capacity: cache.capacity,
      prefill: (prompt) => {
        check(prompt.length > 0, 'E_INVALID_ARGUMENT', 'prompt must hold at least one token');
        return this.live().prefill(cache, prompt, new Float32Array(V), mem);
      },
      step: (token) => this.live().decodeStep(cache, token, new Float32Array(V), mem),
    };
  }

  /** Frees the native model; further calls throw E_DISPOSED. */
  dispose(): void {
    if (this.native?.busy) throw new HiermemError('E_BUSY', 'cannot dispose a model while an asynchronous call runs');
    this.native = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  private live(): NativeModel {
    if (!this.native) throw new HiermemError('E_DISPOSED', 'this model was disposed');
    return this.native;
  }

  private toNative(b: Batch): NativeBatch {
    return { tokens: b.tokens, targets: b.targets, docStart: b.docStart ?? null, batchSize: b.batchSize, memory: b.memory ?? null };
  }
}
