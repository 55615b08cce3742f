import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import {
  DEFAULT_BUCKETS,
  DEFAULT_PROBE_FIELDS,
  FACTS_DIR,
  QUICK_SCALE,
  buildDemoCorpus,
  extractProbeAnswer,
  isProbeCorrect,
  loadFacts,
  probeDelimiters,
  probedStatementCount,
  type DemoCorpus,
  type Entity,
} from '../lib/data/facts.js';
import { HiermemError } from '../lib/errors.js';

/** The token budget the default corpus is designed for (data/README.md). */
const DEFAULT_TOKEN_BUDGET = 360_000;
const QUICK_TOKEN_BUDGET = 90_000;

const corpus = buildDemoCorpus({ seed: 7 });
const quick = buildDemoCorpus({ seed: 7, quick: true });

function docsByEntity(c: DemoCorpus): Map<string, DemoCorpus['documents']> {
  const m = new Map<string, DemoCorpus['documents']>();
  for (const d of c.documents) {
    const list = m.get(d.entity) ?? [];
    list.push(d);
    m.set(d.entity, list);
  }
  return m;
}

function expectInvalid(fn: () => unknown, message: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof HiermemError, String(err));
    assert.equal(err.code, 'E_INVALID_ARGUMENT');
    assert.match(err.message, message);
    return true;
  });
}

/** Largest-remainder apportionment, written independently of the module's. */
function expectedSizes(total: number, shares: readonly number[]): number[] {
  const sum = shares.reduce((a, s) => a + s, 0);
  const exact = shares.map((s) => (total * s) / sum);
  const sizes = exact.map((x) => Math.floor(x));
  const byRemainder = exact.map((x, i) => [x - Math.floor(x), i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  const left = total - sizes.reduce((a, s) => a + s, 0);
  for (let j = 0; j < left; j++) sizes[byRemainder[j]![1]]!++;
  return sizes;
}

test('fact tables: resolved from the compiled location, 118 elements and ~250 countries, over a thousand facts', () => {
  assert.ok(existsSync(FACTS_DIR), FACTS_DIR);
  const facts = loadFacts();
  const elements = facts.filter((e) => e.domain === 'element');
  const countries = facts.filter((e) => e.domain === 'country');
  assert.equal(elements.length, 118);
  assert.ok(countries.length >= 240, `${countries.length} countries`);
  assert.equal(new Set(facts.map((e) => e.name)).size, facts.length, 'entity names are unique');
  const total = facts.reduce((n, e) => n + Object.keys(e.facts).length, 0);
  assert.ok(total >= 1000, `${total} facts`);
  for (const e of facts) {
    for (const [field, value] of Object.entries(e.facts)) {
      assert.ok(value.length > 0 && value === value.trim(), `${e.name}.${field} = ${JSON.stringify(value)}`);
      assert.ok(value.length <= 40, `${e.name}.${field} is short: ${value}`);
    }
  }
  for (const e of elements) {
    assert.match(e.facts.atomic_number ?? '', /^\d+$/, e.name);
    assert.match(e.facts.symbol ?? '', /^[A-Z][a-z]{0,2}$/, e.name);
  }
  for (const e of countries) assert.ok(e.facts.capital, `${e.name} has a capital`);

  const osmium = elements.find((e) => e.name === 'Osmium')!;
  assert.equal(osmium.facts.atomic_number, '76');
  assert.equal(osmium.facts.symbol, 'Os');
  assert.equal(osmium.facts.discovered, '1803');
  assert.equal(osmium.facts.group_block, 'transition metal');
  assert.equal(osmium.facts.standard_state, 'solid');
  assert.equal(osmium.facts.atomic_mass, '190.23');
  assert.deepEqual(elements.find((e) => e.name === 'Aluminum')!.aliases, ['Aluminium']);
  const france = countries.find((e) => e.name === 'France')!;
  assert.deepEqual(
    { capital: france.facts.capital, continent: france.facts.continent, currency: france.facts.currency, phone: france.facts.phone_code, language: france.facts.language },
    { capital: 'Paris', continent: 'Europe', currency: 'EUR', phone: '+33', language: 'French' },
  );
});

test('sentence templates are data (data/facts/templates.json): a canonical probe form for every default probed field', () => {
  const file = path.join(FACTS_DIR, 'templates.json');
  assert.ok(existsSync(file), file);
  const t = JSON.parse(readFileSync(file, 'utf8')) as {
    fields: Record<string, Record<string, { canonical?: string; named: string[]; pronoun: string[]; answer?: string }>>;
    frames: Record<string, string[]>;
  };
  for (const [domain, fields] of Object.entries(DEFAULT_PROBE_FIELDS)) {
    for (const f of fields) assert.match(t.fields[domain]?.[f]?.canonical ?? '', / \{V\}\.$/, `${domain}.${f}`);
    assert.ok(t.frames[domain]!.every((fr) => fr.includes('{B}')), `${domain} frames hold the body`);
  }
  // a probe prompt is its canonical form up to " {V}."
  const c = buildDemoCorpus({ seed: 1, quick: true });
  const p = c.probes.find((x) => x.field === 'atomic_number')!;
  assert.equal(p.prompt, `The atomic number of ${p.entity} is`);
});

test('the same seed gives the identical corpus; another seed a different one', () => {
  assert.deepEqual(buildDemoCorpus({ seed: 7 }), corpus);
  assert.deepEqual(buildDemoCorpus({ seed: 7, quick: true }), quick);
  const other = buildDemoCorpus({ seed: 8 });
  assert.notDeepEqual(other.documents.map((d) => d.text), corpus.documents.map((d) => d.text));
  assert.notDeepEqual(other.entities, corpus.entities, 'the bucket assignment depends on the seed');
});

test('buckets: entities split per domain by share; every entity gets its bucket\'s number of documents', (t) => {
  const facts = loadFacts();
  const shares = DEFAULT_BUCKETS.map((b) => b.share);
  const expected = DEFAULT_BUCKETS.map(() => 0);
  for (const domain of ['element', 'country'] as const) {
    expectedSizes(facts.filter((e) => e.domain === domain).length, shares).forEach((n, i) => (expected[i]! += n));
  }
  assert.deepEqual(corpus.buckets.map((b) => b.entities), expected);
  assert.deepEqual(corpus.buckets.map((b) => b.name), ['B1', 'B2', 'B3', 'B4', 'B5']);
  assert.equal(corpus.entities.length, facts.length);

  const byEntity = docsByEntity(corpus);
  for (const e of corpus.entities) {
    const spec = DEFAULT_BUCKETS.find((b) => b.name === e.bucket)!;
    assert.equal(e.documents, spec.maxDocs, `${e.name} in ${e.bucket}`);
    const docs = byEntity.get(e.name) ?? [];
    assert.equal(docs.length, e.documents, e.name);
    for (const d of docs) {
      assert.equal(d.bucket, e.bucket);
      assert.equal(d.domain, e.domain);
    }
    assert.equal(new Set(docs.map((d) => d.text)).size, docs.length, `documents of ${e.name} are pairwise different`);
  }
  corpus.buckets.forEach((b, i) => {
    const spec = DEFAULT_BUCKETS[i]!;
    assert.equal(b.minFreq, spec.minDocs);
    assert.equal(b.maxFreq, spec.maxDocs);
    assert.equal(b.documents, b.entities * spec.maxDocs);
    // Default coverage: every document of an entity states each of its probed facts.
    assert.equal(b.minStatements, spec.minDocs);
    assert.equal(b.maxStatements, spec.maxDocs);
  });
  for (const b of corpus.buckets) {
    t.diagnostic(`${b.name}: ${b.entities} entities x ${b.minFreq} documents = ${b.documents} documents, ${b.probes} probes`);
  }
});

test('every document is a short article naming its entity and stating several of its facts', () => {
  const facts = new Map(loadFacts().map((e) => [e.name, e]));
  for (const d of corpus.documents) {
    const e = facts.get(d.entity)!;
    assert.ok(d.text.includes(d.entity), `document of ${d.entity} names it: ${d.text}`);
    assert.ok(d.fields.length >= 2 && d.fields.length <= 4, d.text);
    assert.equal(new Set(d.fields).size, d.fields.length);
    for (const f of d.fields) {
      const value = e.facts[f]!;
      assert.ok(value !== undefined, `${d.entity} has ${f}`);
      // Group names are written in the plural in some sentences ("sits among the transition metals").
      assert.ok(d.text.includes(value), `"${value}" (${f}) in: ${d.text}`);
    }
    assert.ok(d.text.length < 400, d.text);
  }
  // Names are repeated: on average well over one mention per document.
  const mentions = corpus.documents.reduce((n, d) => n + d.text.split(d.entity).length - 1, 0);
  assert.ok(mentions / corpus.documents.length > 2, `${(mentions / corpus.documents.length).toFixed(2)} mentions per document`);
});

test('probes: canonical prompts, short answers, every probed fact stated in its entity\'s documents', (t) => {
  const byEntity = docsByEntity(corpus);
  const perEntity = new Map<string, number>();
  const canonicalShare: number[] = [];
  for (const p of corpus.probes) {
    perEntity.set(p.entity, (perEntity.get(p.entity) ?? 0) + 1);
    assert.ok(p.prompt.length > 0 && p.prompt === p.prompt.trim(), p.prompt);
    assert.ok(p.prompt.includes(p.entity), p.prompt);
    assert.ok(p.answer.length > 0 && p.answer === p.answer.trim(), p.answer);
    for (const d of probeDelimiters) assert.ok(!p.answer.includes(d), `answer ${JSON.stringify(p.answer)} holds delimiter ${JSON.stringify(d)}`);
    assert.ok(isProbeCorrect(` ${p.answer}.`, p.answer));

    const docs = byEntity.get(p.entity)!;
    const stating = docs.filter((d) => d.fields.includes(p.field));
    assert.equal(stating.length, p.statements);
    // The rule: each probed fact is stated in at least half of its entity's documents (default: all).
    assert.ok(p.statements >= Math.ceil(docs.length / 2), `${p.entity}.${p.field}: ${p.statements} of ${docs.length}`);
    assert.equal(p.statements, probedStatementCount(docs.length));
    for (const d of stating) assert.ok(d.text.includes(p.answer), `${p.answer} in ${d.text}`);
    const canonical = `${p.prompt} ${p.answer}.`;
    const withCanonical = stating.filter((d) => d.text.includes(canonical)).length;
    assert.ok(withCanonical >= 1, `the canonical sentence "${canonical}" occurs in training documents`);
    canonicalShare.push(withCanonical / stating.length);
  }
  for (const e of corpus.entities) {
    const n = perEntity.get(e.name) ?? 0;
    assert.ok(n >= 1 && n <= 3, `${e.name} has ${n} probes`);
  }
  assert.equal(new Set(corpus.probes.map((p) => `${p.entity}\u0000${p.field}`)).size, corpus.probes.length);
  assert.ok(corpus.probes.some((p) => p.prompt === 'The atomic number of Osmium is' && p.answer === '76'));
  assert.ok(corpus.probes.some((p) => p.prompt === 'The capital of France is' && p.answer === 'Paris'));
  assert.ok(corpus.probes.some((p) => p.prompt === 'The capital of the United States is' && p.answer === 'Washington'));
  assert.ok(corpus.probes.some((p) => p.prompt === 'Osmium was discovered in' && p.answer === '1803'));
  const fields = new Set(corpus.probes.map((p) => p.field));
  assert.deepEqual([...fields].sort(), ['atomic_number', 'capital', 'currency', 'discovered', 'phone_code', 'symbol']);
  // Paraphrases too: the canonical sentence is not every statement of a probed fact.
  const mean = canonicalShare.reduce((a, x) => a + x, 0) / canonicalShare.length;
  assert.ok(mean > 0.4 && mean < 0.9, `canonical share ${mean.toFixed(2)}`);
  t.diagnostic(`${corpus.probes.length} probes; the canonical sentence is ${(100 * mean).toFixed(0)}% of statements of a probed fact`);
});

test(`stats are consistent; the default corpus fits its budget of ${DEFAULT_TOKEN_BUDGET} tokens; quick is smaller`, (t) => {
  for (const c of [corpus, quick]) {
    assert.equal(c.stats.documents, c.documents.length);
    assert.equal(c.stats.entities, c.entities.length);
    assert.equal(c.stats.probes, c.probes.length);
    assert.equal(c.stats.characters, c.documents.reduce((n, d) => n + d.text.length, 0));
    assert.equal(c.stats.tokens, c.documents.reduce((n, d) => n + Buffer.byteLength(d.text, 'utf8'), 0));
    assert.equal(c.stats.facts, new Set(c.documents.flatMap((d) => d.fields.map((f) => `${d.entity}\u0000${f}`))).size);
    assert.equal(c.buckets.reduce((n, b) => n + b.documents, 0), c.documents.length);
    assert.equal(c.buckets.reduce((n, b) => n + b.probes, 0), c.probes.length);
  }
  assert.ok(corpus.stats.facts >= 1000, `${corpus.stats.facts} distinct facts stated`);
  assert.ok(corpus.stats.tokens <= DEFAULT_TOKEN_BUDGET && corpus.stats.tokens >= 150_000, `${corpus.stats.tokens} tokens`);
  assert.ok(quick.stats.tokens <= QUICK_TOKEN_BUDGET, `quick: ${quick.stats.tokens} tokens`);
  assert.ok(quick.stats.tokens < corpus.stats.tokens / 3);
  assert.ok(quick.stats.documents < corpus.stats.documents / 3);
  // Quick is a miniature: same buckets and documents per entity, fewer entities.
  assert.deepEqual(quick.buckets.map((b) => [b.name, b.minFreq, b.maxFreq]), corpus.buckets.map((b) => [b.name, b.minFreq, b.maxFreq]));
  assert.ok(quick.buckets.every((b) => b.entities > 0));
  assert.equal(quick.entities.length, Math.round(118 * QUICK_SCALE) + Math.round((corpus.entities.length - 118) * QUICK_SCALE));
  for (const c of [corpus, quick]) {
    const s = c.stats;
    t.diagnostic(
      `${c === corpus ? 'default' : 'quick'}: ${s.entities} entities, ${s.documents} documents, ${s.tokens} tokens (${s.characters} characters), ${s.facts} facts, ${s.probes} probes`,
    );
  }
});

test('options: coverage 1/2, document ranges within a bucket, one domain, custom entities', () => {
  const half = buildDemoCorpus({ seed: 3, probedCoverage: 0.5, scale: 0.3 });
  const byEntity = docsByEntity(half);
  for (const p of half.probes) {
    const n = byEntity.get(p.entity)!.length;
    assert.equal(p.statements, Math.ceil(n / 2), `${p.entity}.${p.field}`);
    assert.ok(byEntity.get(p.entity)!.some((d) => d.text.includes(`${p.prompt} ${p.answer}.`)));
  }
  assert.equal(probedStatementCount(5, 0.6), 3);
  assert.equal(probedStatementCount(3, 0.5), 2);
  assert.equal(probedStatementCount(1, 0.5), 1);

  const zipf = buildDemoCorpus({ seed: 1, domains: ['element'], buckets: [{ name: 'head', share: 1, minDocs: 2, maxDocs: 10 }] });
  assert.ok(zipf.documents.every((d) => d.domain === 'element'));
  assert.equal(zipf.buckets[0]!.minFreq, 2);
  assert.equal(zipf.buckets[0]!.maxFreq, 10);
  const counts = zipf.entities.map((e) => e.documents);
  for (let i = 1; i < counts.length; i++) assert.ok(counts[i]! <= counts[i - 1]!, 'frequency falls with rank inside the bucket');

  const entities: Entity[] = [
    { domain: 'country', name: 'Atlantis', aliases: ['Poseidonis'], facts: { capital: 'Poseidonia', currency: 'ATL', phone_code: '+999', motto: 'Waves' } },
    { domain: 'element', name: 'Unobtainium', aliases: [], facts: { atomic_number: '200', symbol: 'Uo', discovered: 'Ancient, perhaps' } },
  ];
  const custom = buildDemoCorpus({ seed: 2, entities, buckets: [{ name: 'only', share: 1, minDocs: 4, maxDocs: 4 }] });
  assert.equal(custom.documents.length, 8);
  assert.deepEqual(custom.probes.filter((p) => p.entity === 'Unobtainium').map((p) => p.field), ['atomic_number', 'symbol'], 'a value with a delimiter is not probed');
  assert.ok(custom.documents.some((d) => d.text.includes('The motto of Atlantis is Waves.') || d.text.includes("Atlantis' motto is Waves.") || d.text.includes('Its motto is Waves.')));
});

test('probe answer rule: one leading space dropped, cut at the first delimiter, exact match', () => {
  assert.deepEqual([...probeDelimiters], ['.', ',', ';', '\n']);
  assert.equal(extractProbeAnswer(' 76. Osmium is'), '76');
  assert.equal(extractProbeAnswer('76, the'), '76');
  assert.equal(extractProbeAnswer(' Paris\nThe capital'), 'Paris');
  assert.equal(extractProbeAnswer(' EUR; prices'), 'EUR');
  assert.equal(extractProbeAnswer('  76.'), ' 76');
  assert.equal(extractProbeAnswer(' +33'), '+33');
  assert.ok(isProbeCorrect(' San José.', 'San José'));
  assert.ok(!isProbeCorrect(' 76 and more.', '76'));
  assert.ok(!isProbeCorrect(' 7.', '76'));
});

test('invalid options → E_INVALID_ARGUMENT', () => {
  expectInvalid(() => buildDemoCorpus({ seed: 1.5 }), /seed/);
  expectInvalid(() => buildDemoCorpus({ seed: 1, scale: 0 }), /scale/);
  expectInvalid(() => buildDemoCorpus({ seed: 1, scale: 1.5 }), /scale/);
  expectInvalid(() => buildDemoCorpus({ seed: 1, buckets: [] }), /buckets/);
  expectInvalid(() => buildDemoCorpus({ seed: 1, buckets: [{ name: 'B1', share: 1, minDocs: 3, maxDocs: 2 }] }), /bucket/);
  expectInvalid(() => buildDemoCorpus({ seed: 1, buckets: [{ name: 'B1', share: 1, minDocs: 1, maxDocs: 1 }, { name: 'B1', share: 1, minDocs: 1, maxDocs: 1 }] }), /bucket/);
  expectInvalid(() => buildDemoCorpus({ seed: 1, probedCoverage: 0.3 }), /probedCoverage/);
  expectInvalid(() => buildDemoCorpus({ seed: 1, canonicalRate: 2 }), /canonicalRate/);
  expectInvalid(() => buildDemoCorpus({ seed: 1, factsPerDoc: [0, 2] }), /factsPerDoc/);
  expectInvalid(() => buildDemoCorpus({ seed: 1, domains: ['planet' as 'element'] }), /domains/);
  expectInvalid(
    () => buildDemoCorpus({ seed: 1, entities: [{ domain: 'element', name: 'X', aliases: [], facts: { a: '1' } }, { domain: 'element', name: 'X', aliases: [], facts: { a: '2' } }] }),
    /two entities/,
  );
});
