/**
 * One rank of test/dist-shard.test.ts (a memory run with the bank sharded by subtree), started by
 * mpirun: `node dist-shard-worker.js <outDir> <treeFile> <steps> [killAt] [fresh|resume] [shardLevel]`. Trains
 * through prepareRun({ communicator }) as the CLI does, checkpointing into outDir every 2 steps
 * (rank 1 SIGKILLs itself after step killAt when given), and writes rank-<r>.json: the losses, a
 * checksum of the anchor and of the replicated levels, the sharded blocks it trained (with step
 * counts), its owned and trained bank bytes, and what its communicator sent.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { HiermemError } from '../lib/errors.js';
import { createCommunicator } from '../lib/dist/data-parallel.js';
import { prepareRun } from '../lib/train/run.js';
import { ByteTokenizer } from '../lib/data/tokenizer.js';
import { isReplicatedLevel, ownedNodeRanges, ownerOfPath, type ShardPlan } from '../lib/memory/shard-plan.js';
import { packByLeaf } from '../lib/data/packing.js';
import type { RetrievalTree } from '../lib/retrieval/tree.js';
import type { PathBatch } from '../lib/memory/memory-model.js';
import type { MemoryBank } from '../lib/memory/bank.js';
import { documents, TINY } from './dist-mpi-worker.js';

export const SHARD_LEVELS = [8, 8];
export const SHARD_BATCH = 2;
export const SHARD_DOCS = documents(90);

/**
 * A fixed batch of `rank`'s held-out sequences (the first two of its subtrees): the worker's loss on
 * it after training must equal a one-process evaluation of the checkpoint.
 */
export async function probeBatch(tree: RetrievalTree, plan: ShardPlan, rank: number): Promise<PathBatch> {
  const tok = new ByteTokenizer();
  const val = SHARD_DOCS.slice(0, 10);
  const seqs = packByLeaf({ docs: val.map((t) => tok.encode(t)), paths: await tree.assignTexts(val), levels: tree.p },
    { seqLen: TINY.seqLen, eotId: tok.eotId, padId: tok.padId! }).filter((s) => ownerOfPath(plan, s.path) === rank).slice(0, 2);
  if (seqs.length === 0) throw new Error(`rank ${rank} has no held-out sequences`);
  const T = TINY.seqLen;
  const b: PathBatch = { tokens: new Int32Array(seqs.length * T), targets: new Int32Array(seqs.length * T), docStart: new Int32Array(seqs.length * T),
    batchSize: seqs.length, paths: new Int32Array(seqs.length * tree.p) };
  seqs.forEach((s, i) => {
    b.tokens.set(s.tokens, i * T);
    b.targets.set(s.targets, i * T);
    b.docStart!.set(s.docStart, i * T);
    b.paths.set(s.path, i * tree.p);
  });
  return b;
}

/** Bytes of one block's weights and AdamW moments. */
function blockBytes(bank: MemoryBank, level: number): number {
  return bank.blockFloats(level) * 4 * 3;
}

async function main(): Promise<void> {
  const [out, treeFile, stepsArg, killArg, resume, levelArg] = process.argv.slice(2);
  const steps = Number(stepsArg), killAt = Number(killArg ?? -1);
  const comm = createCommunicator('mpi');
  const tok = new ByteTokenizer();
  const docs = SHARD_DOCS;
  const ck = path.join(out!, 'ck.safetensors');
  const run = await prepareRun({
    tokenizer: tok, batchSize: SHARD_BATCH, seed: 5, weightDecay: 0.1, communicator: comm, outDir: out!,
    ...(levelArg !== undefined ? { shardLevel: Number(levelArg) } : {}),
    ...(resume === 'resume' ? { resume: ck } : { anchor: { config: { ...TINY, vocabSize: tok.vocabSize } }, memory: { tree: treeFile!, levels: SHARD_LEVELS } }),
    data: { documents: { train: docs.slice(10), val: docs.slice(0, 10) } },
  });
  const losses: number[] = [];
  const sent0 = comm.stats.bytesSent;
  const hist = await run.train({
    steps, batchSize: SHARD_BATCH, lr: 2e-3, warmupSteps: 2, evalEvery: 3, evalBatches: 1, checkpointEvery: 2, checkpointPath: ck,
    onProgress: (e) => {
      losses.push(e.loss);
      if (comm.rank === 1 && e.step === killAt) process.kill(process.pid, 'SIGKILL');
    },
  });
  const mem = run.memory!;
  const bank = mem.hm.bank, plan = mem.shardPlan!;
  const replicated = createHash('sha256');
  const trained: string[] = [];
  let owned = 0, held = 0, total = 0;
  for (let level = 0; level <= bank.levels; level++) {
    if (level === bank.levels ? !bank.spec.generic : bank.spec.levels[level] === 0) continue;
    const nodes = level === bank.levels ? 1 : bank.spec.k ** (level + 1);
    if (isReplicatedLevel(plan, level)) {
      for (let n = 0; n < nodes; n++) {
        for (const kind of ['weight', 'm', 'v'] as const) replicated.update(Buffer.from(bank.readBlock(level, n, kind).buffer));
        replicated.update(String(bank.blockSteps(level, n)));
      }
      continue;
    }
    total += nodes * blockBytes(bank, level);
    for (const [a, b] of ownedNodeRanges(plan, comm.rank, level)) owned += (b - a) * blockBytes(bank, level);
    for (let n = 0; n < nodes; n++) {
      const s = bank.blockSteps(level, n);
      if (s > 0) {
        trained.push(`${level}:${n}:${s}`);
        held += blockBytes(bank, level);
      }
    }
  }
  const probe = await mem.hm.loss(await probeBatch(mem.tree, plan, comm.rank));
  await writeFile(path.join(out!, `rank-${comm.rank}.json`), JSON.stringify({
    losses, probe, steps: hist.steps.length, valLosses: hist.valLosses, anchor: createHash('sha256').update(Buffer.from(run.model.params.buffer)).digest('hex'),
    replicated: replicated.digest('hex'), trained, owners: plan.owners, ownedBytes: owned, heldBytes: held, shardedBytes: total,
    bytesSentPerStep: (comm.stats.bytesSent - sent0) / Math.max(1, hist.steps.length),
  }));
  run.dispose();
  comm.close();
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((e: unknown) => {
    process.stderr.write(`worker: ${e instanceof HiermemError ? `${e.code}: ` : ''}${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(2);
  });
}
