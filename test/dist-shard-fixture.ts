/**
 * A 2-rank sharded memory run inside one process (test/dist-fake-comm.ts), no MPI: used by
 * test/dist-shard.test.ts (the sharded step against a one-process step) and by the manifest
 * fuzzing in test/fuzz-loaders.test.ts (a real sharded checkpoint to mutate).
 * Tree k 2, p 2; shard level 1: rank 0 owns subtree 0 (leaves 0, 1), rank 1 subtree 1 (leaves 2, 3);
 * the generic block is replicated.
 */
import { AnchorModel } from '../lib/model/anchor.js';
import { AdamW } from '../lib/train/adamw.js';
import { ByteTokenizer } from '../lib/data/tokenizer.js';
import { saveCheckpoint } from '../lib/train/checkpoint.js';
import { MemoryBank } from '../lib/memory/bank.js';
import { HierarchicalModel, GENERIC_PATH, cpuAnchorRunner, type PathBatch } from '../lib/memory/memory-model.js';
import { resolveMemorySpec } from '../lib/memory/spec.js';
import { planShards, type ShardPlan } from '../lib/memory/shard-plan.js';
import { shardedTrainStep } from '../lib/train/shard-step.js';
import { saveShardedCheckpoint, sharedId } from '../lib/train/shard-checkpoint.js';
import type { Communicator } from '../lib/dist/communicator.js';
import { fakeCommunicators } from './dist-fake-comm.js';
import { mulberry32 } from './helpers.js';

export const FIX_TOK = new ByteTokenizer();
export const FIX_CFG = { vocabSize: FIX_TOK.vocabSize, dModel: 8, nLayers: 1, nHeads: 1, headDim: 8, ffnHidden: 16, seqLen: 8, seed: 2 };
export const FIX_SPEC = { k: 2, levels: [2, 3], generic: true };
export const FIX_STEP = { anchorLr: 1e-2, memoryLr: 1e-2, memoryWeightDecay: 1e-3, freezeAnchor: false };

/** Rank r's rows: two sequences of its own subtree and one generic (random tokens, fixed by r and step). */
export const RANK_PATHS = [[[0, 0], [0, 1], [GENERIC_PATH, GENERIC_PATH]], [[1, 2], [1, 3], [GENERIC_PATH, GENERIC_PATH]]];

export function rankBatch(rank: number, step: number): PathBatch {
  const rows = RANK_PATHS[rank]!;
  const T = FIX_CFG.seqLen, B = rows.length;
  const rnd = mulberry32(100 * step + rank);
  const tokens = Int32Array.from({ length: B * T }, () => 65 + Math.floor(rnd() * 20));
  const targets = Int32Array.from({ length: B * T }, () => 65 + Math.floor(rnd() * 20));
  return { tokens, targets, docStart: null, batchSize: B, paths: Int32Array.from(rows.flat()) };
}

/** Rows of several batches in one (a one-process batch of the union), paths sorted as the sampler sorts them. */
export function unionBatch(batches: PathBatch[]): PathBatch {
  const T = FIX_CFG.seqLen, p = 2;
  const rows = batches.flatMap((b) => Array.from({ length: b.batchSize }, (_, i) => ({
    tokens: b.tokens.subarray(i * T, (i + 1) * T), targets: b.targets.subarray(i * T, (i + 1) * T), path: b.paths.subarray(i * p, (i + 1) * p),
  })));
  return {
    tokens: Int32Array.from(rows.flatMap((r) => Array.from(r.tokens))), targets: Int32Array.from(rows.flatMap((r) => Array.from(r.targets))),
    docStart: null, batchSize: rows.length, paths: Int32Array.from(rows.flatMap((r) => Array.from(r.path))),
  };
}

export interface Rank {
  hm: HierarchicalModel;
  optimizer: AdamW;
  comm: Communicator;
}

/** A fresh model per rank (identical anchors and bank seeds). */
export function makeRanks(n: number, maxBatch = 3): Rank[] {
  return fakeCommunicators(n).map((comm) => {
    const anchor = AnchorModel.create(FIX_CFG, { maxBatch });
    const bank = MemoryBank.createInMemory(resolveMemorySpec(FIX_SPEC, FIX_CFG), FIX_CFG.dModel, { seed: 3 });
    const hm = HierarchicalModel.fromAnchor(anchor, bank, maxBatch);
    return { hm, optimizer: new AdamW(hm.anchor, { weightDecay: 0.1 }), comm };
  });
}

export const FIX_PLAN: ShardPlan = planShards({ counts: [5, 4], ranks: 2, shardLevel: 1, k: 2, p: 2, balance: 'sequences' });

/** `steps` sharded steps on every rank at once; the losses of each step (every rank reports the same). */
export async function trainRanks(ranks: Rank[], steps: number, plan = FIX_PLAN): Promise<number[]> {
  const losses: number[] = [];
  for (let s = 0; s < steps; s++) {
    const r = await Promise.all(ranks.map((x) => shardedTrainStep(x.hm, rankBatch(x.comm.rank, s), x.optimizer, FIX_STEP,
      cpuAnchorRunner(x.hm.anchor, x.optimizer), x.comm, plan)));
    losses.push(r[0]!.loss);
  }
  return losses;
}

/** Trains 2 ranks `steps` steps and writes a sharded checkpoint `file` (every rank's shard beside it). */
export async function makeShardedCheckpoint(file: string, steps = 2): Promise<Rank[]> {
  const ranks = makeRanks(2);
  await trainRanks(ranks, steps);
  const runIds = await Promise.all(ranks.map((x) => sharedId(x.comm)));
  await Promise.all(ranks.map((x) => {
    const trainer = { step: steps, tokensSeen: steps * 3 * FIX_CFG.seqLen, rngState: [x.comm.rank] };
    return saveShardedCheckpoint(file, {
      bank: x.hm.bank, plan: FIX_PLAN, comm: x.comm, runId: runIds[x.comm.rank]!, trainer,
      writeAnchor: (extraMetadata) => saveCheckpoint(file, { model: x.hm.anchor, tokenizer: FIX_TOK, optimizer: x.optimizer, trainer, extraMetadata }),
    });
  }));
  return ranks;
}

/** Where a manifest edit lands: a top-level field, or one inside the plan or a file entry. */
export const MANIFEST_FIELDS = ['format', 'version', 'runId', 'step', 'ranks', 'plan', 'files', 'plan.ranks', 'plan.shardLevel', 'plan.k', 'plan.p',
  'plan.balance', 'plan.counts', 'plan.owners', 'plan.owners.1', 'files.0', 'files.1.file', 'files.1.bytes', 'files.1.sha256', 'files.0.rank'] as const;

/**
 * A sharded checkpoint's bytes with `field` of its manifest (metadata memory_shards) set to `value`
 * (undefined: removed), the safetensors header re-serialised and padded; other bytes unchanged.
 */
export function editManifest(bytes: Uint8Array, field: string, value: unknown): Uint8Array {
  const buf = Buffer.from(bytes);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as { __metadata__: Record<string, string> };
  const manifest = JSON.parse(header.__metadata__.memory_shards!) as Record<string, unknown>;
  const keys = field.split('.');
  let at: Record<string, unknown> = manifest;
  for (const k of keys.slice(0, -1)) at = at[k] as Record<string, unknown>;
  if (value === undefined) delete at[keys[keys.length - 1]!];
  else at[keys[keys.length - 1]!] = value;
  header.__metadata__.memory_shards = JSON.stringify(manifest);
  const h = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - (h.length % 8)) % 8;
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length + pad));
  return Buffer.concat([len, h, Buffer.alloc(pad, 0x20), buf.subarray(8 + n)]);
}
