/**
 * Training with hierarchical memories. Modes (paper §4.5):
 *   cotrain  — anchor and memories trained together (the paper's best, after anchor pretraining)
 *   posthoc  — anchor frozen, only the memories learn (also on an anchor trained elsewhere)
 *   joint    — anchor and memories from scratch together (allowed; worse in the paper)
 * The memory LR is the anchor's schedule times `memoryLrScale`; memory weight decay is lazy (only
 * fetched blocks decay, when they are fetched).
 * Backends: the anchor runs on an AnchorRunner (lib/backend/runner.ts; `backend: 'cuda'` puts it on
 * the device) and the bank stays in host memory; its gather, scatter-add and AdamW are the CPU's
 * either way.
 */
import { HiermemError } from '../errors.js';
import type { Tokenizer } from '../data/tokenizer.js';
import type { HierarchicalModel, PathBatch } from '../memory/memory-model.js';
import { AdamW } from './adamw.js';
import { saveCheckpoint, type TrainerState } from './checkpoint.js';
import { stepperRunner, type Stepper, type StepperBackendOptions } from './trainer.js';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { readdir, unlink } from 'node:fs/promises';
import { readSafetensorsHeader, removeStaleTempFiles } from '../io/safetensors.js';
import { parseManifest, type ShardManifest } from './shard-checkpoint.js';

export type MemoryTrainMode = 'cotrain' | 'posthoc' | 'joint';

export interface MemoryTrainOptions {
  mode: MemoryTrainMode;
  /** Memory LR = anchor LR (from the schedule) x this. */
  memoryLrScale: number;
  /** Paper: 1e-3. */
  memoryWeightDecay: number;
}

export const DEFAULT_MEMORY_TRAIN: MemoryTrainOptions = { mode: 'cotrain', memoryLrScale: 1, memoryWeightDecay: 1e-3 };

/** `<name>` of `<name>.safetensors`, for bank files beside a checkpoint. */
function checkpointBase(file: string): string {
  return path.basename(file).replace(/\.safetensors$/, '');
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The bank file a checkpoint at `file` names, or undefined (no file, unreadable, anchor-only). */
async function bankNamedBy(file: string): Promise<string | undefined> {
  try {
    return (await readSafetensorsHeader(file)).metadata.memory_bank;
  } catch {
    return undefined;
  }
}

/**
 * Writes the bank beside the checkpoint as `<name>.bank.step-<n>.safetensors`, then the anchor
 * checkpoint (metadata `memory_bank` names that file), then removes the banks of older
 * checkpoints. Each file is written atomically, and the bank a checkpoint names is never
 * replaced, so a process killed at any point leaves the previous checkpoint with exactly its own
 * bank, or the new checkpoint with its own.
 */
export async function saveHierarchicalCheckpoint(file: string, hm: HierarchicalModel, tokenizer: Tokenizer,
                                                 optimizer: AdamW | undefined, trainer: TrainerState | undefined): Promise<void> {
  const dir = path.dirname(file);
  const base = checkpointBase(file);
  const step = trainer?.step ?? 0;
  let bankName = `${base}.bank.step-${step}.safetensors`;
  // saving the same step twice (an abort right after a periodic checkpoint): keep the named bank intact
  if (bankName === (await bankNamedBy(file))) bankName = `${base}.bank.step-${step}-${randomBytes(4).toString('hex')}.safetensors`;
  await hm.bank.save(path.join(dir, bankName));
  await saveCheckpoint(file, { model: hm.anchor, tokenizer, optimizer, trainer,
    extraMetadata: { memory_bank: bankName, memory_spec: JSON.stringify(hm.bank.spec) } });
  // only now are the older banks unreferenced (a kill before this leaves garbage, removed next time)
  const ours = new RegExp(`^${escapeRegExp(base)}\\.bank\\.(step-\\d+(-[0-9a-f]+)?\\.)?safetensors$`);
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const stale = name !== bankName && ours.test(name) && path.resolve(dir, name) !== (hm.bank.path && path.resolve(hm.bank.path));
    if (stale) await unlink(path.join(dir, name)).catch(() => undefined);
  }
  await removeStaleTempFiles(dir, (target) => ours.test(target));
}

/**
 * Steps with memories. The anchor runs on the runner for `backend` (default 'cpu'; on a device
 * hm.anchor and `optimizer` are host mirrors, synced for checkpoints and when trainLoop returns);
 * the bank stays where it is (RAM or memory-mapped). dispose() frees the device model.
 */
export function memoryStepper(hm: HierarchicalModel, optimizer: AdamW, tokenizer: Tokenizer,
                              options: Partial<MemoryTrainOptions> & StepperBackendOptions = {}): Stepper<PathBatch> {
  const o = { ...DEFAULT_MEMORY_TRAIN, ...options };
  if (!(o.memoryLrScale >= 0) || !(o.memoryWeightDecay >= 0)) {
    throw new HiermemError('E_CONFIG_INVALID', 'memoryLrScale and memoryWeightDecay must be >= 0');
  }
  const stepOptions = (lr: number) => ({
    anchorLr: lr, memoryLr: lr * o.memoryLrScale, memoryWeightDecay: o.memoryWeightDecay, freezeAnchor: o.mode === 'posthoc',
  });
  const { runner, owned } = stepperRunner(hm.anchor, optimizer, options);
  return {
    backend: runner.backend,
    async step(batch, lr) {
      const r = await hm.trainStep(batch, optimizer, stepOptions(lr), runner);
      return { loss: r.loss, gradNorm: r.gradNorm };
    },
    loss: (batch) => hm.loss(batch, runner),
    save: async (file, trainer) => {
      runner.sync();
      await saveHierarchicalCheckpoint(file, hm, tokenizer, optimizer, trainer);
    },
    sync: () => runner.sync(),
    dispose: () => {
      if (owned) runner.dispose();
    },
  };
}

/** Whether the checkpoint's memory_spec (JSON text) describes this bank spec. */
function sameSpec(json: string, spec: { k: number; levels: number[]; layers: number[]; generic: boolean }): boolean {
  let o: unknown;
  try {
    o = JSON.parse(json);
  } catch {
    return false;
  }
  if (typeof o !== 'object' || o === null) return false;
  const w = o as Record<string, unknown>;
  const same = (a: unknown, b: number[]) => Array.isArray(a) && a.length === b.length && a.every((x, i) => x === b[i]);
  return w.k === spec.k && same(w.levels, spec.levels) && same(w.layers, spec.layers) && w.generic === spec.generic;
}

export interface LoadedHierarchical {
  hm: HierarchicalModel;
  tokenizer: Tokenizer;
  optimizer?: AdamW;
  trainer?: TrainerState;
  /** A sharded checkpoint's manifest (lib/train/shard-checkpoint.ts); absent for one bank file. */
  shards?: ShardManifest;
}

/**
 * Loads a checkpoint written by saveHierarchicalCheckpoint. The bank is memory-mapped (`inRam`
 * false, the default for inference: only fetched blocks are read) or loaded into RAM.
 */
export async function loadHierarchicalCheckpoint(file: string, o: { maxBatch?: number; inRam?: boolean; writable?: boolean; shardRanks?: readonly number[] } = {}): Promise<LoadedHierarchical> {
  const { loadCheckpoint } = await import('./checkpoint.js');
  const { MemoryBank } = await import('../memory/bank.js');
  const { HierarchicalModel } = await import('../memory/memory-model.js');
  const ck = await loadCheckpoint(file, { maxBatch: o.maxBatch });
  // a sharded checkpoint (an MPI run): a RAM bank with the shards asked for (default all; no MPI needed)
  const shards = parseManifest(file, ck.extraMetadata ?? {});
  if (shards) {
    const { openShardedCheckpoint } = await import('./shard-load.js');
    const s = await openShardedCheckpoint(file, ck, shards, { maxBatch: o.maxBatch, ...(o.shardRanks ? { ranks: o.shardRanks } : {}) });
    const trainer = o.shardRanks?.length === 1 ? s.trainer : ck.trainer;
    return { hm: s.hm, tokenizer: ck.tokenizer, shards, ...(s.optimizer ? { optimizer: s.optimizer } : {}), ...(trainer ? { trainer } : {}) };
  }
  const bankName = ck.extraMetadata?.memory_bank;
  if (!bankName) throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${file}: checkpoint has no memory bank (an anchor-only checkpoint)`);
  if (path.basename(bankName) !== bankName) throw new HiermemError('E_CHECKPOINT_CORRUPT', `${file}: memory_bank must be a file name beside the checkpoint`);
  const bankFile = path.join(path.dirname(file), bankName);
  const bank = o.inRam ? await MemoryBank.loadIntoMemory(bankFile) : await MemoryBank.openFile(bankFile, { writable: o.writable ?? false });
  const named = ck.extraMetadata?.memory_spec;
  if (named !== undefined && !sameSpec(named, bank.spec)) {
    bank.close();
    throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${file}: the bank ${bankName} has spec ${JSON.stringify(bank.spec)}, the checkpoint names ${named}`);
  }
  const hm = HierarchicalModel.fromAnchor(ck.model, bank, o.maxBatch ?? ck.model.maxBatch);
  const out: LoadedHierarchical = { hm, tokenizer: ck.tokenizer };
  // the optimizer state belongs to the anchor parameters, which fromAnchor copied unchanged
  if (ck.optimizer) out.optimizer = AdamW.continuing(hm.anchor, ck.optimizer);
  if (ck.trainer) out.trainer = ck.trainer;
  return out;
}
