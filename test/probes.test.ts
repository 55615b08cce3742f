import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { extractAnswer, scoreProbes, readProbes } from '../lib/eval/probes.js';
import { ByteTokenizer } from '../lib/data/tokenizer.js';
import { HiermemError } from '../lib/errors.js';

const tok = new ByteTokenizer();

test('extractAnswer drops one leading space and cuts at the first delimiter', () => {
  assert.equal(extractAnswer(' 76. It is'), '76');
  assert.equal(extractAnswer('  Paris, the capital'), ' Paris');
  assert.equal(extractAnswer('Os\nmore'), 'Os');
  assert.equal(extractAnswer(' 1803'), '1803');
  assert.equal(extractAnswer(''), '');
});

/** A fake model that always continues with `text` (one byte per step), then <|eot|>. */
function scripted(text: string) {
  const bytes = Array.from(Buffer.from(text));
  return (probe: { prompt: string }) => (ctx: Int32Array) => {
    const i = ctx.length - tok.encode(probe.prompt).length;
    const logits = new Float32Array(tok.vocabSize);
    logits[i < bytes.length ? bytes[i]! : tok.eotId] = 1;
    return logits;
  };
}

test('scoreProbes: exact match per bucket, buckets ordered B1..Bn', () => {
  const probes = [
    { prompt: 'The capital of France is', answer: 'Paris', bucket: 'B1' },
    { prompt: 'The capital of Peru is', answer: 'Lima', bucket: 'B2' },
    { prompt: 'The capital of Chad is', answer: 'Paris', bucket: 'B2' },
    { prompt: 'X', answer: 'Paris', bucket: 'B10' },
  ];
  const r = scoreProbes(probes, tok, scripted(' Paris. And more'));
  assert.equal(r.n, 4);
  assert.equal(r.overall, 3 / 4);
  assert.deepEqual(r.buckets.map((b) => [b.name, b.n, b.accuracy]), [['B1', 1, 1], ['B2', 2, 0.5], ['B10', 1, 1]]);
});

test('readProbes validates every line', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'probes-'));
  const f = path.join(dir, 'p.jsonl');
  await writeFile(f, '{"prompt":"a","answer":"b","bucket":"B1"}\n\n{"prompt":"c","answer":"d"}\n');
  assert.equal((await readProbes(f)).length, 2);
  await writeFile(f, '{"prompt":"a","answer":"b"}\n{"prompt":"c"}\n');
  await assert.rejects(readProbes(f), (e: unknown) => e instanceof HiermemError && e.code === 'E_INVALID_ARGUMENT' && /p\.jsonl:2/.test(e.message));
  await writeFile(f, 'nope\n');
  await assert.rejects(readProbes(f), (e: unknown) => e instanceof HiermemError && /:1: not valid JSON/.test(e.message));
  await assert.rejects(readProbes(path.join(dir, 'missing.jsonl')), (e: unknown) => e instanceof HiermemError && e.code === 'E_IO');
  await rm(dir, { recursive: true });
});
