/**
 * Which rank owns which part of the memory bank when training is spread over several processes
 * (issue #14). A document's path is known before training, so the bank is split by subtree: every
 * block at tree level >= s (1-based, `--shard-level`) belongs to the rank that owns its level-s
 * ancestor, and never leaves that rank. Levels < s, and the generic block, are replicated: every
 * rank holds them and all-reduces their gradients. Subtrees go to ranks largest first (by document
 * or sequence count; ties by subtree index), each to the rank with the least load so far (ties by
 * rank), so the plan depends on the counts alone and every rank computes the same one.
 *
 * Levels here are 0-based like the bank's (level index i is tree level i + 1); level p is the
 * generic block's. Node n of level i has ancestor floor(n / k^(i - j)) at level j <= i.
 */
import { HiermemError } from '../errors.js';

export const DEFAULT_SHARD_LEVEL = 1;

export interface ShardPlan {
  ranks: number;
  /** Tree level (1-based) whose subtrees are the shards. */
  shardLevel: number;
  k: number;
  /** Tree depth (levels of memory below the root). */
  p: number;
  /** What `counts` counts. */
  balance: 'documents' | 'sequences';
  /** Per level-s node: its count of documents (or sequences). */
  counts: number[];
  /** Per level-s node: the rank that owns its subtree. */
  owners: number[];
}

/** Nodes per subtree root at `shardLevel`: k^shardLevel. */
function subtreeCount(k: number, shardLevel: number): number {
  return k ** shardLevel;
}

/** Owners for `counts` (one per level-s node): largest first, each to the least loaded rank. */
export function planShards(o: { counts: readonly number[]; ranks: number; shardLevel: number; k: number; p: number; balance: ShardPlan['balance'] }): ShardPlan {
  const { counts, ranks, shardLevel, k, p } = o;
  if (!Number.isInteger(ranks) || ranks < 1) throw new HiermemError('E_INVALID_ARGUMENT', `ranks must be an integer >= 1, got ${ranks}`);
  if (!Number.isInteger(shardLevel) || shardLevel < 1 || shardLevel > p) {
    throw new HiermemError('E_CONFIG_INVALID', `--shard-level must be an integer in [1, ${p}] (the tree's levels), got ${shardLevel}`);
  }
  const n = subtreeCount(k, shardLevel);
  if (counts.length !== n) throw new HiermemError('E_SHAPE_MISMATCH', `${counts.length} subtree counts for ${n} level-${shardLevel} nodes`);
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => counts[b]! - counts[a]! || a - b);
  const load = new Array<number>(ranks).fill(0);
  const owners = new Array<number>(n).fill(0);
  for (const node of order) {
    let best = 0;
    for (let r = 1; r < ranks; r++) if (load[r]! < load[best]!) best = r;
    owners[node] = best;
    load[best]! += counts[node]!;
  }
  const starved = load.findIndex((l) => l === 0);
  if (starved >= 0) {
    const used = counts.filter((c) => c > 0).length;
    throw new HiermemError('E_CONFIG_INCOMPATIBLE', `the tree has ${used} non-empty subtrees at level ${shardLevel} for ${ranks} ranks: rank ${starved} would get no data (use a deeper --shard-level or fewer ranks)`);
  }
  return { ranks, shardLevel, k, p, balance: o.balance, counts: [...counts], owners };
}

/** Documents (or sequences) per level-s subtree, from (n, p) paths; generic / no-memory rows are not counted. */
export function subtreeCounts(paths: Int32Array, p: number, k: number, shardLevel: number): number[] {
  const out = new Array<number>(subtreeCount(k, shardLevel)).fill(0);
  for (let i = 0; i + p <= paths.length; i += p) {
    const node = paths[i + shardLevel - 1]!;
    if (node >= 0 && node < out.length) out[node]!++;
  }
  return out;
}

/** Whether bank level `level` (0-based; p = generic) is replicated on every rank. */
export function isReplicatedLevel(plan: ShardPlan, level: number): boolean {
  return level < plan.shardLevel - 1 || level >= plan.p;
}

/** The rank owning block (level, node), or -1 for a replicated block. */
export function ownerOfBlock(plan: ShardPlan, level: number, node: number): number {
  if (isReplicatedLevel(plan, level)) return -1;
  return plan.owners[Math.floor(node / plan.k ** (level - plan.shardLevel + 1))]!;
}

/** The rank owning a path's sharded blocks (a generic or no-memory path: -1, replicated). */
export function ownerOfPath(plan: ShardPlan, path: ArrayLike<number>): number {
  const node = path[plan.shardLevel - 1]!;
  return path[0]! < 0 ? -1 : plan.owners[node] ?? -1;
}

/** [first, end) node ranges of `rank`'s blocks at sharded level `level`, ascending. */
export function ownedNodeRanges(plan: ShardPlan, rank: number, level: number): Array<[number, number]> {
  const span = plan.k ** (level - plan.shardLevel + 1);
  const out: Array<[number, number]> = [];
  plan.owners.forEach((r, s) => {
    if (r !== rank) return;
    const last = out[out.length - 1];
    if (last && last[1] === s * span) last[1] = (s + 1) * span;
    else out.push([s * span, (s + 1) * span]);
  });
  return out;
}

/** A plan read back from a manifest, checked field by field (E_CHECKPOINT_CORRUPT). */
export function parseShardPlan(where: string, raw: unknown): ShardPlan {
  const bad = (why: string): never => { throw new HiermemError('E_CHECKPOINT_CORRUPT', `${where}: shard plan ${why}`); };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return bad('is not an object');
  const o = raw as Record<string, unknown>;
  const int = (v: unknown, lo: number, hi: number) => Number.isInteger(v) && (v as number) >= lo && (v as number) <= hi;
  if (!int(o.ranks, 1, 1 << 20) || !int(o.k, 2, 1 << 20) || !int(o.p, 1, 16)) return bad('needs integer ranks, k and p');
  const ranks = o.ranks as number, k = o.k as number, p = o.p as number;
  if (!int(o.shardLevel, 1, p)) return bad(`has shardLevel ${String(o.shardLevel)} outside [1, ${p}]`);
  const n = k ** (o.shardLevel as number);
  if (n > 1 << 24) return bad('has too many subtrees');
  if (o.balance !== 'documents' && o.balance !== 'sequences') return bad('balance must be "documents" or "sequences"');
  const counts = o.counts, owners = o.owners;
  if (!Array.isArray(counts) || counts.length !== n || !counts.every((c) => int(c, 0, Number.MAX_SAFE_INTEGER))) return bad(`counts must be ${n} integers >= 0`);
  if (!Array.isArray(owners) || owners.length !== n || !owners.every((r) => int(r, 0, ranks - 1))) return bad(`owners must be ${n} ranks in [0, ${ranks})`);
  return { ranks, shardLevel: o.shardLevel as number, k, p, balance: o.balance, counts: counts as number[], owners: owners as number[] };
}
