/**
 * Post-hoc memories on an imported model, the README's "Bring your own model" path on the fixtures:
 * `import hf` → `cluster` → `train --anchor … --memory-mode posthoc [--memory-layers]` → `eval
 * --perplexity` with and without memory → `export hf`. Post-hoc training leaves the anchor bit for bit
 * as imported and lowers the loss of the documents routed to the trained blocks; a Hugging Face folder
 * serves as --anchor directly (cotrain too); the exported bank, fetched the way the folder's README
 * says, gives in PyTorch the logits our memory model gives.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readSafetensors, readSafetensorsHeader } from '../lib/io/safetensors.js';
import { loadHierarchicalCheckpoint } from '../lib/train/memory-trainer.js';
import { RetrievalTree } from '../lib/retrieval/tree.js';
import { parseLayerList } from '../lib/cli/train.js';
import { HiermemError } from '../lib/errors.js';
import { REL_TOL, SCRIPT, fixture, torchMissing } from './hf-fixtures.js';

const run = promisify(execFile);
const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../lib/cli/main.js');
let dir = '';
const cli = async (...args: string[]) => (await run(process.execPath, [CLI, ...args], { maxBuffer: 1 << 26 })).stdout;
const at = (f: string) => path.join(dir, f);

/** Four topics of short documents: the tree separates them, each leaf's memory learns its own. */
function documents(): string[] {
  const topics = [
    ['Osmium is a dense metal', 'Iridium resists corrosion', 'Platinum is a noble metal'],
    ['Lima is the capital of Peru', 'Paris lies on the Seine', 'Tokyo is a large city'],
    ['The zebra has stripes', 'A whale is a mammal', 'Owls hunt at night'],
    ['Bread is baked from flour', 'Rice grows in paddies', 'Cheese is made from milk'],
  ];
  let s = 1;
  const r = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
  return topics.flatMap((facts) => Array.from({ length: 30 }, () => Array.from({ length: 3 }, () => facts[Math.floor(r() * facts.length)]).join('. ') + '.'));
}

interface Ppl { overall: { nll: number; nllPerToken: number; tokens: number }; documents: Array<{ nll: number; path?: number[] }> }

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'hiermem-hf-posthoc-'));
  await writeFile(at('docs.jsonl'), documents().map((text) => JSON.stringify({ text })).join('\n') + '\n');
  // the README's path, command for command
  await cli('import', 'hf', fixture('gqa'), '--out', at('model.safetensors'), '--seq-len', '64');
  await cli('cluster', '--corpus', at('docs.jsonl'), '--k', '4', '--levels', '2', '--out', at('tree.safetensors'), '--json');
  await cli('train', '--corpus', at('docs.jsonl'), '--tree', at('tree.safetensors'), '--anchor', at('model.safetensors'), '--memory-mode', 'posthoc',
    '--memory-levels', '8,16', '--memory-layers', 'last:1', '--steps', '30', '--batch-size', '4', '--lr', '3e-3', '--out', at('mem'), '--json', '--no-progress');
});
after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('post-hoc training leaves the imported anchor bit-identical and trains only the chosen memory layers', async () => {
  const [imported, trained] = [await readSafetensors(at('model.safetensors')), await readSafetensors(at('mem/checkpoint.safetensors'))];
  let n = 0;
  for (const [name, t] of imported.tensors) {
    assert.ok(Buffer.from(t.data.buffer).equals(Buffer.from(trained.tensors.get(name)!.data.buffer)), `${name} changed`);
    n++;
  }
  assert.equal(n, 16, 'every anchor tensor of the gqa model compared');
  const spec = JSON.parse(trained.metadata.memory_spec!) as { layers: number[]; levels: number[] };
  assert.deepEqual(spec.layers, [1], '--memory-layers last:1 of 2 layers');
  const bank = await readSafetensorsHeader(at(`mem/${trained.metadata.memory_bank!}`));
  assert.deepEqual(bank.tensors.get('memory.level2.weight')!.shape, [16, 1, 3, 16, 32]);
});

test('eval --perplexity: memory lowers the loss of the routed documents; --no-memory is the imported anchor exactly', async () => {
  const docs = at('docs.jsonl');
  const withMem = JSON.parse(await cli('eval', '--ckpt', at('mem'), '--perplexity', docs, '--json', '--no-progress')) as Ppl;
  const without = JSON.parse(await cli('eval', '--ckpt', at('mem'), '--perplexity', docs, '--no-memory', '--json', '--no-progress')) as Ppl;
  const anchor = JSON.parse(await cli('eval', '--ckpt', at('model.safetensors'), '--perplexity', docs, '--json', '--no-progress')) as Ppl;
  assert.equal(without.overall.nll, anchor.overall.nll, 'the frozen anchor scores as imported');
  assert.ok(withMem.overall.nllPerToken < 0.9 * without.overall.nllPerToken, `with memory ${withMem.overall.nllPerToken} vs ${without.overall.nllPerToken} nats/token`);
  const better = withMem.documents.filter((d, i) => d.nll < without.documents[i]!.nll).length;
  assert.ok(better > 0.9 * withMem.documents.length, `${better} of ${withMem.documents.length} documents improved`);
  assert.ok(withMem.documents.every((d) => Array.isArray(d.path) && d.path.length === 2), 'each document routed by its own text');
  // generate with the memory run: the prompt's path is printed, the continuation decoded
  const g = await run(process.execPath, [CLI, 'generate', '--ckpt', at('mem'), '--temperature', '0', '--max-tokens', '8', 'Osmium is']);
  assert.ok(g.stdout.startsWith('Osmium is'));
  assert.match(g.stderr, /memory path \d+ > \d+/);
});

test('export hf of the memory run: the anchor as the original HF weights byte for byte, the bank, tree, memory_config.json and README beside it', async () => {
  const out = at('exported');
  const s = JSON.parse(await cli('export', 'hf', at('mem'), '--out', out, '--base-config', path.join(fixture('gqa'), 'config.json'), '--json')) as { files: string[] };
  assert.deepEqual(s.files.sort(), ['README.md', 'config.json', 'memory_bank.safetensors', 'memory_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'tree.safetensors']);
  assert.deepEqual((await readdir(out)).sort(), s.files);
  const [orig, ours] = [await readSafetensors(path.join(fixture('gqa'), 'model.safetensors')), await readSafetensors(path.join(out, 'model.safetensors'))];
  for (const [name, t] of orig.tensors) assert.ok(Buffer.from(t.data.buffer).equals(Buffer.from(ours.tensors.get(name)!.data.buffer)), name);
  const cfg = JSON.parse(await readFile(path.join(out, 'config.json'), 'utf8')) as { max_position_embeddings: number };
  assert.equal(cfg.max_position_embeddings, 128, 'from --base-config, not the imported context of 64');
  const readme = await readFile(path.join(out, 'README.md'), 'utf8');
  assert.match(readme, /memory\.level2\.weight` \[16, 1, 3, 16, 32\]/);
  assert.match(readme, /Memory layers \(model layer indices\): 1\./);
  const mc = JSON.parse(await readFile(path.join(out, 'memory_config.json'), 'utf8')) as { k: number; levels: number[]; layers: number[] };
  assert.deepEqual([mc.k, mc.levels, mc.layers], [4, [8, 16], [1]]);
  assert.ok((await readFile(path.join(out, 'memory_bank.safetensors'))).equals(await readFile(at(`mem/${(await readSafetensorsHeader(at('mem/checkpoint.safetensors'))).metadata.memory_bank!}`))));
});

test('the exported bank fetched as its README says gives, in PyTorch, the logits of our memory model on that path', { skip: torchMissing(), timeout: 120_000 }, async () => {
  const out = at('exported-torch');
  await cli('export', 'hf', at('mem'), '--out', out);
  const ck = await loadHierarchicalCheckpoint(at('mem/checkpoint.safetensors'), { maxBatch: 1 });
  const text = documents()[3]!;
  const route = await (await RetrievalTree.load(path.join(out, 'tree.safetensors'))).assignText(text);
  const ids = [...ck.tokenizer.encode(text)].slice(0, 12);
  const theirs = JSON.parse(execFileSync('/usr/bin/python3', [SCRIPT, '--logits', out, ids.join(','), [...route].join(',')], { encoding: 'utf8' })) as number[][];
  const plain = JSON.parse(execFileSync('/usr/bin/python3', [SCRIPT, '--logits', out, ids.join(',')], { encoding: 'utf8' })) as number[][];
  const f = ck.hm.logitsForPath(route);
  let memoryEffect = 0;
  for (let t = 1; t <= ids.length; t++) {
    const ours = f(Int32Array.from(ids.slice(0, t)));
    const ref = theirs[t - 1]!;
    const scale = Math.max(...ref.map(Math.abs));
    const diff = Math.max(...ref.map((r, i) => Math.abs(r - ours[i]!)));
    assert.ok(diff / scale < REL_TOL, `position ${t}: ${diff / scale}`);
    memoryEffect = Math.max(memoryEffect, Math.max(...ref.map((r, i) => Math.abs(r - plain[t - 1]![i]!))) / scale);
  }
  assert.ok(memoryEffect > 1e-2, 'the fetched blocks change the logits (the check can fail)');
});

test('a Hugging Face folder serves as --anchor directly (Qwen2 biases, cotrain: the anchor trains too)', async () => {
  const s = JSON.parse(await cli('train', '--corpus', at('docs.jsonl'), '--tree', at('tree.safetensors'), '--anchor', fixture('qwen2'), '--memory-mode', 'cotrain',
    '--memory-levels', '4,8', '--steps', '4', '--batch-size', '2', '--out', at('qwen-mem'), '--json', '--no-progress')) as { config: { qkvBias: boolean; seqLen: number }; finalLoss: number };
  assert.equal(s.config.qkvBias, true);
  assert.equal(s.config.seqLen, 128, 'the folder\'s max_position_embeddings (under the default cap)');
  assert.ok(Number.isFinite(s.finalLoss));
  const [orig, trained] = [await readSafetensors(path.join(fixture('qwen2'), 'model.safetensors')), await readSafetensors(at('qwen-mem/checkpoint.safetensors'))];
  const a = orig.tensors.get('model.norm.weight')!.data as Float32Array, b = trained.tensors.get('final_norm.weight')!.data as Float32Array;
  assert.notDeepEqual(b, a, 'cotrain updates the anchor');
  const spec = JSON.parse(trained.metadata.memory_spec!) as { layers: number[] };
  assert.deepEqual(spec.layers, [0, 1], 'every layer by default');
  // the tokenizer came from the folder: a run started elsewhere with another tokenizer is refused
  const r = await run(process.execPath, [CLI, 'train', '--corpus', at('docs.jsonl'), '--anchor', fixture('qwen2'), '--tokenizer', path.join(fixture('gqa'), 'tokenizer.json'),
    '--steps', '1', '--out', at('x')]).then(() => null, (e: { code: number; stderr: string }) => e);
  assert.equal(r, null, 'the same tokenizer.json (all fixtures share it) is accepted');
});

test('--memory-layers: indices, ranges and last:N; anything else is E_INVALID_ARGUMENT', () => {
  assert.deepEqual(parseLayerList('0,3,5-7', 30), [0, 3, 5, 6, 7]);
  assert.deepEqual(parseLayerList('last:4', 30), [26, 27, 28, 29]);
  assert.deepEqual(parseLayerList('2, 1 ,1', 3), [1, 2]);
  for (const bad of ['', 'last:0', 'last:31', '7-5', '30', 'a', '-1', '1,,2']) {
    assert.throws(() => parseLayerList(bad, 30), (e: unknown) => e instanceof HiermemError && e.code === 'E_INVALID_ARGUMENT', bad);
  }
});
