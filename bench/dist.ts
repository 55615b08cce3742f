/**
 * `npm run bench -- --only=dist` (issue #14): a memory run at the 3.4M (`medium`) model spread over
 * 2 MPI ranks with the bank sharded by subtree, against the same run in 1 process; 1 thread per
 * rank (HIERMEM_THREADS=1). Rows:
 *   dist-scaling-efficiency   tokens/s of 2 ranks / (2 x tokens/s of 1 rank)        target >= 0.85
 *   dist-cpu-efficiency       the same in tokens per CPU-second (what scaling costs in work, whatever else runs)
 *   dist-bytes-per-step       bytes this rank's communicator sent per step (measured), vs the
 *                             analytic figure (anchor all-reduce + replicated blocks + the small gathers)
 *   dist-bytes-vs-plain-dp    measured / what a data-parallel run with a replicated bank sends
 *                             (it all-reduces every block the job fetched, besides the anchor)
 *   dist-bank-bytes-per-rank  bytes of the bank (weights + AdamW moments) a rank owns, vs the whole bank
 * Needs Open MPI's mpirun; without it the section says so and gives no rows.
 * `node dist/bench/dist.js worker <outFile> <mpi|none> <steps>` is one rank of the measurement.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { peerRow, type ContractRow } from './contract.js';
import { createCommunicator } from '../lib/dist/data-parallel.js';
import type { DistMode } from '../lib/dist/communicator.js';
import { ByteTokenizer } from '../lib/data/tokenizer.js';
import { MODEL_PRESETS } from '../lib/model/config.js';
import { RetrievalTree } from '../lib/retrieval/tree.js';
import { prepareRun } from '../lib/train/run.js';
import { isReplicatedLevel, ownedNodeRanges } from '../lib/memory/shard-plan.js';

const LEVELS = [64, 48];
const K = 8;
const BATCH = 4;
const WARMUP = 2;

/** Synthetic documents in K topics (each topic its own words), so the tree splits them by topic. */
function documents(n: number): string[] {
  let s = 12345;
  const rnd = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const topics = Array.from({ length: K }, (_, t) => Array.from({ length: 40 }, (_, w) => `t${t}w${w}`));
  const common = ['the', 'of', 'is', 'and', 'a', 'in', 'to', 'was'];
  return Array.from({ length: n }, (_, i) => {
    const words = topics[i % K]!;
    return Array.from({ length: 120 }, () => (rnd() < 0.3 ? common[Math.floor(rnd() * common.length)] : words[Math.floor(rnd() * words.length)])).join(' ') + '.';
  });
}

interface WorkerOut {
  ranks: number; rank: number; tokensPerSec: number; tokensPerCpuSec: number; bytesPerStep: number; anchorParams: number;
  shardedFloatsPerStep: number; replicatedFloatsPerStep: number; ownedBankBytes: number; bankBytes: number; rssBytes: number;
}

async function worker(out: string, mode: DistMode, steps: number): Promise<void> {
  const comm = createCommunicator(mode);
  const tok = new ByteTokenizer();
  const docs = documents(480);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'hm-bench-dist-'));
  try {
    const tree = (await RetrievalTree.fitTexts(docs, { k: K, p: 2, seed: 1 })).tree;
    let shardedFloats = 0, replicatedFloats = 0, counted = 0;
    const run = await prepareRun({
      tokenizer: tok, batchSize: BATCH, seed: 3, weightDecay: 0.1, ...(mode === 'mpi' ? { communicator: comm } : {}),
      anchor: { config: { ...MODEL_PRESETS.medium!, vocabSize: tok.vocabSize, seed: 1 } }, memory: { tree, levels: LEVELS },
      data: { documents: { train: docs, val: docs.slice(0, 8) } },
      onShardedStep: (r) => { counted++; if (counted > WARMUP) { shardedFloats += r.shardedFloats; replicatedFloats += r.replicatedFloats; } },
    });
    const T = run.model.config.seqLen;
    let t0 = 0, sent0 = 0, cpu0 = process.cpuUsage();
    await run.train({
      steps, batchSize: BATCH, lr: 1e-3, warmupSteps: 1, evalEvery: 0,
      onProgress: (e) => { if (e.step === WARMUP) { t0 = performance.now(); sent0 = comm.stats.bytesSent; cpu0 = process.cpuUsage(); } },
    });
    const measured = steps - WARMUP;
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const cpuSeconds = (cpu.user + cpu.system) / 1e6;
    const bank = run.memory!.hm.bank, plan = run.memory!.shardPlan;
    let owned = 0, total = 0;
    for (let level = 0; level <= bank.levels; level++) {
      if (level === bank.levels ? !bank.spec.generic : bank.spec.levels[level] === 0) continue;
      const nodes = level === bank.levels ? 1 : bank.spec.k ** (level + 1);
      const bytes = bank.blockFloats(level) * 4 * 3;
      total += nodes * bytes;
      if (!plan || isReplicatedLevel(plan, level)) owned += nodes * bytes;
      else for (const [a, b] of ownedNodeRanges(plan, comm.rank, level)) owned += (b - a) * bytes;
    }
    const res: WorkerOut = {
      ranks: comm.size, rank: comm.rank, tokensPerSec: (measured * BATCH * T) / seconds, tokensPerCpuSec: (measured * BATCH * T) / cpuSeconds, bytesPerStep: (comm.stats.bytesSent - sent0) / measured,
      anchorParams: run.model.paramCount, shardedFloatsPerStep: shardedFloats / measured, replicatedFloatsPerStep: replicatedFloats / measured,
      ownedBankBytes: owned, bankBytes: total, rssBytes: process.memoryUsage().rss,
    };
    writeFileSync(`${out}.${comm.rank}.json`, JSON.stringify(res));
    run.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
    comm.close();
  }
}

export interface DistBenchOptions { quick: boolean; log: (s: string) => void }

/** The rows (none, with a message, where mpirun is missing). */
export async function distRows(o: DistBenchOptions): Promise<ContractRow[]> {
  const v = spawnSync('mpirun', ['--version'], { encoding: 'utf8' });
  if (v.error || v.status !== 0 || !/Open MPI|OpenRTE/i.test(v.stdout + v.stderr)) {
    o.log('  dist: skipped (Open MPI\'s mpirun not found: apt-get install openmpi-bin)');
    return [];
  }
  const steps = o.quick ? 5 : 10;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'hm-bench-dist-'));
  const self = fileURLToPath(import.meta.url);
  const env = { ...process.env, HIERMEM_THREADS: '1', OMPI_MCA_btl_vader_single_copy_mechanism: 'none' };
  const root = process.getuid?.() === 0 ? ['--allow-run-as-root'] : [];
  try {
    o.log(`  dist: load before: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')} (1/5/15 min)`);
    const one = spawnSync(process.execPath, [self, 'worker', path.join(dir, 'one'), 'none', String(steps)], { env, encoding: 'utf8' });
    if (one.status !== 0) throw new Error(`1-rank run failed: ${one.stderr}`);
    const two = spawnSync('mpirun', ['-np', '2', '--oversubscribe', ...root, process.execPath, self, 'worker', path.join(dir, 'two'), 'mpi', String(steps)], { env, encoding: 'utf8' });
    if (two.status !== 0) throw new Error(`2-rank run failed: ${two.stderr}`);
    o.log(`  dist: load after: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
    const read = (f: string) => JSON.parse(readFileSync(path.join(dir, f), 'utf8')) as WorkerOut;
    const a = read('one.0.json'), r0 = read('two.0.json'), r1 = read('two.1.json');
    const job = r0.tokensPerSec + r1.tokensPerSec;
    const N = 2, ring = (2 * (N - 1)) / N;
    // analytic: anchor + replicated blocks all-reduced (ring), the (loss, norm, count) gather (6 floats), the id gather
    // (2 floats per replicated block; here the generic block alone is replicated, so its count is the blocks' share)
    const genericFloats = MODEL_PRESETS.medium!.nLayers! * 3 * LEVELS.reduce((x, y) => x + y, 0) * MODEL_PRESETS.medium!.dModel!;
    const replicatedBlocks = r0.replicatedFloatsPerStep / genericFloats;
    const analytic = ring * 4 * (r0.anchorParams + r0.replicatedFloatsPerStep) + (N - 1) * 4 * (6 + 2 * replicatedBlocks);
    const plainDp = ring * 4 * (r0.anchorParams + r0.replicatedFloatsPerStep + r0.shardedFloatsPerStep + r1.shardedFloatsPerStep);
    const measured = (r0.bytesPerStep + r1.bytesPerStep) / 2;
    o.log(`  dist: 1 rank ${a.tokensPerSec.toFixed(0)} tok/s (${a.tokensPerCpuSec.toFixed(0)} per CPU-s); 2 ranks ${r0.tokensPerCpuSec.toFixed(0)} / ${r1.tokensPerCpuSec.toFixed(0)} per CPU-s, ${r0.tokensPerSec.toFixed(0)} + ${r1.tokensPerSec.toFixed(0)} tok/s; ` +
      `sent ${measured.toFixed(0)} B/rank/step (analytic ${analytic.toFixed(0)}, plain data-parallel ${plainDp.toFixed(0)}); ` +
      `bank owned ${r0.ownedBankBytes} / ${r1.ownedBankBytes} of ${r0.bankBytes} B; RSS ${(r0.rssBytes / 2 ** 20).toFixed(0)} / ${(r1.rssBytes / 2 ** 20).toFixed(0)} MiB vs ${(a.rssBytes / 2 ** 20).toFixed(0)} MiB in 1 process`);
    // CPU time instead of wall time: what the scaling costs in work, whatever else the machine runs
    // (both ranks train the same tokens: the job's tokens per CPU-second is the harmonic mean of theirs)
    const jobPerCpu = 2 / (1 / r0.tokensPerCpuSec + 1 / r1.tokensPerCpuSec);
    const note = `medium (3.4M) + memories k ${K}, levels ${LEVELS.join(',')}, batch ${BATCH} x ${MODEL_PRESETS.medium!.seqLen} per rank, 1 thread per rank, ${steps - WARMUP} timed steps`;
    return [
      peerRow('dist-scaling-efficiency', 'ratio', job / (2 * a.tokensPerSec), 'hiermem-1-rank', 1, 0.85, { note: `${note}; ours = job tok/s / (2 x 1-rank tok/s) = ${job.toFixed(0)} / (2 x ${a.tokensPerSec.toFixed(0)})` }),
      peerRow('dist-cpu-efficiency', 'ratio', jobPerCpu / a.tokensPerCpuSec, 'hiermem-1-rank', 1, null, { note: `tokens per CPU-second (user + system) of the 2-rank job / of 1 rank = ${jobPerCpu.toFixed(0)} / ${a.tokensPerCpuSec.toFixed(0)}: the work scaling costs, robust to other load on the machine` }),
      peerRow('dist-bytes-per-step', 'bytes', measured, 'hiermem-analytic', analytic, null, { note: 'bytes the communicator sent per rank per step (ring all-reduce counts 2(N-1)/N of the buffer)' }),
      peerRow('dist-bytes-vs-plain-dp', 'bytes', measured, 'hiermem-plain-data-parallel', plainDp, null, { note: 'plain data-parallel: the bank replicated, every block the job fetched all-reduced with the anchor' }),
      peerRow('dist-bank-bytes-per-rank', 'bytes', Math.max(r0.ownedBankBytes, r1.ownedBankBytes), 'hiermem-whole-bank', r0.bankBytes, null, { note: 'weights + AdamW m, v of the blocks a rank owns (replicated levels included) vs the whole bank' }),
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === 'worker') {
  worker(process.argv[3]!, process.argv[4] as DistMode, Number(process.argv[5])).catch((e: unknown) => {
    process.stderr.write(`bench dist worker: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(2);
  });
}
