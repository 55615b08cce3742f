/**
 * One rank of test/dist-nccl.test.ts (and of bench/gpu.sh's multi-GPU check), started by mpirun:
 * `node dist-nccl-worker.js <outDir> [libnccl]` bootstraps NCCL over MPI, all-reduces rankData
 * (sum and mean) through NCCL, and writes rank-<r>.json: the unique id, NCCL's version and the
 * results' checksums. With the test double the buffers are host memory; with a real libnccl they
 * are staged through device memory.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MpiCommunicator } from '../lib/dist/mpi.js';
import { NcclCommunicator, nativeNccl } from '../lib/dist/nccl.js';
import { rankData, sha } from './dist-mpi-worker.js';

async function main(): Promise<void> {
  const [out, lib] = process.argv.slice(2);
  const mpi = MpiCommunicator.create();
  const comm = NcclCommunicator.create(mpi, lib ? { libPath: lib } : {});
  const res: Record<string, unknown> = { rank: comm.rank, size: comm.size, uniqueId: comm.uniqueId(), version: comm.version, fake: comm.fake };
  for (const n of [1, 7, 1001, 65537]) {
    const s = rankData(comm.rank, n);
    await comm.allReduceThroughDevice(s, false);
    res[`sum${n}`] = sha(s);
    res[`head${n}`] = Array.from(s.subarray(0, 8)); // NCCL's own summation order: compared within tolerance
    const m = rankData(comm.rank, n);
    await comm.allReduceThroughDevice(m, true);
    res[`mean${n}`] = sha(m);
  }
  if (comm.fake) {
    // the device-pointer path: the double's device memory is host memory
    const d = rankData(comm.rank, 33);
    await comm.allReduceDevice(nativeNccl().ncclHostAddress(d), d.length, false);
    res.device33 = sha(d);
  }
  await comm.barrier();
  await writeFile(path.join(out!, `rank-${comm.rank}.json`), JSON.stringify(res));
  comm.close();
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((e: unknown) => {
    process.stderr.write(`nccl worker: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(2);
  });
}
