/**
 * The default embedder: TF-IDF over hashed word features, randomly projected to a dense vector.
 * It needs no model file, is deterministic, and is fitted (document frequencies) on the training
 * documents; the fitted table is saved with the tree, so inference embeds with the same weights.
 *
 * Why it routes well: a prompt about an entity ("The atomic number of Osmium is") shares with the
 * entity's documents mostly the entity's name, and that name is rare in the corpus, so after IDF
 * weighting it carries most of the prompt's norm, while template words ("the", "atomic", "of") occur
 * in most documents and get weight near zero. The prompt's vector then points almost along the
 * name's feature directions, and the nearest centroids are those of clusters holding the name's
 * documents. Features no training document has get weight zero: they cannot point at any cluster,
 * and through the random projection they would only add noise.
 *
 * Pipeline for one text:
 *   1. NFKD, drop combining marks, case-fold; words = maximal runs of letters/digits (punctuation
 *      is a separator).
 *   2. Features: word unigrams, character 3..5-grams of each word (with boundary marks), optionally
 *      adjacent-word bigrams; each hashed to one of `buckets` slots (2^20; colliding features share
 *      one weight, which bounds the saved table whatever the corpus).
 *   3. Weight = kindWeight · (1 + ln tf) · idf^e, idf = ln((1 + N) / (1 + df)) with N training
 *      documents, df of them containing the slot; df = 0 → weight 0 (see above).
 *   4. Sparse random projection: each slot adds ±weight/sqrt(s) to s output coordinates, chosen and
 *      signed by a seeded hash of the slot (the same for every text, so inner products are kept in
 *      expectation, with noise ~ 1/sqrt(dim) of the norms).
 *   5. L2-normalise. A text with no known feature embeds to the zero vector (routes to child 0).
 *
 * Defaults chosen by the routing test (a probe "The atomic number of X is" must reach the leaf of
 * X's documents; numbers in test/retrieval.test.ts and the issue notes):
 *   - dim 1024, not 256: the projection noise (~1/sqrt(dim)) competes with an entity's share of a
 *     centroid, which shrinks with the cluster size; on the 128-document sample corpus a 16-leaf tree
 *     routed ~45% of probes right at 256 and ~68% at 1024 (~85% without projection), on the demo
 *     corpus (2,240 documents) 87% vs 93%.
 *   - idf^2: sharper than plain IDF, so names outweigh moderately common words (the sample's k=16
 *     one-level tree: 46% → 54% at 256).
 *   - char n-grams on (weight 0.5): a name then has a dozen features of its own, which averages out
 *     projection noise and matches inflections; +1–9 points on the demo corpus, +2–5 on the sample
 *     at dim 256 (about even at 1024). Without idf^2 they hurt the sample (common suffixes: "-ium").
 *   - bigrams off: on a small corpus, phrasing made of common words ("the atomic", "number of") is
 *     rare by chance and outweighed the names (sample corpus, 1-level 16 leaves: 46% → 40%); even
 *     capped (below) they did not help. Available as an option.
 */
import { HiermemError } from '../errors.js';
import type { Embedder, EmbedderJSON, EmbedderLoadOptions, EmbedderTensor } from './embedder.js';
import { checkInt, checkTexts, fmix32, hashString, normalizeRows } from './common.js';

export const HASHED_TFIDF_TYPE = 'hashed-tfidf';
export const DEFAULT_DIM = 1024;
const VERSION = 1;

export interface HashedTfidfOptions {
  /** Output width (default 1024; see the header for why not less). */
  dim?: number;
  /** Hash slots for features and the IDF table (default 2^20). */
  buckets?: number;
  /** Seeds the projection (default 0). */
  seed?: number;
  /** Output coordinates each feature is spread over (default 4). */
  nnzPerFeature?: number;
  /** Use adjacent-word bigrams (default false). */
  bigrams?: boolean;
  /** Character n-grams of each word (with boundary marks), [min, max] lengths, or null for none (default [3, 5]). */
  charNgrams?: readonly [number, number] | null;
  /** Weight of the char n-gram features relative to words (default 0.5). */
  charNgramWeight?: number;
  /** Weight of bigram features relative to unigrams (default 1). */
  bigramWeight?: number;
  /** Each feature's weight uses idf^idfExponent (default 2). */
  idfExponent?: number;
}

/** The resolved settings (every option filled in). */
interface Settings {
  dim: number;
  buckets: number;
  seed: number;
  nnzPerFeature: number;
  bigrams: boolean;
  charNgrams: [number, number] | null;
  charNgramWeight: number;
  bigramWeight: number;
  idfExponent: number;
}

export type HashedTfidfJSON = EmbedderJSON &
  Settings & {
    type: typeof HASHED_TFIDF_TYPE;
    /** Number of documents the IDF was fitted on. */
    docCount: number;
  };

// Distinct hash seeds per feature kind, so a word and a bigram never share a hash by construction.
const SEED_UNIGRAM = 0x2545f491;
const SEED_BIGRAM = 0x9e3779b9;
const SEED_CHAR = 0x6a09e667;

/** Fills in defaults and validates; a bad option → E_INVALID_ARGUMENT. */
function resolveSettings(o: HashedTfidfOptions): Settings {
  const dim = checkInt(o.dim ?? DEFAULT_DIM, 1, 1 << 16, 'hashed-tfidf dim');
  const buckets = checkInt(o.buckets ?? 1 << 20, 1, 1 << 28, 'hashed-tfidf buckets');
  const seed = checkInt(o.seed ?? 0, 0, 0xffffffff, 'hashed-tfidf seed');
  const nnzPerFeature = checkInt(o.nnzPerFeature ?? 4, 1, Math.min(64, dim), 'hashed-tfidf nnzPerFeature');
  const bigrams = o.bigrams ?? false;
  if (typeof bigrams !== 'boolean') throw new HiermemError('E_INVALID_ARGUMENT', 'hashed-tfidf bigrams must be a boolean');
  let charNgrams: [number, number] | null = null;
  const c = o.charNgrams === undefined ? [3, 5] : o.charNgrams;
  if (c !== null) {
    if (!Array.isArray(c) || c.length !== 2) {
      throw new HiermemError('E_INVALID_ARGUMENT', 'hashed-tfidf charNgrams must be [min, max] or null');
    }
    const lo = checkInt(c[0], 1, 16, 'hashed-tfidf charNgrams[0]');
    const hi = checkInt(c[1], lo, 16, 'hashed-tfidf charNgrams[1]');
    charNgrams = [lo, hi];
  }
  const weight = (v: unknown, what: string): number => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
      throw new HiermemError('E_INVALID_ARGUMENT', `hashed-tfidf ${what} must be a finite number >= 0, got ${String(v)}`);
    }
    return v;
  };
  const charNgramWeight = weight(o.charNgramWeight ?? 0.5, 'charNgramWeight');
  const bigramWeight = weight(o.bigramWeight ?? 1, 'bigramWeight');
  const idfExponent = weight(o.idfExponent ?? 2, 'idfExponent');
  return { dim, buckets, seed, nnzPerFeature, bigrams, charNgrams, charNgramWeight, bigramWeight, idfExponent };
}

/** Case-folded words: NFKD, combining marks dropped, split at anything not a letter or digit. */
export function wordsOf(text: string): string[] {
  const folded = text.normalize('NFKD').replace(/\p{M}+/gu, '').toLowerCase();
  return folded.split(/[^\p{L}\p{N}]+/u).filter((w) => w.length > 0);
}

/**
 * The hashed features of one text, per kind: bucket → term frequency. For a bigram, `parts` holds the
 * buckets of its two words (its IDF is capped by theirs, see idf use in embedSync).
 */
interface FeatureKind {
  weight: number;
  tf: Map<number, number>;
  parts?: Map<number, readonly [number, number]>;
}

/**
 * A word's unigram bucket, then its char n-gram buckets in the order countFeatures adds them,
 * cached per word: words repeat (Zipf), and hashing each n-gram of each occurrence was most of the
 * embedding time. The hash is hashString's, computed in place of slicing (same buckets, same order).
 */
function wordFeatures(w: string, s: Settings): Int32Array {
  const out: number[] = [hashString(w, SEED_UNIGRAM) % s.buckets];
  if (s.charNgrams !== null) {
    const [lo, hi] = s.charNgrams;
    const m = `<${w}>`;
    for (let n = lo; n <= hi; n++) {
      for (let i = 0; i + n <= m.length; i++) {
        let h = (0x811c9dc5 ^ SEED_CHAR) >>> 0;
        for (let c = i; c < i + n; c++) {
          h ^= m.charCodeAt(c);
          h = Math.imul(h, 0x01000193);
        }
        out.push(fmix32(h) % s.buckets);
      }
    }
  }
  return Int32Array.from(out);
}

/** Bounded, so a corpus of endless distinct tokens (ids, hashes) cannot grow it without limit. */
const WORD_CACHE_MAX = 1 << 18;
const wordCaches = new WeakMap<Settings, Map<string, Int32Array>>();
function wordCache(s: Settings): Map<string, Int32Array> {
  let c = wordCaches.get(s);
  if (c === undefined) wordCaches.set(s, (c = new Map()));
  return c;
}

function countFeatures(text: string, s: Settings): FeatureKind[] {
  const words = wordsOf(text);
  const add = (m: Map<number, number>, b: number): void => {
    m.set(b, (m.get(b) ?? 0) + 1);
  };
  const uni = new Map<number, number>();
  const cache = wordCache(s);
  const cached = words.map((w) => {
    let f = cache.get(w);
    if (f === undefined) {
      if (cache.size >= WORD_CACHE_MAX) cache.clear();
      cache.set(w, (f = wordFeatures(w, s)));
    }
    return f;
  });
  const wordBuckets = cached.map((f) => f[0]!);
  for (const b of wordBuckets) add(uni, b);
  const kinds: FeatureKind[] = [{ weight: 1, tf: uni }];
  if (s.bigrams && s.bigramWeight > 0) {
    const bi = new Map<number, number>();
    const parts = new Map<number, readonly [number, number]>();
    for (let i = 1; i < words.length; i++) {
      const b = hashString(`${words[i - 1]!} ${words[i]!}`, SEED_BIGRAM) % s.buckets;
      add(bi, b);
      if (!parts.has(b)) parts.set(b, [wordBuckets[i - 1]!, wordBuckets[i]!]);
    }
    kinds.push({ weight: s.bigramWeight, tf: bi, parts });
  }
  if (s.charNgrams !== null && s.charNgramWeight > 0) {
    const ch = new Map<number, number>();
    for (const f of cached) for (let j = 1; j < f.length; j++) add(ch, f[j]!);
    kinds.push({ weight: s.charNgramWeight, tf: ch });
  }
  return kinds;
}

export class HashedTfidfEmbedder implements Embedder {
  readonly name: string;
  readonly dim: number;
  private readonly settings: Settings;
  private readonly docCount: number;
  /** Sparse document frequencies: bucket → df (>= 1). */
  private readonly df: Map<number, number>;

  private constructor(settings: Settings, docCount: number, df: Map<number, number>) {
    this.settings = settings;
    this.dim = settings.dim;
    this.docCount = docCount;
    this.df = df;
    this.name = `hashed-tfidf(dim=${settings.dim})`;
  }

  /** Fits the document frequencies on `docs` (the training documents). Empty list → E_INVALID_ARGUMENT. */
  static fit(docs: readonly string[], options: HashedTfidfOptions = {}): HashedTfidfEmbedder {
    checkTexts(docs, 'HashedTfidfEmbedder.fit');
    if (docs.length === 0) throw new HiermemError('E_INVALID_ARGUMENT', 'HashedTfidfEmbedder.fit: no documents');
    const settings = resolveSettings(options);
    const df = new Map<number, number>();
    for (const doc of docs) {
      const seen = new Set<number>();
      for (const k of countFeatures(doc, settings)) for (const b of k.tf.keys()) seen.add(b);
      for (const b of seen) df.set(b, (df.get(b) ?? 0) + 1);
    }
    return new HashedTfidfEmbedder(settings, docs.length, df);
  }

  /** Inverse document frequency of a bucket; 0 for buckets no training document has. */
  private idf(bucket: number): number {
    const d = this.df.get(bucket);
    return d === undefined ? 0 : Math.log((1 + this.docCount) / (1 + d));
  }

  /**
   * idf^idfExponent per bucket, computed once (the same Math.pow of the same idf, so the same bits):
   * a Map lookup, a log and a pow per feature were a third of the embedding time. Only for tables
   * of at most 2^22 buckets (32 MiB); larger bucket counts keep the per-feature path.
   */
  private idfPowTable(): Float64Array | null {
    if (this.pows !== undefined) return this.pows;
    if (this.settings.buckets > 1 << 22) return (this.pows = null);
    const t = new Float64Array(this.settings.buckets).fill(Math.pow(0, this.settings.idfExponent));
    for (const b of this.df.keys()) t[b] = Math.pow(this.idf(b), this.settings.idfExponent);
    return (this.pows = t);
  }
  private pows: Float64Array | null | undefined;

  /** Synchronous form of embed(). */
  embedSync(texts: readonly string[]): Float32Array {
    checkTexts(texts, 'HashedTfidfEmbedder.embed');
    const { dim, nnzPerFeature: s, seed } = this.settings;
    const out = new Float32Array(texts.length * dim);
    const acc = new Float64Array(dim);
    const scale = 1 / Math.sqrt(s);
    const pows = this.idfPowTable();
    for (let i = 0; i < texts.length; i++) {
      acc.fill(0);
      for (const kind of countFeatures(texts[i]!, this.settings)) {
        for (const [bucket, tf] of kind.tf) {
          const parts = kind.parts?.get(bucket);
          let idfPow: number;
          if (parts !== undefined) {
            // A bigram is no more specific than its less specific word: on a small corpus, phrasing made
            // of common words ("number of") is rare by chance, and uncapped it would outweigh the names.
            idfPow = Math.pow(Math.min(this.idf(bucket), this.idf(parts[0]), this.idf(parts[1])), this.settings.idfExponent);
          } else {
            idfPow = pows !== null ? pows[bucket]! : Math.pow(this.idf(bucket), this.settings.idfExponent);
          }
          if (idfPow === 0) continue;
          const w = kind.weight * (1 + Math.log(tf)) * idfPow;
          if (w === 0) continue;
          if (w === 0) continue;
          // The projection column of this bucket: s (coordinate, sign) pairs from a seeded hash.
          let h = fmix32((bucket ^ seed) >>> 0);
          for (let j = 0; j < s; j++) {
            h = fmix32((h + 0x9e3779b9 + j) >>> 0);
            const coord = h % dim;
            acc[coord] = acc[coord]! + ((h & 0x80000000) !== 0 ? -w : w) * scale;
          }
        }
      }
      const o = i * dim;
      for (let j = 0; j < dim; j++) out[o + j] = acc[j]!;
    }
    normalizeRows(out, texts.length, dim);
    return out;
  }

  embed(texts: readonly string[]): Promise<Float32Array> {
    try {
      return Promise.resolve(this.embedSync(texts));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  toJSON(): HashedTfidfJSON {
    return { type: HASHED_TFIDF_TYPE, version: VERSION, ...this.settings, docCount: this.docCount };
  }

  /** The document frequencies as two parallel I32 tensors, buckets ascending. */
  stateTensors(): EmbedderTensor[] {
    const buckets = Int32Array.from([...this.df.keys()].sort((a, b) => a - b));
    const counts = Int32Array.from(buckets, (b) => this.df.get(b)!);
    return [
      { name: 'df.buckets', dtype: 'I32', shape: [buckets.length], data: buckets },
      { name: 'df.counts', dtype: 'I32', shape: [counts.length], data: counts },
    ];
  }

  /** @internal the factory behind embedderFromJSON for this type. */
  static fromState(json: EmbedderJSON, tensors: ReadonlyMap<string, Float32Array | Int32Array>): HashedTfidfEmbedder {
    const bad = (msg: string): HiermemError => new HiermemError('E_CHECKPOINT_CORRUPT', `hashed-tfidf embedder: ${msg}`);
    if (json.version !== VERSION) {
      throw new HiermemError('E_CONFIG_INCOMPATIBLE', `hashed-tfidf embedder version ${String(json.version)}, this build reads ${VERSION}`);
    }
    // Every setting must be present: a default that changed since the tree was saved must not apply.
    const keys: Array<keyof Settings> = ['dim', 'buckets', 'seed', 'nnzPerFeature', 'bigrams', 'charNgrams', 'charNgramWeight', 'bigramWeight', 'idfExponent'];
    const missing = keys.filter((k) => !(k in json));
    if (missing.length > 0) throw bad(`missing settings ${missing.join(', ')}`);
    let settings: Settings;
    try {
      settings = resolveSettings(json as Partial<HashedTfidfJSON> as HashedTfidfOptions);
    } catch (err) {
      throw bad((err as Error).message);
    }
    const docCount = json.docCount;
    if (typeof docCount !== 'number' || !Number.isSafeInteger(docCount) || docCount < 1) throw bad('docCount must be a positive integer');
    const buckets = tensors.get('df.buckets');
    const counts = tensors.get('df.counts');
    if (!(buckets instanceof Int32Array) || !(counts instanceof Int32Array) || buckets.length !== counts.length) {
      throw bad('needs I32 tensors df.buckets and df.counts of equal length');
    }
    const df = new Map<number, number>();
    for (let i = 0; i < buckets.length; i++) {
      const b = buckets[i]!;
      const c = counts[i]!;
      if (b < 0 || b >= settings.buckets || (i > 0 && b <= buckets[i - 1]!)) throw bad(`df.buckets[${i}] = ${b} is out of order or range`);
      if (c < 1 || c > docCount) throw bad(`df.counts[${i}] = ${c} is outside [1, ${docCount}]`);
      df.set(b, c);
    }
    return new HashedTfidfEmbedder(settings, docCount, df);
  }
}

export function hashedTfidfFromJSON(
  json: EmbedderJSON,
  tensors: ReadonlyMap<string, Float32Array | Int32Array>,
  _options: EmbedderLoadOptions,
): HashedTfidfEmbedder {
  return HashedTfidfEmbedder.fromState(json, tensors);
}
