import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const run = promisify(execFile);
const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../lib/cli/main.js');

test('hiermem train writes a checkpoint, metrics, a loss chart and a JSON summary; generate reads it', async () => {
  const out = await mkdtemp(path.join(tmpdir(), 'hiermem-cli-'));
  const { stdout } = await run(process.execPath, [CLI, 'train', '--preset', 'tiny', '--steps', '6', '--batch-size', '2', '--eval-every', '3', '--out', out, '--json', '--no-progress']);
  const summary = JSON.parse(stdout.trim());
  assert.equal(summary.steps, 6);
  assert.ok(Number.isFinite(summary.finalLoss) && summary.finalLoss > 0);
  assert.ok(Number.isFinite(summary.valLoss));
  assert.ok(summary.tokensPerSec > 0);
  const svg = await readFile(path.join(out, 'loss.svg'), 'utf8');
  assert.match(svg, /^<svg/);
  const metrics = (await readFile(path.join(out, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(metrics.length, 6);
  assert.equal(summary.tokens, 6 * 2 * 64);
  assert.ok(summary.seconds > 0);
  const gen = await run(process.execPath, [CLI, 'generate', '--ckpt', path.join(out, 'checkpoint.safetensors'), 'Osmium', '--max-tokens', '5', '--temperature', '0']);
  assert.ok(gen.stdout.startsWith('Osmium'));
  const info = JSON.parse((await run(process.execPath, [CLI, 'info', path.join(out, 'checkpoint.safetensors')])).stdout);
  assert.equal(info.format, 'hiermem-checkpoint');
  assert.equal(info.metadata.model_config.dModel, 32);
  assert.ok(info.tensors.some((t: { name: string; shape: number[] }) => t.name === 'layers.0.ffn.w1' && t.shape.join() === '64,32'));
  await rm(out, { recursive: true });
});

test('bad CLI input exits with a typed error message, not a stack trace', async () => {
  await assert.rejects(run(process.execPath, [CLI, 'generate', '--checkpoint', '/nonexistent/ck.safetensors', '--prompt', 'x']),
    (e: { code?: number; stderr?: string }) => e.code === 2 && /E_IO/.test(e.stderr ?? ''));
  const bad = path.join(tmpdir(), `hiermem-bad-${process.pid}.safetensors`);
  await writeFile(bad, 'not a safetensors file at all');
  await assert.rejects(run(process.execPath, [CLI, 'info', bad]),
    (e: { code?: number; stderr?: string }) => e.code === 2 && /E_CHECKPOINT_CORRUPT/.test(e.stderr ?? ''));
  await rm(bad);
  await assert.rejects(run(process.execPath, [CLI, 'eval', '--probes', 'x.jsonl']),
    (e: { code?: number; stderr?: string }) => e.code === 2 && /E_INVALID_ARGUMENT: required option '--ckpt/.test(e.stderr ?? ''));
  await assert.rejects(run(process.execPath, [CLI, 'train', '--steps', 'many']),
    (e: { code?: number; stderr?: string }) => e.code === 2 && /E_INVALID_ARGUMENT/.test(e.stderr ?? ''));
  const dir = await mkdtemp(path.join(tmpdir(), 'hiermem-clierr-'));
  const jsonl = path.join(dir, 'c.jsonl');
  await writeFile(jsonl, '{"text": "fine"}\n{"txt": "no text field"}\n');
  await assert.rejects(run(process.execPath, [CLI, 'train', '--corpus', jsonl, '--steps', '1']),
    (e: { code?: number; stderr?: string }) => e.code === 2 && /E_INVALID_ARGUMENT/.test(e.stderr ?? '') && /c\.jsonl:2/.test(e.stderr ?? ''));
  const cfg = path.join(dir, 'model.json');
  await writeFile(cfg, '{"dModel": 32, "headDim": 7}');
  await writeFile(jsonl, '{"text": "a short document"}\n{"text": "another one"}\n');
  await assert.rejects(run(process.execPath, [CLI, 'train', '--corpus', jsonl, '--config', cfg, '--steps', '1']),
    (e: { code?: number; stderr?: string }) => e.code === 2 && /E_CONFIG_INVALID/.test(e.stderr ?? '') && /model\.json/.test(e.stderr ?? ''));
  await writeFile(cfg, '{"dModel": 32, "layers": 2}');
  await assert.rejects(run(process.execPath, [CLI, 'train', '--corpus', jsonl, '--config', cfg, '--steps', '1']),
    (e: { code?: number; stderr?: string }) => e.code === 2 && /unknown field "layers"/.test(e.stderr ?? ''));
  await rm(dir, { recursive: true });
  await assert.rejects(run(process.execPath, [CLI, 'train', '--corpus', '/nonexistent.txt', '--steps', '1']),
    (e: { code?: number; stderr?: string }) => e.code === 2 && /E_IO/.test(e.stderr ?? ''));
});

const usage = (option: string) => (e: { code?: number; stderr?: string }) =>
  e.code === 2 && /E_INVALID_ARGUMENT/.test(e.stderr ?? '') && (e.stderr ?? '').includes(`'${option}`);

test('a flag where a value belongs is a usage error naming the option (exit 2)', async () => {
  await assert.rejects(run(process.execPath, [CLI, 'train', '--out', '--steps', '3']), usage('--out'));
  await assert.rejects(run(process.execPath, [CLI, 'eval', '--ckpt', '--json', '--probes', 'p.jsonl']), usage('--ckpt'));
  await assert.rejects(run(process.execPath, [CLI, 'train', '--steps', '--json']), usage('--steps'));
  await assert.rejects(run(process.execPath, [CLI, 'generate', '--ckpt', 'x', '--prompt', '--max-tokens', '3']), usage('--prompt'));
});

test('run folders: --ckpt and --resume take the folder train --out wrote, bare --resume its own; sample from the corpus', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'hiermem-clidir-'));
  const corpus = path.join(dir, 'c.jsonl');
  const docs = Array.from({ length: 40 }, (_, i) => JSON.stringify({ text: `Entry ${i} tells of item ${i}, which weighs ${i + 3} grams.` }));
  await writeFile(corpus, docs.join('\n') + '\n');
  const out = path.join(dir, 'run');
  const common = ['--corpus', corpus, '--preset', 'tiny', '--steps', '6', '--batch-size', '2', '--eval-every', '0', '--out', out, '--no-progress'];
  await run(process.execPath, [CLI, 'train', ...common, '--checkpoint-every', '1', '--stop-after', '3', '--json']);
  // bare --resume (a flag after it is a flag, not its value): continues the --out folder's checkpoint
  const resumed = JSON.parse((await run(process.execPath, [CLI, 'train', ...common, '--resume', '--json'])).stdout.trim());
  assert.equal(resumed.steps, 6);
  const metrics = (await readFile(path.join(out, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l).step);
  assert.deepEqual(metrics, [1, 2, 3, 4, 5, 6]);
  // the sample continues the opening words of a held-out document (the last 5%: entry 38 first)
  assert.ok(resumed.sample.startsWith('Entry 38 tells of'), resumed.sample);
  // --resume with the folder, into another folder
  const out2 = path.join(dir, 'run2');
  const again = JSON.parse((await run(process.execPath, [CLI, 'train', '--corpus', corpus, '--batch-size', '2', '--eval-every', '0', '--steps', '8',
    '--out', out2, '--no-progress', '--resume', out, '--json'])).stdout.trim());
  assert.equal(again.checkpoint, path.join(out2, 'checkpoint.safetensors'));
  const m2 = (await readFile(path.join(out2, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l).step);
  assert.deepEqual(m2, [7, 8]);
  // eval, generate and info take the folder
  const probes = path.join(dir, 'p.jsonl');
  await writeFile(probes, JSON.stringify({ prompt: 'Entry 5 tells of item', answer: '5' }) + '\n');
  const ev = JSON.parse((await run(process.execPath, [CLI, 'eval', '--ckpt', out, '--probes', probes, '--json', '--no-progress'])).stdout);
  assert.equal(ev.n, 1);
  const gen = await run(process.execPath, [CLI, 'generate', '--ckpt', out, 'Entry 5', '--max-tokens', '3', '--temperature', '0']);
  assert.ok(gen.stdout.startsWith('Entry 5'));
  assert.equal(JSON.parse((await run(process.execPath, [CLI, 'info', out])).stdout).format, 'hiermem-checkpoint');
  // a folder with no checkpoint in it says so
  await assert.rejects(run(process.execPath, [CLI, 'eval', '--ckpt', dir, '--probes', probes]),
    (e: { code?: number; stderr?: string }) => e.code === 2 && /E_IO/.test(e.stderr ?? '') && /without a checkpoint\.safetensors/.test(e.stderr ?? ''));
  await rm(dir, { recursive: true });
});
