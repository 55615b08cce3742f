/**
 * Trains a byte-level BPE tokenizer (GPT-2 style: every byte is a token, so any text encodes and
 * decodes exactly) on a user's documents and returns a tokenizer.json that Hugging Face's own
 * libraries load (Rust/Python `tokenizers`, transformers' PreTrainedTokenizerFast, and
 * @huggingface/tokenizers, which hiermem encodes with).
 *
 * The merges are learnt by Hugging Face's Rust trainer (`tokenizers` npm package, in a child
 * process). Its JS API fixes the vocabulary at 30,000, so the tokenizer kept is the first merges
 * in learnt order: a BPE's merges are ranked, and a prefix of them with the tokens they produce is
 * itself a valid BPE, the one training would have stopped at.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { HiermemError } from '../errors.js';
import { HfTokenizer } from './hf-tokenizer.js';

/** The byte-level alphabet: the 256 bytes as the printable characters GPT-2 maps them to. */
export function byteLevelAlphabet(): string[] {
  const out: string[] = [];
  let shifted = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    out.push(String.fromCodePoint(printable ? b : 256 + shifted++));
  }
  return out;
}

/** Ids 0 and 1: end of text (GPT-2's name, which HfTokenizer finds without a tokenizer_config.json) and padding. */
export const SPECIAL_TOKENS: readonly string[] = Object.freeze(['<|endoftext|>', '<|pad|>']);
/** The native trainer's fixed vocabulary plus our special tokens. */
export const MAX_TRAINED_VOCAB = 30_000;

export interface TrainTokenizerOptions {
  /** Tokens in all, the 2 special tokens and the 256 bytes included (258..30,000). */
  vocabSize: number;
}

export interface TrainedTokenizer {
  /** The tokenizer.json object (write it with JSON.stringify). */
  json: Record<string, unknown>;
  tokenizer: HfTokenizer;
  /** May be below the asked vocabSize when the corpus has fewer distinct merges to learn. */
  vocabSize: number;
  merges: number;
}

/** Trains on `texts` (documents; at least one non-empty). Bad options → E_INVALID_ARGUMENT; the native library missing or failing → E_NATIVE_UNAVAILABLE. */
export async function trainByteLevelBpe(texts: readonly string[], o: TrainTokenizerOptions): Promise<TrainedTokenizer> {
  const specials = [...SPECIAL_TOKENS];
  const floor = 256 + specials.length;
  if (!Number.isInteger(o.vocabSize) || o.vocabSize < floor || o.vocabSize > MAX_TRAINED_VOCAB) {
    throw new HiermemError('E_INVALID_ARGUMENT', `tokenizer vocab must be an integer in ${floor}..${MAX_TRAINED_VOCAB} (256 bytes + ${specials.length} special tokens at least; the trainer's JS API stops at 30,000), got ${o.vocabSize}`);
  }
  if (!texts.some((t) => t.length > 0)) throw new HiermemError('E_INVALID_ARGUMENT', 'no text to train a tokenizer on (empty corpus)');
  const dir = await mkdtemp(path.join(tmpdir(), 'hiermem-bpe-'));
  try {
    const corpus = path.join(dir, 'corpus.txt'), raw = path.join(dir, 'raw.json');
    await writeFile(corpus, texts.join('\n'));
    await runChild(corpus, raw);
    const trained = JSON.parse(await readFile(raw, 'utf8')) as Record<string, unknown>;
    return truncate(trained, specials, o.vocabSize);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function runChild(corpus: string, out: string): Promise<void> {
  const script = fileURLToPath(new URL('./hf-tokenizer-train-child.js', import.meta.url));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, corpus, out], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (s: string) => { err = (err + s).slice(-4000); });
    child.on('error', (e) => reject(new HiermemError('E_NATIVE_UNAVAILABLE', `cannot start the tokenizer trainer: ${e.message}`, { cause: e })));
    child.on('close', (code, signal) => {
      if (code === 0) resolve();
      else if (code === 3) {
        reject(new HiermemError('E_BACKEND_UNAVAILABLE', 'tokenizer training uses Hugging Face\'s Rust trainer from the optional package ' +
          '"tokenizers", which is not installed: run "npm install tokenizers@0.23.2" (loading and using a tokenizer.json needs only ' +
          `the built-in @huggingface/tokenizers). ${err.trim().split('\n').slice(-1).join(' ')}`));
      } else reject(new HiermemError('E_NATIVE_UNAVAILABLE', `the tokenizer trainer (Hugging Face tokenizers, native) failed (${signal ?? `exit ${code}`}): ${err.trim().split('\n').slice(-3).join(' ')}`));
    });
  });
}

/** Specials, then the 256 byte characters, then merge results in learnt order until `vocabSize`. */
function truncate(trained: Record<string, unknown>, specials: string[], vocabSize: number): TrainedTokenizer {
  const model = trained.model as { merges?: unknown } | undefined;
  const learnt = Array.isArray(model?.merges) ? model.merges : [];
  const vocab: Record<string, number> = Object.create(null) as Record<string, number>;
  let n = 0;
  const add = (tok: string) => { if (!(tok in vocab)) vocab[tok] = n++; };
  for (const s of specials) add(s);
  for (const c of byteLevelAlphabet()) add(c);
  const merges: [string, string][] = [];
  for (const m of learnt) {
    if (n >= vocabSize) break;
    // tokenizers >= 0.20 writes [a, b]; older versions "a b" (byte-level tokens hold no space)
    const pair = Array.isArray(m) ? m : typeof m === 'string' ? m.split(' ') : [];
    const [a, b] = pair as unknown[];
    if (pair.length !== 2 || typeof a !== 'string' || typeof b !== 'string' || !(a in vocab) || !(b in vocab)) {
      throw new HiermemError('E_NATIVE_UNAVAILABLE', `the tokenizer trainer wrote an unexpected merge ${JSON.stringify(m)}`);
    }
    merges.push([a, b]);
    add(a + b);
  }
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const json: Record<string, unknown> = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specials.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: null,
    decoder: byteLevel,
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab: { ...vocab }, merges,
    },
  };
  return { json, tokenizer: new HfTokenizer(json, {}, 'trained tokenizer'), vocabSize: n, merges: merges.length };
}
