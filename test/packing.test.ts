import { test } from 'node:test';
import assert from 'node:assert/strict';
import { packLeaf, packByLeaf, PathBatchSampler } from '../lib/data/packing.js';
import { GENERIC_PATH } from '../lib/memory/memory-model.js';

const EOT = 100, PAD = 101;
const o = { seqLen: 8, eotId: EOT, padId: PAD };

test('packLeaf: documents, <|eot|>, targets, docStart and padding', () => {
  const path = Int32Array.of(0, 3);
  const seqs = packLeaf([Int32Array.of(1, 2, 3), Int32Array.of(4, 5), Int32Array.of(6, 7, 8, 9, 10, 11, 12)], path, o);
  assert.equal(seqs.length, 2);
  const [a, b] = seqs;
  assert.deepEqual(Array.from(a!.tokens), [1, 2, 3, EOT, 4, 5, EOT, 6]);
  assert.deepEqual(Array.from(a!.targets), [2, 3, EOT, -1, 5, EOT, -1, 7]);
  assert.deepEqual(Array.from(a!.docStart), [0, 0, 0, 0, 4, 4, 4, 7]);
  // the cut document continues as a fresh document in the next sequence
  assert.deepEqual(Array.from(b!.tokens), [7, 8, 9, 10, 11, 12, EOT, PAD]);
  assert.deepEqual(Array.from(b!.targets), [8, 9, 10, 11, 12, EOT, -1, -1]);
  assert.deepEqual(Array.from(b!.docStart), [0, 0, 0, 0, 0, 0, 0, 7]);
  assert.equal(a!.path, path);
});

test('packByLeaf keeps each sequence within one leaf and loses no token', () => {
  const docs = [Int32Array.of(1, 2), Int32Array.of(3), Int32Array.of(4, 5, 6), Int32Array.of(7, 8)];
  const paths = Int32Array.from([0, 1, 1, 2, 0, 1, 1, 3]); // docs 0 and 2 share leaf 1
  const seqs = packByLeaf({ docs, paths, levels: 2 }, o);
  const byLeaf = new Map<number, number[]>();
  for (const s of seqs) {
    const toks = Array.from(s.tokens).filter((t) => t !== PAD);
    byLeaf.set(s.path[1]!, [...(byLeaf.get(s.path[1]!) ?? []), ...toks]);
  }
  assert.deepEqual(byLeaf.get(1), [1, 2, EOT, 4, 5, 6, EOT]);
  assert.deepEqual(byLeaf.get(2), [3, EOT]);
  assert.deepEqual(byLeaf.get(3), [7, 8, EOT]);
});

test('PathBatchSampler: deterministic, sorted by path, generic memory with probability 1/(k+1)', () => {
  const docs = Array.from({ length: 40 }, (_, i) => Int32Array.of(i % 50, (i + 1) % 50));
  const paths = Int32Array.from(docs.flatMap((_, i) => [i % 4 >> 1, i % 4]));
  const seqs = packByLeaf({ docs, paths, levels: 2 }, o);
  const s1 = new PathBatchSampler(seqs, { seed: 3 }), s2 = new PathBatchSampler(seqs, { seed: 3 });
  const b1 = s1.next(6), b2 = s2.next(6);
  assert.deepEqual(b1, b2);
  for (let b = 1; b < 6; b++) assert.ok(b1.paths[2 * b]! >= b1.paths[2 * (b - 1)]!, 'batch sorted by path');
  const g = new PathBatchSampler(seqs, { seed: 4, genericK: 4 });
  let generic = 0, total = 0;
  for (let i = 0; i < 400; i++) {
    const b = g.next(5);
    for (let j = 0; j < 5; j++) { total++; if (b.paths[2 * j] === GENERIC_PATH) generic++; }
  }
  assert.ok(Math.abs(generic / total - 0.2) < 0.03, `generic fraction ${generic / total}`);
});
