/**
 * One training step of a memory run spread over the ranks of a job, the bank sharded by subtree
 * (lib/memory/shard-plan.ts). Every rank trains on batches from its own subtrees, so the blocks
 * below the shard level that a rank fetches are its own and never cross the network. Per step:
 *   1. all-reduce (mean) of the anchor gradients, while the bank scatters the fetched gradients to blocks;
 *   2. all-gather of (loss, squared norm of the sharded-block gradients, count of replicated blocks touched);
 *   3. all-gather of the touched replicated block ids (upper levels, generic block), padded to the largest count;
 *   4. all-reduce (mean) of the replicated blocks' gradients over the sorted union of those ids.
 * The loss is the ranks' mean; the sharded gradients are divided by the rank count (so that every
 * gradient is that of the job's mean loss); the clipping norm joins all three parts, summed in rank
 * order, so every rank clips by the same bits and the anchor and replicated blocks stay
 * bit-identical on every rank. Every rank calls every collective every step, finite loss or not.
 */
import { HiermemError } from '../errors.js';
import { loadNative } from '../native.js';
import type { Communicator } from '../dist/communicator.js';
import type { AnchorRunner, HierarchicalModel, MemoryStepOptions, MemoryStepResult, PathBatch } from '../memory/memory-model.js';
import { isReplicatedLevel, ownerOfBlock, type ShardPlan } from '../memory/shard-plan.js';
import type { AdamW } from './adamw.js';

/** Largest node index sent as a float (exactly representable in float32). */
const MAX_FLOAT_INT = 2 ** 24;

/** Blocks (flattened (level, node) pairs) and their gradients, back to back. */
interface BlockGrads {
  blocks: Int32Array;
  grads: Float32Array;
}

/** Splits per-block gradients into replicated blocks and this rank's sharded blocks (another rank's → E_CONFIG_INCOMPATIBLE). */
export function splitBlocks(hm: HierarchicalModel, g: BlockGrads, plan: ShardPlan, rank: number): { replicated: BlockGrads; sharded: BlockGrads } {
  const rb: number[] = [], sb: number[] = [];
  const rs: Array<[number, number]> = [], ss: Array<[number, number]> = [];
  let off = 0;
  for (let i = 0; i < g.blocks.length; i += 2) {
    const level = g.blocks[i]!, node = g.blocks[i + 1]!;
    const n = hm.bank.blockFloats(level);
    if (isReplicatedLevel(plan, level)) {
      rb.push(level, node);
      rs.push([off, n]);
    } else {
      const owner = ownerOfBlock(plan, level, node);
      if (owner !== rank) throw new HiermemError('E_CONFIG_INCOMPATIBLE', `rank ${rank} was given a sequence of rank ${owner}'s subtree (block (${level}, ${node})): the data does not match the shard plan`);
      sb.push(level, node);
      ss.push([off, n]);
    }
    off += n;
  }
  const pack = (spans: Array<[number, number]>) => {
    const out = new Float32Array(spans.reduce((a, [, n]) => a + n, 0));
    let o = 0;
    for (const [s, n] of spans) {
      out.set(g.grads.subarray(s, s + n), o);
      o += n;
    }
    return out;
  };
  return { replicated: { blocks: Int32Array.from(rb), grads: pack(rs) }, sharded: { blocks: Int32Array.from(sb), grads: pack(ss) } };
}

/** The sorted union of every rank's replicated block ids (flattened pairs), through two all-gathers' worth of data. */
async function unionOfIds(comm: Communicator, mine: Int32Array, counts: readonly number[]): Promise<Int32Array> {
  const most = Math.max(0, ...counts);
  if (most === 0) return new Int32Array(0);
  const send = new Float32Array(most * 2).fill(-1);
  for (let i = 0; i < mine.length; i++) {
    if (mine[i]! >= MAX_FLOAT_INT) throw new HiermemError('E_CONFIG_INVALID', `replicated node ${mine[i]} is too large to exchange: use a shallower --shard-level`);
    send[i] = mine[i]!;
  }
  const all = await comm.allGather(send);
  const keys = new Set<number>();
  for (let i = 0; i < all.length; i += 2) if (all[i]! >= 0) keys.add(all[i]! * MAX_FLOAT_INT + all[i + 1]!);
  const sorted = [...keys].sort((a, b) => a - b);
  const out = new Int32Array(sorted.length * 2);
  sorted.forEach((key, j) => {
    out[2 * j] = Math.floor(key / MAX_FLOAT_INT);
    out[2 * j + 1] = key % MAX_FLOAT_INT;
  });
  return out;
}

/** `mine` (gradients of some blocks) laid out over `union` (a sorted superset), zero elsewhere. */
function spreadOver(hm: HierarchicalModel, union: Int32Array, mine: BlockGrads): Float32Array {
  const at = new Map<number, number>();
  let off = 0;
  for (let i = 0; i < mine.blocks.length; i += 2) {
    at.set(mine.blocks[i]! * MAX_FLOAT_INT + mine.blocks[i + 1]!, off);
    off += hm.bank.blockFloats(mine.blocks[i]!);
  }
  let size = 0;
  for (let i = 0; i < union.length; i += 2) size += hm.bank.blockFloats(union[i]!);
  const out = new Float32Array(size);
  let o = 0;
  for (let i = 0; i < union.length; i += 2) {
    const n = hm.bank.blockFloats(union[i]!);
    const src = at.get(union[i]! * MAX_FLOAT_INT + union[i + 1]!);
    if (src !== undefined) out.set(mine.grads.subarray(src, src + n), o);
    o += n;
  }
  return out;
}

/** A sharded step's result, with what it exchanged (for benchmarks). */
export interface ShardedStepResult extends MemoryStepResult {
  /** Floats of this rank's sharded block gradients (never sent). */
  shardedFloats: number;
  /** Floats of the replicated blocks' gradients all-reduced (the union over ranks). */
  replicatedFloats: number;
}

/** Float64 values through an all-gather of float32 words (bit copies), back as float64 per rank. */
async function gatherFloat64(comm: Communicator, values: readonly number[]): Promise<Float64Array[]> {
  const mine = Float64Array.from(values);
  const all = new Float64Array((await comm.allGather(new Float32Array(mine.buffer))).buffer);
  return Array.from({ length: comm.size }, (_, r) => all.subarray(r * values.length, (r + 1) * values.length));
}

/**
 * One sharded step (see the file comment). `runner` must be the CPU runner around hm.anchor: the
 * anchor gradients are reduced in host memory. Throws E_NON_FINITE (nothing updated, on every rank
 * alike) when the job's loss or norm is not finite.
 */
export async function shardedTrainStep(hm: HierarchicalModel, batch: PathBatch, optimizer: AdamW, o: MemoryStepOptions,
                                       runner: AnchorRunner, comm: Communicator, plan: ShardPlan): Promise<ShardedStepResult> {
  const native = loadNative();
  const { mem, slotPaths } = await hm.memoryForAsync(batch, true);
  runner.zeroGrad();
  const localLoss = await runner.forwardBackward({ ...batch, memory: mem });
  // the anchor's all-reduce (the big one) runs while the bank turns fetched gradients into block gradients
  const [all] = await Promise.all([
    mem ? hm.bank.blockGradientsAsync(mem.dfetched!, slotPaths) : { blocks: new Int32Array(0), grads: new Float32Array(0) },
    o.freezeAnchor ? undefined : comm.allReduceMean(hm.anchor.grads),
  ]);
  const { replicated, sharded } = splitBlocks(hm, all, plan, comm.rank);
  // the gradient of the job's mean loss: only this rank's term is non-zero for its own blocks
  const inv = comm.size;
  for (let i = 0; i < sharded.grads.length; i++) sharded.grads[i] = sharded.grads[i]! / inv;
  const shardNorm = sharded.grads.length ? native.globalNorm(sharded.grads) : 0;
  const parts = await gatherFloat64(comm, [localLoss, shardNorm * shardNorm, replicated.blocks.length / 2]);
  let lossSum = 0, shardSq = 0;
  for (const p of parts) {
    lossSum += p[0]!;
    shardSq += p[1]!;
  }
  const union = await unionOfIds(comm, replicated.blocks, parts.map((p) => p[2]!));
  const unionGrads = spreadOver(hm, union, replicated);
  if (unionGrads.length) await comm.allReduceMean(unionGrads);
  const loss = lossSum / comm.size;
  if (!Number.isFinite(loss)) throw new HiermemError('E_NON_FINITE', `loss is ${loss}; step skipped`);
  const anchorNorm = o.freezeAnchor ? 0 : runner.gradNorm();
  const replNorm = unionGrads.length ? native.globalNorm(unionGrads) : 0;
  const gradNorm = Math.sqrt(anchorNorm * anchorNorm + replNorm * replNorm + shardSq);
  if (!Number.isFinite(gradNorm)) throw new HiermemError('E_NON_FINITE', `gradient norm is ${gradNorm}; step skipped`);
  if (!o.freezeAnchor) await runner.step(o.anchorLr, gradNorm);
  const oo = optimizer.options;
  const hyper = { lr: o.memoryLr, beta1: oo.beta1, beta2: oo.beta2, eps: oo.eps, gradScale: optimizer.clipScale(gradNorm) };
  if (union.length) await hm.bank.adamwUpdateAsync(union, unionGrads, hyper, o.memoryWeightDecay);
  if (sharded.blocks.length) await hm.bank.adamwUpdateAsync(sharded.blocks, sharded.grads, hyper, o.memoryWeightDecay);
  return { loss, gradNorm, blocksUpdated: (union.length + sharded.blocks.length) / 2, shardedFloats: sharded.grads.length, replicatedFloats: unionGrads.length };
}

/** The mean over ranks of a loss each rank computed on its own data (float64, rank order). */
export async function meanOverRanks(comm: Communicator, value: number): Promise<number> {
  const parts = await gatherFloat64(comm, [value]);
  return parts.reduce((a, p) => a + p[0]!, 0) / comm.size;
}
