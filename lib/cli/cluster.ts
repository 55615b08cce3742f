/**
 * `hiermem cluster`: fits the retrieval tree on a bounded sample of the corpus and routes every
 * document in a streaming pass (lib/retrieval/cluster-corpus.ts), with progress and a summary.
 * Registered on the program by main.ts.
 */
import type { Command } from 'commander';
import { availableParallelism } from 'node:os';
import { HiermemError } from '../errors.js';
import { clusterCorpus, DEFAULT_CLUSTER_SAMPLE, type ClusterProgress } from '../retrieval/cluster-corpus.js';
import type { CorpusFormat } from '../data/readers/index.js';
import { int, PhaseBars, skippedRecordLine, addCorpusOptions } from './args.js';

interface ClusterFlags {
  corpus: string[]; format: CorpusFormat; field: string; textColumn?: string; k: number; levels: number; seed: number; sample: number;
  threads: number; skipBad: boolean; out: string; json: boolean; progress: boolean;
}

async function cmdCluster(f: ClusterFlags): Promise<void> {
  if (f.corpus.length === 0) throw new HiermemError('E_INVALID_ARGUMENT', 'cluster needs --corpus <file, folder or glob>');
  // `--format text` was the default before 'auto' existed, and it read a .jsonl file as JSONL
  const format: CorpusFormat = f.format === 'text' && f.corpus.every((c) => c.endsWith('.jsonl')) ? 'jsonl' : f.format;
  const bars = new PhaseBars<ClusterProgress['phase']>(f.progress && !f.json);
  const onProgress = (e: ClusterProgress) => {
    if (e.phase === 'fit') {
      if (bars.enter('fit', null, 0)) process.stderr.write(`hiermem: fitting the tree on a sample of ${Math.min(e.documents, f.sample).toLocaleString('en-US')} of ${e.documents.toLocaleString('en-US')} documents\n`);
      return;
    }
    bars.enter(e.phase, e.phase === 'sample'
      ? 'sample   {bar} {percentage}% | {mbps} MB/s | {docs} docs | ETA {eta_formatted}'
      : 'assign   {bar} {value}/{total} docs | {dps} docs/s | ETA {eta_formatted}',
    e.phase === 'sample' ? Math.max(1, e.totalBytes) : e.totalDocuments ?? 0, { mbps: '-', dps: '-', docs: 0 });
    const s = bars.seconds();
    if (e.phase === 'sample') bars.update(Math.min(e.bytesRead, e.totalBytes), { mbps: (e.bytesRead / 1e6 / s).toFixed(1), docs: e.documents.toLocaleString('en-US') });
    else bars.update(e.documents, { dps: Math.round(e.documents / s).toLocaleString('en-US') });
  };
  let s;
  try {
    s = await clusterCorpus({
      corpus: f.corpus, out: f.out, format, field: f.textColumn ?? f.field, skipBad: f.skipBad, k: f.k, levels: f.levels, seed: f.seed,
      sample: f.sample, threads: f.threads, onProgress,
      onBadRecord: (r) => { if (f.skipBad && !f.json) process.stderr.write(skippedRecordLine(r)); },
    });
  } finally {
    bars.stop();
  }
  if (f.json) {
    process.stdout.write(JSON.stringify(s) + '\n');
    return;
  }
  const n = (x: number) => x.toLocaleString('en-US');
  process.stderr.write(`hiermem: clustered ${n(s.documents)} documents into ${s.leavesUsed} of ${s.leaves} leaves (k ${s.k}, ${s.levels} levels); wrote ${s.out}\n`
    + `  fitted on ${n(s.sampled)} documents in ${s.fitSeconds.toFixed(1)} s; assigned in ${s.assignSeconds.toFixed(1)} s; largest leaf ${n(s.largestLeaf)} documents (${s.largestOverMean.toFixed(2)}x the mean)`
    + `${s.skippedRecords ? `; skipped records ${n(s.skippedRecords)}` : ''}; peak RSS ${(s.peakRssBytes / 2 ** 20).toFixed(0)} MiB\n`);
}

/** Adds `cluster` to the program. */
export function registerClusterCommand(program: Command): void {
  addCorpusOptions(program.command('cluster'))
    .description('fit the retrieval tree (hierarchical k-means over document embeddings) on a sample, then route every document')
    .option('--k <n>', 'branching factor', int, 8)
    .option('--levels <p>', 'tree depth', int, 2)
    .option('--seed <n>', 'seed', int, 1)
    .option('--sample <n>', 'documents the tree is fitted on (a seeded sample; every document is then routed)', int, DEFAULT_CLUSTER_SAMPLE)
    .option('--threads <n>', 'routing worker threads', int, Math.min(2, availableParallelism()))
    .option('--skip-bad', 'skip bad records (reported and counted) instead of failing', false)
    .requiredOption('--out <file>', 'output tree (.safetensors)')
    .option('--no-progress', 'no progress bars')
    .option('--json', 'print a summary as JSON', false)
    .action((opts: ClusterFlags) => cmdCluster(opts));
}
