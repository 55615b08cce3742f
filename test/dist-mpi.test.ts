/**
 * Data-parallel training over MPI (issue #14): 2 ranks on this machine under Open MPI's mpirun
 * (test/dist-mpi-worker.ts is one rank). Collectives against a JS reference, bit-identical on every
 * rank; 2 ranks x batch b equal 1 rank x batch 2b within fp32 tolerance; the anchor bit-identical
 * across ranks and across reruns; a rank killed with SIGKILL fails the job within a bound. Skips
 * (saying why) where mpirun is missing. The refusals (no MPI library, a bank file) need no mpirun.
 * Sharded memory runs: test/dist-shard.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { orderedSum, launcherWorldSize, type Communicator } from '../lib/dist/communicator.js';
import { rankSeed, rankTrainerState } from '../lib/dist/data-parallel.js';
import { prepareRun } from '../lib/train/run.js';
import { RetrievalTree } from '../lib/retrieval/tree.js';
import { ByteTokenizer } from '../lib/data/tokenizer.js';
import { HiermemError } from '../lib/errors.js';
import { loadNative } from '../lib/native.js';
import type { NativeMpi } from '../lib/dist/mpi.js';
import { rankData, sha, documents, TINY } from './dist-mpi-worker.js';
import { assertSliceRunsMatch, launch as launchRanks, MPI_ENV, mpiMissing, rankJson, type Done } from './dist-checks.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const WORKER = path.join(HERE, 'dist-mpi-worker.js');
const CLI = path.resolve(HERE, '../lib/cli/main.js');

const SKIP = mpiMissing();
const ENV = MPI_ENV;
const launch = (np: number, args: string[], timeoutMs = 30_000, env: NodeJS.ProcessEnv = ENV): Promise<Done> => launchRanks(np, args, timeoutMs, env);

test('the reference sum adds in rank order; rank seeds keep rank 0 and differ elsewhere; launcher size', () => {
  const a = new Float32Array([1e8, 1]), b = new Float32Array([-1e8, 1]), c = new Float32Array([1, 1]);
  assert.deepEqual(Array.from(orderedSum([a, b, c])), [1, 3]); // (1e8 + -1e8) + 1, not 1e8 + (-1e8 + 1)
  assert.equal(rankSeed(9, 0), 9);
  assert.notEqual(rankSeed(9, 1), rankSeed(9, 2));
  assert.equal(launcherWorldSize({ OMPI_COMM_WORLD_SIZE: '4' }), 4);
  assert.equal(launcherWorldSize({}), null);
});

test('a data-parallel checkpoint gives each rank its own data order, and refuses another rank count (no MPI needed)', () => {
  const comm = (rank: number, size: number) => ({ rank, size }) as unknown as Communicator;
  const saved = { step: 4, tokensSeen: 9, rngState: [1, 2], ranks: 2, rankRngStates: [[1, 2], [3, 4]] };
  assert.deepEqual(rankTrainerState('ck', saved, comm(1, 2)), { step: 4, tokensSeen: 9, rngState: [3, 4], ranks: 2 });
  assert.deepEqual(rankTrainerState('ck', { step: 1, tokensSeen: 2 }, undefined), { step: 1, tokensSeen: 2 }); // one process, as saved
  const refused = (e: unknown) => e instanceof HiermemError && e.code === 'E_CONFIG_INCOMPATIBLE';
  assert.throws(() => rankTrainerState('ck', saved, comm(0, 3)), refused);
  assert.throws(() => rankTrainerState('ck', saved, undefined), refused);
  assert.throws(() => rankTrainerState('ck', { step: 1, tokensSeen: 2 }, comm(0, 2)), refused);
  assert.throws(() => rankTrainerState('ck', { ...saved, rankRngStates: [[1, 2]] }, comm(1, 2)), (e: unknown) => e instanceof HiermemError && e.code === 'E_CHECKPOINT_CORRUPT');
});

test('--dist mpi without a usable MPI library fails with E_BACKEND_UNAVAILABLE naming the package', async () => {
  const r = await launch(0, [CLI, 'train', '--dist', 'mpi', '--steps', '1', '--out', path.join(tmpdir(), 'hm-nompi')], 30_000,
    { ...ENV, HIERMEM_MPI_LIB: '/nonexistent/libmpi.so.40' });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /E_BACKEND_UNAVAILABLE/);
  assert.match(r.stderr, /openmpi-bin/);
});

test('a memory run under MPI keeps each rank\'s shard in RAM: a bank file is refused (no MPI needed)', async () => {
  const fake: Communicator = {
    kind: 'mpi', rank: 0, size: 2, stats: { collectives: 0, bytesSent: 0 },
    allReduceSum: async () => {}, allReduceMean: async () => {}, allGather: async (b) => b.slice(), broadcast: async () => {},
    barrier: async () => {}, abort: () => { throw new Error('abort'); }, close: () => {},
  };
  const tok = new ByteTokenizer();
  const docs = documents(24);
  const { tree } = await RetrievalTree.fitTexts(docs, { k: 2, p: 1, seed: 1 });
  await assert.rejects(prepareRun({
    tokenizer: tok, batchSize: 2, seed: 1, weightDecay: 0.1, communicator: fake, anchor: { config: { ...TINY, vocabSize: tok.vocabSize } },
    memory: { tree, levels: [8], bankFile: path.join(tmpdir(), 'hm-never-written.safetensors') }, data: { documents: { train: docs, val: docs } },
  }), (e: unknown) => e instanceof HiermemError && e.code === 'E_CONFIG_INCOMPATIBLE' && /drop --bank-file/.test(e.message));
});

test('the MPI functions check their arguments and refuse to run before MPI is opened (no MPI needed)', async (t) => {
  const n = loadNative() as unknown as NativeMpi;
  if (typeof n.mpiOpen !== 'function') return t.skip('this addon was built before MPI support (rebuild it)');
  const code = (c: string) => (e: unknown) => e instanceof HiermemError && e.code === c;
  assert.throws(() => n.mpiAllReduce([1, 2] as unknown as Float32Array, false), code('E_INVALID_ARGUMENT'));
  assert.throws(() => n.mpiAllReduce(new Float64Array(2) as unknown as Float32Array, false), code('E_INVALID_ARGUMENT'));
  assert.throws(() => n.mpiAllReduce(new Float32Array(2), 1 as unknown as boolean), code('E_INVALID_ARGUMENT'));
  assert.throws(() => n.mpiAllGather(new Float32Array(3), new Float32Array(2)), code('E_SHAPE_MISMATCH'));
  assert.throws(() => n.mpiBroadcast(new Float32Array(3), 1), code('E_INVALID_ARGUMENT'));
  assert.throws(() => n.mpiAbort(-1), code('E_INVALID_ARGUMENT'));
  assert.throws(() => n.mpiInit(), code('E_BACKEND_UNAVAILABLE'));
  assert.throws(() => n.mpiWtime(), code('E_BACKEND_UNAVAILABLE'));
  await assert.rejects(n.mpiAllReduce(new Float32Array(2), false), code('E_BACKEND_UNAVAILABLE'));
  await assert.rejects(n.mpiBarrier(), code('E_BACKEND_UNAVAILABLE'));
  assert.equal(n.mpiStatus().loaded, false);
  const r = n.mpiOpen('/nonexistent/libmpi.so.40');
  assert.equal(r.loaded, false);
  assert.match(r.error ?? '', /dlopen failed/);
});

test('MPI collectives: sums equal the rank-order JS reference bit for bit, on every rank', { skip: SKIP ?? false, timeout: 60_000 }, async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'hm-mpi-'));
  try {
    const r = await launch(2, [WORKER, 'collectives', dir]);
    assert.equal(r.code, 0, r.stderr);
    const [r0, r1] = [await rankJson<Record<string, unknown>>(dir, 0), await rankJson<Record<string, unknown>>(dir, 1)];
    assert.deepEqual(r0, r1); // every rank the same bits
    for (const n of [1, 7, 1001, 65537]) {
      const sum = orderedSum([rankData(0, n), rankData(1, n)]);
      assert.equal(r0[`sum${n}`], sha(sum), `sum of ${n}`);
      assert.equal(r0[`mean${n}`], sha(sum.map((x) => Math.fround(x / 2))), `mean of ${n}`);
    }
    assert.deepEqual(r0.gather, [0, 10, 1, 11]);
    assert.deepEqual(r0.bcast, [42, 42, 42]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('2 ranks x batch 2 equal 1 rank x batch 4 (loss and parameters, fp32 tolerance)', { skip: SKIP ?? false, timeout: 60_000 }, async () => {
  const d1 = await mkdtemp(path.join(tmpdir(), 'hm-mpi-'));
  const d2 = await mkdtemp(path.join(tmpdir(), 'hm-mpi-'));
  try {
    const steps = 4;
    const [one, two] = await Promise.all([launch(0, [WORKER, 'slice', d1, 'none', '4', String(steps)]),
      launch(2, [WORKER, 'slice', d2, 'mpi', '2', String(steps)])]);
    assert.equal(one.code, 0, one.stderr);
    assert.equal(two.code, 0, two.stderr);
    await assertSliceRunsMatch(d1, d2, steps);
  } finally {
    await rm(d1, { recursive: true, force: true });
    await rm(d2, { recursive: true, force: true });
  }
});

test('prepareRun under MPI: anchor bit-identical across ranks and across reruns; rank 0 alone writes', { skip: SKIP ?? false, timeout: 60_000 }, async () => {
  const dirs = [await mkdtemp(path.join(tmpdir(), 'hm-mpi-')), await mkdtemp(path.join(tmpdir(), 'hm-mpi-'))];
  try {
    const sums: string[] = [];
    for (const dir of dirs) {
      const r = await launch(2, [WORKER, 'run', dir, '6']);
      assert.equal(r.code, 0, r.stderr);
      const [a, b] = [await rankJson<{ params: string; losses: number[] }>(dir, 0), await rankJson<{ params: string; losses: number[] }>(dir, 1)];
      assert.equal(a.params, b.params, 'ranks hold bit-identical anchors');
      assert.deepEqual(a.losses, b.losses);
      sums.push(a.params);
      await readFile(path.join(dir, 'ck.safetensors')); // rank 0 wrote the checkpoint
    }
    assert.equal(sums[0], sums[1], 'a rerun is bit-identical');
  } finally {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  }
});

test('train({ dist }) and `hiermem train --dist mpi`: ranks agree; the CLI counts the whole job', { skip: SKIP ?? false, timeout: 60_000 }, async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'hm-mpi-'));
  try {
    const r = await launch(2, [WORKER, 'api', dir, '3']);
    assert.equal(r.code, 0, r.stderr);
    const [a, b] = [await rankJson<{ params: string; losses: number[] }>(dir, 0), await rankJson<{ params: string; losses: number[] }>(dir, 1)];
    assert.equal(a.params, b.params);
    assert.equal(a.losses.length, 3);
    const out = path.join(dir, 'cli');
    const c = await launch(2, [CLI, 'train', '--dist', 'mpi', '--preset', 'tiny', '--steps', '3', '--batch-size', '2', '--eval-every', '0',
      '--no-progress', '--out', out]);
    assert.equal(c.code, 0, c.stderr);
    assert.equal(c.stderr.match(/data-parallel over 2 MPI ranks: global batch 4/g)?.length, 1, `rank 0 alone prints:\n${c.stderr}`);
    const summary = JSON.parse(await readFile(path.join(out, 'summary.json'), 'utf8')) as { tokens: number; dist: { ranks: number; globalBatch: number } };
    assert.deepEqual([summary.dist.ranks, summary.dist.globalBatch, summary.tokens], [2, 4, 3 * 4 * 64]);
    assert.equal((await readFile(path.join(out, 'metrics.jsonl'), 'utf8')).trim().split('\n').length, 3);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('data-parallel resume: kill -9 after a checkpoint, resume with the same ranks gives the uninterrupted losses; other counts refused', { skip: SKIP ?? false, timeout: 120_000 }, async () => {
  const dirs = [await mkdtemp(path.join(tmpdir(), 'hm-mpi-')), await mkdtemp(path.join(tmpdir(), 'hm-mpi-'))];
  try {
    const whole = await launch(2, [WORKER, 'run', dirs[0]!, '6']);
    assert.equal(whole.code, 0, whole.stderr);
    const killed = await launch(2, [WORKER, 'run', dirs[1]!, '6', '3'], 45_000, { ...ENV, HIERMEM_DIST_TIMEOUT_S: '20' });
    assert.notEqual(killed.code, 0);
    assert.equal(killed.signal, null, 'no hang');
    const resumed = await launch(2, [WORKER, 'run', dirs[1]!, '6', '-1', 'resume']);
    assert.equal(resumed.code, 0, resumed.stderr);
    const ref = await rankJson<{ params: string; losses: number[] }>(dirs[0]!, 0);
    for (const rank of [0, 1]) {
      const x = await rankJson<{ params: string; losses: number[] }>(dirs[1]!, rank);
      assert.deepEqual(x.losses, ref.losses.slice(2), 'steps 3-6 after resuming step 2');
      assert.equal(x.params, ref.params);
    }
    const one = await launch(0, [WORKER, 'run', dirs[1]!, '8', '-1', 'resume']);
    assert.notEqual(one.code, 0); // a plain process (no mpirun) is one rank: MPI_Init succeeds with size 1
    assert.match(one.stderr, /E_CONFIG_INCOMPATIBLE.*written by 2 rank/);
  } finally {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  }
});

test('a rank killed with SIGKILL fails the job with an error, not a hang', { skip: SKIP ?? false, timeout: 60_000 }, async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'hm-mpi-'));
  try {
    const r = await launch(2, [WORKER, 'run', dir, '400', '3'], 45_000, { ...ENV, HIERMEM_DIST_TIMEOUT_S: '20' });
    assert.notEqual(r.code, 0, 'the job must fail');
    assert.equal(r.signal, null, `the job hung and was killed by the test after ${r.ms} ms`);
    assert.match(r.stderr, /signal 9|Killed|E_COMM|aborted|exited/i, r.stderr);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
