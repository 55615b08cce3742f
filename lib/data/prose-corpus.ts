/**
 * The natural-prose corpus of `hiermem demo prose` (data/README.md "prose"): the openings of Brown
 * corpus samples (lib/data/prose-brown.ts) and WordNet hypernym families (lib/data/prose-wordnet.ts),
 * chosen and split deterministically from a seed.
 *
 * The held-out split is by document, stratified by source: a seeded shuffle of each source's
 * documents, the first `heldOutShare` of them held out. A Brown sample gives one document and a
 * WordNet synset belongs to at most one chosen family, so no text is on both sides.
 */
import { HiermemError } from '../errors.js';
import { Rng } from '../util/random.js';
import { brownOpening, readBrownSamples } from './prose-brown.js';
import { readWordnetSynsets, wordnetFamilies } from './prose-wordnet.js';

export type ProseSource = 'brown' | 'wordnet';

export interface ProseDocument {
  /** "brown:ca01" or "wordnet:n02086723" (the family's parent synset). */
  id: string;
  source: ProseSource;
  /** Brown genre ("news") or WordNet lexicographer file ("noun.animal"). */
  group: string;
  text: string;
}

export interface ProseCorpusOptions {
  /** Seed of every choice (which samples and families, the split). */
  seed: number;
  /** A smaller corpus for smoke runs (QUICK_PROSE sizes unless given). */
  quick?: boolean;
  /** Brown samples used, 1..500 (default all 500). */
  brownSamples?: number;
  /** Words of each sample's opening, whole paragraphs (default 400). */
  brownWords?: number;
  /** WordNet families used (default 700). */
  wordnetFamilies?: number;
  /** Share of each source's documents held out, in (0, 0.5] (default 0.1). */
  heldOutShare?: number;
}

export const DEFAULT_PROSE = Object.freeze({ brownSamples: 500, brownWords: 400, wordnetFamilies: 700, heldOutShare: 0.1 });
export const QUICK_PROSE = Object.freeze({ brownSamples: 120, brownWords: 250, wordnetFamilies: 160, heldOutShare: 0.15 });
/** Families smaller than this carry little topic; larger ones are cut to their first MAX children. */
export const FAMILY_MIN_CHILDREN = 4;
export const FAMILY_MAX_CHILDREN = 12;

export interface ProseCorpus {
  train: ProseDocument[];
  heldOut: ProseDocument[];
  options: Required<Omit<ProseCorpusOptions, 'quick'>>;
  stats: {
    documents: number;
    bytes: number;
    sources: Array<{ source: ProseSource; train: number; heldOut: number; bytes: number; groups: number }>;
  };
}

function shuffled<T>(items: readonly T[], rng: Rng): T[] {
  const a = [...items];
  for (let i = a.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

function resolve(o: ProseCorpusOptions): Required<Omit<ProseCorpusOptions, 'quick'>> {
  const base = o.quick ? QUICK_PROSE : DEFAULT_PROSE;
  const r = {
    seed: o.seed,
    brownSamples: o.brownSamples ?? base.brownSamples,
    brownWords: o.brownWords ?? base.brownWords,
    wordnetFamilies: o.wordnetFamilies ?? base.wordnetFamilies,
    heldOutShare: o.heldOutShare ?? base.heldOutShare,
  };
  const intIn = (v: number, lo: number, hi: number) => Number.isInteger(v) && v >= lo && v <= hi;
  if (!Number.isInteger(r.seed)) throw new HiermemError('E_INVALID_ARGUMENT', `prose corpus: seed must be an integer, got ${r.seed}`);
  if (!intIn(r.brownSamples, 0, 500) || !intIn(r.brownWords, 1, 5000) || !intIn(r.wordnetFamilies, 0, 20000) || r.brownSamples + r.wordnetFamilies < 4) {
    throw new HiermemError('E_INVALID_ARGUMENT', `prose corpus: brownSamples 0..500, brownWords 1..5000, wordnetFamilies 0..20000, at least 4 documents in all; got ${JSON.stringify(r)}`);
  }
  if (!(r.heldOutShare > 0 && r.heldOutShare <= 0.5)) throw new HiermemError('E_INVALID_ARGUMENT', `prose corpus: heldOutShare must be in (0, 0.5], got ${r.heldOutShare}`);
  return r;
}

/** Builds the corpus; the same options give the identical corpus. */
export function buildProseCorpus(options: ProseCorpusOptions): ProseCorpus {
  const o = resolve(options);
  const rng = new Rng(o.seed * 7919 + 101);

  const samples = readBrownSamples();
  const keepSamples = new Set(shuffled(samples.map((s) => s.id), rng).slice(0, o.brownSamples));
  const brown: ProseDocument[] = samples.filter((s) => keepSamples.has(s.id))
    .map((s) => ({ id: `brown:${s.id}`, source: 'brown', group: s.genre, text: brownOpening(s, o.brownWords) }));

  // families in a seeded order, each taken only if none of its synsets is in a family already taken
  const families = o.wordnetFamilies > 0 ? wordnetFamilies(readWordnetSynsets(), FAMILY_MIN_CHILDREN, FAMILY_MAX_CHILDREN) : [];
  const used = new Set<string>();
  const chosen = new Set<string>();
  for (const f of shuffled(families, rng)) {
    if (chosen.size >= o.wordnetFamilies) break;
    if (f.members.some((m) => used.has(m))) continue;
    f.members.forEach((m) => used.add(m));
    chosen.add(f.id);
  }
  const wordnet: ProseDocument[] = families.filter((f) => chosen.has(f.id))
    .map((f) => ({ id: `wordnet:${f.id}`, source: 'wordnet', group: f.lexfile, text: f.text }));

  const train: ProseDocument[] = [], heldOut: ProseDocument[] = [];
  const sources: ProseCorpus['stats']['sources'] = [];
  const enc = new TextEncoder();
  for (const [source, docs] of [['brown', brown], ['wordnet', wordnet]] as const) {
    const held = new Set(shuffled(docs.map((d) => d.id), rng).slice(0, Math.round(o.heldOutShare * docs.length)));
    for (const d of docs) (held.has(d.id) ? heldOut : train).push(d);
    sources.push({ source, train: docs.length - held.size, heldOut: held.size, bytes: docs.reduce((n, d) => n + enc.encode(d.text).length, 0),
      groups: new Set(docs.map((d) => d.group)).size });
  }
  return { train, heldOut, options: o, stats: { documents: train.length + heldOut.length, bytes: sources.reduce((n, s) => n + s.bytes, 0), sources } };
}
