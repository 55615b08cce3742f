/**
 * Training with hierarchical memories. Modes (paper §4.5):
 *   cotrain  — anchor and memories trained together (the paper's best, after anchor pretraining)
 *   posthoc  — anchor frozen, only the memories learn (also on an anchor trained elsewhere)
 *   joint    — anchor and memories from scratch together (allowed; worse in the paper)
 * The memory LR is the anchor's schedule times `memoryLrScale`; memory weight decay is lazy (only
 * fetched blocks decay, when they are fetched).
 */
import { HiermemError } from '../errors.js';
import type { Tokenizer } from '../data/tokenizer.js';
import type { HierarchicalModel, PathBatch } from '../memory/memory-model.js';
import { AdamW } from './adamw.js';
import { saveCheckpoint, type TrainerState } from './checkpoint.js';
import type { Stepper } from './trainer.js';
import path from 'node:path';

export type MemoryTrainMode = 'cotrain' | 'posthoc' | 'joint';

export interface MemoryTrainOptions {
  mode: MemoryTrainMode;
  /** Memory LR = anchor LR (from the schedule) x this. */
  memoryLrScale: number;
  /** Paper: 1e-3. */
  memoryWeightDecay: number;
}

export const DEFAULT_MEMORY_TRAIN: MemoryTrainOptions = { mode: 'cotrain', memoryLrScale: 1, memoryWeightDecay: 1e-3 };

/** Writes the anchor checkpoint and, beside it, the bank (`<name>.bank.safetensors`). */
export async function saveHierarchicalCheckpoint(file: string, hm: HierarchicalModel, tokenizer: Tokenizer,
                                                 optimizer: AdamW | undefined, trainer: TrainerState | undefined): Promise<void> {
  const bankFile = file.replace(/\.safetensors$/, '') + '.bank.safetensors';
  // bank first: a checkpoint file never refers to a bank that is not complete on disk
  await hm.bank.save(bankFile);
  await saveCheckpoint(file, { model: hm.anchor, tokenizer, optimizer, trainer,
    extraMetadata: { memory_bank: path.basename(bankFile), memory_spec: JSON.stringify(hm.bank.spec) } });
}

export function memoryStepper(hm: HierarchicalModel, optimizer: AdamW, tokenizer: Tokenizer,
                              options: Partial<MemoryTrainOptions> = {}): Stepper<PathBatch> {
  const o = { ...DEFAULT_MEMORY_TRAIN, ...options };
  if (!(o.memoryLrScale >= 0) || !(o.memoryWeightDecay >= 0)) {
    throw new HiermemError('E_CONFIG_INVALID', 'memoryLrScale and memoryWeightDecay must be >= 0');
  }
  return {
    async step(batch, lr) {
      const r = await hm.trainStep(batch, optimizer, {
        anchorLr: lr, memoryLr: lr * o.memoryLrScale, memoryWeightDecay: o.memoryWeightDecay, freezeAnchor: o.mode === 'posthoc',
      });
      return { loss: r.loss, gradNorm: r.gradNorm };
    },
    loss: (batch) => hm.loss(batch),
    save: (file, trainer) => saveHierarchicalCheckpoint(file, hm, tokenizer, optimizer, trainer),
  };
}

export interface LoadedHierarchical {
  hm: HierarchicalModel;
  tokenizer: Tokenizer;
  optimizer?: AdamW;
  trainer?: TrainerState;
}

/**
 * Loads a checkpoint written by saveHierarchicalCheckpoint. The bank is memory-mapped (`inRam`
 * false, the default for inference: only fetched blocks are read) or loaded into RAM.
 */
export async function loadHierarchicalCheckpoint(file: string, o: { maxBatch?: number; inRam?: boolean; writable?: boolean } = {}): Promise<LoadedHierarchical> {
  const { loadCheckpoint } = await import('./checkpoint.js');
  const { MemoryBank } = await import('../memory/bank.js');
  const { HierarchicalModel } = await import('../memory/memory-model.js');
  const ck = await loadCheckpoint(file, { maxBatch: o.maxBatch });
  const bankName = ck.extraMetadata?.memory_bank;
  if (!bankName) throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${file}: checkpoint has no memory bank (an anchor-only checkpoint)`);
  if (path.basename(bankName) !== bankName) throw new HiermemError('E_CHECKPOINT_CORRUPT', `${file}: memory_bank must be a file name beside the checkpoint`);
  const bankFile = path.join(path.dirname(file), bankName);
  const bank = o.inRam ? await MemoryBank.loadIntoMemory(bankFile) : await MemoryBank.openFile(bankFile, { writable: o.writable ?? false });
  const hm = HierarchicalModel.fromAnchor(ck.model, bank, o.maxBatch ?? ck.model.maxBatch);
  const out: LoadedHierarchical = { hm, tokenizer: ck.tokenizer };
  if (ck.optimizer) {
    // the optimizer state belongs to the anchor parameters, which fromAnchor copied unchanged
    const opt = new AdamW(hm.anchor, ck.optimizer.options);
    opt.m.set(ck.optimizer.m);
    opt.v.set(ck.optimizer.v);
    opt.stepCount = ck.optimizer.stepCount;
    out.optimizer = opt;
  }
  if (ck.trainer) out.trainer = ck.trainer;
  return out;
}
