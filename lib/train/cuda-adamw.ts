/**
 * AdamW on a CUDA device for CudaAnchorModel (issue #8): the moments live in the device model,
 * the options, weight-decay segments and clipping rule are AdamW's (./adamw.ts).
 */
import { HiermemError, check } from '../errors.js';
import type { CudaAnchorModel } from '../model/cuda-anchor.js';
import { decaySegments, resolveAdamW, type AdamWOptions, type StepResult } from './adamw.js';

/**
 * AdamW on the device for a CudaAnchorModel (its m, v live in the model: one optimizer per model).
 * Same options, defaults, weight-decay segments and clipping rule as AdamW; the gradient norm is
 * reduced on the device. A non-finite norm rejects with E_NON_FINITE and changes nothing.
 */
export class CudaAdamW {
  readonly options: AdamWOptions;
  /** Number of updates applied so far. */
  stepCount = 0;
  private readonly segments: Float64Array;

  constructor(target: CudaAnchorModel, options: Partial<AdamWOptions> = {}) {
    this.options = resolveAdamW(options);
    this.segments = decaySegments(target.layout, this.options.weightDecay);
  }

  /**
   * One update at learning rate lr, clipped by `gradNorm` (default: the device gradients' own norm;
   * pass a joint norm when other parameters, e.g. memories, are clipped together — as AdamW.step).
   */
  async step(target: CudaAnchorModel, lr: number, gradNorm?: number): Promise<StepResult> {
    check(Number.isFinite(lr) && lr >= 0, 'E_INVALID_ARGUMENT', `learning rate must be a finite number >= 0, got ${lr}`);
    if (gradNorm !== undefined && !Number.isFinite(gradNorm)) {
      throw new HiermemError('E_NON_FINITE', `gradient norm is ${gradNorm}; update skipped`);
    }
    const o = this.options;
    const r = await target.nativeModel().adamwStep(this.segments, {
      lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps, step: this.stepCount + 1, clipNorm: o.clipNorm,
      ...(gradNorm !== undefined ? { gradNorm } : {}),
    });
    this.stepCount++;
    return { gradNorm: r.gradNorm, gradScale: r.gradScale };
  }

  /** The clipping factor for a gradient norm: min(1, clipNorm / norm) (AdamW.clipScale). */
  clipScale(gradNorm: number): number {
    const clip = this.options.clipNorm;
    return clip > 0 && gradNorm > clip ? clip / gradNorm : 1;
  }

  /** Host copies of the optimizer state (m, v from the device; the step count), as AdamW holds it. */
  exportState(target: CudaAnchorModel): { m: Float32Array; v: Float32Array; stepCount: number } {
    const m = new Float32Array(target.paramCount), v = new Float32Array(target.paramCount);
    target.downloadAdamState(m, v);
    return { m, v, stepCount: this.stepCount };
  }

  /** Continues from saved state (an AdamW's m, v and step count, e.g. a checkpoint's). */
  importState(target: CudaAnchorModel, state: { m: Float32Array; v: Float32Array; stepCount: number }): void {
    check(Number.isInteger(state.stepCount) && state.stepCount >= 0, 'E_INVALID_ARGUMENT', `stepCount must be an integer >= 0, got ${state.stepCount}`);
    target.uploadAdamState(state.m, state.v);
    this.stepCount = state.stepCount;
  }
}
