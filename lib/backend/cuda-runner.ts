/**
 * Training on the CUDA backend (issue #8): the anchor's parameters, gradients and AdamW state live
 * on the device (CudaAnchorModel + CudaAdamW); the loss comes back from the device. The CPU
 * AnchorModel and AdamW the run was set up with stay as HOST MIRRORS: they seed the device
 * (parameters, m, v, step count — a fresh init or a checkpoint from either backend) and are brought
 * up to date by sync() before a checkpoint is written and when training returns, so checkpoints
 * keep the one format whichever backend wrote them, and either backend resumes them.
 *
 * With memories the bank stays in host memory (RAM or a memory-mapped file: the host tier): the
 * CPU gathers each batch's blocks, they go up with the batch, the device adds dfetched, which comes
 * back for the CPU's scatter-add and row-sparse AdamW on the bank (HierarchicalModel.trainStep with
 * this runner). Clipping uses the joint norm as on the CPU: the device reduces the anchor's part.
 * Built by createAnchorRunner (./runner.ts) for `backend: 'cuda'`.
 */
import { CudaAnchorModel, type GemmPrecision } from '../model/cuda-anchor.js';
import { CudaAdamW } from '../train/cuda-adamw.js';
import type { AnchorModel, Batch } from '../model/anchor.js';
import type { AdamW, StepResult } from '../train/adamw.js';
import type { BackendRunner } from './runner.js';
import type { NcclCommunicator } from '../dist/nccl.js';

export interface CudaRunnerOptions {
  /** Dense products on the device (default 'fp32', the reference). */
  gemm?: GemmPrecision;
}

/** The anchor on the device, mirroring a host AnchorModel and its AdamW. Throws E_BACKEND_UNAVAILABLE without CUDA. */
export class CudaAnchorRunner implements BackendRunner {
  readonly backend = 'cuda' as const;
  readonly device: CudaAnchorModel;
  readonly optimizer: CudaAdamW;
  /** The device has updates the host mirrors lack. */
  private dirty = false;

  constructor(readonly host: AnchorModel, readonly hostOptimizer: AdamW, options: CudaRunnerOptions = {}) {
    this.device = CudaAnchorModel.create(host.config, {
      maxBatch: host.maxBatch, memory: host.memory, skipInit: true, gemm: options.gemm,
    });
    try {
      this.device.uploadParams(host.params);
      this.optimizer = new CudaAdamW(this.device, hostOptimizer.options);
      this.optimizer.importState(this.device, hostOptimizer);
    } catch (e) {
      this.device.dispose();
      throw e;
    }
  }

  zeroGrad(): void {
    this.device.zeroGrad();
  }

  forwardBackward(batch: Batch): Promise<number> {
    return this.device.forwardBackward(batch);
  }

  loss(batch: Batch): Promise<number> {
    return this.device.loss(batch);
  }

  /** Data-parallel: the device gradients averaged over ranks by NCCL, between backward and step. */
  allReduceGradients(comm: NcclCommunicator): Promise<void> {
    return comm.allReduceModelGradients(this.device);
  }

  gradNorm(): number {
    return this.device.gradNorm();
  }

  /** AdamW on the device, clipped by gradNorm (default: the device gradients' own norm). */
  step(lr: number, gradNorm?: number): Promise<StepResult> {
    this.dirty = true;
    return this.optimizer.step(this.device, lr, gradNorm);
  }

  /** Downloads parameters, AdamW m and v and the step count into the host model and optimizer. */
  sync(): void {
    if (!this.dirty) return;
    this.host.params.set(this.device.downloadParams());
    this.device.downloadAdamState(this.hostOptimizer.m, this.hostOptimizer.v);
    this.hostOptimizer.stepCount = this.optimizer.stepCount;
    this.dirty = false;
  }

  /** Frees the device memory (the host mirrors stay as last synced). */
  dispose(): void {
    this.device.dispose();
  }
}
