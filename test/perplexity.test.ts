/**
 * Perplexity evaluation: the NLL evaluatePerplexity reports equals the one computed independently
 * from the model's next-token logits (anchor and memory models, short and long documents), buckets
 * by field and by leaf frequency, and the CLI path train --tokenizer → eval --perplexity with a
 * trained tokenizer, refusing a tokenizer other than the checkpoint's.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AnchorModel } from '../lib/model/anchor.js';
import { ByteTokenizer } from '../lib/data/tokenizer.js';
import { MemoryBank } from '../lib/memory/bank.js';
import { HierarchicalModel } from '../lib/memory/memory-model.js';
import { resolveMemorySpec } from '../lib/memory/spec.js';
import { HiermemError } from '../lib/errors.js';
import {
  anchorPerplexityModel, documentWindows, evaluatePerplexity, leafFrequencyBuckets, memoryPerplexityModel, readPerplexityDocuments,
} from '../lib/eval/perplexity.js';
import type { PerplexityResult } from '../lib/eval/perplexity.js';

const run = promisify(execFile);
const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../lib/cli/main.js');
const tok = new ByteTokenizer();
const T = 8;
const CFG = { vocabSize: tok.vocabSize, dModel: 16, nLayers: 2, nHeads: 2, headDim: 8, ffnHidden: 32, seqLen: T, seed: 5 };

let dir = '';
before(async () => { dir = await mkdtemp(path.join(tmpdir(), 'hiermem-ppl-')); });
after(async () => { if (dir) await rm(dir, { recursive: true, force: true }); });

function logSoftmaxAt(logits: Float32Array, target: number): number {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - max);
  return logits[target]! - max - Math.log(sum);
}

/** NLL from next-token logits, each target j (x[j+1]) predicted from x[contextStart(j) .. j]; x = [eot, ...ids]. */
function referenceNll(logitsOf: (ctx: Int32Array) => Float32Array, ids: Int32Array, contextStart: (j: number) => number): number {
  const x = Int32Array.from([tok.eotId, ...ids]);
  let nll = 0;
  for (let j = 0; j < ids.length; j++) nll -= logSoftmaxAt(logitsOf(x.slice(contextStart(j), j + 1)), x[j + 1]!);
  return nll;
}

/** Stride seqLen: target j in chunk k = floor(j / T), whose window ends at min((k+1)·T, n) and holds the T positions before that end. */
const chunked = (n: number) => (j: number) => Math.max(0, Math.min((Math.floor(j / T) + 1) * T, n) - T);

const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(1e-12, Math.abs(b));

test('windows score every target once, with at most seqLen tokens of context', () => {
  for (const [n, stride] of [[0, 4], [5, 4], [8, 4], [9, 4], [30, 4], [30, 1], [30, 8]] as const) {
    const w = documentWindows(n, T, stride);
    const scored: number[] = [];
    for (const { start, end, from } of w) {
      assert.ok(end - start <= T && from >= start && from < end);
      for (let j = from; j < end; j++) scored.push(j);
    }
    assert.deepEqual(scored, Array.from({ length: n }, (_, j) => j));
  }
});

test('perplexity equals exp(mean NLL) computed independently from the anchor\'s logits', async () => {
  const model = AnchorModel.create(CFG, { maxBatch: 4 });
  const short = 'Osmium.', long = 'Osmium is a hard, dense metal.';
  const ids = tok.encode(long);
  assert.ok(ids.length > 3 * T);
  const logitsOf = (ctx: Int32Array) => model.nextTokenLogits(ctx);
  const cases: [string, number, (j: number) => number][] = [
    [short, T, () => 0], // fits: every token sees the whole document
    [long, T, chunked(ids.length)], // stride seqLen: consecutive chunks, the last one ending at the document's end
    [long, 1, (j) => Math.max(0, j - T + 1)], // stride 1: a full sliding window
  ];
  for (const [text, stride, ctx] of cases) {
    const r = await evaluatePerplexity([{ text }], tok, anchorPerplexityModel(model), { stride });
    const want = referenceNll(logitsOf, tok.encode(text), ctx);
    const n = tok.encode(text).length;
    assert.ok(rel(r.overall.nll, want) < 1e-4, `${JSON.stringify(text)} stride ${stride}: ${r.overall.nll} vs ${want}`);
    assert.equal(r.overall.tokens, n);
    assert.ok(rel(r.overall.perplexity, Math.exp(want / n)) < 1e-4);
    assert.ok(rel(r.overall.bitsPerByte, want / Math.LN2 / Buffer.byteLength(text)) < 1e-4);
  }
  model.dispose();
});

test('a memory model scores each document with its own path', async () => {
  const anchor = AnchorModel.create(CFG, { maxBatch: 4 });
  const spec = resolveMemorySpec({ k: 2, levels: [4, 4], generic: true }, anchor.config);
  const hm = HierarchicalModel.fromAnchor(anchor, MemoryBank.createInMemory(spec, CFG.dModel, { seed: 3 }), 4);
  const docs = [{ text: 'Iridium is dense and hard.' }, { text: 'Gold.' }];
  const paths = Int32Array.from([1, 3, 0, 0]);
  const r = await evaluatePerplexity(docs, tok, memoryPerplexityModel(hm, paths), { stride: T, paths: { paths, levels: 2 } });
  for (let i = 0; i < docs.length; i++) {
    const f = hm.logitsForPath(paths.subarray(i * 2, i * 2 + 2));
    const ids = tok.encode(docs[i]!.text);
    const want = referenceNll((ctx) => f(ctx), ids, chunked(ids.length));
    assert.ok(rel(r.documents[i]!.nll, want) < 1e-4, `doc ${i}: ${r.documents[i]!.nll} vs ${want}`);
    assert.deepEqual(r.documents[i]!.path, [...paths.subarray(i * 2, i * 2 + 2)]);
  }
  assert.equal(r.bucketing, 'leaf-frequency');
  hm.bank.close();
});

test('buckets: the bucket field, else leaf frequency B1 (most) .. B5 (least)', async () => {
  // leaves: 7 ×4 documents, 3 ×3, 5 ×2, 9 ×1 → 10 documents in five groups of about two
  const leaves = [7, 3, 7, 5, 9, 3, 7, 5, 3, 7];
  const names = leafFrequencyBuckets(Int32Array.from(leaves.flatMap((l) => [0, l])), 2);
  const byLeaf = new Map(leaves.map((l, i) => [l, names[i]]));
  assert.deepEqual([byLeaf.get(7), byLeaf.get(3), byLeaf.get(5), byLeaf.get(9)], ['B1', 'B3', 'B4', 'B5']);
  leaves.forEach((l, i) => assert.equal(names[i], byLeaf.get(l)), 'a leaf\'s documents share a bucket');

  const model = AnchorModel.create(CFG, { maxBatch: 2 });
  const r = await evaluatePerplexity([{ text: 'ab', bucket: 'rare' }, { text: 'cd', bucket: 'common' }, { text: 'ef', bucket: 'rare' }], tok, anchorPerplexityModel(model));
  assert.equal(r.bucketing, 'field');
  assert.deepEqual(r.buckets.map((b) => [b.name, b.documents]), [['common', 1], ['rare', 2]]);
  assert.ok(rel(r.buckets.reduce((s, b) => s + b.nll, 0), r.overall.nll) < 1e-9);
  const none = await evaluatePerplexity([{ text: 'ab' }], tok, anchorPerplexityModel(model));
  assert.deepEqual([none.bucketing, none.buckets.length], ['none', 0]);
  model.dispose();

  const bad = path.join(dir, 'bad.jsonl');
  await writeFile(bad, '{"text": "ok"}\n{"text": 3}\n');
  await assert.rejects(readPerplexityDocuments(bad), (e) => e instanceof HiermemError && e.code === 'E_INVALID_ARGUMENT' && /:2:/.test(e.message));
});

test('CLI: tokenizer train → train --tokenizer → eval --perplexity; another tokenizer is refused', async () => {
  const docs = Array.from({ length: 60 }, (_, i) => `Element ${i} is a metal found in ${['Tokyo 東京', 'Köln', 'Paris 😀'][i % 3]}; its number is ${i + 1}.`);
  const corpus = path.join(dir, 'docs.jsonl');
  await writeFile(corpus, docs.map((text) => JSON.stringify({ text })).join('\n') + '\n');
  const tk = path.join(dir, 'tokenizer.json'), other = path.join(dir, 'other.json');
  await run(process.execPath, [CLI, 'tokenizer', 'train', '--corpus', corpus, '--vocab', '300', '--out', tk]);
  await run(process.execPath, [CLI, 'tokenizer', 'train', '--corpus', corpus, '--vocab', '290', '--out', other]);
  const config = path.join(dir, 'config.json');
  await writeFile(config, JSON.stringify({ dModel: 16, nLayers: 1, nHeads: 2, headDim: 8, ffnHidden: 32, seqLen: 32 }));
  const out = path.join(dir, 'run');
  const train = JSON.parse((await run(process.execPath, [CLI, 'train', '--corpus', corpus, '--tokenizer', tk, '--config', config, '--steps', '8',
    '--batch-size', '2', '--eval-every', '4', '--out', out, '--json', '--no-progress'])).stdout) as { config: { vocabSize: number } };
  assert.equal(train.config.vocabSize, 300, 'the vocabulary size comes from the tokenizer');

  const evalDocs = path.join(dir, 'eval.jsonl');
  await writeFile(evalDocs, docs.slice(0, 6).map((text, i) => JSON.stringify({ text, bucket: i < 3 ? 'a' : 'b' })).join('\n') + '\n');
  const r = JSON.parse((await run(process.execPath, [CLI, 'eval', '--ckpt', out, '--perplexity', evalDocs, '--tokenizer', tk, '--json', '--no-progress'])).stdout) as PerplexityResult;
  assert.equal(r.overall.documents, 6);
  assert.ok(r.overall.nllPerToken > 0 && r.overall.nllPerToken < Math.log(300) + 1, `nll/token ${r.overall.nllPerToken}`);
  assert.ok(r.overall.tokens < r.overall.bytes, 'BPE tokens are fewer than bytes');
  assert.deepEqual(r.buckets.map((b) => b.name), ['a', 'b']);

  const refused = /E_CONFIG_INCOMPATIBLE/;
  await assert.rejects(run(process.execPath, [CLI, 'eval', '--ckpt', out, '--perplexity', evalDocs, '--tokenizer', other, '--no-progress']),
    (e: { code?: number; stderr?: string }) => e.code === 2 && refused.test(e.stderr ?? ''));
  await assert.rejects(run(process.execPath, [CLI, 'generate', '--ckpt', out, '--tokenizer', other, 'Element', '--max-tokens', '2']),
    (e: { code?: number; stderr?: string }) => e.code === 2 && refused.test(e.stderr ?? ''));
  // continuing this checkpoint with another tokenizer is refused too
  await assert.rejects(run(process.execPath, [CLI, 'train', '--corpus', corpus, '--anchor', out, '--tokenizer', other, '--steps', '1', '--out', path.join(dir, 'run2'), '--no-progress']),
    (e: { code?: number; stderr?: string }) => e.code === 2 && refused.test(e.stderr ?? ''));
});
