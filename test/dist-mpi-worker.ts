/**
 * One rank of test/dist-mpi.test.ts, started by mpirun (or alone, for the one-process reference).
 * `node dist-mpi-worker.js <mode> <outDir> [args]` writes rank-<r>.json (and, for train, the
 * parameters as rank-<r>.f32) into outDir:
 *   collectives              allReduceSum / allReduceMean / allGather / broadcast of rankData
 *   slice <dist> <b> <steps> data-parallel steps, each rank a slice of one global batch (same on any rank count)
 *   run <steps> [killAt] [resume]  prepareRun({ communicator }) as the CLI runs it; rank 1 SIGKILLs itself at
 *                            killAt; `resume` continues outDir's checkpoint
 *   api <steps>              the public train({ dist }) with a rank-seeded sampler
 */
import { writeFile } from 'node:fs/promises';
import { HiermemError } from '../lib/errors.js';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { createCommunicator, gradientReducer, rankSeed } from '../lib/dist/data-parallel.js';
import type { Communicator, DistMode } from '../lib/dist/communicator.js';
import { AnchorModel, type Batch } from '../lib/model/anchor.js';
import { AdamW } from '../lib/train/adamw.js';
import { anchorStepper, train, trainLoop, type Source } from '../lib/train/trainer.js';
import { prepareRun } from '../lib/train/run.js';
import { ByteTokenizer } from '../lib/data/tokenizer.js';
import { WindowSampler } from '../lib/data/windows.js';
import { mulberry32 } from './helpers.js';

export const TINY = { dModel: 32, nLayers: 2, nHeads: 2, headDim: 16, ffnHidden: 64, seqLen: 32, seed: 3 };

/** Rank r's input of the collectives check: n floats of mixed magnitude (sums round differently by order). */
export function rankData(rank: number, n: number): Float32Array {
  const rnd = mulberry32(1000 + rank);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (rnd() - 0.5) * 10 ** Math.floor(rnd() * 6 - 3);
  return out;
}

/** Synthetic documents: sentences over a small vocabulary (deterministic). */
export function documents(count: number): string[] {
  const words = ['osmium', 'gold', 'peru', 'lima', 'atomic', 'number', 'capital', 'is', 'the', 'of', 'iron', 'chile'];
  const rnd = mulberry32(7);
  return Array.from({ length: count }, () => Array.from({ length: 30 }, () => words[Math.floor(rnd() * words.length)]).join(' ') + '.');
}

export function sha(a: Float32Array): string {
  return createHash('sha256').update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)).digest('hex');
}

/** Every rank draws the same global batch (same seed) and keeps its own rows. */
export function sliceSource(stream: Int32Array, seqLen: number, comm: Communicator): Source<Batch> {
  const sampler = new WindowSampler(stream, seqLen, 11);
  return {
    next(b) {
      const g = sampler.next(b * comm.size);
      const lo = comm.rank * b * seqLen, hi = lo + b * seqLen;
      return { tokens: g.tokens.slice(lo, hi), targets: g.targets.slice(lo, hi), batchSize: b };
    },
  };
}

async function collectives(comm: Communicator, out: string): Promise<void> {
  const res: Record<string, string | number[]> = {};
  for (const n of [1, 7, 1001, 65537]) { // lengths that do and do not divide by the rank count
    const s = rankData(comm.rank, n);
    await comm.allReduceSum(s);
    res[`sum${n}`] = sha(s);
    const m = rankData(comm.rank, n);
    await comm.allReduceMean(m);
    res[`mean${n}`] = sha(m);
  }
  res.gather = Array.from(await comm.allGather(new Float32Array([comm.rank, 10 + comm.rank])));
  const b = new Float32Array(3).fill(comm.rank === 1 ? 42 : -1);
  await comm.broadcast(b, 1);
  res.bcast = Array.from(b);
  await comm.barrier();
  await writeFile(path.join(out, `rank-${comm.rank}.json`), JSON.stringify(res));
}

async function slice(comm: Communicator, out: string, b: number, steps: number): Promise<void> {
  const tok = new ByteTokenizer();
  const model = AnchorModel.create({ ...TINY, vocabSize: tok.vocabSize }, { maxBatch: b });
  const opt = new AdamW(model, { weightDecay: 0.1 });
  const stream = tok.encode(documents(40).join('\n'));
  const stepper = anchorStepper(model, opt, tok, comm.size > 1 ? { reduceGradients: gradientReducer(comm) } : {});
  const hist = await trainLoop(stepper, sliceSource(stream, TINY.seqLen, comm), undefined, undefined,
    { steps, batchSize: b, lr: 1e-3, minLr: 1e-4, warmupSteps: 0, evalEvery: 0 }, TINY.seqLen);
  await writeFile(path.join(out, `rank-${comm.rank}.f32`), model.params);
  await writeFile(path.join(out, `rank-${comm.rank}.json`), JSON.stringify({ losses: hist.losses, params: sha(model.params) }));
}

async function run(comm: Communicator, out: string, steps: number, killAt: number, resume: boolean): Promise<void> {
  const tok = new ByteTokenizer();
  const docs = documents(60);
  const r = await prepareRun({
    tokenizer: tok, batchSize: 2, seed: 5, weightDecay: 0.1, communicator: comm,
    ...(resume ? { resume: path.join(out, 'ck.safetensors') } : { anchor: { config: { ...TINY, vocabSize: tok.vocabSize } } }),
    data: { documents: { train: docs.slice(6), val: docs.slice(0, 6) } },
  });
  const losses: number[] = [];
  const hist = await r.train({
    steps, batchSize: 2, lr: 2e-3, evalEvery: 0, checkpointEvery: 2, checkpointPath: path.join(out, 'ck.safetensors'),
    onProgress: (e) => {
      losses.push(e.loss);
      if (comm.rank === 1 && e.step === killAt) process.kill(process.pid, 'SIGKILL');
    },
  });
  await writeFile(path.join(out, `rank-${comm.rank}.json`), JSON.stringify({ losses, steps: hist.steps.length, params: sha(r.model.params) }));
}

async function api(comm: Communicator, out: string, steps: number): Promise<void> {
  const tok = new ByteTokenizer();
  const model = AnchorModel.create({ ...TINY, vocabSize: tok.vocabSize }, { maxBatch: 2 });
  const optimizer = new AdamW(model, { weightDecay: 0.1 });
  const data = new WindowSampler(tok.encode(documents(40).join('\n')), TINY.seqLen, rankSeed(4, comm.rank));
  const hist = await train({ model, optimizer, tokenizer: tok, train: data, dist: comm }, { steps, batchSize: 2, evalEvery: 0 });
  await writeFile(path.join(out, `rank-${comm.rank}.json`), JSON.stringify({ losses: hist.losses, params: sha(model.params) }));
}

async function main(): Promise<void> {
  const [mode, out, ...rest] = process.argv.slice(2);
  const dist: DistMode = mode === 'slice' && rest[0] === 'none' ? 'none' : 'mpi';
  const comm = createCommunicator(dist);
  if (mode === 'collectives') await collectives(comm, out!);
  else if (mode === 'slice') await slice(comm, out!, Number(rest[1]), Number(rest[2]));
  else if (mode === 'run') await run(comm, out!, Number(rest[0]), Number(rest[1] ?? -1), rest[2] === 'resume');
  else if (mode === 'api') await api(comm, out!, Number(rest[0]));
  else throw new Error(`unknown mode ${mode}`);
  comm.close();
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((e: unknown) => {
    process.stderr.write(`worker: ${e instanceof HiermemError ? `${e.code}: ` : ''}${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(2);
  });
}
