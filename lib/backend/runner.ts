/**
 * The one seam between the training code and the backends: an AnchorRunner runs the anchor's half
 * of a step (forward/backward, gradient norm, AdamW) on the CPU (CpuAnchorRunner) or a CUDA device
 * (CudaAnchorRunner, ./cuda-runner.ts). createAnchorRunner is the only place that picks one; the
 * steppers (lib/train/), train() and HierarchicalModel.trainStep take a runner and never ask which.
 * The memory bank's half (gather, block gradients, row-sparse AdamW) stays on the host either way.
 */
import { loadNative } from '../native.js';
import type { AnchorModel, Batch } from '../model/anchor.js';
import type { AdamW, StepResult } from '../train/adamw.js';
import type { GemmPrecision } from '../model/cuda-anchor.js';
import { DEFAULT_BACKEND, resolveBackend, type Backend, type ResolvedBackend } from './detect.js';
import { CudaAnchorRunner } from './cuda-runner.js';

/** What HierarchicalModel.trainStep needs from the anchor's side (implement it to run the anchor elsewhere). */
export interface AnchorRunner {
  zeroGrad(): void;
  /** Forward + backward; dfetched (in batch.memory) is ADDED to. Resolves to the mean loss. */
  forwardBackward(batch: Batch): Promise<number>;
  loss(batch: Batch): Promise<number>;
  /** Global norm of the anchor gradients. */
  gradNorm(): number;
  /** AdamW on the anchor at lr, clipped by gradNorm (default: the anchor gradients' own norm). */
  step(lr: number, gradNorm?: number): Promise<unknown>;
}

/**
 * A runner on one backend, as the steppers use it: `host` and `hostOptimizer` are the CPU model and
 * AdamW the run was set up with (checkpoints are written from them); sync() brings them up to date
 * with a device, dispose() frees what the runner holds there.
 */
export interface BackendRunner extends AnchorRunner {
  readonly backend: ResolvedBackend;
  readonly host: AnchorModel;
  readonly hostOptimizer: AdamW;
  step(lr: number, gradNorm?: number): Promise<StepResult>;
  sync(): void;
  dispose(): void;
}

/** The CPU runner: the host model and its AdamW themselves (sync and dispose have nothing to do). */
export class CpuAnchorRunner implements BackendRunner {
  readonly backend = 'cpu' as const;

  constructor(readonly host: AnchorModel, readonly hostOptimizer: AdamW) {}

  zeroGrad(): void {
    this.host.zeroGrad();
  }

  forwardBackward(batch: Batch): Promise<number> {
    return this.host.forwardBackward(batch);
  }

  loss(batch: Batch): Promise<number> {
    return this.host.loss(batch);
  }

  gradNorm(): number {
    return loadNative().globalNorm(this.host.grads);
  }

  step(lr: number, gradNorm?: number): Promise<StepResult> {
    return this.hostOptimizer.step(this.host, lr, gradNorm);
  }

  sync(): void {}

  dispose(): void {}
}

export interface RunnerOptions {
  /** Default DEFAULT_BACKEND ('cpu'); resolved with resolveBackend (E_BACKEND_UNAVAILABLE for 'cuda' without a GPU). */
  backend?: Backend;
  /** Dense products on a CUDA device (default 'fp32'). */
  gemm?: GemmPrecision;
}

/** The runner for `options.backend`, around a host model and its AdamW. */
export function createAnchorRunner(model: AnchorModel, optimizer: AdamW, options: RunnerOptions = {}): BackendRunner {
  return resolveBackend(options.backend ?? DEFAULT_BACKEND) === 'cuda'
    ? new CudaAnchorRunner(model, optimizer, { gemm: options.gemm })
    : new CpuAnchorRunner(model, optimizer);
}
