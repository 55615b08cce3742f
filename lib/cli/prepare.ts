/**
 * `hiermem prepare`: a corpus (files, folders, globs; text, JSONL, .gz, Parquet) → token shards and,
 * with a tree, packed training sequences on disk (lib/data/prepare.ts), with a progress bar and a
 * summary. Registered on the program by main.ts.
 */
import type { Command } from 'commander';
import { availableParallelism } from 'node:os';
import { HiermemError } from '../errors.js';
import { MODEL_PRESETS } from '../model/config.js';
import { prepareData, type PrepareProgress } from '../data/prepare.js';
import { loadHfTokenizer } from '../data/hf-tokenizer.js';
import type { CorpusFormat } from '../data/readers/index.js';
import { int, PhaseBars, skippedRecordLine, addCorpusOptions } from './args.js';

interface PrepareFlags {
  corpus: string[]; format: CorpusFormat; field: string; textColumn?: string; tree?: string; seqLen: number; out: string; threads: number;
  shardTokens: number; valFraction: number; skipBad: boolean; progress: boolean; json: boolean; tokenizer?: string;
}

async function cmdPrepare(f: PrepareFlags): Promise<void> {
  if (f.corpus.length === 0) throw new HiermemError('E_INVALID_ARGUMENT', 'prepare needs --corpus <file, folder or glob>');
  const valFraction = Number(f.valFraction);
  const bars = new PhaseBars<PrepareProgress['phase']>(f.progress);
  const onProgress = (e: PrepareProgress) => {
    bars.enter(e.phase, e.phase === 'tokenize'
      ? 'tokenize {bar} {percentage}% | {mbps} MB/s | {dps} docs/s | {docs} docs | ETA {eta_formatted}'
      : 'pack     {bar} {value}/{total} docs | {dps} docs/s | ETA {eta_formatted}',
    e.phase === 'tokenize' ? Math.max(1, e.totalBytes) : e.totalDocuments ?? 0, { mbps: '-', dps: '-', docs: 0 });
    const s = bars.seconds();
    if (e.phase === 'tokenize') {
      bars.update(Math.min(e.bytesRead, e.totalBytes), { mbps: (e.bytesRead / 1e6 / s).toFixed(1), dps: Math.round(e.documents / s).toLocaleString('en-US'), docs: e.documents.toLocaleString('en-US') });
    } else {
      bars.update(e.documents, { dps: Math.round(e.documents / s).toLocaleString('en-US') });
    }
  };
  let s;
  try {
    s = await prepareData({
      corpus: f.corpus, out: f.out, format: f.format, field: f.textColumn ?? f.field, skipBad: f.skipBad, threads: f.threads, shardTokens: f.shardTokens, valFraction,
      ...(f.tree !== undefined ? { tree: f.tree, seqLen: f.seqLen } : {}),
      ...(f.tokenizer !== undefined ? { tokenizer: await loadHfTokenizer(f.tokenizer) } : {}),
      onBadRecord: (r) => { if (f.skipBad && !f.json) process.stderr.write(skippedRecordLine(r)); },
      onProgress,
    });
  } finally {
    bars.stop();
  }
  if (f.json) {
    process.stdout.write(JSON.stringify(s) + '\n');
    return;
  }
  const n = (x: number) => x.toLocaleString('en-US');
  if (s.upToDate) {
    process.stderr.write(`hiermem: ${f.out} is already prepared from this corpus with these settings (${n(s.documents)} documents, ${n(s.tokens)} tokens)\n`);
    return;
  }
  const lines = [
    `hiermem: prepared ${n(s.documents)} documents, ${n(s.tokens)} tokens in ${s.shards} shards${s.resumedShards ? ` (${s.resumedShards} kept from an interrupted run)` : ''}`,
    s.sequences ? `  leaves: ${s.leavesUsed} of ${s.leaves} used; packed sequences: ${n(s.sequences.train)} train, ${n(s.sequences.val)} validation (seqLen ${f.seqLen})` : '  no tree: token shards only (train windows over the stream)',
    `  skipped records: ${n(s.skippedRecords)}; ${s.seconds.toFixed(1)} s; peak RSS ${(s.peakRssBytes / 2 ** 20).toFixed(0)} MiB; wrote ${f.out}`,
  ];
  process.stderr.write(lines.join('\n') + '\n');
}

/** Adds `prepare` to the program. */
export function registerPrepareCommand(program: Command): void {
  addCorpusOptions(program.command('prepare'))
    .description('tokenise a corpus once into memory-mappable token shards (with --tree: routed and packed per leaf) for train --data')
    .option('--tree <file>', 'a retrieval tree from `hiermem cluster`: route every document and pack sequences per leaf')
    .option('--tokenizer <file>', 'a Hugging Face tokenizer.json (default: bytes); train --data then uses it')
    .option('--seq-len <n>', 'length of packed sequences (the model\'s seqLen)', int, MODEL_PRESETS.small!.seqLen)
    .requiredOption('--out <dir>', 'output folder (a rerun resumes an interrupted prepare)')
    .option('--threads <n>', 'tokenising worker threads', int, Math.min(2, availableParallelism()))
    .option('--shard-tokens <n>', 'tokens per shard', int, 1 << 24)
    .option('--val-fraction <x>', 'held-out share of documents (the last ones)', '0.05')
    .option('--skip-bad', 'skip bad records (reported and counted) instead of failing', false)
    .option('--no-progress', 'no progress bar')
    .option('--json', 'print the summary as one JSON line on stdout', false)
    .action((opts: PrepareFlags) => cmdPrepare(opts));
}
