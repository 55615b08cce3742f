/**
 * Hugging Face `tokenizer.json` tokenizers (byte-level BPE as in GPT-2 / Llama-3 / Qwen / SmolLM,
 * and the SentencePiece-style BPE with byte fallback of Llama-2 / TinyLlama) behind the project's
 * Tokenizer interface. Encoding and decoding are Hugging Face's own TypeScript implementation
 * (@huggingface/tokenizers); nothing of BPE is reimplemented here.
 *
 * The record a checkpoint or prepared folder keeps (toJSON) embeds the whole tokenizer.json, so a
 * checkpoint is self-contained and two tokenizers are the same exactly when their sha256 agree.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Tokenizer as HfLibTokenizer } from '@huggingface/tokenizers';
import { HiermemError } from '../errors.js';
import type { DecodeOptions, Tokenizer, TokenizerJSON } from './tokenizer.js';

/** The few tokenizer_config.json fields that change what encode/decode do or which ids are special. */
export interface HfTokenizerConfig {
  eos_token?: string;
  bos_token?: string;
  pad_token?: string;
  clean_up_tokenization_spaces?: boolean;
}

export interface HfTokenizerRecord extends TokenizerJSON {
  type: 'hf';
  version: 1;
  /** sha256 of JSON.stringify({ tokenizer, config }): the identity compared between checkpoint and data. */
  sha256: string;
  /** The parsed tokenizer.json. */
  tokenizer: Record<string, unknown>;
  config: HfTokenizerConfig;
}

// Special tokens by the names the common model families give them, most specific first.
const EOT_NAMES = ['<|endoftext|>', '<|end_of_text|>', '</s>', '<|im_end|>', '<eos>', '<|eot_id|>'];
const PAD_NAMES = ['<|pad|>', '<pad>', '[PAD]', '<|finetune_right_pad_id|>'];
const BOS_NAMES = ['<|bos|>', '<s>', '<|begin_of_text|>', '<bos>'];
/** Encoded and decoded once at load, so a malformed file fails there rather than mid-training. */
const PROBE = 'Hello, world! 123 é 東京 😀\n';
/** Ids are stored as int32 and in uint32 token shards; anything near 2^31 is a broken file. */
const MAX_VOCAB = 1 << 24;

export class HfTokenizer implements Tokenizer {
  readonly name: string;
  readonly vocabSize: number;
  readonly eotId: number;
  readonly padId: number;
  readonly bosId?: number;
  readonly sha256: string;
  private readonly lib: HfLibTokenizer;
  private readonly record: HfTokenizerRecord;

  /** From a parsed tokenizer.json (and tokenizer_config.json fields); `source` names it in messages. Malformed → E_CONFIG_INVALID. */
  constructor(tokenizer: unknown, config: HfTokenizerConfig = {}, source = 'tokenizer.json') {
    const bad = (why: string, cause?: unknown): HiermemError =>
      new HiermemError('E_CONFIG_INVALID', `${source}: ${why}`, cause === undefined ? undefined : { cause });
    if (typeof tokenizer !== 'object' || tokenizer === null || Array.isArray(tokenizer)) throw bad('must be a JSON object');
    const tj = tokenizer as Record<string, unknown>;
    const model = tj.model;
    if (typeof model !== 'object' || model === null || Array.isArray(model)) throw bad('has no "model" object');
    const mtype = (model as Record<string, unknown>).type;
    // Only BPE: the Llama family (byte-level or SentencePiece-style with byte fallback) uses nothing else.
    if (mtype !== undefined && mtype !== 'BPE') throw bad(`model.type ${JSON.stringify(mtype)} is not supported (BPE only)`);
    if (!Array.isArray((model as Record<string, unknown>).merges)) throw bad('model.merges must be an array');
    // ids straight from the file: the library skips ids it cannot use instead of failing
    const m = model as { vocab: unknown };
    if (typeof m.vocab !== 'object' || m.vocab === null || Array.isArray(m.vocab)) throw bad('model.vocab must be an object of token → id');
    for (const [tok, id] of Object.entries(m.vocab)) {
      if (!Number.isInteger(id) || (id as number) < 0 || (id as number) >= MAX_VOCAB) throw bad(`model.vocab[${JSON.stringify(tok)}] is ${JSON.stringify(id)}, not an id in 0..${MAX_VOCAB - 1}`);
    }
    const cfg = cleanConfig(config, source);
    try {
      // The library defaults clean_up_tokenization_spaces to true (transformers' habit); Hugging
      // Face's Rust tokenizers never clean up, and exact round trips need it off unless asked for.
      this.lib = new HfLibTokenizer(tj, { clean_up_tokenization_spaces: false, ...cfg });
    } catch (e) {
      throw bad(`the tokenizer library cannot build it: ${(e as Error).message}`, e);
    }
    let maxId = -1;
    try {
      for (const id of this.lib.get_vocab(true).values()) {
        if (!Number.isInteger(id) || id < 0 || id >= MAX_VOCAB) throw bad(`token id ${String(id)} is not an integer in 0..${MAX_VOCAB - 1}`);
        if (id > maxId) maxId = id;
      }
    } catch (e) {
      if (e instanceof HiermemError) throw e;
      throw bad(`unreadable vocabulary: ${(e as Error).message}`, e);
    }
    if (maxId < 1) throw bad('the vocabulary holds fewer than 2 tokens');
    this.vocabSize = maxId + 1;
    const idOf = (name: string | undefined): number | undefined => (name === undefined ? undefined : this.lib.token_to_id(name));
    const first = (names: readonly string[]): number | undefined => names.map(idOf).find((id) => id !== undefined);
    const eot = idOf(cfg.eos_token) ?? first(EOT_NAMES);
    if (eot === undefined) throw bad(`no end-of-text token (looked for tokenizer_config eos_token and ${EOT_NAMES.join(', ')})`);
    this.eotId = eot;
    // A pad token only fills positions whose targets are ignored, so without one the eot serves.
    this.padId = idOf(cfg.pad_token) ?? first(PAD_NAMES) ?? eot;
    const bos = idOf(cfg.bos_token) ?? first(BOS_NAMES);
    if (bos !== undefined) this.bosId = bos;
    this.sha256 = createHash('sha256').update(JSON.stringify({ tokenizer: tj, config: cfg })).digest('hex');
    this.name = `hf:${this.sha256.slice(0, 12)}`;
    this.record = { type: 'hf', version: 1, sha256: this.sha256, tokenizer: tj, config: cfg };
    let probe: Int32Array;
    try {
      probe = this.encode(PROBE);
      this.decode(probe);
    } catch (e) {
      throw bad(`encoding a test text fails: ${(e as Error).message}`, e);
    }
    const out = probe.find((id) => !(id >= 0 && id < this.vocabSize));
    if (out !== undefined) throw bad(`encoding a test text yields id ${out}, outside the vocabulary`);
  }

  encode(text: string): Int32Array {
    if (typeof text !== 'string') throw new HiermemError('E_INVALID_ARGUMENT', `${this.name}.encode: expected a string, got ${typeof text}`);
    let ids: number[];
    try {
      // No BOS/EOS from the post-processor: like the byte tokenizer, encode gives the text's tokens
      // only; documents are separated by eotId where streams are built.
      ids = this.lib.encode(text, { add_special_tokens: false }).ids;
    } catch (e) {
      throw new HiermemError('E_CONFIG_INVALID', `${this.name}: the tokenizer cannot encode this text: ${(e as Error).message}`, { cause: e });
    }
    return Int32Array.from(ids);
  }

  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    const runs: number[][] = [[]];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i] as number;
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new HiermemError('E_TOKEN_OUT_OF_RANGE', `${this.name}.decode: id ${String(id)} at position ${i} is outside 0..${this.vocabSize - 1}`);
      }
      if (id === this.eotId && options.eotAsNewline === true) runs.push([]);
      else runs[runs.length - 1]!.push(id);
    }
    try {
      return runs.map((r) => (r.length ? this.lib.decode(r, { skip_special_tokens: true }) : '')).join('\n');
    } catch (e) {
      throw new HiermemError('E_CONFIG_INVALID', `${this.name}: the tokenizer cannot decode these ids: ${(e as Error).message}`, { cause: e });
    }
  }

  toJSON(): HfTokenizerRecord {
    return this.record;
  }

  /** Rebuilds a tokenizer from its record (checkpoint metadata, prepared manifest, worker init); a record whose hash does not match its contents → E_CONFIG_INVALID. */
  static fromRecord(obj: Record<string, unknown>): HfTokenizer {
    const cfg = obj.config;
    if (cfg !== undefined && (typeof cfg !== 'object' || cfg === null || Array.isArray(cfg))) {
      throw new HiermemError('E_CONFIG_INVALID', 'hf tokenizer record: config must be an object');
    }
    const t = new HfTokenizer(obj.tokenizer, (cfg ?? {}) as HfTokenizerConfig, 'hf tokenizer record');
    if (obj.sha256 !== t.sha256) throw new HiermemError('E_CONFIG_INVALID', `hf tokenizer record: sha256 ${String(obj.sha256)} does not match its contents (${t.sha256})`);
    return t;
  }
}

/**
 * Reads a tokenizer.json (a model folder's, or one `hiermem tokenizer train` wrote), with the
 * tokenizer_config.json beside it when there is one. A folder means its tokenizer.json.
 * Unreadable → E_IO; malformed → E_CONFIG_INVALID.
 */
export async function loadHfTokenizer(file: string): Promise<HfTokenizer> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EISDIR') return loadHfTokenizer(path.join(file, 'tokenizer.json'));
    throw new HiermemError('E_IO', `cannot read tokenizer ${file}: ${(e as Error).message}`, { cause: e });
  }
  const parsed = parseJson(text, file);
  let config: HfTokenizerConfig = {};
  const cfgFile = path.join(path.dirname(file), 'tokenizer_config.json');
  let cfgText: string | null = null;
  try {
    cfgText = await readFile(cfgFile, 'utf8');
  } catch {
    // no tokenizer_config.json: the defaults (special tokens found by name)
  }
  if (cfgText !== null) config = parseJson(cfgText, cfgFile) as HfTokenizerConfig;
  return new HfTokenizer(parsed, config, file);
}

function parseJson(text: string, source: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new HiermemError('E_CONFIG_INVALID', `${source}: not valid JSON (${(e as Error).message})`, { cause: e });
  }
}

/** Keeps the known fields; special tokens may be strings or AddedToken objects ({ content }). */
function cleanConfig(config: unknown, source: string): HfTokenizerConfig {
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    throw new HiermemError('E_CONFIG_INVALID', `${source}: tokenizer config must be a JSON object`);
  }
  const c = config as Record<string, unknown>;
  const out: HfTokenizerConfig = {};
  for (const k of ['eos_token', 'bos_token', 'pad_token'] as const) {
    const v = c[k];
    const s = typeof v === 'string' ? v : typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string' ? (v as { content: string }).content : undefined;
    if (s !== undefined) out[k] = s;
  }
  if (typeof c.clean_up_tokenization_spaces === 'boolean') out.clean_up_tokenization_spaces = c.clean_up_tokenization_spaces;
  return out;
}
