/**
 * The prose corpus: Brown tags stripped and punctuation spaced as printed, WordNet lines parsed
 * (lemmas, lexicographer file, definition, examples, hyponyms), the corpus the same for the same
 * seed, and the held-out split never putting a document (or any line of one) on both sides.
 * Also the cluster-frequency buckets of the prose experiment.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { detokenize, parseBrownText, readBrownSamples, brownOpening } from '../lib/data/prose-brown.js';
import { parseSynsetLine, splitGloss, synsetText } from '../lib/data/prose-wordnet.js';
import { buildProseCorpus, type ProseCorpus } from '../lib/data/prose-corpus.js';
import { bucketNames, leafBuckets, pooledStats, routingPurity, statsPerBucket } from '../lib/eval/prose-buckets.js';
import { HiermemError } from '../lib/errors.js';

test('Brown: tags stripped, punctuation and `` \'\' quotes spaced as printed', () => {
  const tagged = '\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn \'\'/\'\' ,/, and/cc (/( 1-1/2/cd )/) more/ap ./.\n' +
    'Was/bedz it/pps Jr./np ./.\n\n\n\tA/at new/jj paragraph/nn --/-- here/rb !/.\n';
  assert.equal(detokenize(['He/pps said/vbd ``/``', 'Hi/uh', '\'\'/\'\'', './.'].join(' ').split(' ')), 'He said "Hi".');
  assert.deepEqual(parseBrownText(tagged), [
    'The jury said "no evidence", and (1-1/2) more. Was it Jr.',
    'A new paragraph -- here!',
  ]);
});

test('Brown: the installed corpus reads as 500 samples of 15 genres, no tags left', () => {
  const samples = readBrownSamples();
  assert.equal(samples.length, 500);
  assert.equal(new Set(samples.map((s) => s.genre)).size, 15);
  const ca01 = samples.find((s) => s.id === 'ca01')!;
  assert.equal(ca01.genre, 'news');
  assert.match(ca01.paragraphs[0]!, /^The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election produced "no evidence" that any irregularities took place\.$/);
  const opening = brownOpening(ca01, 100);
  assert.ok(opening.split(/\s+/).length >= 100 && opening.split('\n').every((p) => ca01.paragraphs.includes(p)), 'whole paragraphs, at least 100 words');
  for (const s of samples) for (const p of s.paragraphs) assert.doesNotMatch(p, /\S\/(at|nn|nns|vbd|jj)(-tl|-hl)?\b/, `${s.id}: a tag left in ${p.slice(0, 60)}`);
});

test('WordNet: a data line parses into lemmas, topic, definition, examples and hyponyms', () => {
  const line = '02086723 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 004 @ 02085998 n 0000 #m 02086515 n 0000 ~ 01325095 n 0000 ~i 02087384 n 0000 ' +
    '| a member of the genus Canis; occurs in many breeds; "the dog barked all night"; "a dog\'s life"  ';
  const s = parseSynsetLine(line, 'n')!;
  assert.deepEqual(s, {
    id: 'n02086723', lexfile: 'noun.animal', words: ['dog', 'domestic dog', 'Canis familiaris'], definition: 'a member of the genus Canis; occurs in many breeds',
    examples: ['the dog barked all night', 'a dog\'s life'], hyponyms: ['n01325095', 'n02087384'],
  });
  assert.equal(synsetText(s, 1), 'dog, domestic dog, Canis familiaris: a member of the genus Canis; occurs in many breeds. For example: "the dog barked all night".');
  assert.equal(parseSynsetLine('  1 This software and database is being provided', 'n'), null);
  assert.deepEqual(splitGloss('to move fast'), { definition: 'to move fast', examples: [] });
  assert.throws(() => parseSynsetLine('00001740 03 n zz entity', 'n'), (e) => e instanceof HiermemError && e.code === 'E_IO');
});

function assertDisjoint(c: ProseCorpus): void {
  const trainIds = new Set(c.train.map((d) => d.id));
  for (const d of c.heldOut) assert.ok(!trainIds.has(d.id), `${d.id} on both sides`);
  assert.equal(new Set([...c.train, ...c.heldOut].map((d) => d.id)).size, c.train.length + c.heldOut.length, 'ids unique');
  // no line of text (a Brown paragraph, a WordNet entry) on both sides either
  const trainLines = new Set(c.train.flatMap((d) => d.text.split('\n')).filter((l) => !/^Kinds of /.test(l)));
  for (const d of c.heldOut) for (const l of d.text.split('\n')) assert.ok(/^Kinds of /.test(l) || !trainLines.has(l), `${d.id}: "${l.slice(0, 60)}" also in training`);
}

test('corpus: deterministic per seed, split by document, both sources on both sides', () => {
  const a = buildProseCorpus({ seed: 1, quick: true });
  const b = buildProseCorpus({ seed: 1, quick: true });
  assert.deepEqual(a, b, 'same seed, same corpus');
  assertDisjoint(a);
  for (const s of a.stats.sources) assert.ok(s.train > 0 && s.heldOut > 0, `${s.source}: ${s.train} / ${s.heldOut}`);
  assert.equal(a.heldOut.length, a.stats.sources.reduce((n, s) => n + s.heldOut, 0));
  const other = buildProseCorpus({ seed: 2, quick: true });
  assert.notDeepEqual(other.heldOut.map((d) => d.id), a.heldOut.map((d) => d.id), 'another seed, another split');
  assertDisjoint(other);
  const full = buildProseCorpus({ seed: 1 });
  assertDisjoint(full);
  assert.equal(full.stats.sources.find((s) => s.source === 'brown')!.train + full.stats.sources.find((s) => s.source === 'brown')!.heldOut, 500);
  assert.ok(full.heldOut.every((d) => d.text.length > 0) && full.train.every((d) => d.text.length > 0));
  for (const bad of [{ heldOutShare: 0 }, { heldOutShare: 0.9 }, { brownSamples: 501 }, { brownSamples: 1, wordnetFamilies: 1 }, { brownWords: 0 }]) {
    assert.throws(() => buildProseCorpus({ seed: 1, ...bad }), (e) => e instanceof HiermemError && e.code === 'E_INVALID_ARGUMENT', JSON.stringify(bad));
  }
});

test('buckets: leaves by training text, B1 (most) .. B5 (least), whole leaves; unseen leaves rarest', () => {
  // p = 1; leaves 0..5 holding 50, 30, 10, 5, 3, 2 training tokens (100 in all): a leaf's bucket is
  // where the text before it ends (0 → B1, 50 → B3, 80 → B5, ...)
  const leaves = [0, 0, 1, 2, 3, 4, 5];
  const tokens = [25, 25, 30, 10, 5, 3, 2];
  const lb = leafBuckets(Int32Array.from(leaves), 1, tokens);
  assert.deepEqual(bucketNames(lb, Int32Array.from([0, 1, 2, 3, 4, 5, 9]), 1), ['B1', 'B3', 'B5', 'B5', 'B5', 'B5', 'B5']);
  assert.deepEqual(lb.summary.map((b) => [b.name, b.leaves, b.minTokens, b.maxTokens, b.trainTokens]),
    [['B1', 1, 50, 50, 50], ['B2', 0, 0, 0, 0], ['B3', 1, 30, 30, 30], ['B4', 0, 0, 0, 0], ['B5', 4, 2, 10, 20]]);
  assert.throws(() => leafBuckets(Int32Array.from([0, 1]), 1, [1]), (e) => e instanceof HiermemError && e.code === 'E_SHAPE_MISMATCH');
  // purity: leaf 0 mostly "a", leaf 1 mostly "b"
  assert.equal(routingPurity(Int32Array.from([0, 0, 0, 1, 1]), ['a', 'a', 'b', 'b', 'b'], Int32Array.from([0, 1, 1, 7]), ['a', 'a', 'b', 'b'], 1), 0.5);
  const docs = [{ index: 0, bucket: 'B1', tokens: 4, bytes: 10, nll: 8 }, { index: 1, bucket: 'B5', tokens: 6, bytes: 20, nll: 3 }];
  const all = pooledStats('all', docs);
  assert.equal(all.nll, 11);
  assert.ok(Math.abs(all.perplexity - Math.exp(11 / 10)) < 1e-12 && Math.abs(all.bitsPerByte - 11 / Math.LN2 / 30) < 1e-12);
  assert.deepEqual(statsPerBucket(docs).map((s) => [s.name, s.documents]), [['B1', 1], ['B2', 0], ['B3', 0], ['B4', 0], ['B5', 1]]);
});
