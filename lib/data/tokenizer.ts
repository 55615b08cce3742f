import { HiermemError } from '../errors.js';
import { HfTokenizer } from './hf-tokenizer.js';

/** What a checkpoint records about its tokenizer, so it can be rebuilt on load. */
export interface TokenizerJSON {
  type: string;
  version: number;
}

export interface DecodeOptions {
  /** Render <|eot|> as "\n" instead of dropping it (other specials are always dropped). */
  eotAsNewline?: boolean;
}

export interface Tokenizer {
  readonly name: string;
  /** Ids are 0..vocabSize-1. */
  readonly vocabSize: number;
  /** End of text; also separates documents in a packed training stream. */
  readonly eotId: number;
  readonly padId?: number;
  readonly bosId?: number;
  encode(text: string): Int32Array;
  /** Never throws on ids in range, even if they form invalid text; ids out of range → E_TOKEN_OUT_OF_RANGE. */
  decode(ids: ArrayLike<number>, options?: DecodeOptions): string;
  toJSON(): TokenizerJSON;
}

/**
 * Byte-level tokenizer. Ids:
 *   0..255  the UTF-8 bytes of the text
 *   256     <|eot|>  end of text / document separator
 *   257     <|pad|>  padding
 *   258     <|bos|>  beginning of sequence
 * vocabSize = 259.
 */
export class ByteTokenizer implements Tokenizer {
  static readonly EOT = 256;
  static readonly PAD = 257;
  static readonly BOS = 258;
  static readonly VOCAB_SIZE = 259;

  readonly name = 'byte';
  readonly vocabSize = ByteTokenizer.VOCAB_SIZE;
  readonly eotId = ByteTokenizer.EOT;
  readonly padId = ByteTokenizer.PAD;
  readonly bosId = ByteTokenizer.BOS;

  // Non-fatal decoding: a model can emit any byte sequence, and replacement chars beat an exception.
  private readonly decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
  private readonly encoder = new TextEncoder();

  encode(text: string): Int32Array {
    if (typeof text !== 'string') {
      throw new HiermemError('E_INVALID_ARGUMENT', `ByteTokenizer.encode: expected a string, got ${typeof text}`);
    }
    return Int32Array.from(this.encoder.encode(text));
  }

  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    const eotAsNewline = options.eotAsNewline === true;
    const bytes = new Uint8Array(ids.length);
    let n = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i] as number;
      if (!Number.isInteger(id) || id < 0 || id >= ByteTokenizer.VOCAB_SIZE) {
        throw new HiermemError(
          'E_TOKEN_OUT_OF_RANGE',
          `ByteTokenizer.decode: id ${String(id)} at position ${i} is outside 0..${ByteTokenizer.VOCAB_SIZE - 1}`,
        );
      }
      if (id < 256) bytes[n++] = id;
      else if (id === ByteTokenizer.EOT && eotAsNewline) bytes[n++] = 0x0a;
    }
    return this.decoder.decode(bytes.subarray(0, n));
  }

  toJSON(): TokenizerJSON {
    return { type: 'byte', version: 1 };
  }
}

/** Rebuilds the tokenizer a checkpoint recorded; unknown type/version → E_CONFIG_INCOMPATIBLE. */
export function tokenizerFromJSON(obj: unknown): Tokenizer {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
    throw new HiermemError('E_CONFIG_INCOMPATIBLE', `tokenizer description must be an object, got ${obj === null ? 'null' : Array.isArray(obj) ? 'an array' : typeof obj}`);
  }
  const { type, version } = obj as Record<string, unknown>;
  if (type === 'byte' && version === 1) return new ByteTokenizer();
  if (type === 'hf' && version === 1) return HfTokenizer.fromRecord(obj as Record<string, unknown>);
  throw new HiermemError(
    'E_CONFIG_INCOMPATIBLE',
    `unsupported tokenizer type ${describe(type)} version ${describe(version)}; this version of hiermem knows type "byte" version 1 and "hf" version 1`,
  );
}

/** A short identity of a tokenizer: "byte", or "hf:" and the sha256 of its tokenizer.json record. */
export function tokenizerIdentity(t: Tokenizer): string {
  return t instanceof HfTokenizer ? `hf:${t.sha256}` : t.name;
}

/**
 * Throws E_CONFIG_INCOMPATIBLE unless `given` is the tokenizer `recorded` (what a checkpoint was
 * trained with): a model paired with another tokenizer reads ids that mean other text.
 */
export function checkSameTokenizer(recorded: Tokenizer, given: Tokenizer, where: string): void {
  const a = tokenizerIdentity(recorded), b = tokenizerIdentity(given);
  if (a !== b) {
    throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${where} was trained with tokenizer ${a} (vocab ${recorded.vocabSize}); the tokenizer given is ${b} (vocab ${given.vocabSize})`);
  }
}

function describe(v: unknown): string {
  return typeof v === 'string' ? JSON.stringify(v) : String(v);
}
