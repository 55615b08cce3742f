/**
 * NCCL behind the Communicator interface (issue #14, item 7), against a test double of libnccl
 * (test/dist-fake-nccl.ts; NCCL needs NVIDIA GPUs, which these machines lack): the library opened
 * with dlopen and checked, its refusals, and, under mpirun with 2 ranks, the bootstrap over MPI
 * (one unique id, made on rank 0, reaching both ranks) and all-reduces (sum and mean, host-staged
 * and device-pointer paths) equal to the rank-order reference. bench/gpu.sh runs the same worker
 * against the real libnccl on a machine with 2 GPUs or more.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { HiermemError } from '../lib/errors.js';
import { orderedSum } from '../lib/dist/communicator.js';
import { nativeNccl, ncclVersionText, openNcclLibrary } from '../lib/dist/nccl.js';
import { rankData, sha } from './dist-mpi-worker.js';
import { launch, mpiMissing, rankJson } from './dist-checks.js';
import { buildFakeNccl, hasGxx } from './dist-fake-nccl.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const WORKER = path.join(HERE, 'dist-nccl-worker.js');
const code = (c: string, re?: RegExp) => (e: unknown) => e instanceof HiermemError && e.code === c && (!re || re.test(e.message));

const SKIP = hasGxx ? mpiMissing('the double uses Open MPI\'s ABI') : 'g++ not found: cannot build the NCCL test double';

test('NCCL: a missing library is refused naming the package; the functions check arguments and refuse before init', { skip: hasGxx ? false : 'g++ not found' }, async () => {
  assert.equal(ncclVersionText(21903), '2.19.3');
  assert.throws(() => openNcclLibrary('/nonexistent/libnccl.so.2'), code('E_BACKEND_UNAVAILABLE', /libnccl2/));
  const n = nativeNccl();
  assert.throws(() => n.ncclInit(), code('E_BACKEND_UNAVAILABLE'));
  assert.throws(() => n.ncclAllReduceDevice(5 as unknown as bigint, 1, false), code('E_INVALID_ARGUMENT'));
  assert.throws(() => n.ncclAllReduceDevice(0n, 1, false), code('E_INVALID_ARGUMENT'));
  assert.throws(() => n.ncclAllReduceHost(new Float64Array(2) as unknown as Float32Array, false), code('E_INVALID_ARGUMENT'));
  await assert.rejects(n.ncclAllReduceHost(new Float32Array(2), false), code('E_BACKEND_UNAVAILABLE'));
  const dir = await mkdtemp(path.join(tmpdir(), 'hm-nccl-'));
  try {
    const lib = openNcclLibrary(buildFakeNccl(dir));
    assert.deepEqual([lib.version, lib.fake], [21903, true]);
    assert.equal(n.ncclStatus().initialized, false);
    assert.throws(() => n.ncclInit(), code('E_BACKEND_UNAVAILABLE', /initialise MPI first/));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('NCCL over MPI (2 ranks, the double): one unique id from rank 0 on both ranks; all-reduces equal the reference', { skip: SKIP ?? false, timeout: 60_000 }, async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'hm-nccl-'));
  try {
    const lib = buildFakeNccl(dir);
    const log = path.join(dir, 'nccl.log');
    const r = await launch(2, [WORKER, dir, lib], 45_000,
      { ...process.env, HIERMEM_FAKE_NCCL_LOG: log, OMPI_MCA_btl_vader_single_copy_mechanism: 'none' });
    assert.equal(r.code, 0, r.stderr);
    const [a, b] = [await rankJson<Record<string, unknown>>(dir, 0), await rankJson<Record<string, unknown>>(dir, 1)];
    assert.deepEqual({ ...a, rank: 0 }, { ...b, rank: 0 }, 'both ranks: the same id and the same bits');
    const lines = (await readFile(log, 'utf8')).trim().split('\n');
    const ids = lines.filter((l) => l.startsWith('id ')).map((l) => l.split(' ')[3]);
    const inits = lines.filter((l) => l.startsWith('init ')).map((l) => l.split(' '));
    assert.equal(ids.length, 1, 'ncclGetUniqueId ran once (rank 0)');
    assert.deepEqual(inits.map((l) => l[1]).sort(), ['0', '1']);
    assert.ok(inits.every((l) => l[2] === '2' && l[3] === ids[0]), 'every rank initialised with rank 0\'s id');
    assert.equal(a.uniqueId, ids[0]);
    for (const n of [1, 7, 1001, 65537]) {
      const sum = orderedSum([rankData(0, n), rankData(1, n)]);
      assert.equal(a[`sum${n}`], sha(sum), `sum of ${n}`);
      assert.equal(a[`mean${n}`], sha(sum.map((x) => Math.fround(x / 2))), `mean of ${n}`);
    }
    assert.equal(a.device33, sha(orderedSum([rankData(0, 33), rankData(1, 33)])));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
