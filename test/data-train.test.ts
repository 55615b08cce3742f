/**
 * `hiermem train --data` (a folder from `hiermem prepare`) trains exactly as `train --corpus`:
 * bit-identical losses, anchor-only and with memories; a run whose tree differs is refused.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { RetrievalTree } from '../lib/retrieval/tree.js';
import { makeDocs } from './data-corpora.js';

const run = promisify(execFile);
const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../lib/cli/main.js');
let dir: string, corpus: string, treeFile: string;
const TRAIN = ['train', '--preset', 'tiny', '--steps', '6', '--batch-size', '4', '--eval-every', '3', '--threads', '1', '--no-progress', '--json', '--memory-levels', '8,8'];

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'hiermem-data-train-'));
  const docs = makeDocs(120, 5);
  corpus = path.join(dir, 'c.jsonl');
  await writeFile(corpus, docs.map((text) => JSON.stringify({ text })).join('\n') + '\n');
  treeFile = path.join(dir, 'tree.safetensors');
  await (await RetrievalTree.fitTexts(docs, { k: 2, p: 2, seed: 1 })).tree.save(treeFile);
});
after(async () => { await rm(dir, { recursive: true, force: true }); });

async function losses(out: string): Promise<{ loss: number; valLoss?: number }[]> {
  return (await readFile(path.join(out, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { loss: number; valLoss?: number })
    .map((r) => ({ loss: r.loss, ...(r.valLoss !== undefined ? { valLoss: r.valLoss } : {}) }));
}

for (const withTree of [false, true]) {
  test(`train --data gives the losses of train --corpus, bit for bit (${withTree ? 'memory run' : 'anchor only'})`, async () => {
    const tag = withTree ? 'mem' : 'anchor';
    const data = path.join(dir, `data-${tag}`);
    const tree = withTree ? ['--tree', treeFile] : [];
    await run(process.execPath, [CLI, 'prepare', '--corpus', corpus, '--out', data, '--seq-len', '64', '--shard-tokens', '4000', '--no-progress', ...tree]);
    const a = path.join(dir, `mem-${tag}`), b = path.join(dir, `disk-${tag}`);
    await run(process.execPath, [CLI, ...TRAIN, '--corpus', corpus, '--format', 'jsonl', '--out', a, ...tree]);
    await run(process.execPath, [CLI, ...TRAIN, '--data', data, '--out', b]); // the data's own tree
    const la = await losses(a), lb = await losses(b);
    assert.equal(la.length, 6);
    assert.deepEqual(lb, la);
  });
}

test('train --data refuses a --tree other than the one the data was routed with', async () => {
  const other = path.join(dir, 'tree2.safetensors');
  await (await RetrievalTree.fitTexts(makeDocs(120, 5), { k: 2, p: 2, seed: 2 })).tree.save(other);
  await assert.rejects(run(process.execPath, [CLI, ...TRAIN, '--data', path.join(dir, 'data-mem'), '--tree', other, '--out', path.join(dir, 'x')]),
    (e: { code?: number; stderr?: string }) => e.code === 2 && /E_CONFIG_INCOMPATIBLE: .*another tree/.test(e.stderr ?? ''));
});

test('train --corpus above the in-memory threshold prepares into a temporary folder: the same losses, the folder removed', async () => {
  const tmp = path.join(dir, 'tmp');
  await import('node:fs/promises').then((f) => f.mkdir(tmp));
  for (const tree of [[], ['--tree', treeFile]]) {
    const tag = tree.length ? 'mem' : 'anchor';
    const a = path.join(dir, `small-${tag}`), b = path.join(dir, `auto-${tag}`);
    await run(process.execPath, [CLI, ...TRAIN, '--corpus', corpus, '--format', 'jsonl', '--out', a, ...tree]);
    await run(process.execPath, [CLI, ...TRAIN, '--corpus', corpus, '--out', b, ...tree], { env: { ...process.env, HIERMEM_IN_MEMORY_CORPUS_BYTES: '1', TMPDIR: tmp } });
    assert.deepEqual(await losses(b), await losses(a));
  }
  assert.deepEqual(await import('node:fs/promises').then((f) => f.readdir(tmp)), []);
});
