/**
 * The parts of a memory run that change when it is spread over the ranks of a job with the bank
 * sharded by subtree (issue #14): the shard plan (computed from the training data's subtree
 * counts, or taken from the resumed checkpoint's manifest), each rank's data (only its own
 * subtrees' sequences, training and validation, with a rank-seeded order), and the stepper (the
 * sharded step, the job's mean validation loss, sharded checkpoints). lib/train/run.ts calls this
 * where a one-process run builds its sampler and stepper.
 */
import { HiermemError } from '../errors.js';
import type { Communicator } from '../dist/communicator.js';
import { rankSeed } from '../dist/data-parallel.js';
import type { Tokenizer } from '../data/tokenizer.js';
import { PathBatchSampler, type SequenceSource } from '../data/packing.js';
import { GENERIC_PATH, type HierarchicalModel, type PathBatch } from '../memory/memory-model.js';
import { ownerOfPath, planShards, subtreeCounts, DEFAULT_SHARD_LEVEL, type ShardPlan } from '../memory/shard-plan.js';
import { AdamW } from './adamw.js';
import { saveCheckpoint, type TrainerState } from './checkpoint.js';
import { DEFAULT_MEMORY_TRAIN, type MemoryTrainOptions } from './memory-trainer.js';
import { parseManifest, saveShardedCheckpoint, sharedId, type ShardManifest } from './shard-checkpoint.js';
import type { NextTokenLogits } from '../model/generate.js';
import { meanOverRanks, shardedTrainStep, type ShardedStepResult } from './shard-step.js';
import { stepperRunner, type Source, type Stepper, type StepperBackendOptions } from './trainer.js';

/** The sequences of `src` whose subtree `rank` owns (generic-path sequences: none are packed so). */
export function ownSequences(src: SequenceSource, plan: ShardPlan, rank: number): SequenceSource {
  const idx: number[] = [];
  for (let i = 0; i < src.length; i++) if (ownerOfPath(plan, src.at(i)!.path) === rank) idx.push(i);
  return { length: idx.length, at: (i) => (i >= 0 && i < idx.length ? src.at(idx[i]!) : undefined) };
}

/** Sequences per level-s subtree. */
function sequenceCounts(src: SequenceSource, p: number, k: number, shardLevel: number): number[] {
  const paths = new Int32Array(src.length * p);
  for (let i = 0; i < src.length; i++) paths.set(src.at(i)!.path, i * p);
  return subtreeCounts(paths, p, k, shardLevel);
}

export interface ShardedRunInput {
  hm: HierarchicalModel;
  optimizer: AdamW;
  tokenizer: Tokenizer;
  comm: Communicator;
  train: SequenceSource;
  val?: SequenceSource;
  /** (numDocs, p) paths of the training documents, when known: the plan balances documents, else sequences. */
  docPaths?: Int32Array;
  /** Tree level (1-based) of the shards (default 1); must match a resumed manifest. */
  shardLevel?: number;
  seed: number;
  /** Every sequence uses the generic memory (no retrieval). */
  genericOnly: boolean;
  /** A resumed sharded checkpoint: its manifest, and this rank's trainer state. */
  resumed?: { manifest: ShardManifest; trainer?: TrainerState };
  memoryTraining?: Partial<MemoryTrainOptions>;
  backend?: StepperBackendOptions['backend'];
  /** Called after every step with what it exchanged (benchmarks). */
  onStep?: (r: ShardedStepResult) => void;
}

export interface ShardedRun {
  plan: ShardPlan;
  runId: string;
  source: Source<PathBatch>;
  val?: Source<PathBatch>;
  stepper: Stepper<PathBatch>;
  /** This rank's trainer state to continue from (resumed runs). */
  start?: TrainerState;
}

export async function prepareShardedRun(x: ShardedRunInput): Promise<ShardedRun> {
  const { hm, comm } = x;
  const k = hm.bank.spec.k, p = hm.bank.levels;
  let plan: ShardPlan, runId: string;
  if (x.resumed) {
    const m = x.resumed.manifest;
    if (m.ranks !== comm.size) {
      throw new HiermemError('E_CONFIG_INCOMPATIBLE', `the checkpoint was written by ${m.ranks} ranks, this job has ${comm.size}: resume it with mpirun -np ${m.ranks}`);
    }
    if (x.shardLevel !== undefined && x.shardLevel !== m.plan.shardLevel) {
      throw new HiermemError('E_CONFIG_INCOMPATIBLE', `the checkpoint's bank is sharded at level ${m.plan.shardLevel}, --shard-level asks for ${x.shardLevel}`);
    }
    if (m.plan.k !== k || m.plan.p !== p) throw new HiermemError('E_CHECKPOINT_CORRUPT', `the shard plan is for a tree k ${m.plan.k}, p ${m.plan.p}; the bank has k ${k}, p ${p}`);
    plan = m.plan;
    runId = m.runId;
  } else {
    const shardLevel = x.shardLevel ?? DEFAULT_SHARD_LEVEL;
    const counts = x.docPaths ? subtreeCounts(x.docPaths, p, k, Math.min(shardLevel, p)) : sequenceCounts(x.train, p, k, Math.min(shardLevel, p));
    plan = planShards({ counts, ranks: comm.size, shardLevel, k, p, balance: x.docPaths ? 'documents' : 'sequences' });
    runId = await sharedId(comm, 4);
  }
  const mine = ownSequences(x.train, plan, comm.rank);
  if (mine.length === 0) throw new HiermemError('E_CONFIG_INCOMPATIBLE', `rank ${comm.rank} owns no training sequences (use a deeper --shard-level or fewer ranks)`);
  // validation on the blocks this rank holds: its own subtrees' held-out sequences (its training ones if it has none)
  const ownVal = x.val ? ownSequences(x.val, plan, comm.rank) : undefined;
  const valSeqs = ownVal && ownVal.length > 0 ? ownVal : x.val ? mine : undefined;
  const start = x.resumed?.trainer;
  const sampler = new PathBatchSampler(mine, { seed: rankSeed(x.seed, comm.rank), genericK: x.genericOnly ? 0 : k, ...(start?.rngState ? { state: start.rngState } : {}) });
  const source: Source<PathBatch> = x.genericOnly
    ? { next: (b) => { const s = sampler.next(b); s.paths.fill(GENERIC_PATH); return s; }, rngState: () => sampler.rngState() }
    : sampler;
  const val = valSeqs ? new PathBatchSampler(valSeqs, { seed: x.seed + 1 }) : undefined;
  const stepper = shardedMemoryStepper(hm, x.optimizer, x.tokenizer, comm, plan, runId, { ...x.memoryTraining, backend: x.backend, ...(x.onStep ? { onStep: x.onStep } : {}) });
  return { plan, runId, source, ...(val ? { val } : {}), stepper, ...(start ? { start } : {}) };
}

/** The stepper of a sharded memory run (CPU backend: the anchor gradients are reduced in host memory). */
export function shardedMemoryStepper(hm: HierarchicalModel, optimizer: AdamW, tokenizer: Tokenizer, comm: Communicator, plan: ShardPlan, runId: string,
                                     options: Partial<MemoryTrainOptions> & StepperBackendOptions & { onStep?: (r: ShardedStepResult) => void } = {}): Stepper<PathBatch> {
  const o = { ...DEFAULT_MEMORY_TRAIN, ...options };
  if (!(o.memoryLrScale >= 0) || !(o.memoryWeightDecay >= 0)) throw new HiermemError('E_CONFIG_INVALID', 'memoryLrScale and memoryWeightDecay must be >= 0');
  const { runner, owned } = stepperRunner(hm.anchor, optimizer, options);
  if (runner.backend !== 'cpu') {
    if (owned) runner.dispose();
    throw new HiermemError('E_CONFIG_INCOMPATIBLE', 'sharded memory training reduces host gradients: it runs on the CPU backend only for now (NCCL reduces only the dense gradients of the CUDA anchor; the blocks of the bank live in host memory)');
  }
  return {
    backend: runner.backend,
    async step(batch, lr) {
      const r = await shardedTrainStep(hm, batch, optimizer,
        { anchorLr: lr, memoryLr: lr * o.memoryLrScale, memoryWeightDecay: o.memoryWeightDecay, freezeAnchor: o.mode === 'posthoc' }, runner, comm, plan);
      options.onStep?.(r);
      return { loss: r.loss, gradNorm: r.gradNorm };
    },
    loss: async (batch) => meanOverRanks(comm, await hm.loss(batch, runner)),
    save: async (file, trainer) => {
      runner.sync();
      await saveShardedCheckpoint(file, {
        bank: hm.bank, plan, comm, runId, trainer,
        writeAnchor: (extraMetadata) => saveCheckpoint(file, { model: hm.anchor, tokenizer, optimizer, trainer, extraMetadata }),
      });
    },
    sync: () => runner.sync(),
    dispose: () => {
      if (owned) runner.dispose();
    },
  };
}

/**
 * Refuses a resume that cannot continue bit-identically: a sharded checkpoint without MPI or with
 * another rank count, or a one-bank checkpoint under MPI. `meta`: the checkpoint's metadata.
 */
export function checkShardedResume(file: string, meta: Record<string, string>, comm: Communicator | undefined): void {
  const manifest = parseManifest(file, meta);
  if (manifest && !comm) {
    throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${file} was written by ${manifest.ranks} MPI ranks with a sharded bank: resume it with mpirun -np ${manifest.ranks} … --dist mpi (eval and generate open it in one process)`);
  }
  if (manifest && comm && manifest.ranks !== comm.size) {
    throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${file} was written by ${manifest.ranks} ranks, this job has ${comm.size}: resume it with mpirun -np ${manifest.ranks}`);
  }
  if (!manifest && comm && meta.memory_bank !== undefined) {
    throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${file} holds one memory bank (a one-process run): resume it without --dist`);
  }
}

/**
 * Greedy generation from a sharded run on this rank: a path whose subtree another rank owns is
 * generated from that rank's shard of the last checkpoint written (this rank's bank holds only
 * untrained copies of those blocks); `lastCheckpoint` returns its file, if any.
 */
export async function shardedLogitsForPath(hm: HierarchicalModel, plan: ShardPlan, rank: number, route: Int32Array,
                                           lastCheckpoint: () => string | undefined): Promise<{ logits: NextTokenLogits; close(): void }> {
  const owner = ownerOfPath(plan, route);
  const file = lastCheckpoint();
  if (owner < 0 || owner === rank || file === undefined) return { logits: hm.logitsForPath(route), close: () => undefined };
  const { loadHierarchicalCheckpoint } = await import('./memory-trainer.js');
  const other = await loadHierarchicalCheckpoint(file, { shardRanks: [owner] });
  return { logits: other.hm.logitsForPath(route), close: () => other.hm.bank.close() };
}
