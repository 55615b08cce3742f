/**
 * Data-parallel training on the CUDA backend (issue #14, item 7): the anchor's device gradients
 * averaged by NCCL between backward and the AdamW step. These machines have no GPU: the CUDA library
 * is the CPU-twin fake (test/fake-cuda.ts) and libnccl the test double (test/dist-fake-nccl.ts),
 * both with "device" memory in host memory. 2 ranks x batch b under mpirun must hold bit-identical
 * parameters and report the same losses, and match 1 process x batch 2b within fp32 tolerance
 * (test/dist-checks.ts). A CUDA run over a communicator without NCCL is refused with a typed error.
 * bench/gpu.sh --nccl runs the same worker against the real libraries on a multi-GPU machine.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CUDA_LIB_ENV, detectGpu, resolveBackend } from '../lib/backend.js';
import { HiermemError } from '../lib/errors.js';
import { AnchorModel } from '../lib/model/anchor.js';
import { anchorParamCount } from '../lib/model/config.js';
import { loadCheckpoint } from '../lib/train/checkpoint.js';
import { AdamW } from '../lib/train/adamw.js';
import { anchorStepper } from '../lib/train/trainer.js';
import { ByteTokenizer } from '../lib/data/tokenizer.js';
import { LocalCommunicator } from '../lib/dist/communicator.js';
import { dataParallelReducers } from '../lib/dist/data-parallel.js';
import { TINY } from './dist-mpi-worker.js';
import { MPI_ENV, assertSliceRunsMatch, launch, mpiMissing, rankJson } from './dist-checks.js';
import { buildFakeNccl } from './dist-fake-nccl.js';
import { buildTwinFake, twinFakeUnavailable } from './fake-cuda.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const WORKER = path.join(HERE, 'dist-nccl-cuda-worker.js');
const CLI = path.resolve(HERE, '../lib/cli/main.js');
const SKIP = twinFakeUnavailable() ?? mpiMissing('the NCCL double uses Open MPI\'s ABI');

describe('data-parallel training on the CUDA backend over NCCL (the fakes)', { skip: twinFakeUnavailable() ?? false }, () => {
  let dir = '';
  let twin = '';
  const saved = process.env[CUDA_LIB_ENV];
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'hm-nccl-cuda-'));
    twin = await buildTwinFake(dir);
    process.env[CUDA_LIB_ENV] = twin;
    detectGpu({ refresh: true });
    assert.equal(resolveBackend('cuda'), 'cuda');
  });
  after(async () => {
    if (saved === undefined) delete process.env[CUDA_LIB_ENV];
    else process.env[CUDA_LIB_ENV] = saved;
    detectGpu({ refresh: true });
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('a CUDA run whose communicator has no NCCL is refused (E_CONFIG_INCOMPATIBLE naming NCCL)', () => {
    const tok = new ByteTokenizer();
    const model = AnchorModel.create({ ...TINY, vocabSize: tok.vocabSize }, { maxBatch: 2 });
    try {
      assert.throws(() => anchorStepper(model, new AdamW(model), tok, { backend: 'cuda', ...dataParallelReducers(new LocalCommunicator()) }),
        (e: unknown) => e instanceof HiermemError && e.code === 'E_CONFIG_INCOMPATIBLE' && /NCCL/.test(e.message));
    } finally {
      model.dispose();
    }
  });

  test('2 ranks x batch 2 (NCCL mean on the device) = 1 process x batch 4; ranks bit-identical', { skip: SKIP ?? false, timeout: 180_000 }, async () => {
    const nccl = buildFakeNccl(dir);
    const one = path.join(dir, 'one'), two = path.join(dir, 'two');
    await mkdir(one);
    await mkdir(two);
    const env = { ...MPI_ENV, [CUDA_LIB_ENV]: twin };
    const steps = 4;
    const a = await launch(0, [WORKER, one, '4', String(steps)], 60_000, env);
    assert.equal(a.code, 0, a.stderr);
    const b = await launch(2, [WORKER, two, '2', String(steps), nccl], 90_000, env);
    assert.equal(b.code, 0, b.stderr);
    await assertSliceRunsMatch(one, two, steps);
    const r0 = await rankJson<{ backend: string; sent: number }>(two, 0);
    assert.equal(r0.backend, 'cuda');
    assert.ok(r0.sent > 0, 'the NCCL all-reduces were counted');
    // the reduction happened: without it the ranks (different rows) would diverge — checked by
    // assertSliceRunsMatch's bit-identity; and the 1-process run really saw the 2-rank global batch
    const one0 = await rankJson<{ losses: number[] }>(one, 0);
    assert.equal(one0.losses.length, steps);
  });

  test('hiermem train --backend cuda --dist mpi: NCCL means the anchor gradients every step; the checkpoint loads', { skip: SKIP ?? false, timeout: 180_000 }, async () => {
    const nccl = buildFakeNccl(dir);
    const out = path.join(dir, 'cli'), log = path.join(dir, 'cli-nccl.log');
    const steps = 3;
    const c = await launch(2, [CLI, 'train', '--backend', 'cuda', '--dist', 'mpi', '--preset', 'tiny', '--steps', String(steps), '--batch-size', '2',
      '--eval-every', '0', '--no-progress', '--out', out], 120_000, { ...MPI_ENV, [CUDA_LIB_ENV]: twin, HIERMEM_NCCL_LIB: nccl, HIERMEM_FAKE_NCCL_LOG: log });
    assert.equal(c.code, 0, c.stderr);
    const summary = JSON.parse(await readFile(path.join(out, 'summary.json'), 'utf8')) as { backend: string; dist: { ranks: number; globalBatch: number } };
    assert.deepEqual([summary.backend, summary.dist.ranks, summary.dist.globalBatch], ['cuda', 2, 4]);
    const ck = await loadCheckpoint(path.join(out, 'checkpoint.safetensors'));
    const n = anchorParamCount(ck.model.config);
    ck.model.dispose();
    // "allreduce <count> <op>": op 4 is ncclAvg; one per rank per step, over the whole anchor
    const reduces = (await readFile(log, 'utf8')).trim().split('\n').filter((l) => l.startsWith('allreduce '));
    assert.equal(reduces.length, 2 * steps, reduces.join('\n'));
    assert.ok(reduces.every((l) => l === `allreduce ${n} 4`), reduces.join('\n'));
  });
});
