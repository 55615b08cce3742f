/**
 * One rank of test/dist-nccl-cuda.test.ts (and of bench/gpu.sh --nccl), started by mpirun (or alone):
 * `node dist-nccl-cuda-worker.js <outDir> <b> <steps> [libnccl]` trains the tiny anchor on the
 * CUDA backend, each rank a slice of one global batch of b x ranks rows; with mpirun the device
 * gradients are averaged by NCCL (bootstrapped over MPI) between backward and the AdamW step. It
 * writes rank-<r>.json (losses, parameter checksum) and rank-<r>.f32 (the parameters), as
 * test/dist-mpi-worker.ts's 'slice' mode does, so test/dist-checks.ts compares them.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { HiermemError } from '../lib/errors.js';
import { AnchorModel } from '../lib/model/anchor.js';
import { AdamW } from '../lib/train/adamw.js';
import { anchorStepper, trainLoop } from '../lib/train/trainer.js';
import { ByteTokenizer } from '../lib/data/tokenizer.js';
import { LocalCommunicator, launcherWorldSize, type Communicator } from '../lib/dist/communicator.js';
import { MpiCommunicator } from '../lib/dist/mpi.js';
import { NcclCommunicator } from '../lib/dist/nccl.js';
import { dataParallelReducers, rankZeroSaves } from '../lib/dist/data-parallel.js';
import { TINY, documents, sha, sliceSource } from './dist-mpi-worker.js';


async function main(): Promise<void> {
  const [out, b, steps, lib] = process.argv.slice(2);
  const launched = (launcherWorldSize() ?? 1) > 1;
  const comm: Communicator = launched ? NcclCommunicator.create(MpiCommunicator.create(), lib ? { libPath: lib } : {}) : new LocalCommunicator();
  const tok = new ByteTokenizer();
  const model = AnchorModel.create({ ...TINY, vocabSize: tok.vocabSize }, { maxBatch: Number(b) });
  const opt = new AdamW(model, { weightDecay: 0.1 });
  const stream = tok.encode(documents(40).join('\n'));
  const local = anchorStepper(model, opt, tok, { backend: 'cuda', ...(comm.kind !== 'local' ? dataParallelReducers(comm) : {}) });
  const stepper = rankZeroSaves(local, comm);
  try {
    const hist = await trainLoop(stepper, sliceSource(stream, TINY.seqLen, comm), undefined, undefined,
      { steps: Number(steps), batchSize: Number(b), lr: 1e-3, minLr: 1e-4, warmupSteps: 0, evalEvery: 0 }, TINY.seqLen);
    await writeFile(path.join(out!, `rank-${comm.rank}.f32`), model.params);
    await writeFile(path.join(out!, `rank-${comm.rank}.json`), JSON.stringify({ losses: hist.losses, params: sha(model.params), backend: hist.backend, sent: comm.stats.bytesSent }));
  } finally {
    stepper.dispose?.();
  }
  await comm.barrier();
  comm.close();
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((e: unknown) => {
    process.stderr.write(`nccl cuda worker: ${e instanceof HiermemError ? `${e.code}: ` : ''}${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(2);
  });
}
