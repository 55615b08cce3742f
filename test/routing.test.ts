import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildDemoCorpus } from '../lib/data/facts.js';
import { RetrievalTree } from '../lib/retrieval/tree.js';

// The property that makes retrieval work at question time: a probe built from an entity's name
// routes to the leaf holding most of that entity's documents (issue #4 asks >= 90% on the demo corpus).
test('routing on the demo corpus: >= 90% of probes reach their entity\'s leaf (default embedder, k = 8, p = 2)', async (t) => {
  const corpus = buildDemoCorpus({ seed: 1 });
  const texts = corpus.documents.map((d) => d.text);
  const { tree, paths } = await RetrievalTree.fitTexts(texts, { k: 8, p: 2, seed: 1 });
  // one routing function: every training document's stored path equals assign(text)
  assert.deepEqual(await tree.assignTexts(texts), paths);
  const counts = new Map<string, Map<number, number>>();
  corpus.documents.forEach((d, i) => {
    const m = counts.get(d.entity) ?? new Map<number, number>();
    m.set(paths[2 * i + 1]!, (m.get(paths[2 * i + 1]!) ?? 0) + 1);
    counts.set(d.entity, m);
  });
  const major = new Map([...counts].map(([e, m]) => [e, [...m].sort((a, b) => b[1] - a[1])[0]![0]]));
  const probePaths = await tree.assignTexts(corpus.probes.map((p) => p.prompt));
  let hit = 0;
  corpus.probes.forEach((p, i) => { if (probePaths[2 * i + 1] === major.get(p.entity)) hit++; });
  const acc = hit / corpus.probes.length;
  t.diagnostic(`routing accuracy ${(100 * acc).toFixed(1)}% over ${corpus.probes.length} probes`);
  assert.ok(acc >= 0.9, `routing accuracy ${acc}`);
  // blocking routes every probe out of its own level-1 subtree
  const blocked = await tree.assignTexts(corpus.probes.map((p) => p.prompt), { avoidLevel1: true });
  corpus.probes.forEach((_, i) => assert.notEqual(blocked[2 * i], probePaths[2 * i]));
});
