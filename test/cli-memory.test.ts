import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, readFile, rm, writeFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const run = promisify(execFile);
const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../lib/cli/main.js');
const cli = async (...args: string[]) => (await run(process.execPath, [CLI, ...args], { maxBuffer: 16 << 20 })).stdout;

const ENTITIES = ['Osmium', 'Iridium', 'Rhenium', 'Hafnium', 'Tantalum', 'Tungsten', 'Platinum', 'Gold'];

test('cluster -> train --tree -> eval -> resume: the memory pipeline from the CLI', { timeout: 120_000 }, async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'hiermem-clim-'));
  const corpus = path.join(dir, 'c.jsonl');
  const lines: string[] = [];
  ENTITIES.forEach((e, i) => {
    for (let j = 0; j < 3; j++) lines.push(JSON.stringify({ text: `${e} is element number ${70 + i}. The code of ${e} is ${e.slice(0, 2)}${j}.` }));
  });
  await writeFile(corpus, lines.join('\n') + '\n');
  const tree = path.join(dir, 'tree.safetensors');
  const c = JSON.parse(await cli('cluster', '--corpus', corpus, '--k', '2', '--levels', '2', '--out', tree, '--json'));
  assert.equal(c.documents, 24);
  const out = path.join(dir, 'run');
  const common = ['--corpus', corpus, '--tree', tree, '--preset', 'tiny', '--batch-size', '4', '--memory-levels', '4,8', '--out', out, '--json', '--no-progress', '--eval-every', '0'];
  const full = JSON.parse(await cli('train', ...common, '--steps', '6'));
  assert.equal(full.memory, true);
  assert.equal(full.steps, 6);
  assert.ok(Number.isFinite(full.finalLoss));
  // the sample continues the opening words of the held-out document, its path fetched from the tree
  assert.ok(full.sample.startsWith('Gold is element number'), full.sample);
  const files = await readdir(out);
  // the bank of a checkpoint is named by its step (so a newer bank never replaces the one a checkpoint names)
  for (const f of ['checkpoint.safetensors', 'checkpoint.bank.step-6.safetensors', 'tree.safetensors', 'loss.svg']) assert.ok(files.includes(f), f);
  assert.equal(files.filter((f) => f.includes('.bank.')).length, 1, `one bank file: ${files.join(', ')}`);
  const ckInfo = JSON.parse(await cli('info', path.join(out, 'checkpoint.safetensors')));
  assert.equal(ckInfo.metadata.memory_bank, 'checkpoint.bank.step-6.safetensors');
  const info = JSON.parse(await cli('info', path.join(out, 'checkpoint.bank.step-6.safetensors')));
  assert.equal(info.format, 'hiermem-bank');
  // eval with probes, memory routed by the tree saved beside the checkpoint
  const probes = path.join(dir, 'p.jsonl');
  await writeFile(probes, ENTITIES.map((e, i) => JSON.stringify({ prompt: `${e} is element number`, answer: String(70 + i), bucket: i < 4 ? 'B1' : 'B2' })).join('\n'));
  const ev = JSON.parse(await cli('eval', '--ckpt', path.join(out, 'checkpoint.safetensors'), '--probes', probes, '--json'));
  // the run folder names the same checkpoint
  assert.deepEqual(JSON.parse(await cli('eval', '--ckpt', out, '--probes', probes, '--json')), ev);
  assert.equal(ev.n, 8);
  assert.deepEqual(ev.buckets.map((b: { name: string; n: number }) => [b.name, b.n]), [['B1', 4], ['B2', 4]]);
  assert.ok(ev.overall >= 0 && ev.overall <= 1);
  // generate routes the prompt through the tree and says which path it fetched
  const gen = await run(process.execPath, [CLI, 'generate', '--ckpt', path.join(out, 'checkpoint.safetensors'), 'Osmium is', '--max-tokens', '4', '--temperature', '0']);
  assert.ok(gen.stdout.startsWith('Osmium is'));
  assert.match(gen.stderr, /memory path \d+ > \d+/);
  // a run stopped after 3 of 6 steps and resumed reaches the uninterrupted run's losses
  const out2 = path.join(dir, 'run2');
  const part = ['--corpus', corpus, '--tree', tree, '--preset', 'tiny', '--batch-size', '4', '--memory-levels', '4,8', '--out', out2, '--json', '--no-progress', '--eval-every', '0', '--checkpoint-every', '1'];
  await cli('train', ...part, '--steps', '6', '--stop-after', '3');
  // bare --resume (followed by a flag): the --out folder's checkpoint, its bank and tree
  const resumed = JSON.parse(await cli('train', '--corpus', corpus, '--batch-size', '4', '--out', out2, '--no-progress', '--eval-every', '0', '--steps', '6', '--resume', '--json'));
  assert.equal(resumed.memory, true);
  const m1 = (await readFile(path.join(out, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l).loss);
  const m2 = (await readFile(path.join(out2, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l).loss);
  assert.equal(m2.length, 6);
  assert.deepEqual(m2.slice(3), m1.slice(3));
  await rm(dir, { recursive: true });
});
