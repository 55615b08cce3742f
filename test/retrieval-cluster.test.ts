/**
 * `hiermem cluster` at scale (issue #17 item 3): a corpus no larger than the sample gives exactly the
 * tree fitTexts gives on all of it; a larger one is fitted on a seeded reservoir sample and every
 * document is routed, with the same counts whatever the reader or the number of routing threads.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { clusterCorpus } from '../lib/retrieval/cluster-corpus.js';
import { RetrievalTree } from '../lib/retrieval/tree.js';
import { HiermemError } from '../lib/errors.js';
import { makeDocs, writeCorpora, type CorpusFiles } from './data-corpora.js';

let dir = '';
let files: CorpusFiles;
const docs = makeDocs(300, 7);

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'hiermem-cluster-'));
  files = await writeCorpora(path.join(dir, 'c'), docs);
});
after(async () => { if (dir) await rm(dir, { recursive: true, force: true }); });

test('cluster: a corpus within the sample gives the tree fitTexts fits on all of it, byte for byte', async () => {
  const out = path.join(dir, 'small.safetensors');
  const s = await clusterCorpus({ corpus: files.jsonl, out, k: 3, levels: 2, seed: 4, sample: 1000 });
  const { tree, paths } = await RetrievalTree.fitTexts(docs, { k: 3, p: 2, seed: 4 });
  const ref = path.join(dir, 'ref.safetensors');
  await tree.save(ref);
  assert.deepEqual(await readFile(out), await readFile(ref));
  const leaves = new Set<number>();
  for (let i = 1; i < paths.length; i += 2) leaves.add(paths[i]!);
  assert.equal(s.documents, 300);
  assert.equal(s.sampled, 300);
  assert.equal(s.leavesUsed, leaves.size);
});

test('cluster: a larger corpus is fitted on a sample and every document routed; readers and threads agree', async () => {
  const runs = [];
  for (const [corpus, threads] of [[files.jsonl, 2], [files.parquet, 0], [files.folder, 1]] as const) {
    const out = path.join(dir, `big-${threads}.safetensors`);
    runs.push({ out, s: await clusterCorpus({ corpus, out, k: 2, levels: 2, seed: 1, sample: 64, threads }) });
  }
  const tree = await RetrievalTree.load(runs[0]!.out);
  const all = await tree.assignTexts(docs);
  const counts = new Map<number, number>();
  for (let i = 1; i < all.length; i += 2) counts.set(all[i]!, (counts.get(all[i]!) ?? 0) + 1);
  for (const { out, s } of runs) {
    assert.deepEqual(await readFile(out), await readFile(runs[0]!.out));
    assert.equal(s.documents, 300);
    assert.equal(s.sampled, 64);
    assert.equal(s.leavesUsed, counts.size);
    assert.equal(s.largestLeaf, Math.max(...counts.values()));
  }
  // the sample is the tree's: its embedder saw 64 documents
  assert.equal(tree.embedder!.toJSON().docCount, 64);
});

test('cluster: a sample too small for the leaves, and an empty corpus, are typed errors', async () => {
  await assert.rejects(clusterCorpus({ corpus: files.jsonl, out: path.join(dir, 'x.safetensors'), k: 4, levels: 2, sample: 10 }),
    (e) => e instanceof HiermemError && e.code === 'E_INVALID_ARGUMENT' && /--sample/.test(e.message));
  const empty = path.join(dir, 'empty.jsonl');
  await import('node:fs/promises').then((f) => f.writeFile(empty, '\n'));
  await assert.rejects(clusterCorpus({ corpus: empty, out: path.join(dir, 'y.safetensors'), k: 2, levels: 1 }),
    (e) => e instanceof HiermemError && e.code === 'E_INVALID_ARGUMENT');
});
