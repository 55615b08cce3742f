/**
 * BERT's WordPiece tokenizer (uncased, as all-MiniLM-L6-v2 uses), from a `vocab.txt` (one token per
 * line, id = line number):
 *   1. clean: drop NUL, U+FFFD and control characters, whitespace → space;
 *   2. put spaces around CJK ideographs (each becomes its own word);
 *   3. lowercase and strip accents (NFD, drop combining marks), when `lowercase`;
 *   4. split on whitespace, then split off every punctuation character as its own word;
 *   5. per word, greedy longest-match-first pieces, continuations prefixed "##"; a word with no
 *      full segmentation, or longer than 100 characters, becomes [UNK];
 *   6. [CLS] pieces [SEP], the pieces truncated so the whole fits `maxLength` (sentence-transformers
 *      truncates MiniLM's input to 256 word pieces by default).
 */
import { readFile } from 'node:fs/promises';
import { HiermemError } from '../errors.js';
import { checkInt } from './common.js';

export interface WordPieceOptions {
  /** Lowercase and strip accents (default true, the uncased models). */
  lowercase?: boolean;
  /** Maximum ids per text including [CLS] and [SEP] (default 256, at least 2). */
  maxLength?: number;
}

const MAX_CHARS_PER_WORD = 100;

export class WordPieceTokenizer {
  readonly vocabSize: number;
  readonly lowercase: boolean;
  readonly maxLength: number;
  readonly clsId: number;
  readonly sepId: number;
  readonly padId: number;
  readonly unkId: number;
  private readonly ids: Map<string, number>;

  constructor(vocab: readonly string[], options: WordPieceOptions = {}) {
    if (!Array.isArray(vocab) || vocab.length === 0) throw new HiermemError('E_CONFIG_INVALID', 'WordPiece vocab is empty');
    this.ids = new Map();
    // The first occurrence wins, as in the reference implementation's dict built line by line.
    vocab.forEach((tok, i) => {
      if (!this.ids.has(tok)) this.ids.set(tok, i);
    });
    this.vocabSize = vocab.length;
    this.lowercase = options.lowercase ?? true;
    this.maxLength = checkInt(options.maxLength ?? 256, 2, 1 << 20, 'WordPiece maxLength', 'E_CONFIG_INVALID');
    const special = (t: string): number => {
      const id = this.ids.get(t);
      if (id === undefined) throw new HiermemError('E_CONFIG_INVALID', `WordPiece vocab has no ${t} token`);
      return id;
    };
    this.clsId = special('[CLS]');
    this.sepId = special('[SEP]');
    this.padId = special('[PAD]');
    this.unkId = special('[UNK]');
  }

  /** Reads a vocab.txt (UTF-8, one token per line; a trailing empty line is ignored). Missing file → E_IO. */
  static async fromFile(path: string, options: WordPieceOptions = {}): Promise<WordPieceTokenizer> {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      throw new HiermemError('E_IO', `cannot read WordPiece vocab ${path}: ${(err as Error).message}`, { cause: err });
    }
    return WordPieceTokenizer.fromText(text, options);
  }

  /** Parses the contents of a vocab.txt. */
  static fromText(text: string, options: WordPieceOptions = {}): WordPieceTokenizer {
    const lines = text.replace(/^\uFEFF/, '').split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
    if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
    return new WordPieceTokenizer(lines, options);
  }

  /** Words after cleaning, lowercasing and punctuation splitting (steps 1–4). */
  basicTokens(text: string): string[] {
    let t = '';
    for (const ch of text) {
      const cp = ch.codePointAt(0)!;
      if (cp === 0 || cp === 0xfffd || isControl(ch)) continue;
      if (isWhitespace(ch)) t += ' ';
      else if (isCjk(cp)) t += ` ${ch} `;
      else t += ch;
    }
    const out: string[] = [];
    for (let word of t.split(' ')) {
      if (word === '') continue;
      if (this.lowercase) word = word.toLowerCase().normalize('NFD').replace(/\p{Mn}/gu, '');
      let cur = '';
      for (const ch of word) {
        if (isPunctuation(ch)) {
          if (cur !== '') out.push(cur);
          out.push(ch);
          cur = '';
        } else {
          cur += ch;
        }
      }
      if (cur !== '') out.push(cur);
    }
    return out;
  }

  /** Greedy longest-match-first pieces of one word (step 5). */
  wordPieces(word: string): number[] {
    const chars = [...word];
    if (chars.length > MAX_CHARS_PER_WORD) return [this.unkId];
    const pieces: number[] = [];
    let start = 0;
    while (start < chars.length) {
      let end = chars.length;
      let found = -1;
      while (start < end) {
        const sub = (start > 0 ? '##' : '') + chars.slice(start, end).join('');
        const id = this.ids.get(sub);
        if (id !== undefined) {
          found = id;
          break;
        }
        end--;
      }
      if (found < 0) return [this.unkId];
      pieces.push(found);
      start = end;
    }
    return pieces;
  }

  /** [CLS] pieces [SEP], truncated to maxLength ids. */
  encode(text: string): Int32Array {
    if (typeof text !== 'string') throw new HiermemError('E_INVALID_ARGUMENT', 'WordPieceTokenizer.encode: text must be a string');
    const room = this.maxLength - 2;
    const ids = [this.clsId];
    outer: for (const word of this.basicTokens(text)) {
      for (const id of this.wordPieces(word)) {
        if (ids.length - 1 >= room) break outer;
        ids.push(id);
      }
    }
    ids.push(this.sepId);
    return Int32Array.from(ids);
  }
}

// Character classes as BERT's reference tokenizer defines them.
function isWhitespace(ch: string): boolean {
  return ch === ' ' || ch === '\t' || ch === '\n' || ch === '\r' || /^\p{Zs}$/u.test(ch);
}

function isControl(ch: string): boolean {
  if (ch === '\t' || ch === '\n' || ch === '\r') return false;
  return /^\p{C}$/u.test(ch);
}

function isPunctuation(ch: string): boolean {
  const cp = ch.codePointAt(0)!;
  // All non-letter/number ASCII is punctuation for BERT ("$", "^", "`" included).
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126)) return true;
  return /^\p{P}$/u.test(ch);
}

function isCjk(cp: number): boolean {
  return (
    (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) ||
    (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0x2f800 && cp <= 0x2fa1f)
  );
}
