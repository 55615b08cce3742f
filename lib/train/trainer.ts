/**
 * The anchor training loop: sample a batch, forward/backward off the event loop, clip, AdamW,
 * schedule, periodic eval and atomic checkpoints, progress events, AbortSignal.
 * Guarded: a non-finite loss or gradient skips the step (counted); `maxBadSteps` in a row stop the
 * run with E_NON_FINITE. Steps run on an AnchorRunner (lib/backend/runner.ts): the CPU (default)
 * or a CUDA device; nothing here asks which.
 */
import { HiermemError, check } from '../errors.js';
import type { AnchorModel, Batch } from '../model/anchor.js';
import type { Tokenizer } from '../data/tokenizer.js';
import { AdamW } from './adamw.js';
import { cosineLr } from './schedule.js';
import { saveCheckpoint, type TrainerState } from './checkpoint.js';
import { DEFAULT_BACKEND, type Backend, type ResolvedBackend } from '../backend/detect.js';
import { createAnchorRunner, type BackendRunner, type RunnerOptions } from '../backend/runner.js';
import { CudaAnchorRunner } from '../backend/cuda-runner.js';
import type { Communicator, DistMode } from '../dist/communicator.js';
import { createCommunicator, dataParallelReducers, rankZeroSaves } from '../dist/data-parallel.js';

export { DEFAULT_BACKEND };

export interface BatchSource {
  next(batchSize: number): Batch;
  /** RNG state, saved in checkpoints for exact resume. */
  rngState?(): number[];
}

export interface TrainOptions {
  steps: number;
  batchSize: number;
  lr: number;
  minLr: number;
  warmupSteps: number;
  /** Evaluate on `evalBatches` validation batches every `evalEvery` steps (0 = never). */
  evalEvery: number;
  evalBatches: number;
  /** Write a checkpoint every `checkpointEvery` steps and at the end (0 = only at the end, if a path is set). */
  checkpointEvery: number;
  checkpointPath?: string;
  maxBadSteps: number;
  signal?: AbortSignal;
  onProgress?: (e: ProgressEvent) => void;
  /**
   * Where train() runs the anchor: 'cpu', 'cuda' (E_BACKEND_UNAVAILABLE without a usable GPU) or
   * 'auto' (resolveBackend; HIERMEM_BACKEND overrides it). trainLoop itself runs whatever Stepper
   * it is given: anchorStepper / memoryStepper take `backend` when they are built.
   */
  backend?: Backend;
}

export const DEFAULT_TRAIN: Omit<TrainOptions, 'steps'> = {
  batchSize: 8,
  lr: 3e-3,
  minLr: 3e-4,
  warmupSteps: 20,
  evalEvery: 50,
  evalBatches: 4,
  checkpointEvery: 0,
  maxBadSteps: 5,
  backend: DEFAULT_BACKEND,
};

export interface ProgressEvent {
  step: number; // 1-based, steps done
  totalSteps: number;
  loss: number;
  lr: number;
  gradNorm: number;
  tokensPerSec: number;
  tokensSeen: number;
  elapsedSec: number;
  valLoss?: number;
  skippedSteps: number;
}

export interface TrainHistory {
  steps: number[];
  losses: number[];
  valSteps: number[];
  valLosses: number[];
  skippedSteps: number;
  tokensPerSec: number;
  elapsedSec: number;
  /** Where the steps ran (trainLoop sets it from the stepper). */
  backend?: ResolvedBackend;
}

export interface TrainContext {
  model: AnchorModel;
  optimizer: AdamW;
  tokenizer: Tokenizer;
  train: BatchSource;
  val?: BatchSource;
  /** Resume from this state (step, tokens seen). */
  start?: TrainerState;
  /** Run on this runner (around `model` and `optimizer`) instead of one for `options.backend`; the caller disposes it. */
  runner?: BackendRunner;
  /**
   * Data-parallel across processes ('mpi' or a Communicator; lib/dist/): gradients averaged every
   * step, checkpoints written by rank 0. Seed `train` by rank (rankSeed) so ranks draw different batches.
   */
  dist?: DistMode | Communicator;
}

export async function evaluate(model: AnchorModel, source: BatchSource, batches: number, batchSize: number): Promise<number> {
  let sum = 0;
  for (let i = 0; i < batches; i++) sum += await model.loss(source.next(batchSize));
  return sum / batches;
}

/** What the loop needs from a model: one update, a loss, and a checkpoint writer. */
export interface Stepper<B extends Batch> {
  /** One update at learning rate lr; throws HiermemError E_NON_FINITE when the step had to be skipped. */
  step(batch: B, lr: number): Promise<{ loss: number; gradNorm: number }>;
  loss(batch: B): Promise<number>;
  save?(path: string, state: TrainerState): Promise<void>;
  /** The backend the steps run on (absent: 'cpu'). */
  readonly backend?: ResolvedBackend;
  /**
   * Brings the host copies (model parameters, optimizer state) up to date with a device; trainLoop
   * calls it before it returns or throws E_ABORTED.
   */
  sync?(): void | Promise<void>;
  /** Frees what the stepper holds on a device; the host model and optimizer stay usable. */
  dispose?(): void;
}

export interface Source<B extends Batch> {
  next(batchSize: number): B;
  rngState?(): number[];
}

/**
 * The training loop shared by every mode: schedule, guarded steps, periodic eval and checkpoints,
 * progress events and AbortSignal.
 */
export async function trainLoop<B extends Batch>(
  stepper: Stepper<B>, source: Source<B>, val: Source<B> | undefined, start: TrainerState | undefined,
  options: Partial<TrainOptions> & { steps: number }, seqLen: number,
): Promise<TrainHistory> {
  const o: TrainOptions = { ...DEFAULT_TRAIN, ...options };
  check(Number.isInteger(o.steps) && o.steps >= 0, 'E_INVALID_ARGUMENT', `steps must be an integer >= 0, got ${o.steps}`);
  check(Number.isInteger(o.batchSize) && o.batchSize >= 1, 'E_INVALID_ARGUMENT', `batchSize must be a positive integer, got ${o.batchSize}`);
  const hist: TrainHistory = { steps: [], losses: [], valSteps: [], valLosses: [], skippedSteps: 0, tokensPerSec: 0, elapsedSec: 0,
    backend: stepper.backend ?? 'cpu' };
  let step = start?.step ?? 0;
  let tokensSeen = start?.tokensSeen ?? 0;
  let badInARow = 0;
  const t0 = performance.now();
  let tokensThisRun = 0;
  const schedule = { maxLr: o.lr, minLr: o.minLr, warmupSteps: o.warmupSteps, totalSteps: o.steps };

  const checkpoint = async () => {
    if (!o.checkpointPath || !stepper.save) return;
    const state: TrainerState = { step, tokensSeen };
    const rng = source.rngState?.();
    if (rng) state.rngState = rng;
    await stepper.save(o.checkpointPath, state);
  };
  const evaluateVal = async () => {
    let sum = 0;
    for (let i = 0; i < o.evalBatches; i++) sum += await stepper.loss(val!.next(o.batchSize));
    return sum / o.evalBatches;
  };

  while (step < o.steps) {
    if (o.signal?.aborted) {
      await checkpoint(); // an interrupted run can resume from where it stopped
      await stepper.sync?.();
      throw new HiermemError('E_ABORTED', `training aborted at step ${step}`);
    }
    const batch = source.next(o.batchSize);
    const lr = cosineLr(step, schedule);
    let loss = Number.NaN;
    let gradNorm = Number.NaN;
    let ok = true;
    try {
      ({ loss, gradNorm } = await stepper.step(batch, lr));
    } catch (e) {
      if (!(e instanceof HiermemError && e.code === 'E_NON_FINITE')) throw e;
      ok = false;
    }
    step++;
    const ntok = batch.batchSize * seqLen;
    tokensSeen += ntok;
    tokensThisRun += ntok;
    if (!ok) {
      hist.skippedSteps++;
      if (++badInARow >= o.maxBadSteps) {
        throw new HiermemError('E_NON_FINITE', `${badInARow} consecutive steps had a non-finite loss or gradient (step ${step}); stopping`);
      }
    } else {
      badInARow = 0;
      hist.steps.push(step);
      hist.losses.push(loss);
    }
    let valLoss: number | undefined;
    if (val && o.evalEvery > 0 && (step % o.evalEvery === 0 || step === o.steps)) {
      valLoss = await evaluateVal();
      hist.valSteps.push(step);
      hist.valLosses.push(valLoss);
    }
    if (o.checkpointEvery > 0 && step % o.checkpointEvery === 0 && step < o.steps) await checkpoint();
    const elapsed = (performance.now() - t0) / 1000;
    o.onProgress?.({
      step, totalSteps: o.steps, loss, lr, gradNorm, tokensPerSec: tokensThisRun / Math.max(elapsed, 1e-9),
      tokensSeen, elapsedSec: elapsed, valLoss, skippedSteps: hist.skippedSteps,
    });
  }
  await checkpoint();
  await stepper.sync?.();
  hist.elapsedSec = (performance.now() - t0) / 1000;
  hist.tokensPerSec = tokensThisRun / Math.max(hist.elapsedSec, 1e-9);
  return hist;
}

/**
 * Called between backward and the optimizer step with the anchor gradients and this process's
 * loss: makes the gradients those of the whole job (data-parallel: lib/dist/) and resolves to the
 * loss to report. Every process must call it every step, also when its loss is not finite.
 */
export type GradientReducer = (grads: Float32Array, loss: number) => Promise<number>;
/** GradientReducer's twin for gradients on a CUDA device (NCCL: lib/dist/data-parallel.ts deviceGradientReducer). */
export type DeviceGradientReducer = (runner: CudaAnchorRunner, loss: number) => Promise<number>;

/** Where a stepper runs: a backend to build a runner for, or a runner built by the caller. */
export interface StepperBackendOptions extends RunnerOptions {
  /** Data-parallel reduction of the anchor gradients (host gradients: the CPU runner only). */
  reduceGradients?: GradientReducer;
  /** The same on the CUDA runner (the gradients stay on the device). */
  reduceDeviceGradients?: DeviceGradientReducer;
  /**
   * Run on this runner (its host model and optimizer must be the ones given to the stepper);
   * `backend` and `gemm` are then ignored, and the caller disposes it.
   */
  runner?: BackendRunner;
}

/** The runner a stepper uses, and whether the stepper owns it (and so disposes it). */
export function stepperRunner(model: AnchorModel, optimizer: AdamW, options: StepperBackendOptions): { runner: BackendRunner; owned: boolean } {
  if (options.runner) {
    check(options.runner.host === model && options.runner.hostOptimizer === optimizer, 'E_INVALID_ARGUMENT',
      'the runner must wrap the model and optimizer given to the stepper');
    return { runner: options.runner, owned: false };
  }
  return { runner: createAnchorRunner(model, optimizer, options), owned: true };
}

/**
 * The anchor alone: forward/backward, clipped AdamW, on the runner for `options.backend` (on a
 * device, `model` and `optimizer` are host mirrors, synced for checkpoints and when trainLoop
 * returns; dispose() frees the device model).
 */
export function anchorStepper(model: AnchorModel, optimizer: AdamW, tokenizer: Tokenizer,
                              options: StepperBackendOptions = {}): Stepper<Batch> {
  const { runner, owned } = stepperRunner(model, optimizer, options);
  const device = runner instanceof CudaAnchorRunner && options.reduceDeviceGradients ? runner : null;
  if (options.reduceGradients && runner.backend !== 'cpu' && device === null) {
    if (owned) runner.dispose();
    throw new HiermemError('E_CONFIG_INCOMPATIBLE', 'data-parallel training on the CUDA backend all-reduces the device gradients with NCCL: pass a NcclCommunicator (--backend cuda --dist mpi opens one)');
  }
  return {
    backend: runner.backend,
    async step(batch, lr) {
      runner.zeroGrad();
      let loss = await runner.forwardBackward(batch);
      if (device) loss = await options.reduceDeviceGradients!(device, loss);
      else if (options.reduceGradients) loss = await options.reduceGradients(model.grads, loss);
      if (!Number.isFinite(loss)) throw new HiermemError('E_NON_FINITE', `loss is ${loss}`);
      const { gradNorm } = await runner.step(lr);
      return { loss, gradNorm };
    },
    loss: (batch) => runner.loss(batch),
    save: async (path, trainer) => {
      runner.sync();
      await saveCheckpoint(path, { model, tokenizer, optimizer, trainer });
    },
    sync: () => runner.sync(),
    dispose: () => {
      if (owned) runner.dispose();
    },
  };
}

export async function train(ctx: TrainContext, options: Partial<TrainOptions> & { steps: number }): Promise<TrainHistory> {
  const batchSize = options.batchSize ?? DEFAULT_TRAIN.batchSize;
  check(batchSize <= ctx.model.maxBatch, 'E_INVALID_ARGUMENT', `batchSize ${batchSize} exceeds the model's maxBatch ${ctx.model.maxBatch}`);
  const comm = typeof ctx.dist === 'string' ? createCommunicator(ctx.dist, { nccl: options.backend === 'cuda' }) : ctx.dist;
  const dist = comm && comm.kind !== 'local' ? comm : undefined;
  const local = anchorStepper(ctx.model, ctx.optimizer, ctx.tokenizer,
    { backend: options.backend, runner: ctx.runner, ...(dist ? dataParallelReducers(dist) : {}) });
  const stepper = dist ? rankZeroSaves(local, dist) : local;
  try {
    return await trainLoop(stepper, ctx.train, ctx.val, ctx.start, options, ctx.model.config.seqLen);
  } finally {
    stepper.dispose?.();
  }
}
