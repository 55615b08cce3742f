/**
 * `hiermem eval`: fact-probe accuracy (--probes) or perplexity (--perplexity) of a checkpoint,
 * overall and per bucket. Parsing and printing only: the scoring lives in lib/eval/.
 */
import path from 'node:path';
import { type Command, Option } from 'commander';
import cliProgress from 'cli-progress';
import { HiermemError } from '../errors.js';
import { loadCheckpoint } from '../train/checkpoint.js';
import { loadHierarchicalCheckpoint } from '../train/memory-trainer.js';
import { TREE_FILE, resolveCheckpointPath } from '../train/run.js';
import { RetrievalTree } from '../retrieval/tree.js';
import { readProbes, scoreProbes, type ProbeResult } from '../eval/probes.js';
import {
  anchorPerplexityModel, evaluatePerplexity, memoryPerplexityModel, readPerplexityDocuments, type PerplexityResult, type PerplexityStats,
} from '../eval/perplexity.js';
import { readSafetensorsHeader } from '../io/safetensors.js';
import { checkSameTokenizer, type Tokenizer } from '../data/tokenizer.js';
import { loadHfTokenizer } from '../data/hf-tokenizer.js';
import { int } from './args.js';
import { limitVocab } from '../train/limit-vocab.js';
import { MANIFEST_KEY } from '../train/shard-checkpoint.js';

interface EvalFlags {
  ckpt: string; probes?: string; perplexity?: string; field: string; stride?: number; tokenizer?: string;
  memory: boolean; json: boolean; progress: boolean;
}

/** --tokenizer FILE: must be the checkpoint's own (E_CONFIG_INCOMPATIBLE otherwise); the checkpoint's is used either way. */
export async function checkGivenTokenizer(recorded: Tokenizer, file: string | undefined, ckpt: string): Promise<void> {
  if (file !== undefined) checkSameTokenizer(recorded, await loadHfTokenizer(file), ckpt);
}

function bar(what: string, enabled: boolean, total: number): cliProgress.SingleBar | null {
  if (!enabled) return null;
  const b = new cliProgress.SingleBar({ format: `eval  {bar} {value}/{total} ${what} | ETA {eta_formatted}`, noTTYOutput: true,
    notTTYSchedule: 10000, stream: process.stderr }, cliProgress.Presets.shades_classic);
  b.start(total, 0);
  return b;
}

async function probeEval(f: EvalFlags, file: string, memoryCkpt: boolean): Promise<ProbeResult> {
  const probes = await readProbes(f.probes!);
  const b = bar('probes', f.progress, probes.length);
  const tick = (n: number) => b?.update(n);
  try {
    if (memoryCkpt) {
      const ck = await loadHierarchicalCheckpoint(file, { maxBatch: 1 });
      await checkGivenTokenizer(ck.tokenizer, f.tokenizer, file);
      const tree = await RetrievalTree.load(path.join(path.dirname(file), TREE_FILE));
      const paths = await tree.assignTexts(probes.map((p) => p.prompt));
      return scoreProbes(probes, ck.tokenizer, (_, i) => limitVocab(ck.hm.logitsForPath(paths.subarray(i * tree.p, (i + 1) * tree.p)), ck.tokenizer.vocabSize), 12, tick);
    }
    const ck = await loadCheckpoint(file, { maxBatch: 1, withOptimizer: false });
    await checkGivenTokenizer(ck.tokenizer, f.tokenizer, file);
    return scoreProbes(probes, ck.tokenizer, () => limitVocab((ctx: Int32Array) => ck.model.nextTokenLogits(ctx), ck.tokenizer.vocabSize), 12, tick);
  } finally {
    b?.stop();
  }
}

async function perplexityEval(f: EvalFlags, file: string, memoryCkpt: boolean): Promise<PerplexityResult> {
  const docs = await readPerplexityDocuments(f.perplexity!, f.field);
  const b = bar('documents', f.progress, docs.length);
  const o = { ...(f.stride !== undefined ? { stride: f.stride } : {}), onProgress: (n: number) => b?.update(n) };
  try {
    if (memoryCkpt) {
      const ck = await loadHierarchicalCheckpoint(file, { maxBatch: 4 });
      await checkGivenTokenizer(ck.tokenizer, f.tokenizer, file);
      // each document routed by its own text; --no-memory keeps the routes (for the buckets) but not the blocks
      const tree = await RetrievalTree.load(path.join(path.dirname(file), TREE_FILE));
      const paths = await tree.assignTexts(docs.map((d) => d.text));
      const model = f.memory ? memoryPerplexityModel(ck.hm, paths) : anchorPerplexityModel(ck.hm.anchor);
      return await evaluatePerplexity(docs, ck.tokenizer, model, { ...o, paths: { paths, levels: tree.p } });
    }
    const ck = await loadCheckpoint(file, { maxBatch: 4, withOptimizer: false });
    await checkGivenTokenizer(ck.tokenizer, f.tokenizer, file);
    return await evaluatePerplexity(docs, ck.tokenizer, anchorPerplexityModel(ck.model), o);
  } finally {
    b?.stop();
  }
}

function statsLine(s: PerplexityStats): string {
  return `${s.nllPerToken.toFixed(4)} nats/token (perplexity ${s.perplexity.toFixed(3)}), ${s.bitsPerByte.toFixed(4)} bits/byte — ${s.documents} documents, ${s.tokens} tokens, ${s.bytes} bytes`;
}

async function cmdEval(f: EvalFlags): Promise<void> {
  if ((f.probes === undefined) === (f.perplexity === undefined)) {
    throw new HiermemError('E_INVALID_ARGUMENT', 'eval needs --probes <file> or --perplexity <file> (one of them)');
  }
  const file = await resolveCheckpointPath(f.ckpt);
  const meta = (await readSafetensorsHeader(file)).metadata;
  // a sharded checkpoint (MPI run) carries its manifest instead of a bank; every shard is opened
  const memoryCkpt = meta.memory_bank !== undefined || meta[MANIFEST_KEY] !== undefined;
  if (f.perplexity !== undefined) {
    const r = await perplexityEval(f, file, memoryCkpt);
    if (f.json) process.stdout.write(JSON.stringify(r) + '\n');
    else {
      process.stdout.write(`perplexity: ${statsLine(r.overall)}\n`);
      if (r.bucketing !== 'none') process.stdout.write(`  buckets (${r.bucketing === 'field' ? 'the "bucket" field' : 'by leaf frequency, B1 most → B5 least'}):\n`);
      for (const s of r.buckets) process.stdout.write(`  ${s.name}: ${statsLine(s)}\n`);
    }
    return;
  }
  const result = await probeEval(f, file, memoryCkpt);
  if (f.json) process.stdout.write(JSON.stringify(result) + '\n');
  else {
    process.stdout.write(`accuracy ${(100 * result.overall).toFixed(1)}% over ${result.n} probes\n`);
    for (const b of result.buckets) process.stdout.write(`  ${b.name}: ${(100 * b.accuracy).toFixed(1)}% (${b.n})\n`);
  }
}

export function registerEvalCommand(program: Command): void {
  program.command('eval')
    .description('fact-probe accuracy (--probes) or perplexity (--perplexity) of a checkpoint, overall and per bucket')
    .requiredOption('--ckpt <file>', 'checkpoint written by train, or its --out folder (a memory checkpoint routes each prompt or document through its tree)')
    .option('--probes <file>', 'JSONL: {"prompt", "answer", "bucket"?} per line')
    .option('--perplexity <file>', 'JSONL: {"text", "bucket"?} per line; NLL per token and bits per byte, per document, overall and per bucket')
    .option('--field <name>', 'with --perplexity: the JSONL field holding the text', 'text')
    .option('--stride <n>', 'with --perplexity: window advance for documents longer than the context (default seqLen/2)', int)
    .option('--tokenizer <file>', 'tokenizer.json you mean to use: checked against the one the checkpoint records (E_CONFIG_INCOMPATIBLE if another)')
    .addOption(new Option('--no-memory', 'with --perplexity on a memory checkpoint: the anchor alone (buckets still by route)'))
    .option('--json', 'print the result as one JSON object on stdout', false)
    .option('--no-progress', 'no progress bar')
    .action((f: EvalFlags) => cmdEval(f));
}
