import { HiermemError } from '../errors.js';
import { Rng } from '../util/random.js';
import { ByteTokenizer } from './tokenizer.js';
import {
  DOMAINS, canonicalPrompt, loadFacts, renderDocument, templates, templatesFor, type Domain, type Entity, type Slot,
} from './fact-text.js';

export { DOMAINS, FACTS_DIR, loadFacts, type Domain, type Entity } from './fact-text.js';

/**
 * The embedded long-tail knowledge corpus (issue #7; data/README.md "facts/").
 *
 * `loadFacts()` reads the fact tables in data/facts (chemical elements and countries, converted
 * once by scripts/make-facts.mjs). `buildDemoCorpus()` turns them, deterministically from a seed,
 * into short articles (one entity per document, several of its facts in varied sentences) whose
 * number per entity follows frequency buckets B1 (frequent) .. B5 (rare), plus fact probes such as
 * `The atomic number of Osmium is` → `76`, each tagged with its entity's bucket.
 *
 * Probe scoring rule (see `extractProbeAnswer`): take the greedy continuation of the prompt, drop
 * one leading space, cut it at the first of `probeDelimiters`; the probe is correct when what is
 * left equals the answer exactly. The sentence data and its rendering are in fact-text.ts.
 */

/**
 * One frequency bucket. Entities are split between buckets in proportion to `share` (weights,
 * normalised over all buckets), separately within each domain. Each entity of the bucket gets
 * between `minDocs` and `maxDocs` documents: the bucket's first entity `maxDocs`, its last `minDocs`,
 * geometric in between (equal values → every entity gets that many).
 */
export interface BucketSpec {
  name: string;
  share: number;
  minDocs: number;
  maxDocs: number;
}

/**
 * Default buckets: 24 / 12 / 8 / 5 / 3 documents per entity over 4 / 8 / 20 / 28 / 40 % of the
 * entities of each domain (a long tail: frequency falls roughly as rank^-0.6, and each bucket holds
 * a similar number of documents). With the default coverage (every document of an entity states
 * all its probed facts) that is also how often each probed fact is seen per epoch, chosen around
 * the calibration of issue #7 (~8 exposures: a gain for memories; <= 5: nothing for any model).
 * See data/README.md.
 */
export const DEFAULT_BUCKETS: readonly BucketSpec[] = Object.freeze([
  { name: 'B1', share: 0.04, minDocs: 24, maxDocs: 24 },
  { name: 'B2', share: 0.08, minDocs: 12, maxDocs: 12 },
  { name: 'B3', share: 0.2, minDocs: 8, maxDocs: 8 },
  { name: 'B4', share: 0.28, minDocs: 5, maxDocs: 5 },
  { name: 'B5', share: 0.4, minDocs: 3, maxDocs: 3 },
]);

/** Fields probed per domain (those an entity lacks, or whose value is not a short answer, are skipped). */
export const DEFAULT_PROBE_FIELDS: Readonly<Record<Domain, readonly string[]>> = Object.freeze({
  element: Object.freeze(['atomic_number', 'symbol', 'discovered']),
  country: Object.freeze(['capital', 'currency', 'phone_code']),
});

/** Default share of an entity's documents that state each of its probed facts: all of them. */
export const DEFAULT_PROBED_COVERAGE = 1;
/** Default chance that a probed fact is stated in its canonical probe form. */
export const DEFAULT_CANONICAL_RATE = 0.5;
/** Default number of facts per document. */
export const DEFAULT_FACTS_PER_DOC: readonly [number, number] = Object.freeze([3, 4]) as readonly [number, number];

/** The share of entities `quick: true` keeps (unless `scale` is given). */
export const QUICK_SCALE = 0.2;

// The probe rule lives in lib/eval/probes.ts; these names are kept for callers of this module.
export { PROBE_DELIMITERS as probeDelimiters, extractAnswer as extractProbeAnswer, isProbeCorrect } from '../eval/probes.js';
import { PROBE_DELIMITERS as probeDelimiters } from '../eval/probes.js';

export interface DemoCorpusOptions {
  /** Seed of every random choice; the same options give the identical corpus. */
  seed: number;
  /** Frequency buckets, most frequent first (default DEFAULT_BUCKETS). */
  buckets?: readonly BucketSpec[];
  /** A small corpus for smoke runs: keeps QUICK_SCALE of the entities unless `scale` is set. */
  quick?: boolean;
  /** Share of each domain's entities kept, in (0, 1] (default 1, or QUICK_SCALE with `quick`). */
  scale?: number;
  /** Domains to include (default both). */
  domains?: readonly Domain[];
  /**
   * Share of an entity's documents that state each probed field, in [0.5, 1]: exactly
   * ceil(probedCoverage · documents) of them (default 1: every document).
   */
  probedCoverage?: number;
  /**
   * Chance that a statement of a probed fact uses the canonical probe sentence rather than a
   * paraphrase (default 0.5); the first statement of each probed fact is always canonical.
   */
  canonicalRate?: number;
  /** Facts stated per document, [min, max] inclusive (default [3, 4]); probed fields count. */
  factsPerDoc?: readonly [number, number];
  /** Fields to probe per domain (default DEFAULT_PROBE_FIELDS); at most 3 per entity are used. */
  probeFields?: Partial<Record<Domain, readonly string[]>>;
  /** Entities to use instead of loadFacts() (tests, other domains' data in the same shape). */
  entities?: readonly Entity[];
}

export interface DemoDocument {
  text: string;
  entity: string;
  domain: Domain;
  bucket: string;
  /** The fields this document states (each once). */
  fields: string[];
}

export interface FactProbe {
  /** Canonical form, e.g. "The capital of France is" (no trailing space). */
  prompt: string;
  /** Expected answer, no leading space, no delimiter inside. */
  answer: string;
  entity: string;
  domain: Domain;
  field: string;
  bucket: string;
  /** Documents of the entity that state this fact (= exposures per epoch). */
  statements: number;
}

export interface BucketSummary {
  name: string;
  entities: number;
  /** Fewest / most documents of one entity in this bucket. */
  minFreq: number;
  maxFreq: number;
  documents: number;
  probes: number;
  /** Fewest / most documents stating one probed fact, over the bucket's probes. */
  minStatements: number;
  maxStatements: number;
}

export interface DemoEntity {
  name: string;
  domain: Domain;
  bucket: string;
  documents: number;
}

export interface DemoCorpusStats {
  entities: number;
  documents: number;
  /** UTF-16 code units, as String.length counts them. */
  characters: number;
  /** ByteTokenizer tokens of all texts (UTF-8 bytes), not counting one EOT per document when packed. */
  tokens: number;
  /** Distinct (entity, field) facts stated in at least one document. */
  facts: number;
  probes: number;
}

export interface DemoCorpus {
  /** Shuffled; each is one short article about one entity. */
  documents: DemoDocument[];
  probes: FactProbe[];
  buckets: BucketSummary[];
  /** Every entity with its bucket and number of documents. */
  entities: DemoEntity[];
  stats: DemoCorpusStats;
}

function hasDelimiter(s: string): boolean {
  return probeDelimiters.some((d) => s.includes(d));
}

// ------------------------------------------------------------------------------------------
// Building

interface Plan {
  entity: Entity;
  bucket: string;
  docs: number;
  probed: string[];
}

/**
 * Builds the long-tail demo corpus and its probes. Invalid options → E_INVALID_ARGUMENT;
 * unreadable fact tables → E_IO.
 *
 * Rules (tested in test/facts.test.ts):
 * - entities are shuffled per domain with the seeded Rng and split over the buckets by share;
 * - an entity in a bucket gets minDocs..maxDocs documents; every document names the entity;
 * - each probed field is stated in exactly probedStatementCount(docs, probedCoverage) of the
 *   entity's documents (all of them by default, at least half always), at least one of them in the
 *   canonical sentence `<prompt> <answer>.`, the others in it with chance `canonicalRate`;
 * - the rest of a document is filled with the entity's other facts in rotation, so that rare
 *   entities still state several distinct facts; documents of one entity are pairwise different.
 */
export function buildDemoCorpus(options: DemoCorpusOptions): DemoCorpus {
  if (typeof options !== 'object' || options === null) throw new HiermemError('E_INVALID_ARGUMENT', 'buildDemoCorpus: options must be an object');
  const { seed } = options;
  if (typeof seed !== 'number' || !Number.isInteger(seed)) throw new HiermemError('E_INVALID_ARGUMENT', `buildDemoCorpus: seed must be an integer, got ${String(seed)}`);
  const buckets = checkBuckets(options.buckets ?? DEFAULT_BUCKETS);
  const scale = options.scale ?? (options.quick === true ? QUICK_SCALE : 1);
  if (typeof scale !== 'number' || !(scale > 0 && scale <= 1)) throw new HiermemError('E_INVALID_ARGUMENT', `buildDemoCorpus: scale must be in (0, 1], got ${String(scale)}`);
  const coverage = options.probedCoverage ?? DEFAULT_PROBED_COVERAGE;
  if (typeof coverage !== 'number' || !(coverage >= 0.5 && coverage <= 1)) {
    throw new HiermemError('E_INVALID_ARGUMENT', `buildDemoCorpus: probedCoverage must be in [0.5, 1], got ${String(coverage)}`);
  }
  const canonicalRate = options.canonicalRate ?? DEFAULT_CANONICAL_RATE;
  if (typeof canonicalRate !== 'number' || !(canonicalRate >= 0 && canonicalRate <= 1)) {
    throw new HiermemError('E_INVALID_ARGUMENT', `buildDemoCorpus: canonicalRate must be in [0, 1], got ${String(canonicalRate)}`);
  }
  const [minFacts, maxFacts] = options.factsPerDoc ?? DEFAULT_FACTS_PER_DOC;
  if (!Number.isInteger(minFacts) || !Number.isInteger(maxFacts) || minFacts < 1 || maxFacts < minFacts) {
    throw new HiermemError('E_INVALID_ARGUMENT', `buildDemoCorpus: factsPerDoc must be integers 1 <= min <= max, got [${String(minFacts)}, ${String(maxFacts)}]`);
  }
  const domains = options.domains ?? DOMAINS;
  if (!Array.isArray(domains) || domains.length === 0 || !domains.every((d) => DOMAINS.includes(d))) {
    throw new HiermemError('E_INVALID_ARGUMENT', `buildDemoCorpus: domains must be a non-empty subset of ${DOMAINS.join(', ')}`);
  }
  const probeFields: Record<Domain, readonly string[]> = { ...DEFAULT_PROBE_FIELDS, ...(options.probeFields ?? {}) };
  for (const d of DOMAINS) {
    const list: unknown = probeFields[d];
    if (!Array.isArray(list) || !list.every((f) => typeof f === 'string')) {
      throw new HiermemError('E_INVALID_ARGUMENT', `buildDemoCorpus: probeFields.${d} must be an array of field names`);
    }
  }
  const all = options.entities ?? loadFacts();
  templates(); // unreadable templates fail here (E_IO), before any work
  checkEntities(all);

  const rng = new Rng(seed);
  // 1. Entities → buckets, per domain.
  const plans: Plan[] = [];
  for (const domain of DOMAINS) {
    if (!domains.includes(domain)) continue;
    const list = rng.shuffle(all.filter((e) => e.domain === domain));
    if (list.length === 0) continue;
    const keep = Math.max(1, Math.round(scale * list.length));
    const sizes = apportion(keep, buckets.map((b) => b.share));
    let next = 0;
    buckets.forEach((b, bi) => {
      const size = sizes[bi]!;
      for (let i = 0; i < size; i++) {
        const entity = list[next++]!;
        const t = size === 1 ? 0 : i / (size - 1);
        const docs = Math.round(b.maxDocs * Math.pow(b.minDocs / b.maxDocs, t));
        plans.push({ entity, bucket: b.name, docs, probed: probedFieldsOf(entity, probeFields[domain]) });
      }
    });
  }

  // 2. Documents and probes, entity by entity.
  const documents: DemoDocument[] = [];
  const probes: FactProbe[] = [];
  const entities: DemoEntity[] = [];
  let factCount = 0;
  for (const plan of plans) {
    const { entity, docs: n } = plan;
    const layout = layoutFields(rng, entity, n, plan.probed, coverage, canonicalRate, minFacts, maxFacts);
    const seen = new Set<string>();
    const stated = new Set<string>();
    for (const fields of layout) {
      let text = '';
      for (let attempt = 0; attempt < 32; attempt++) {
        text = renderDocument(rng, entity, fields);
        if (!seen.has(text)) break;
      }
      seen.add(text);
      for (const f of fields) stated.add(f.field);
      documents.push({ text, entity: entity.name, domain: entity.domain, bucket: plan.bucket, fields: fields.map((f) => f.field) });
    }
    factCount += stated.size;
    for (const field of plan.probed) {
      const t = templatesFor(entity.domain, field);
      probes.push({
        prompt: canonicalPrompt(entity, t)!,
        answer: entity.facts[field]!,
        entity: entity.name,
        domain: entity.domain,
        field,
        bucket: plan.bucket,
        statements: layout.filter((fs) => fs.some((f) => f.field === field)).length,
      });
    }
    entities.push({ name: entity.name, domain: entity.domain, bucket: plan.bucket, documents: n });
  }
  rng.shuffle(documents);

  // 3. Summaries.
  const summaries: BucketSummary[] = buckets.map((b) => {
    const es = entities.filter((e) => e.bucket === b.name);
    const ps = probes.filter((p) => p.bucket === b.name);
    const freqs = es.map((e) => e.documents);
    const st = ps.map((p) => p.statements);
    return {
      name: b.name,
      entities: es.length,
      minFreq: freqs.length ? Math.min(...freqs) : 0,
      maxFreq: freqs.length ? Math.max(...freqs) : 0,
      documents: freqs.reduce((a, x) => a + x, 0),
      probes: ps.length,
      minStatements: st.length ? Math.min(...st) : 0,
      maxStatements: st.length ? Math.max(...st) : 0,
    };
  });
  const tokenizer = new ByteTokenizer();
  let characters = 0;
  let tokens = 0;
  for (const d of documents) {
    characters += d.text.length;
    tokens += tokenizer.encode(d.text).length;
  }
  return {
    documents,
    probes,
    buckets: summaries,
    entities,
    stats: { entities: entities.length, documents: documents.length, characters, tokens, facts: factCount, probes: probes.length },
  };
}

function checkBuckets(buckets: readonly BucketSpec[]): readonly BucketSpec[] {
  if (!Array.isArray(buckets) || buckets.length === 0) throw new HiermemError('E_INVALID_ARGUMENT', 'buildDemoCorpus: buckets must be a non-empty array');
  const names = new Set<string>();
  for (const b of buckets) {
    const ok =
      typeof b === 'object' && b !== null &&
      typeof b.name === 'string' && b.name !== '' && !names.has(b.name) &&
      typeof b.share === 'number' && Number.isFinite(b.share) && b.share > 0 &&
      Number.isInteger(b.minDocs) && Number.isInteger(b.maxDocs) && b.minDocs >= 1 && b.maxDocs >= b.minDocs;
    if (!ok) {
      throw new HiermemError(
        'E_INVALID_ARGUMENT',
        `buildDemoCorpus: bad bucket ${JSON.stringify(b)} (needs a unique name, share > 0, integers 1 <= minDocs <= maxDocs)`,
      );
    }
    names.add(b.name);
  }
  return buckets;
}

function checkEntities(all: readonly Entity[]): void {
  if (!Array.isArray(all)) throw new HiermemError('E_INVALID_ARGUMENT', 'buildDemoCorpus: entities must be an array');
  const names = new Set<string>();
  for (const e of all) {
    if (typeof e !== 'object' || e === null || !DOMAINS.includes(e.domain) || typeof e.name !== 'string' || e.name === '' ||
      !Array.isArray(e.aliases) || !e.aliases.every((a: unknown) => typeof a === 'string' && a !== '') ||
      typeof e.facts !== 'object' || e.facts === null || Object.keys(e.facts).length === 0 ||
      !Object.values(e.facts).every((v) => typeof v === 'string' && v !== '')) {
      throw new HiermemError('E_INVALID_ARGUMENT', `buildDemoCorpus: bad entity ${JSON.stringify(e)}`);
    }
    if (names.has(e.name)) throw new HiermemError('E_INVALID_ARGUMENT', `buildDemoCorpus: two entities are named ${JSON.stringify(e.name)}`);
    names.add(e.name);
  }
}

/** Largest-remainder split of `total` in proportion to `weights`. */
function apportion(total: number, weights: readonly number[]): number[] {
  const sum = weights.reduce((a, w) => a + w, 0);
  const exact = weights.map((w) => (total * w) / sum);
  const sizes = exact.map(Math.floor);
  let left = total - sizes.reduce((a, s) => a + s, 0);
  const order = exact.map((x, i) => ({ r: x - Math.floor(x), i })).sort((a, b) => b.r - a.r || a.i - b.i);
  for (const { i } of order) {
    if (left-- <= 0) break;
    sizes[i]!++;
  }
  return sizes;
}

/** The entity's probeable fields among `wanted` (canonical form, short answer, no delimiter), at most 3. */
function probedFieldsOf(e: Entity, wanted: readonly string[]): string[] {
  const out: string[] = [];
  for (const field of wanted) {
    const v = e.facts[field];
    const t = templatesFor(e.domain, field);
    if (v === undefined || t.canonical === undefined || hasDelimiter(v) || v !== v.trim()) continue;
    if (t.answer !== undefined && !t.answer.test(v)) continue;
    out.push(field);
    if (out.length === 3) break;
  }
  return out;
}


/** How many of an entity's `n` documents state each probed fact: ceil(coverage · n), at least 1. */
export function probedStatementCount(n: number, coverage: number = DEFAULT_PROBED_COVERAGE): number {
  return Math.min(n, Math.max(1, Math.ceil(coverage * n - 1e-9)));
}

/** Which fields each of the entity's `n` documents states (see buildDemoCorpus for the rules). */
function layoutFields(
  rng: Rng,
  e: Entity,
  n: number,
  probed: readonly string[],
  coverage: number,
  canonicalRate: number,
  minFacts: number,
  maxFacts: number,
): Slot[][] {
  const docs: Slot[][] = Array.from({ length: n }, () => []);
  const c = probedStatementCount(n, coverage);
  for (const field of rng.shuffle([...probed])) {
    // The c least-loaded documents (random among ties), so probed facts spread evenly.
    const order = rng.shuffle(Array.from({ length: n }, (_, i) => i));
    order.sort((a, b) => docs[a]!.length - docs[b]!.length);
    const chosen = order.slice(0, c);
    chosen.forEach((d, k) => docs[d]!.push({ field, probed: true, canonical: k === 0 || rng.uniform() < canonicalRate }));
  }
  const probedSet = new Set(probed);
  const others = Object.keys(e.facts).filter((f) => !probedSet.has(f));
  let cycle: string[] = [];
  for (const doc of docs) {
    const target = Math.min(minFacts + rng.int(maxFacts - minFacts + 1), doc.length + others.length);
    let guard = 0;
    while (doc.length < target && guard++ < 4 * others.length + 4) {
      if (cycle.length === 0) cycle = rng.shuffle([...others]);
      const f = cycle.pop()!;
      if (!doc.some((s) => s.field === f)) doc.push({ field: f, probed: false, canonical: false });
    }
  }
  return docs;
}
