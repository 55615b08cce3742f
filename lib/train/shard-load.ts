/**
 * Opens a sharded memory checkpoint (lib/train/shard-checkpoint.ts) in one process, no MPI: the
 * anchor from the checkpoint, and a RAM bank holding the blocks of the shards asked for (all by
 * default; a resumed rank its own; an evaluation of one prompt the shard that holds its path). The
 * bank's other blocks stay untouched (zero pages), so a rank's resident bank is its shard.
 */
import path from 'node:path';
import { HiermemError } from '../errors.js';
import { readSafetensorsHeader } from '../io/safetensors.js';
import { MemoryBank } from '../memory/bank.js';
import { HierarchicalModel } from '../memory/memory-model.js';
import { resolveMemorySpec, type ResolvedMemorySpec } from '../memory/spec.js';
import { AdamW } from './adamw.js';
import type { CheckpointContents, TrainerState } from './checkpoint.js';
import { loadShards, loadShard, type ShardManifest } from './shard-checkpoint.js';

/** The bank spec a sharded checkpoint names (metadata memory_spec), checked. */
function specOf(file: string, ck: CheckpointContents): ResolvedMemorySpec {
  const raw = ck.extraMetadata?.memory_spec;
  let parsed: unknown = null;
  try {
    parsed = JSON.parse(raw ?? '');
  } catch {
    // reported below
  }
  const o = parsed as { k?: unknown; levels?: unknown; layers?: unknown; generic?: unknown } | null;
  if (o === null || typeof o !== 'object') throw new HiermemError('E_CHECKPOINT_CORRUPT', `${file}: a sharded checkpoint needs a valid memory_spec`);
  try {
    return resolveMemorySpec({ k: o.k as number, levels: o.levels as number[], layers: o.layers as number[], generic: o.generic as boolean }, ck.model.config);
  } catch (e) {
    throw new HiermemError('E_CHECKPOINT_CORRUPT', `${file}: memory_spec is invalid: ${(e as Error).message}`, { cause: e });
  }
}

export interface ShardedLoad {
  hm: HierarchicalModel;
  optimizer?: AdamW;
  /** The trainer state of the first shard loaded (a resumed rank's own data order). */
  trainer?: TrainerState;
}

/** The anchor of `ck` with a RAM bank holding the shards `ranks` (default all) of `manifest`. */
export async function openShardedCheckpoint(file: string, ck: CheckpointContents, manifest: ShardManifest,
                                            o: { maxBatch?: number; ranks?: readonly number[] } = {}): Promise<ShardedLoad> {
  const spec = specOf(file, ck);
  const first = manifest.files[o.ranks?.[0] ?? 0];
  if (!first) throw new HiermemError('E_INVALID_ARGUMENT', `shard ${o.ranks?.[0]} does not exist (the checkpoint has ${manifest.ranks})`);
  let seed: number;
  try {
    seed = Number((await readSafetensorsHeader(path.join(path.dirname(file), first.file))).metadata.seed);
  } catch (e) {
    if (e instanceof HiermemError && e.code === 'E_IO') throw new HiermemError('E_IO', `${file}: shard file ${first.file} of rank ${first.rank} is missing or unreadable`, { cause: e });
    throw e;
  }
  if (!Number.isSafeInteger(seed) || seed < 0) throw new HiermemError('E_CHECKPOINT_CORRUPT', `${first.file}: bank seed is malformed`);
  const bank = MemoryBank.createInMemory(spec, ck.model.config.dModel, { seed, allowOvercommit: true });
  let trainer: TrainerState | undefined;
  try {
    if (o.ranks && o.ranks.length === 1) trainer = await loadShard(file, manifest, o.ranks[0]!, bank);
    else await loadShards(file, manifest, bank, o.ranks);
  } catch (e) {
    bank.close();
    throw e;
  }
  const hm = HierarchicalModel.fromAnchor(ck.model, bank, o.maxBatch ?? ck.model.maxBatch);
  const out: ShardedLoad = { hm, ...(trainer ? { trainer } : {}) };
  if (ck.optimizer) out.optimizer = AdamW.continuing(hm.anchor, ck.optimizer);
  return out;
}
