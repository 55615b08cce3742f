/**
 * `hiermem demo prose`: the quick run's JSON keeps the facts demo's shape plus the perplexity
 * fields, every number finite and the pooled figures consistent with the per-bucket ones; and the
 * perplexity it reports (lib/eval/perplexity.ts over a trained BPE, pooled per bucket by
 * lib/eval/prose-buckets.ts) equals a float64 log-softmax over the models' own next-token logits
 * on a few prose documents.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { buildProseCorpus } from '../lib/data/prose-corpus.js';
import { trainByteLevelBpe } from '../lib/data/hf-tokenizer-train.js';
import { ByteTokenizer, type Tokenizer } from '../lib/data/tokenizer.js';
import { AnchorModel } from '../lib/model/anchor.js';
import { MemoryBank } from '../lib/memory/bank.js';
import { HierarchicalModel } from '../lib/memory/memory-model.js';
import { resolveMemorySpec } from '../lib/memory/spec.js';
import { anchorPerplexityModel, evaluatePerplexity, memoryPerplexityModel } from '../lib/eval/perplexity.js';
import { pooledStats, statsPerBucket } from '../lib/eval/prose-buckets.js';
import { HiermemError } from '../lib/errors.js';

const run = promisify(execFile);
const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../lib/cli/main.js');
const BUCKETS = ['B1', 'B2', 'B3', 'B4', 'B5'];
const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(1e-12, Math.abs(b));

interface Stats { name: string; documents: number; tokens: number; bytes: number; nll: number; nllPerToken: number; perplexity: number; bitsPerByte: number }

/** Every number anywhere in the object is finite. */
function assertFinite(x: unknown, where: string): void {
  if (typeof x === 'number') assert.ok(Number.isFinite(x), `${where} = ${x}`);
  else if (Array.isArray(x)) x.forEach((v, i) => assertFinite(v, `${where}[${i}]`));
  else if (x && typeof x === 'object') for (const [k, v] of Object.entries(x)) assertFinite(v, `${where}.${k}`);
}

function assertStats(s: Stats, where: string): void {
  for (const k of ['documents', 'tokens', 'bytes', 'nll', 'nllPerToken', 'perplexity', 'bitsPerByte'] as const) assert.equal(typeof s[k], 'number', `${where}.${k}`);
  if (s.tokens > 0) {
    assert.ok(rel(s.perplexity, Math.exp(s.nll / s.tokens)) < 1e-9, `${where}: perplexity = exp(nll / tokens)`);
    assert.ok(rel(s.bitsPerByte, s.nll / Math.LN2 / s.bytes) < 1e-9, `${where}: bits per byte`);
    assert.ok(s.perplexity > 1, where);
  }
}

function assertReport(p: { overall: Stats; buckets: Stats[]; rare: Stats }, where: string): void {
  assert.deepEqual(p.buckets.map((b) => b.name), BUCKETS, where);
  [p.overall, p.rare, ...p.buckets].forEach((s) => assertStats(s, `${where}.${s.name}`));
  assert.ok(rel(p.buckets.reduce((n, b) => n + b.nll, 0), p.overall.nll) < 1e-9, `${where}: buckets add up to the whole`);
  assert.equal(p.rare.tokens, p.buckets[3]!.tokens + p.buckets[4]!.tokens, `${where}: rare = B4 + B5`);
}

test('hiermem demo prose --quick --json: the facts demo\'s shape plus perplexity fields, finite and consistent; files written', { timeout: 900_000 }, async () => {
  const out = await mkdtemp(path.join(tmpdir(), 'hiermem-prose-'));
  const { stdout } = await run(process.execPath, [CLI, 'demo', 'prose', '--quick', '--json', '--seed', '1', '--threads', '2', '--no-progress', '--out', out],
    { maxBuffer: 64 << 20 });
  const r = JSON.parse(stdout.trim());
  assertFinite(r, 'results');
  assert.equal(r.experiment, 'prose');
  const corpus = buildProseCorpus({ seed: 1, quick: true });
  assert.equal(r.corpus.documents, corpus.train.length + corpus.heldOut.length);
  assert.deepEqual([r.corpus.trainDocuments, r.corpus.heldOutDocuments, r.corpus.probes, r.corpus.facts], [corpus.train.length, corpus.heldOut.length, corpus.heldOut.length, 0]);
  assert.ok(r.corpus.tokens > 0 && r.corpus.heldOutTokens > 0 && r.corpus.bytes > 0);
  assert.deepEqual(r.corpus.buckets.map((b: { name: string }) => b.name), BUCKETS);
  for (const b of r.corpus.buckets) assert.ok(b.minFreq <= b.maxFreq && b.elements >= 0 && b.heldOut >= 0, JSON.stringify(b));
  assert.equal(r.corpus.buckets.reduce((n: number, b: { heldOut: number }) => n + b.heldOut, 0), corpus.heldOut.length);
  assert.equal(r.corpus.buckets.reduce((n: number, b: { trainTokens: number }) => n + b.trainTokens, 0), r.corpus.tokens);
  assert.ok(['bpe', 'bytes'].includes(r.tokenizer.kind));
  if (r.tokenizer.kind === 'bpe') assert.ok(r.tokenizer.vocabSize > 258 && r.tokenizer.vocabSize <= r.plan.vocabSize);

  assert.deepEqual(r.models.map((m: { name: string }) => m.name), ['anchor', 'generic', 'fetched', 'dense2x']);
  for (const m of r.models) {
    // the facts demo's fields, holding 1 / perplexity
    assert.ok(m.overall > 0 && m.overall <= 1 && m.rare > 0 && m.rare <= 1, m.name);
    assert.deepEqual(m.buckets.map((b: { name: string }) => b.name), BUCKETS);
    m.buckets.forEach((b: { accuracy: number; n: number }, i: number) => {
      const s = m.perplexity.buckets[i];
      assert.equal(b.n, s.documents);
      assert.ok(s.tokens === 0 ? b.accuracy === 0 : rel(b.accuracy, 1 / s.perplexity) < 1e-9, `${m.name} B${i + 1}`);
    });
    assert.ok(rel(m.overall, 1 / m.perplexity.overall.perplexity) < 1e-9 && rel(m.rare, 1 / m.perplexity.rare.perplexity) < 1e-9);
    assertReport(m.perplexity, `${m.name}.perplexity`);
    assert.equal(m.perplexity.overall.documents, corpus.heldOut.length);
    // memorisation: training documents of the two rarest buckets only
    m.memorisation.buckets.forEach((s: Stats) => { assertStats(s, `${m.name}.memorisation.${s.name}`); if (!['B4', 'B5'].includes(s.name)) assert.equal(s.documents, 0); });
    assert.ok(m.memorisation.rare.documents > 0 && m.memorisation.rare.documents <= r.plan.memorisationDocs);
    assert.ok(m.params.anchor > 0 && m.params.active >= m.params.anchor && m.trainSeconds > 0);
    assert.equal(m.losses.steps.length, m.losses.losses.length);
  }
  const fetched = r.models.find((m: { name: string }) => m.name === 'fetched');
  assert.ok(fetched.params.fetched > 0 && fetched.params.bank > fetched.params.fetched);
  assertReport(r.blocked.perplexity, 'blocked.perplexity');
  assert.deepEqual(r.blocked.buckets.map((b: { name: string }) => b.name), BUCKETS);
  assert.ok(r.routing.accuracy >= 0 && r.routing.accuracy <= 1 && r.routing.k > 1 && r.routing.p > 0);
  assert.ok(r.seconds > 0 && typeof r.machine === 'string' && r.quick === true && r.seed === 1);

  const saved = JSON.parse(await readFile(path.join(out, 'results.json'), 'utf8'));
  assert.deepEqual(saved.models.map((m: { perplexity: { overall: Stats } }) => m.perplexity.overall.nll), r.models.map((m: { perplexity: { overall: Stats } }) => m.perplexity.overall.nll));
  const html = await readFile(path.join(out, 'report.html'), 'utf8');
  assert.match(html, /<svg/);
  assert.match(html, /Held-out perplexity per bucket/);
  await rm(out, { recursive: true });
});

test('without the optional BPE trainer ("tokenizers") the prose demo falls back to bytes and says so', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'hiermem-notok-'));
  // a resolve hook that hides the package, in NODE_OPTIONS so the trainer's child process gets it too
  const hook = path.join(dir, 'hide.mjs'), hooks = path.join(dir, 'hooks.mjs');
  await writeFile(hooks, 'export async function resolve(s, c, next) { if (s === "tokenizers") throw new Error("hidden by the test"); return next(s, c); }\n');
  await writeFile(hook, `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hooks).href)});\n`);
  const demo = pathToFileURL(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../lib/eval/prose-demo.js')).href;
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e',
    `const m = await import(${JSON.stringify(demo)}); const r = await m.proseTokenizer(['some text to learn from'], 300); console.log(JSON.stringify({ ...r.info, v: r.tok.vocabSize }));`],
  { env: { ...process.env, NODE_OPTIONS: `--import=${pathToFileURL(hook).href}` } });
  const info = JSON.parse(stdout.trim());
  assert.equal(info.kind, 'bytes');
  assert.equal(info.v, new ByteTokenizer().vocabSize);
  assert.match(info.note, /npm install tokenizers/);
  await rm(dir, { recursive: true });
});

test('demo: an unknown experiment is a usage error', async () => {
  await assert.rejects(run(process.execPath, [CLI, 'demo', 'poetry', '--quick']),
    (e: { code?: number; stderr?: string }) => e.code === 2 && /E_INVALID_ARGUMENT/.test(e.stderr ?? ''));
});

function logSoftmaxAt64(logits: Float32Array, target: number): number {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - max);
  return logits[target]! - max - Math.log(sum);
}

/** NLL of `ids` as the demo scores it (after an end of text, stride = seqLen), from next-token logits alone. */
function directNll(logitsOf: (ctx: Int32Array) => Float32Array, tok: Tokenizer, ids: Int32Array, T: number): number {
  const x = Int32Array.from([tok.eotId, ...ids]);
  const n = ids.length;
  let nll = 0;
  for (let j = 0; j < n; j++) {
    const end = Math.min((Math.floor(j / T) + 1) * T, n); // target j's window: T positions ending at `end`
    nll -= logSoftmaxAt64(logitsOf(x.slice(Math.max(0, end - T), j + 1)), x[j + 1]!);
  }
  return nll;
}

test('prose perplexity equals a float64 log-softmax over the model\'s logits (BPE, anchor and memory model, per bucket)', async () => {
  const corpus = buildProseCorpus({ seed: 1, quick: true });
  let tok: Tokenizer;
  try {
    tok = (await trainByteLevelBpe(corpus.train.map((d) => d.text), { vocabSize: 400 })).tokenizer;
  } catch (e) {
    // without the optional trainer the demo uses bytes; check those
    if (!(e instanceof HiermemError && e.code === 'E_BACKEND_UNAVAILABLE')) throw e;
    tok = new ByteTokenizer();
  }
  const T = 32;
  const cfg = { vocabSize: tok.vocabSize, dModel: 32, nLayers: 2, nHeads: 2, headDim: 16, ffnHidden: 64, seqLen: T, seed: 3 };
  const anchor = AnchorModel.create(cfg, { maxBatch: 4 });
  // a Brown and a WordNet document, short ones that fit the context and one spanning several windows
  const brown = corpus.heldOut.find((d) => d.source === 'brown')!.text, wordnet = corpus.heldOut.find((d) => d.source === 'wordnet')!.text;
  const docs = [{ text: brown.slice(0, 60), bucket: 'B1' }, { text: wordnet.slice(0, 80), bucket: 'B5' }, { text: brown.slice(0, 600), bucket: 'B5' }];
  assert.ok(tok.encode(docs[2]!.text).length > 3 * T, 'the long document spans several windows');

  const r = await evaluatePerplexity(docs, tok, anchorPerplexityModel(anchor), { stride: T });
  const want = docs.map((d) => directNll((ctx) => anchor.nextTokenLogits(ctx), tok, tok.encode(d.text), T));
  r.documents.forEach((d, i) => assert.ok(rel(d.nll, want[i]!) < 1e-4, `anchor doc ${i}: ${d.nll} vs ${want[i]}`));
  const perBucket = statsPerBucket(r.documents);
  assert.ok(rel(perBucket[4]!.perplexity, Math.exp((want[1]! + want[2]!) / (perBucket[4]!.tokens))) < 1e-4);
  assert.ok(rel(pooledStats('all', r.documents).perplexity, r.overall.perplexity) < 1e-12);

  const spec = resolveMemorySpec({ k: 2, levels: [4, 4], generic: true }, anchor.config);
  const bank = MemoryBank.createInMemory(spec, cfg.dModel, { seed: 4 });
  // a fresh block adds nothing (its output half starts at zero): random blocks, so the paths matter
  let u = 12345;
  const rnd = () => { u = (Math.imul(u, 1103515245) + 12345) >>> 0; return u / 2 ** 32 - 0.5; };
  for (const [level, nodes] of [[0, 2], [1, 4]] as const) {
    for (let node = 0; node < nodes; node++) bank.writeBlock(level, node, Float32Array.from({ length: bank.blockFloats(level) }, () => 0.5 * rnd()));
  }
  const hm = HierarchicalModel.fromAnchor(anchor, bank, 4);
  const paths = Int32Array.from([1, 2, 0, 1, 1, 3]);
  const m = await evaluatePerplexity(docs, tok, memoryPerplexityModel(hm, paths), { stride: T });
  m.documents.forEach((d, i) => {
    const f = hm.logitsForPath(paths.subarray(i * 2, i * 2 + 2));
    const w = directNll((ctx) => f(ctx), tok, tok.encode(docs[i]!.text), T);
    assert.ok(rel(d.nll, w) < 1e-4, `memory doc ${i}: ${d.nll} vs ${w}`);
    assert.ok(Math.abs(d.nll - want[i]!) > 1e-6, 'the memory blocks change the score (the comparison can fail)');
  });
  hm.bank.close();
  anchor.dispose();
});
