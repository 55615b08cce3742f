/**
 * The anchor training loop: sample a batch, forward/backward off the event loop, clip, AdamW,
 * schedule, periodic eval and atomic checkpoints, progress events, AbortSignal.
 * Guarded: a non-finite loss or gradient skips the step (counted); `maxBadSteps` in a row stop the
 * run with E_NON_FINITE.
 */
import { HiermemError, check } from '../errors.js';
import type { AnchorModel, Batch } from '../model/anchor.js';
import type { Tokenizer } from '../data/tokenizer.js';
import { AdamW } from './adamw.js';
import { cosineLr } from './schedule.js';
import { saveCheckpoint, type TrainerState } from './checkpoint.js';

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
}

export interface TrainContext {
  model: AnchorModel;
  optimizer: AdamW;
  tokenizer: Tokenizer;
  train: BatchSource;
  val?: BatchSource;
  /** Resume from this state (step, tokens seen). */
  start?: TrainerState;
}

export async function evaluate(model: AnchorModel, source: BatchSource, batches: number, batchSize: number): Promise<number> {
  let sum = 0;
  for (let i = 0; i < batches; i++) sum += await model.loss(source.next(batchSize));
  return sum / batches;
}

export async function train(ctx: TrainContext, options: Partial<TrainOptions> & { steps: number }): Promise<TrainHistory> {
  const o: TrainOptions = { ...DEFAULT_TRAIN, ...options };
  check(Number.isInteger(o.steps) && o.steps >= 0, 'E_INVALID_ARGUMENT', `steps must be an integer >= 0, got ${o.steps}`);
  check(Number.isInteger(o.batchSize) && o.batchSize >= 1 && o.batchSize <= ctx.model.maxBatch, 'E_INVALID_ARGUMENT',
    `batchSize must be in [1, ${ctx.model.maxBatch}] (the model's maxBatch), got ${o.batchSize}`);
  const { model, optimizer } = ctx;
  const hist: TrainHistory = { steps: [], losses: [], valSteps: [], valLosses: [], skippedSteps: 0, tokensPerSec: 0, elapsedSec: 0 };
  let step = ctx.start?.step ?? 0;
  let tokensSeen = ctx.start?.tokensSeen ?? 0;
  let badInARow = 0;
  const t0 = performance.now();
  let tokensThisRun = 0;
  const schedule = { maxLr: o.lr, minLr: o.minLr, warmupSteps: o.warmupSteps, totalSteps: o.steps };

  const checkpoint = async () => {
    if (!o.checkpointPath) return;
    const trainer: TrainerState = { step, tokensSeen };
    const rng = ctx.train.rngState?.();
    if (rng) trainer.rngState = rng;
    await saveCheckpoint(o.checkpointPath, { model, tokenizer: ctx.tokenizer, optimizer, trainer });
  };

  while (step < o.steps) {
    if (o.signal?.aborted) throw new HiermemError('E_ABORTED', `training aborted at step ${step}`);
    const batch = ctx.train.next(o.batchSize);
    const lr = cosineLr(step, schedule);
    model.zeroGrad();
    const loss = await model.forwardBackward(batch);
    let gradNorm = Number.NaN;
    let ok = Number.isFinite(loss);
    if (ok) {
      try {
        gradNorm = (await optimizer.step(model, lr)).gradNorm;
      } catch (e) {
        if (!(e instanceof HiermemError && e.code === 'E_NON_FINITE')) throw e;
        ok = false;
      }
    }
    step++;
    const ntok = batch.batchSize * model.config.seqLen;
    tokensSeen += ntok;
    tokensThisRun += ntok;
    if (!ok) {
      hist.skippedSteps++;
      if (++badInARow >= o.maxBadSteps) {
        throw new HiermemError('E_NON_FINITE', `${badInARow} consecutive steps had a non-finite loss or gradient (last loss ${loss}, step ${step}); stopping`);
      }
    } else {
      badInARow = 0;
      hist.steps.push(step);
      hist.losses.push(loss);
    }
    let valLoss: number | undefined;
    if (ctx.val && o.evalEvery > 0 && (step % o.evalEvery === 0 || step === o.steps)) {
      valLoss = await evaluate(model, ctx.val, o.evalBatches, o.batchSize);
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
  hist.elapsedSec = (performance.now() - t0) / 1000;
  hist.tokensPerSec = tokensThisRun / Math.max(hist.elapsedSec, 1e-9);
  return hist;
}
