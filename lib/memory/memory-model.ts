/**
 * HierarchicalModel: the anchor transformer plus a memory bank (paper §2). Every sequence of a
 * batch carries a path (one node per level); the step gathers the blocks of the batch's distinct
 * paths, runs the model with them as extra FFN units, turns the fetched-slot gradients into
 * per-block gradients and applies row-sparse AdamW to exactly those blocks. Clipping uses the
 * joint norm of anchor and memory gradients.
 *
 * Path conventions (rows of `paths`, p entries each): a tree path; a row starting with -1 takes
 * the generic memory (paper's control); a row starting with -2 uses no memory (anchor alone).
 *
 * A step's anchor half runs on an AnchorRunner (CPU or device, lib/backend/); its bank half runs
 * here on the host bank through the bank's async calls, so no step waits on a memory-mapped bank's
 * disk reads on the event loop.
 */
import { HiermemError, check } from '../errors.js';
import { loadNative } from '../native.js';
import type { NativeMemoryBatch } from '../native-types.js';
import { AnchorModel, type Batch } from '../model/anchor.js';
import type { NextTokenLogits } from '../model/generate.js';
import { AdamW } from '../train/adamw.js';
import { CpuAnchorRunner, type AnchorRunner } from '../backend/runner.js';
import { MemoryBank } from './bank.js';
import { layerToMemory } from './spec.js';

/** Where the anchor half of a step runs (lib/backend/runner.ts); re-exported for older imports. */
export type { AnchorRunner } from '../backend/runner.js';

export const GENERIC_PATH = -1;
export const NO_MEMORY_PATH = -2;

export interface PathBatch extends Batch {
  /** (B, p): one path per sequence. */
  paths: Int32Array;
}

export interface MemoryStepOptions {
  anchorLr: number;
  memoryLr: number;
  /** Weight decay of memory blocks (paper: 1e-3); applied only to fetched blocks (lazy). */
  memoryWeightDecay: number;
  /** Frozen anchor ("post-hoc" memories): only the bank is updated. */
  freezeAnchor: boolean;
}

/** The CPU runner: the HierarchicalModel's own anchor and a CPU AdamW (a CpuAnchorRunner). */
export function cpuAnchorRunner(anchor: AnchorModel, optimizer: AdamW): AnchorRunner {
  return new CpuAnchorRunner(anchor, optimizer);
}

export interface MemoryStepResult {
  loss: number;
  gradNorm: number;
  /** Distinct blocks updated this step. */
  blocksUpdated: number;
}

/** Distinct memory paths of a batch and the slot each sequence uses (-1 = no memory). */
export function slotsOf(paths: Int32Array, batchSize: number, levels: number): { slotPaths: Int32Array; seqSlot: Int32Array } {
  check(paths.length === batchSize * levels, 'E_SHAPE_MISMATCH', `paths has ${paths.length} entries, expected batchSize * levels = ${batchSize * levels}`);
  const index = new Map<string, number>();
  const rows: number[] = [];
  const seqSlot = new Int32Array(batchSize);
  for (let b = 0; b < batchSize; b++) {
    const row = paths.subarray(b * levels, (b + 1) * levels);
    if (row[0] === NO_MEMORY_PATH) {
      seqSlot[b] = -1;
      continue;
    }
    const key = row[0] === GENERIC_PATH ? 'g' : row.join(',');
    let s = index.get(key);
    if (s === undefined) {
      s = index.size;
      index.set(key, s);
      rows.push(b);
    }
    seqSlot[b] = s;
  }
  const slotPaths = new Int32Array(rows.length * levels);
  rows.forEach((b, s) => slotPaths.set(paths.subarray(b * levels, (b + 1) * levels), s * levels));
  return { slotPaths, seqSlot };
}

export class HierarchicalModel {
  readonly anchor: AnchorModel;
  readonly bank: MemoryBank;

  private constructor(anchor: AnchorModel, bank: MemoryBank) {
    this.anchor = anchor;
    this.bank = bank;
  }

  /**
   * Wraps an anchor (its parameters are copied into a model sized for the memory units) and a bank.
   * The bank's dModel and memory layers must fit the anchor.
   */
  static fromAnchor(anchor: AnchorModel, bank: MemoryBank, maxBatch = anchor.maxBatch): HierarchicalModel {
    const cfg = anchor.config;
    if (bank.dModel !== cfg.dModel) {
      throw new HiermemError('E_CONFIG_INCOMPATIBLE', `bank dModel ${bank.dModel} != anchor dModel ${cfg.dModel}`);
    }
    const maxLayer = Math.max(...bank.spec.layers);
    if (maxLayer >= cfg.nLayers) {
      throw new HiermemError('E_CONFIG_INCOMPATIBLE', `bank puts memory in layer ${maxLayer}, the anchor has ${cfg.nLayers} layers`);
    }
    const model = AnchorModel.create(cfg, {
      maxBatch, skipInit: true, memory: { R: bank.unitsPerLayer, layerToMemory: layerToMemory(bank.spec, cfg.nLayers) },
    });
    model.params.set(anchor.params);
    return new HierarchicalModel(model, bank);
  }

  get levels(): number {
    return this.bank.levels;
  }

  /** Gathers the batch's blocks from the bank; `withGrad` also allocates their gradient buffer. */
  memoryFor(batch: PathBatch, withGrad: boolean): { mem: NativeMemoryBatch | null; slotPaths: Int32Array } {
    const { slotPaths, seqSlot } = slotsOf(batch.paths, batch.batchSize, this.levels);
    const numSlots = slotPaths.length / this.levels;
    if (numSlots === 0) return { mem: null, slotPaths };
    return { mem: memoryBatch(this.bank.gather(slotPaths), seqSlot, numSlots, withGrad), slotPaths };
  }

  /** memoryFor with the gather on a worker thread (what training and evaluation use). */
  async memoryForAsync(batch: PathBatch, withGrad: boolean): Promise<{ mem: NativeMemoryBatch | null; slotPaths: Int32Array }> {
    const { slotPaths, seqSlot } = slotsOf(batch.paths, batch.batchSize, this.levels);
    const numSlots = slotPaths.length / this.levels;
    if (numSlots === 0) return { mem: null, slotPaths };
    return { mem: memoryBatch(await this.bank.gatherAsync(slotPaths), seqSlot, numSlots, withGrad), slotPaths };
  }

  /** Mean loss of a batch with its memories (no update); `runner`: where the anchor runs (default: here). */
  async loss(batch: PathBatch, runner?: AnchorRunner): Promise<number> {
    const { mem } = await this.memoryForAsync(batch, false);
    return runner ? runner.loss({ ...batch, memory: mem }) : this.anchor.loss({ ...batch, memory: mem });
  }

  /**
   * One training step; throws E_NON_FINITE (nothing updated) if the loss or gradients are not finite.
   * `runner` (default: this anchor on the CPU with `optimizer`) runs the anchor's forward/backward
   * and AdamW; `optimizer` supplies the hyperparameters and clipping rule of the bank's update.
   * The bank's gather, scatter-add and AdamW run on worker threads (the bank is busy meanwhile).
   */
  async trainStep(batch: PathBatch, optimizer: AdamW, o: MemoryStepOptions,
                  runner: AnchorRunner = cpuAnchorRunner(this.anchor, optimizer)): Promise<MemoryStepResult> {
    const { mem, slotPaths } = await this.memoryForAsync(batch, true);
    runner.zeroGrad();
    const loss = await runner.forwardBackward({ ...batch, memory: mem });
    if (!Number.isFinite(loss)) throw new HiermemError('E_NON_FINITE', `loss is ${loss}; step skipped`);
    const memGrads = mem ? await this.bank.blockGradientsAsync(mem.dfetched!, slotPaths) : null;
    // norms of gradients in process memory: nothing here can wait on the bank's disk
    const memNorm = memGrads ? loadNative().globalNorm(memGrads.grads) : 0;
    const anchorNorm = o.freezeAnchor ? 0 : runner.gradNorm();
    const gradNorm = Math.sqrt(memNorm * memNorm + anchorNorm * anchorNorm);
    if (!Number.isFinite(gradNorm)) throw new HiermemError('E_NON_FINITE', `gradient norm is ${gradNorm}; step skipped`);
    if (!o.freezeAnchor) await runner.step(o.anchorLr, gradNorm);
    if (memGrads) {
      const oo = optimizer.options;
      await this.bank.adamwUpdateAsync(memGrads.blocks, memGrads.grads,
        { lr: o.memoryLr, beta1: oo.beta1, beta2: oo.beta2, eps: oo.eps, gradScale: optimizer.clipScale(gradNorm) }, o.memoryWeightDecay);
    }
    return { loss, gradNorm, blocksUpdated: memGrads ? memGrads.blocks.length / 2 : 0 };
  }

  /** Next-token logits of a prompt with one path's memory (or the generic / no memory). */
  nextTokenLogits(prompt: Int32Array, path: Int32Array): Float32Array {
    return this.logitsForPath(path)(prompt);
  }

  /**
   * A next-token function with one path's blocks fetched once (paper §3.5: retrieval happens once
   * per context, and the same memory serves every generated token).
   */
  logitsForPath(path: Int32Array): NextTokenLogits {
    check(path.length === this.levels, 'E_SHAPE_MISMATCH', `path must have ${this.levels} entries`);
    if (path[0] === NO_MEMORY_PATH) {
      return Object.assign((ctx: Int32Array) => this.anchor.nextTokenLogits(ctx), { decoder: () => this.anchor.decoder() });
    }
    const memory = { fetched: this.bank.gather(path), dfetched: null, seqSlot: Int32Array.of(0), numSlots: 1 };
    // generate() uses `decoder` (KV cache, the same fetched blocks for every position)
    return Object.assign((ctx: Int32Array) => this.anchor.nextTokenLogits(ctx, memory), { decoder: () => this.anchor.decoder(memory) });
  }
}

function memoryBatch(fetched: Float32Array, seqSlot: Int32Array, numSlots: number, withGrad: boolean): NativeMemoryBatch {
  return { fetched, dfetched: withGrad ? new Float32Array(fetched.length) : null, seqSlot, numSlots };
}
