/**
 * The memory bank sharded by subtree across ranks (issue #14, items 4-6).
 * Without MPI (2 ranks inside one process, test/dist-fake-comm.ts): the shard plan; the sharded step
 * against a one-process step on the union of the ranks' batches; sharded checkpoints written and
 * opened in one process, and refused when a file is missing, truncated or another run's.
 * With Open MPI's mpirun (2 ranks, test/dist-shard-worker.ts; skipped, saying why, without it):
 * anchor and replicated levels bit-identical across ranks, each sharded block trained on exactly
 * its owner, resident bank ≈ 1/N of the sharded levels, the checkpoint evaluates in one process to
 * the ranks' own losses; kill -9 of a rank fails the job, and resuming the last checkpoint gives the
 * uninterrupted run's losses; the CLI end to end.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFile, mkdtemp, readFile, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { HiermemError } from '../lib/errors.js';
import { ownedNodeRanges, ownerOfBlock, parseShardPlan, planShards, subtreeCounts } from '../lib/memory/shard-plan.js';
import { loadHierarchicalCheckpoint } from '../lib/train/memory-trainer.js';
import { prepareRun } from '../lib/train/run.js';
import { RetrievalTree } from '../lib/retrieval/tree.js';
import { FIX_PLAN, FIX_STEP, FIX_TOK, makeRanks, makeShardedCheckpoint, rankBatch, trainRanks, unionBatch } from './dist-shard-fixture.js';
import { fakeCommunicators } from './dist-fake-comm.js';
import { probeBatch, SHARD_DOCS } from './dist-shard-worker.js';
import { launch as launchRanks, MPI_ENV, mpiMissing, rankJson, type Done } from './dist-checks.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const WORKER = path.join(HERE, 'dist-shard-worker.js');
const CLI = path.resolve(HERE, '../lib/cli/main.js');
const code = (c: string, re?: RegExp) => (e: unknown) => e instanceof HiermemError && e.code === c && (!re || re.test(e.message));

const SKIP = mpiMissing();
const ENV = MPI_ENV;
const launch = (np: number, args: string[], timeoutMs = 60_000, env: NodeJS.ProcessEnv = ENV): Promise<Done> => launchRanks(np, args, timeoutMs, env);

// ---- without MPI ------------------------------------------------------------------------------

test('shard plan: largest subtrees first to the least loaded rank, deterministic; refusals', () => {
  const plan = planShards({ counts: [5, 9, 9, 1, 0, 3], ranks: 2, shardLevel: 1, k: 6, p: 2, balance: 'documents' });
  assert.deepEqual(plan.owners, [0, 0, 1, 1, 1, 1]); // 9→r0, 9→r1, 5→r0 (tie: lower rank), 3→r1, 1→r1, 0→r1
  assert.deepEqual(planShards({ ...plan, counts: [5, 9, 9, 1, 0, 3] }).owners, plan.owners);
  assert.deepEqual(subtreeCounts(Int32Array.from([0, 1, 1, 7, -1, -1, 1, 6]), 2, 6, 1), [1, 2, 0, 0, 0, 0]);
  assert.equal(ownerOfBlock(plan, 0, 2), 1);
  assert.equal(ownerOfBlock(plan, 1, 13), 1); // level-2 node 13 lies under level-1 node floor(13 / 6) = 2
  assert.equal(ownerOfBlock(plan, 2, 0), -1); // the generic block (level p): replicated
  assert.throws(() => planShards({ counts: [3, 0], ranks: 2, shardLevel: 1, k: 2, p: 2, balance: 'documents' }), code('E_CONFIG_INCOMPATIBLE', /rank 1 would get no data/));
  assert.throws(() => planShards({ counts: [1, 1], ranks: 2, shardLevel: 3, k: 2, p: 2, balance: 'documents' }), code('E_CONFIG_INVALID'));
  assert.deepEqual(ownedNodeRanges(FIX_PLAN, 1, 1), [[2, 4]]);
  assert.deepEqual(parseShardPlan('x', JSON.parse(JSON.stringify(plan))), plan);
  assert.throws(() => parseShardPlan('x', { ...plan, owners: [0, 0, 2, 1, 1, 1] }), code('E_CHECKPOINT_CORRUPT'));
  assert.throws(() => parseShardPlan('x', { ...plan, shardLevel: 3 }), code('E_CHECKPOINT_CORRUPT'));
});

test('sharded step (2 ranks in one process) equals one process on the union batch; replicated bits equal; each sharded block on its owner', async () => {
  const steps = 3;
  const ranks = makeRanks(2);
  const losses = await trainRanks(ranks, steps);
  const [one] = makeRanks(1, 6);
  const ref: number[] = [];
  for (let s = 0; s < steps; s++) ref.push((await one!.hm.trainStep(unionBatch([rankBatch(0, s), rankBatch(1, s)]), one!.optimizer, FIX_STEP)).loss);
  for (let s = 0; s < steps; s++) assert.ok(Math.abs(losses[s]! - ref[s]!) < 1e-5, `loss ${s}: ${losses[s]} vs ${ref[s]}`);
  const [a, b] = ranks as [typeof ranks[0], typeof ranks[0]];
  assert.deepEqual(a.hm.anchor.params, b.hm.anchor.params, 'anchors bit-identical');
  let maxDiff = 0;
  for (let i = 0; i < a.hm.anchor.params.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a.hm.anchor.params[i]! - one!.hm.anchor.params[i]!));
  assert.ok(maxDiff < 1e-5, `anchor vs one process: ${maxDiff}`);
  for (const kind of ['weight', 'm', 'v'] as const) assert.deepEqual(a.hm.bank.readBlock(2, 0, kind), b.hm.bank.readBlock(2, 0, kind), `generic ${kind} bit-identical`);
  assert.equal(a.hm.bank.blockSteps(2, 0), steps);
  for (const [level, nodes] of [[0, 2], [1, 4]] as const) {
    for (let n = 0; n < nodes; n++) {
      const owner = ownerOfBlock(FIX_PLAN, level, n);
      assert.equal(ranks[owner]!.hm.bank.blockSteps(level, n), steps, `(${level}, ${n}) trained on its owner`);
      assert.equal(ranks[1 - owner]!.hm.bank.blockSteps(level, n), 0, `(${level}, ${n}) untouched elsewhere`);
      const mine = ranks[owner]!.hm.bank.readBlock(level, n), theirs = one!.hm.bank.readBlock(level, n);
      let d = 0;
      for (let i = 0; i < mine.length; i++) d = Math.max(d, Math.abs(mine[i]! - theirs[i]!));
      assert.ok(d < 1e-5, `block (${level}, ${n}) vs one process: ${d}`);
    }
  }
});

test('sharded checkpoints open in one process (all shards, or one); missing, truncated and foreign shards are refused', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'hm-shard-'));
  try {
    const file = path.join(dir, 'ck.safetensors');
    const ranks = await makeShardedCheckpoint(file);
    const names = (await readdir(dir)).filter((n) => n.includes('.shard-')).sort();
    assert.equal(names.length, 2);
    const all = await loadHierarchicalCheckpoint(file);
    assert.equal(all.shards?.ranks, 2);
    for (const [level, nodes] of [[0, 2], [1, 4], [2, 1]] as const) {
      for (let n = 0; n < nodes; n++) {
        const owner = Math.max(0, ownerOfBlock(FIX_PLAN, level, n));
        for (const kind of ['weight', 'm', 'v'] as const) assert.deepEqual(all.hm.bank.readBlock(level, n, kind), ranks[owner]!.hm.bank.readBlock(level, n, kind));
        assert.equal(all.hm.bank.blockSteps(level, n), ranks[owner]!.hm.bank.blockSteps(level, n));
      }
    }
    assert.deepEqual(all.hm.anchor.params, ranks[0]!.hm.anchor.params);
    all.hm.bank.close();
    const one = await loadHierarchicalCheckpoint(file, { shardRanks: [1] });
    assert.deepEqual(one.trainer?.rngState, [1], "rank 1's own trainer state");
    assert.equal(one.hm.bank.blockSteps(1, 0), 0, "rank 0's blocks are not loaded");
    assert.equal(one.hm.bank.blockSteps(1, 2), 2);
    assert.equal(one.hm.bank.blockSteps(2, 0), 2, 'replicated blocks are');
    one.hm.bank.close();
    // resuming needs the same ranks, under MPI
    const run = (communicator?: ReturnType<typeof fakeCommunicators>[0]) => prepareRun({ tokenizer: FIX_TOK, batchSize: 2, seed: 1, weightDecay: 0.1, resume: file,
      data: { documents: { train: ['a b'], val: ['a b'] } }, ...(communicator ? { communicator } : {}) });
    await assert.rejects(run(), code('E_CONFIG_INCOMPATIBLE', /resume it with mpirun -np 2/));
    await assert.rejects(run(fakeCommunicators(3)[0]), code('E_CONFIG_INCOMPATIBLE', /written by 2 ranks, this job has 3/));
    // a foreign shard under the right name: another run's (same shape, other values)
    const other = await mkdtemp(path.join(dir, 'other-'));
    await makeShardedCheckpoint(path.join(other, 'ck.safetensors'), 3);
    const foreign = (await readdir(other)).find((n) => n.includes('.shard-1-'))!;
    const shard1 = path.join(dir, names[1]!);
    const keep = await readFile(shard1);
    await copyFile(path.join(other, foreign), shard1);
    await assert.rejects(loadHierarchicalCheckpoint(file), code('E_CHECKPOINT_CORRUPT'));
    await writeFile(shard1, keep);
    await truncate(shard1, keep.length - 100);
    await assert.rejects(loadHierarchicalCheckpoint(file), code('E_CHECKPOINT_CORRUPT', /truncated/));
    await rm(shard1);
    await assert.rejects(loadHierarchicalCheckpoint(file), code('E_IO', /missing/));
    await assert.rejects(loadHierarchicalCheckpoint(file, { shardRanks: [1] }), code('E_IO', /missing/));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// ---- with MPI ---------------------------------------------------------------------------------

async function treeFile(dir: string): Promise<string> {
  const file = path.join(dir, 'tree.in.safetensors');
  await (await RetrievalTree.fitTexts(SHARD_DOCS.slice(10), { k: 4, p: 2, seed: 1 })).tree.save(file);
  return file;
}

interface RankOut {
  losses: number[]; probe: number; anchor: string; replicated: string; trained: string[]; owners: number[];
  ownedBytes: number; heldBytes: number; shardedBytes: number; bytesSentPerStep: number;
}

test('2 ranks, shard level 2: anchor and replicated level bit-identical, sharded blocks on their owners only, 1/N resident, one-process eval equal', { skip: SKIP ?? false, timeout: 120_000 }, async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'hm-shard-'));
  try {
    const tree = await treeFile(dir);
    const r = await launch(2, [WORKER, dir, tree, '6', '-1', 'fresh', '2']);
    assert.equal(r.code, 0, r.stderr);
    const [a, b] = [await rankJson<RankOut>(dir, 0), await rankJson<RankOut>(dir, 1)];
    assert.equal(a.anchor, b.anchor, 'anchors bit-identical');
    assert.equal(a.replicated, b.replicated, 'replicated level and generic block bit-identical');
    assert.deepEqual(a.losses, b.losses);
    const blocksOf = (o: RankOut) => o.trained.map((t) => t.split(':').slice(0, 2).join(':'));
    const shared = blocksOf(a).filter((x) => blocksOf(b).includes(x));
    assert.deepEqual(shared, [], 'no sharded block trained on two ranks');
    assert.ok(a.trained.length > 0 && b.trained.length > 0);
    for (const [rank, o] of [a, b].entries()) {
      for (const t of o.trained) {
        const [level, node] = t.split(':').map(Number) as [number, number];
        assert.equal(o.owners[Math.floor(node / 4 ** (level - 1))], rank, `block ${t} trained on rank ${rank}, its owner`);
      }
      assert.ok(o.heldBytes <= o.ownedBytes);
      assert.ok(o.ownedBytes >= 0.25 * o.shardedBytes && o.ownedBytes <= 0.75 * o.shardedBytes, `rank ${rank} owns ${o.ownedBytes} of ${o.shardedBytes} bytes`);
    }
    assert.equal(a.ownedBytes + b.ownedBytes, a.shardedBytes);
    // one process, no MPI: the checkpoint evaluates to what each rank computed on its own held-out sequences
    const file = path.join(dir, 'ck.safetensors');
    const ck = await loadHierarchicalCheckpoint(file, { maxBatch: 2 });
    const t = await RetrievalTree.load(tree);
    for (const [rank, o] of [a, b].entries()) {
      assert.equal(await ck.hm.loss(await probeBatch(t, ck.shards!.plan, rank)), o.probe, `rank ${rank}'s probe loss`);
      const own = await loadHierarchicalCheckpoint(file, { maxBatch: 2, shardRanks: [rank] });
      assert.equal(await own.hm.loss(await probeBatch(t, ck.shards!.plan, rank)), o.probe, `rank ${rank}'s shard alone`);
      own.hm.bank.close();
    }
    ck.hm.bank.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('kill -9 of a rank fails the job (no hang); resuming the last checkpoint gives the uninterrupted losses', { skip: SKIP ?? false, timeout: 180_000 }, async () => {
  const dirs = [await mkdtemp(path.join(tmpdir(), 'hm-shard-')), await mkdtemp(path.join(tmpdir(), 'hm-shard-'))] as const;
  try {
    const tree = await treeFile(dirs[0]);
    const whole = await launch(2, [WORKER, dirs[0], tree, '8']);
    assert.equal(whole.code, 0, whole.stderr);
    const killed = await launch(2, [WORKER, dirs[1], tree, '8', '5'], 90_000, { ...ENV, HIERMEM_DIST_TIMEOUT_S: '30' });
    assert.notEqual(killed.code, 0, 'the job must fail');
    assert.equal(killed.signal, null, `the job hung and was killed by the test after ${killed.ms} ms`);
    assert.match(killed.stderr, /signal 9|Killed|E_COMM|aborted/i, killed.stderr);
    await assert.rejects(readFile(path.join(dirs[1], 'rank-0.json')), 'no rank finished');
    const resumed = await launch(2, [WORKER, dirs[1], tree, '8', '-1', 'resume']);
    assert.equal(resumed.code, 0, resumed.stderr);
    const ref = await rankJson<RankOut>(dirs[0], 0);
    for (const rank of [0, 1]) {
      const x = await rankJson<RankOut>(dirs[1], rank), y = await rankJson<RankOut>(dirs[0], rank);
      assert.deepEqual(x.losses, ref.losses.slice(4), 'steps 5-8 after resuming step 4');
      assert.equal(x.anchor, y.anchor);
      assert.equal(x.replicated, y.replicated);
      assert.deepEqual(x.trained, y.trained);
    }
    // another rank count is refused with a typed error
    const three = await launch(3, [WORKER, dirs[1], tree, '8', '-1', 'resume']);
    assert.notEqual(three.code, 0);
    assert.match(three.stderr, /E_CONFIG_INCOMPATIBLE.*written by 2 ranks, this job has 3/);
  } finally {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  }
});

test('`mpirun -np 2 hiermem train --dist mpi --tree`: a sharded run; info shows the manifest; generate opens one shard; eval opens them all', { skip: SKIP ?? false, timeout: 120_000 }, async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'hm-shard-'));
  try {
    const tree = await treeFile(dir);
    const corpus = path.join(dir, 'docs.txt');
    await writeFile(corpus, SHARD_DOCS.join('\n\n') + '\n');
    const out = path.join(dir, 'run');
    const c = await launch(2, [CLI, 'train', '--dist', 'mpi', '--corpus', corpus, '--tree', tree, '--memory-levels', '8,8', '--preset', 'tiny',
      '--steps', '3', '--batch-size', '2', '--eval-every', '0', '--no-progress', '--out', out]);
    assert.equal(c.code, 0, c.stderr);
    assert.match(c.stderr, /bank levels >= 1 sharded by subtree/);
    const summary = JSON.parse(await readFile(path.join(out, 'summary.json'), 'utf8')) as { dist: { shardLevel: number; owners: number[] } };
    assert.equal(summary.dist.shardLevel, 1);
    const info = spawnSync(process.execPath, [CLI, 'info', out], { encoding: 'utf8', env: ENV });
    assert.equal(info.status, 0, info.stderr);
    const shards = (JSON.parse(info.stdout) as { shards: { ranks: number; files: Array<{ state: string }> } }).shards;
    assert.equal(shards.ranks, 2);
    assert.deepEqual(shards.files.map((f) => f.state), ['present', 'present']);
    const g = spawnSync(process.execPath, [CLI, 'generate', '--ckpt', out, '--max-tokens', '4', 'gold peru'], { encoding: 'utf8', env: ENV });
    assert.equal(g.status, 0, g.stderr);
    assert.match(g.stderr, /memory path/);
    // eval opens every shard without MPI: with memory it must differ from the anchor alone
    const docs = path.join(dir, 'eval.jsonl');
    await writeFile(docs, SHARD_DOCS.slice(0, 4).map((text) => JSON.stringify({ text })).join('\n') + '\n');
    const nll = (extra: string[]) => {
      const e = spawnSync(process.execPath, [CLI, 'eval', '--ckpt', out, '--perplexity', docs, '--json', '--no-progress', ...extra], { encoding: 'utf8', env: ENV });
      assert.equal(e.status, 0, e.stderr);
      return (JSON.parse(e.stdout) as { overall: { nllPerToken: number } }).overall.nllPerToken;
    };
    const withMemory = nll([]);
    const anchorOnly = nll(['--no-memory']);
    assert.ok(Number.isFinite(withMemory) && Number.isFinite(anchorOnly));
    assert.notEqual(withMemory, anchorOnly, 'eval of a sharded checkpoint used no memory blocks');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

