/**
 * AdamW over a model's flat parameter buffer (β = (0.9, 0.95) and clip 1.0 as in the paper).
 * Weight decay applies to matrices only (layout slots with decay = true), never to norm gains.
 * The update itself is one native call over all tensors, off the event loop.
 */
import { HiermemError, check } from '../errors.js';
import { loadNative } from '../native.js';
import type { TensorSlot } from '../native-types.js';

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Clip the global gradient norm to this value (0 = no clipping). */
  clipNorm: number;
}

export const DEFAULT_ADAMW: AdamWOptions = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, clipNorm: 1.0 };

export interface StepResult {
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** Factor applied to the gradients (1 if not clipped). */
  gradScale: number;
}

export interface Optimizable {
  readonly params: Float32Array;
  readonly grads: Float32Array;
  readonly layout: readonly TensorSlot[];
}

/** The options with defaults filled in, checked (E_CONFIG_INVALID). Shared by the CPU and CUDA optimizers. */
export function resolveAdamW(options: Partial<AdamWOptions>): AdamWOptions {
  const o = { ...DEFAULT_ADAMW, ...options };
  check(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1, 'E_CONFIG_INVALID', 'AdamW betas must be in [0, 1)');
  check(o.eps > 0 && o.weightDecay >= 0 && o.clipNorm >= 0, 'E_CONFIG_INVALID', 'AdamW eps must be > 0, weightDecay and clipNorm >= 0');
  return o;
}

/** (offset, size, weight decay) per layout slot: decay on matrices only, never on norm gains. */
export function decaySegments(layout: readonly TensorSlot[], weightDecay: number): Float64Array {
  const seg = new Float64Array(layout.length * 3);
  layout.forEach((s, i) => {
    seg[3 * i] = s.offset;
    seg[3 * i + 1] = s.size;
    seg[3 * i + 2] = s.decay ? weightDecay : 0;
  });
  return seg;
}

export class AdamW {
  readonly options: AdamWOptions;
  readonly m: Float32Array;
  readonly v: Float32Array;
  /** Number of updates applied so far. */
  stepCount = 0;
  private segments: Float64Array;

  constructor(target: Optimizable, options: Partial<AdamWOptions> = {}) {
    this.options = resolveAdamW(options);
    this.m = new Float32Array(target.params.length);
    this.v = new Float32Array(target.params.length);
    this.segments = decaySegments(target.layout, this.options.weightDecay);
  }

  /** An optimizer for `target` continuing `from` (same options, moments and step count); `from` is left as it was. */
  static continuing(target: Optimizable, from: AdamW): AdamW {
    const opt = new AdamW(target, from.options);
    opt.m.set(from.m);
    opt.v.set(from.v);
    opt.stepCount = from.stepCount;
    return opt;
  }

  /**
   * One update with learning rate `lr`. Gradients are clipped by `gradNorm` (default: the norm of
   * target.grads; pass a joint norm when other parameters, e.g. memories, are clipped together).
   * Throws E_NON_FINITE (and leaves parameters untouched) if the norm is not finite.
   */
  async step(target: Optimizable, lr: number, gradNorm?: number): Promise<StepResult> {
    const native = loadNative();
    const r = this.prepare(target, lr, gradNorm ?? native.globalNorm(target.grads));
    const { gradScale } = r;
    await native.adamwStepAsync(target.params, target.grads, this.m, this.v, this.segments, this.hyper(lr, gradScale));
    return r;
  }

  stepSync(target: Optimizable, lr: number): StepResult {
    const native = loadNative();
    const r = this.prepare(target, lr, native.globalNorm(target.grads));
    native.adamwStep(target.params, target.grads, this.m, this.v, this.segments, this.hyper(lr, r.gradScale));
    return r;
  }

  /** The clipping factor for a gradient norm: min(1, clipNorm / norm). */
  clipScale(gradNorm: number): number {
    const clip = this.options.clipNorm;
    return clip > 0 && gradNorm > clip ? clip / gradNorm : 1;
  }

  private prepare(target: Optimizable, lr: number, gradNorm: number): StepResult {
    check(target.params.length === this.m.length, 'E_SHAPE_MISMATCH', 'optimizer state does not match the model size');
    check(Number.isFinite(lr) && lr >= 0, 'E_INVALID_ARGUMENT', `learning rate must be a finite number >= 0, got ${lr}`);
    if (!Number.isFinite(gradNorm)) {
      throw new HiermemError('E_NON_FINITE', `gradient norm is ${gradNorm}; update skipped`);
    }
    const gradScale = this.clipScale(gradNorm);
    this.stepCount++;
    return { gradNorm, gradScale };
  }

  private hyper(lr: number, gradScale: number) {
    const o = this.options;
    return { lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps, step: this.stepCount, gradScale };
  }
}
