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
import type { DeviceGradientReducer, GradientReducer, Stepper } from '../train/trainer.js';
import { LocalCommunicator, type Communicator, type DistMode } from './communicator.js';
import { MpiCommunicator, type MpiOptions } from './mpi.js';
import { NcclCommunicator } from './nccl.js';

/**
 * The communicator of a run: a LocalCommunicator for 'none', MPI (initialised here) for 'mpi'; with
 * `nccl` (the CUDA backend) NCCL bootstrapped over that MPI, for the device gradients.
 */
export function createCommunicator(mode: DistMode, options: MpiOptions & { nccl?: boolean } = {}): Communicator {
  if (mode === 'none') return new LocalCommunicator();
  if (mode === 'mpi') {
    const mpi = MpiCommunicator.create(options);
    if (!options.nccl) return mpi;
    try {
      return NcclCommunicator.create(mpi);
    } catch (e) {
      mpi.close();
      throw e;
    }
  }
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
    return meanLoss(comm, loss);
  };
}

/** The CUDA backend's reduction: the device gradients averaged by NCCL on the device, the loss as gradientReducer's. */
export function deviceGradientReducer(comm: NcclCommunicator): DeviceGradientReducer {
  return async (runner, loss) => {
    await runner.allReduceGradients(comm);
    return meanLoss(comm, loss);
  };
}

/** A stepper's data-parallel options over `comm`: host gradients always; device gradients where it is NCCL. */
export function dataParallelReducers(comm: Communicator): { reduceGradients: GradientReducer; reduceDeviceGradients?: DeviceGradientReducer } {
  return { reduceGradients: gradientReducer(comm), ...(comm instanceof NcclCommunicator ? { reduceDeviceGradients: deviceGradientReducer(comm) } : {}) };
}

/** The mean of the ranks' losses (float64, summed in rank order), the same on every rank. */
async function meanLoss(comm: Communicator, loss: number): Promise<number> {
  const mine = new Float64Array([loss]);
  const all = new Float64Array((await comm.allGather(new Float32Array(mine.buffer))).buffer);
  let sum = 0;
  for (let r = 0; r < all.length; r++) sum += all[r]!;
  return sum / all.length;
}

/** Trainer-state fields of a data-parallel checkpoint: the rank count, and every rank's data-order state in rank order. */
export const RANKS_FIELD = 'ranks';
export const RANK_RNG_STATES_FIELD = 'rankRngStates';

/**
 * `stepper` with checkpoints written by rank 0 alone, every rank waiting at a barrier until the
 * file is complete (a rank that went on could otherwise read or race a half-written checkpoint).
 * The checkpoint's trainer state carries every rank's sampler state (gathered as float64 bits), so
 * that a resume with the same rank count continues each rank's data order (rankTrainerState).
 */
export function rankZeroSaves<B extends Batch>(stepper: Stepper<B>, comm: Communicator): Stepper<B> {
  const save = stepper.save;
  if (!save || comm.size === 1) return stepper;
  return {
    ...stepper,
    save: async (path: string, state: TrainerState) => {
      const mine = Float64Array.from(state.rngState ?? []);
      const all = new Float64Array((await comm.allGather(new Float32Array(mine.buffer))).buffer);
      const states = Array.from({ length: comm.size }, (_, r) => Array.from(all.subarray(r * mine.length, (r + 1) * mine.length)));
      if (comm.rank === 0) await save.call(stepper, path, { ...state, [RANKS_FIELD]: comm.size, [RANK_RNG_STATES_FIELD]: states });
      await comm.barrier();
    },
  };
}

/**
 * This process's trainer state from a checkpoint's: under `comm` (several ranks) its own rank's data
 * order; in one process (`comm` absent or of size 1) the state as saved. A checkpoint written by
 * another number of ranks → E_CONFIG_INCOMPATIBLE (a resume continues the same job's data orders).
 */
export function rankTrainerState(file: string, state: TrainerState | undefined, comm: Communicator | undefined): TrainerState | undefined {
  if (state === undefined) return undefined;
  const size = comm?.size ?? 1;
  const saved = state[RANKS_FIELD] ?? 1;
  if (saved !== size) {
    throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${file} was written by ${String(saved)} rank(s), this job has ${size}: resume it with the same rank count${saved === 1 ? ' (one process: drop --dist)' : ` (mpirun -np ${String(saved)} ... --dist mpi)`}`);
  }
  if (size === 1) return state;
  const states = state[RANK_RNG_STATES_FIELD];
  const mine = Array.isArray(states) && states.length === size ? (states[comm!.rank] as unknown) : undefined;
  if (!Array.isArray(mine) || !mine.every((x) => typeof x === 'number' && Number.isFinite(x))) {
    throw new HiermemError('E_CHECKPOINT_CORRUPT', `${file}: trainer state lacks rank ${comm!.rank}'s data order`);
  }
  const { [RANK_RNG_STATES_FIELD]: _all, ...rest } = state;
  void _all;
  return { ...rest, ...(mine.length ? { rngState: mine as number[] } : {}) };
}
