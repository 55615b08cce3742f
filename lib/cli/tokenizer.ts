/**
 * `hiermem tokenizer train`: a byte-level BPE tokenizer.json trained on the user's corpus
 * (lib/data/hf-tokenizer-train.ts), for `train --tokenizer`.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { type Command, Option } from 'commander';
import { HiermemError } from '../errors.js';
import { trainByteLevelBpe } from '../data/hf-tokenizer-train.js';
import { loadDocs } from './train.js';
import { int } from './args.js';

interface TokenizerTrainFlags { corpus: string; format: string; field: string; vocab: number; out: string; json: boolean }

async function cmdTokenizerTrain(f: TokenizerTrainFlags): Promise<void> {
  const format = f.format === 'text' && f.corpus.endsWith('.jsonl') ? 'jsonl' : f.format;
  const docs = await loadDocs(f.corpus, format, f.field);
  const t0 = performance.now();
  const r = await trainByteLevelBpe(docs, { vocabSize: f.vocab });
  if (path.dirname(f.out) !== '.') await mkdir(path.dirname(f.out), { recursive: true });
  try {
    await writeFile(f.out, JSON.stringify(r.json));
  } catch (e) {
    throw new HiermemError('E_IO', `cannot write ${f.out}: ${(e as Error).message}`, { cause: e });
  }
  const summary = { documents: docs.length, vocabSize: r.vocabSize, requested: f.vocab, merges: r.merges, sha256: r.tokenizer.sha256,
    seconds: (performance.now() - t0) / 1000, out: f.out };
  if (f.json) process.stdout.write(JSON.stringify(summary) + '\n');
  else {
    const short = r.vocabSize < f.vocab ? ` (the corpus had merges for only ${r.vocabSize} of the ${f.vocab} asked)` : '';
    process.stderr.write(`hiermem: trained a byte-level BPE of ${r.vocabSize} tokens${short} on ${docs.length} documents in ${summary.seconds.toFixed(1)} s; wrote ${f.out}\n`);
  }
}

export function registerTokenizerCommand(program: Command): void {
  const tok = program.command('tokenizer').description('Hugging Face tokenizer.json tokenizers (for train --tokenizer)');
  tok.command('train')
    .description('train a byte-level BPE (GPT-2 style: exact round trip of any text) on a corpus; writes a tokenizer.json Hugging Face libraries load')
    .requiredOption('--corpus <file>', 'text or JSONL corpus')
    .addOption(new Option('--format <format>', 'corpus format').choices(['text', 'lines', 'jsonl']).default('text'))
    .option('--field <name>', 'JSONL field holding the text', 'text')
    .option('--vocab <n>', 'vocabulary size: 256 bytes + <|endoftext|> + <|pad|> + merges (258..30000)', int, 8192)
    .requiredOption('--out <file>', 'output tokenizer.json')
    .option('--json', 'print a summary as one JSON line on stdout', false)
    .action((f: TokenizerTrainFlags) => cmdTokenizerTrain(f));
}
