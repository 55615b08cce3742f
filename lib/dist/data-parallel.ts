/**
 * Data-parallel training of the anchor (issue #14, item 3): every rank draws its own local batch
 * (its sampler seeded by rank), computes gradients, and one all-reduce per step averages them in
 * rank order, so every rank applies the same AdamW update to the same parameters: the anchor stays
 * bit-identical across ranks after every step, and a rerun is bit-identical. Global batch = ranks
 * x local batch. Only rank 0 writes checkpoints; the others wait for it at a barrier.
 */
import { HiermemError } from '../errors.js';
import type { Batch } from '../model/anchor.js';
import type { TrainerState } from '../train/checkpoint.js';
import type { GradientReducer, Stepper } from '../train/trainer.js';
import { LocalCommunicator, type Communicator, type DistMode } from './communicator.js';
import { MpiCommunicator, type MpiOptions } from './mpi.js';

/** The communicator of a run: a LocalCommunicator for 'none', MPI (initialised here) for 'mpi'. */
export function createCommunicator(mode: DistMode, options: MpiOptions = {}): Communicator {
  if (mode === 'none') return new LocalCommunicator();
  if (mode === 'mpi') return MpiCommunicator.create(options);
  throw new HiermemError('E_INVALID_ARGUMENT', `dist must be 'none' or 'mpi', got ${String(mode)}`);
}

/**
 * The data-order seed of `rank`: rank 0 keeps the run's seed (a one-rank job samples like a plain
 * run), the others are spread by a large odd constant so their streams do not overlap another
 * rank's or the validation sampler's (seed + 1).
 */
export function rankSeed(seed: number, rank: number): number {
  return rank === 0 ? seed : (seed + Math.imul(rank, 0x632be5ab)) >>> 0;
}

/**
 * The step's reduction: the gradients averaged over ranks (in rank order), and the mean of the
 * ranks' losses (float64, summed in rank order), which every rank then reports. It runs even when
 * this rank's loss is not finite: a rank that skipped the collective would leave its peers waiting;
 * the non-finite value reaches every rank instead, and every rank skips the step alike.
 */
export function gradientReducer(comm: Communicator): GradientReducer {
  return async (grads, loss) => {
    await comm.allReduceMean(grads);
    const mine = new Float64Array([loss]);
    const all = new Float64Array((await comm.allGather(new Float32Array(mine.buffer))).buffer);
    let sum = 0;
    for (let r = 0; r < all.length; r++) sum += all[r]!;
    return sum / all.length;
  };
}

/**
 * `stepper` with checkpoints written by rank 0 alone, every rank waiting at a barrier until the
 * file is complete (a rank that went on could otherwise read or race a half-written checkpoint).
 */
export function rankZeroSaves<B extends Batch>(stepper: Stepper<B>, comm: Communicator): Stepper<B> {
  const save = stepper.save;
  if (!save || comm.size === 1) return stepper;
  return {
    ...stepper,
    save: async (path: string, state: TrainerState) => {
      if (comm.rank === 0) await save.call(stepper, path, state);
      await comm.barrier();
    },
  };
}
