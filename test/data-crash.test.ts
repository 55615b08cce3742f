/**
 * `hiermem prepare` killed with SIGKILL right after its first shard is renamed into place resumes,
 * on a rerun, to byte-identical files (shards, packed sequences, manifest) of an uninterrupted run,
 * keeping the finished shards; the CLI's summary and --skip-bad reporting.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { watch } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile, access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { RetrievalTree } from '../lib/retrieval/tree.js';
import { makeDocs } from './data-corpora.js';

const run = promisify(execFile);
const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../lib/cli/main.js');
let dir: string, corpus: string, treeFile: string;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'hiermem-prepare-crash-'));
  const docs = makeDocs(6000, 11);
  corpus = path.join(dir, 'c.jsonl');
  await writeFile(corpus, docs.map((text) => JSON.stringify({ text })).join('\n') + '\n');
  treeFile = path.join(dir, 'tree.safetensors');
  await (await RetrievalTree.fitTexts(docs.slice(0, 300), { k: 2, p: 2, seed: 1 })).tree.save(treeFile);
});
after(async () => { await rm(dir, { recursive: true, force: true }); });

const args = (out: string) => [CLI, 'prepare', '--corpus', corpus, '--tree', treeFile, '--seq-len', '64', '--shard-tokens', '20000', '--threads', '1', '--out', out, '--json', '--no-progress'];

async function filesOf(out: string): Promise<Map<string, Buffer>> {
  const m = new Map<string, Buffer>();
  for (const name of await readdir(out, { recursive: true })) {
    const p = path.join(out, name);
    if (name === 'shards') continue;
    m.set(name, await readFile(p));
  }
  return m;
}

test('SIGKILL after the first shard: the rerun keeps finished shards and ends with identical files', async () => {
  const whole = path.join(dir, 'whole');
  await run(process.execPath, args(whole));

  const out = path.join(dir, 'killed');
  await mkdir(path.join(out, 'shards'), { recursive: true });
  const child = spawn(process.execPath, args(out), { stdio: 'ignore' });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_, sig) => resolve(sig)));
  const watcher = watch(path.join(out, 'shards'), (_, name) => {
    if (name === 'shard-00000.bin') child.kill('SIGKILL');
  });
  const sig = await exited;
  watcher.close();
  assert.equal(sig, 'SIGKILL', 'the child was killed, not finished');
  await assert.rejects(access(path.join(out, 'manifest.json')), 'no manifest after a crash');
  const kept = (await readdir(path.join(out, 'shards'))).filter((n) => n.endsWith('.bin'));
  assert.ok(kept.length >= 1);

  const { stdout } = await run(process.execPath, args(out));
  const summary = JSON.parse(stdout) as { resumedShards: number; documents: number; upToDate: boolean };
  assert.ok(summary.resumedShards >= 1, `resumed ${summary.resumedShards} shards`);
  assert.equal(summary.documents, 6000);
  const a = await filesOf(whole), b = await filesOf(out);
  assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort());
  for (const [name, data] of a) assert.ok(data.equals(b.get(name)!), `${name} differs after resuming`);
  const again = JSON.parse((await run(process.execPath, args(out))).stdout) as { upToDate: boolean };
  assert.equal(again.upToDate, true);
});

test('CLI: bad records fail with file:line (exit 2), --skip-bad reports and counts them', async () => {
  const bad = path.join(dir, 'bad.jsonl');
  await writeFile(bad, '{"text":"one two three"}\n{"nope":1}\n{"text":"four five"}\n');
  const out = path.join(dir, 'badout');
  await assert.rejects(run(process.execPath, [CLI, 'prepare', '--corpus', bad, '--out', out, '--no-progress']),
    (e: { code?: number; stderr?: string }) => e.code === 2 && /E_INVALID_ARGUMENT: .*bad\.jsonl:2: missing field "text"/.test(e.stderr ?? ''));
  const r = await run(process.execPath, [CLI, 'prepare', '--corpus', bad, '--out', path.join(dir, 'badout2'), '--skip-bad', '--no-progress']);
  assert.match(r.stderr, /skipped .*bad\.jsonl:2: missing field "text"/);
  assert.match(r.stderr, /prepared 2 documents/);
  assert.match(r.stderr, /skipped records: 1/);
  assert.match(r.stderr, /peak RSS \d+ MiB/);
});
