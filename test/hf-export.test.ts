/**
 * Exporting to the Hugging Face layout (lib/io/hf-export.ts, `hiermem export hf`): import → export →
 * import is bit-exact on every variant (weights, config, tokenizer identity); an f32 model's
 * exported weights are the original file's tensors byte for byte; the PyTorch reference forward
 * reading the exported folder by itself gives our logits; models transformers' Llama cannot express
 * are refused; a byte-tokenized Llama-style anchor exports with a tokenizer.json giving the same ids.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadHfModel } from '../lib/io/hf-import.js';
import { readSafetensors, readSafetensorsHeader } from '../lib/io/safetensors.js';
import { AnchorModel } from '../lib/model/anchor.js';
import { ByteTokenizer } from '../lib/data/tokenizer.js';
import { loadHfTokenizer } from '../lib/data/hf-tokenizer.js';
import { loadCheckpoint, saveCheckpoint } from '../lib/train/checkpoint.js';
import { importHf } from '../lib/cli/import.js';
import { exportCheckpointHf } from '../lib/cli/export.js';
import { toBfloat16 } from '../lib/io/hf-export.js';
import { REL_TOL, SCRIPT, VARIANTS, fixture, reference, rejectsWith, torchMissing, worstLogitError } from './hf-fixtures.js';

const run = promisify(execFile);
const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../lib/cli/main.js');
let dir = '';
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'hiermem-hf-export-'));
});
after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

for (const v of VARIANTS) {
  test(`${v}: import → export → import is bit-exact (weights, model config, tokenizer)`, async () => {
    const a = path.join(dir, `${v}-a.safetensors`), b = path.join(dir, `${v}-b.safetensors`), out = path.join(dir, `${v}-hf`);
    await importHf(fixture(v), a);
    await exportCheckpointHf(a, out);
    await importHf(out, b);
    const [fa, fb] = [await readSafetensors(a), await readSafetensors(b)];
    assert.deepEqual([...fb.tensors.keys()].sort(), [...fa.tensors.keys()].sort());
    for (const [name, t] of fa.tensors) assert.ok(Buffer.from(t.data.buffer).equals(Buffer.from(fb.tensors.get(name)!.data.buffer)), `${name} differs`);
    assert.equal(fb.metadata.model_config, fa.metadata.model_config);
    assert.equal(fb.metadata.tokenizer, fa.metadata.tokenizer);
    // the config.json written keeps every field of the original, the dtype aside (float32 now)
    const orig = JSON.parse(await readFile(path.join(fixture(v), 'config.json'), 'utf8')) as Record<string, unknown>;
    const written = JSON.parse(await readFile(path.join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    for (const [k, val] of Object.entries(orig)) if (k !== 'torch_dtype') assert.deepEqual(written[k], val, `config.json ${k}`);
    assert.equal(written.torch_dtype, 'float32');
    const ck = await loadCheckpoint(b, { withOptimizer: false });
    assert.ok(worstLogitError(ck.model, await reference(v)) < REL_TOL);
  });
}

test('an f32 model\'s exported model.safetensors holds the original tensors byte for byte, under their names and shapes', async () => {
  const a = path.join(dir, 'bytes.safetensors'), out = path.join(dir, 'bytes-hf');
  await importHf(fixture('untied'), a);
  const { stdout } = await run(process.execPath, [CLI, 'export', 'hf', a, '--out', out, '--json']);
  const s = JSON.parse(stdout) as { architecture: string; files: string[] };
  assert.equal(s.architecture, 'LlamaForCausalLM');
  assert.deepEqual(s.files, ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
  const [orig, ours] = [await readSafetensors(path.join(fixture('untied'), 'model.safetensors')), await readSafetensors(path.join(out, 'model.safetensors'))];
  assert.deepEqual([...ours.tensors.keys()].sort(), [...orig.tensors.keys()].sort());
  for (const [name, t] of orig.tensors) {
    const o = ours.tensors.get(name)!;
    assert.deepEqual(o.shape, t.shape, name);
    assert.ok(Buffer.from(o.data.buffer).equals(Buffer.from(t.data.buffer)), name);
  }
  assert.equal((await readSafetensorsHeader(path.join(out, 'model.safetensors'))).metadata.format, 'pt');
  // the tokenizer files load and are the same tokenizer
  assert.equal((await loadHfTokenizer(path.join(out, 'tokenizer.json'))).sha256, (await loadHfTokenizer(path.join(fixture('untied'), 'tokenizer.json'))).sha256);
});

test('the PyTorch reference forward, reading the exported folder on its own, gives our logits', { skip: torchMissing(), timeout: 120_000 }, async () => {
  for (const v of ['qwen2', 'llama3-rope', 'bf16']) {
    const a = path.join(dir, `torch-${v}.safetensors`), out = path.join(dir, `torch-${v}-hf`);
    await importHf(fixture(v), a);
    await exportCheckpointHf(a, out);
    const ids = [5, 17, 260, 33, 299, 1, 120, 45];
    const theirs = JSON.parse(execFileSync('/usr/bin/python3', [SCRIPT, '--logits', out, ids.join(',')], { encoding: 'utf8' })) as number[][];
    const m = (await loadHfModel(out)).model;
    for (let t = 1; t <= ids.length; t++) {
      const ours = m.nextTokenLogits(Int32Array.from(ids.slice(0, t)));
      const ref = theirs[t - 1]!;
      const scale = Math.max(...ref.map(Math.abs));
      const diff = Math.max(...ref.map((r, i) => Math.abs(r - ours[i]!)));
      assert.ok(diff / scale < REL_TOL, `${v} position ${t}: ${diff / scale}`);
    }
  }
});

test('a model transformers\' Llama cannot express (QK-norm: hiermem\'s own anchor) is refused, naming qkNorm', async () => {
  const model = AnchorModel.create({ vocabSize: 259, dModel: 32, nLayers: 1, nHeads: 2, headDim: 16, ffnHidden: 64, seqLen: 16, seed: 1 });
  const ck = path.join(dir, 'native.safetensors');
  await saveCheckpoint(ck, { model, tokenizer: new ByteTokenizer() });
  await rejectsWith(() => exportCheckpointHf(ck, path.join(dir, 'native-hf')), 'E_CONFIG_INCOMPATIBLE', /qkNorm/);
  const r = await run(process.execPath, [CLI, 'export', 'hf', ck, '--out', path.join(dir, 'native-hf')]).then(() => null, (e: { code: number; stderr: string }) => e);
  assert.ok(r && r.code === 2 && /E_CONFIG_INCOMPATIBLE/.test(r.stderr));
});

test('a byte-tokenized Llama-style anchor exports with a tokenizer.json of the same ids; --base-config keeps other fields', async () => {
  const model = AnchorModel.create({ vocabSize: 259, dModel: 32, nLayers: 2, nHeads: 4, nKvHeads: 2, headDim: 8, ffnHidden: 64, seqLen: 32, seed: 3, qkNorm: false, tieEmbeddings: false });
  const ck = path.join(dir, 'bytes-llama.safetensors'), out = path.join(dir, 'bytes-llama-hf');
  await saveCheckpoint(ck, { model, tokenizer: new ByteTokenizer() });
  await exportCheckpointHf(ck, out, { baseConfig: path.join(fixture('gqa'), 'config.json') });
  const cfg = JSON.parse(await readFile(path.join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(cfg.max_position_embeddings, 128, 'kept from the base config');
  assert.equal(cfg.vocab_size, 259);
  assert.equal(cfg.tie_word_embeddings, false);
  const tok = await loadHfTokenizer(path.join(out, 'tokenizer.json'));
  const bytes = new ByteTokenizer();
  const text = 'Grüße, 東京 🙂\n\tend';
  assert.deepEqual([...tok.encode(text)], [...bytes.encode(text)]);
  assert.equal(tok.decode(bytes.encode(text)), text);
  assert.equal(tok.eotId, ByteTokenizer.EOT);
  const back = await loadHfModel(out);
  assert.deepEqual(back.model.params, model.params);
});

test('--dtype bfloat16: a bf16 model exports as its original tensors byte for byte; rounding is to nearest even', async () => {
  const a = path.join(dir, 'bf16-a.safetensors'), out = path.join(dir, 'bf16-hf');
  await importHf(fixture('bf16'), a);
  const { stdout } = await run(process.execPath, [CLI, 'export', 'hf', a, '--out', out, '--dtype', 'bfloat16', '--json']);
  assert.equal((JSON.parse(stdout) as { architecture: string }).architecture, 'LlamaForCausalLM');
  const [orig, ours] = [await readSafetensors(path.join(fixture('bf16'), 'model.safetensors')), await readSafetensors(path.join(out, 'model.safetensors'))];
  assert.deepEqual([...ours.tensors.keys()].sort(), [...orig.tensors.keys()].sort());
  for (const [name, t] of orig.tensors) {
    assert.equal(ours.tensors.get(name)!.dtype, 'BF16');
    assert.ok(Buffer.from(ours.tensors.get(name)!.data.buffer).equals(Buffer.from(t.data.buffer)), name);
  }
  assert.equal((JSON.parse(await readFile(path.join(out, 'config.json'), 'utf8')) as { torch_dtype: string }).torch_dtype, 'bfloat16');
  const bits = (u: number[]) => new Float32Array(Uint32Array.from(u).buffer);
  assert.deepEqual([...toBfloat16(bits([0x3f800000, 0x3f808000, 0x3f818000, 0x3f808001, 0xbf7fffff, 0x7f7fffff, 0x7f800000, 0xff800000, 0x00000001]))],
    [0x3f80, 0x3f80, 0x3f82, 0x3f81, 0xbf80, 0x7f80, 0x7f80, 0xff80, 0x0000]);
  const nan = toBfloat16(bits([0x7f800001, 0xffc00000]));
  assert.ok((nan[0]! & 0x7f80) === 0x7f80 && (nan[0]! & 0x7f) !== 0 && (nan[1]! & 0x7f) !== 0, 'NaN stays NaN');
  const r = await run(process.execPath, [CLI, 'export', 'hf', a, '--out', out, '--dtype', 'int8']).then(() => null, (e: { code: number; stderr: string }) => e);
  assert.ok(r && r.code === 2 && /E_INVALID_ARGUMENT/.test(r.stderr), r?.stderr);
});
