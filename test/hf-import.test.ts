/**
 * Importing Hugging Face Llama-family folders (lib/io/hf-import.ts, `hiermem import hf`): on every
 * fixture variant our logits equal the PyTorch reference (written from the HF equations in float64)
 * within 1e-4 relative, the loss matches, and greedy decoding picks the same tokens; the fixture's
 * byte-level BPE tokenizer.json gives the ids of the script's independent encoder and of Hugging
 * Face's Rust library; configs and tensors the anchor cannot compute are refused, naming the field;
 * malformed folders are typed errors; the committed fixtures are what the script writes.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, readFile, readdir, rm, writeFile, truncate, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import tokenizers from 'tokenizers';
import { loadHfModel, isHfModelDir } from '../lib/io/hf-import.js';
import { modelConfigFromHf } from '../lib/io/hf-config.js';
import { loadHfTokenizer } from '../lib/data/hf-tokenizer.js';
import { loadCheckpoint } from '../lib/train/checkpoint.js';
import { readSafetensors, writeSafetensors } from '../lib/io/safetensors.js';
import { importHf } from '../lib/cli/import.js';
import { limitVocab } from '../lib/train/limit-vocab.js';
import { generate } from '../lib/model/generate.js';
import { saveCheckpoint } from '../lib/train/checkpoint.js';
import {
  FIXTURES, REL_TOL, SCRIPT, VARIANTS, copyFixture, fixture, greedyTokens, lossError, reference, rejectsWith, torchMissing, worstLogitError,
} from './hf-fixtures.js';

const run = promisify(execFile);
const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../lib/cli/main.js');
let dir = '';
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'hiermem-hf-import-'));
});
after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

for (const v of VARIANTS) {
  test(`${v}: logits within ${REL_TOL} of the PyTorch reference at every position, same loss, same greedy tokens`, async () => {
    const m = await loadHfModel(fixture(v));
    const ref = await reference(v);
    const err = worstLogitError(m.model, ref);
    assert.ok(err < REL_TOL, `${v}: worst relative logit error ${err}`);
    const lossErr = lossError(m.model, ref);
    assert.ok(lossErr < REL_TOL, `${v}: loss differs by ${lossErr} relative`);
    assert.deepEqual(greedyTokens(m.model, ref), [...ref.greedy], `${v}: greedy continuation`);
    m.model.dispose();
  });
}

test('what each variant exercises: GQA, untied head, q/k/v biases, padded vocab, f16 shards, bf16, llama3 RoPE', async () => {
  const cfg = async (v: string) => (await loadHfModel(fixture(v))).config;
  const gqa = await cfg('gqa');
  assert.equal(gqa.nKvHeads * 2, gqa.nHeads);
  assert.equal(gqa.qkNorm, false);
  assert.equal(gqa.vocabSize, 304, 'embedding rows past the tokenizer\'s 300 ids');
  assert.equal((await cfg('untied')).tieEmbeddings, false);
  const qwen = await cfg('qwen2');
  assert.equal(qwen.qkvBias, true);
  assert.equal(qwen.nKvHeads, 1);
  assert.deepEqual((await loadHfModel(fixture('sharded'))).dtypes, { F16: 21 });
  assert.deepEqual((await loadHfModel(fixture('bf16'))).dtypes, { BF16: 20 });
  assert.deepEqual((await cfg('llama3-rope')).ropeScaling, { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 64 });
  // without the scaling the llama3 variant's logits are far from the reference: the test above can fail
  const d = copyFixture('llama3-rope', path.join(dir, 'rope-off'));
  const c = JSON.parse(await readFile(path.join(d, 'config.json'), 'utf8')) as Record<string, unknown>;
  await writeFile(path.join(d, 'config.json'), JSON.stringify({ ...c, rope_scaling: null }));
  const off = await loadHfModel(d);
  assert.ok(worstLogitError(off.model, await reference('llama3-rope')) > 1e-2);
});

test('the fixture tokenizer.json: the script\'s byte-level BPE ids, Hugging Face\'s Rust library\'s ids, exact round trip', async () => {
  const ref = JSON.parse(await readFile(path.join(FIXTURES, 'tokenizer-reference.json'), 'utf8')) as { texts: string[]; ids: number[][]; vocabSize: number; eotId: number };
  const tok = await loadHfTokenizer(path.join(fixture('gqa'), 'tokenizer.json'));
  assert.equal(tok.vocabSize, ref.vocabSize);
  assert.equal(tok.eotId, ref.eotId);
  const rust = tokenizers.Tokenizer.fromString(await readFile(path.join(fixture('gqa'), 'tokenizer.json'), 'utf8'));
  assert.ok(ref.texts.some((t) => /[\u0400-\u04ff]/.test(t)) && ref.texts.some((t) => /[\u4e00-\u9fff]/.test(t)) && ref.texts.some((t) => /\u{1F642}/u.test(t)));
  ref.texts.forEach((text, i) => {
    assert.deepEqual([...tok.encode(text)], ref.ids[i], `ids of ${JSON.stringify(text)}`);
    assert.equal(tok.decode(ref.ids[i]!), text);
  });
  for (const [i, text] of ref.texts.entries()) {
    assert.deepEqual((await rust.encode(text, null, { addSpecialTokens: false })).getIds(), ref.ids[i], `Rust tokenizers ids of ${JSON.stringify(text)}`);
  }
});

test('`hiermem import hf`: a checkpoint with the same weights, the tokenizer embedded, the context capped by --seq-len', async () => {
  const out = path.join(dir, 'imported', 'gqa.safetensors');
  const { stdout } = await run(process.execPath, [CLI, 'import', 'hf', fixture('gqa'), '--out', out, '--seq-len', '48', '--json']);
  const s = JSON.parse(stdout) as { architecture: string; parameters: number; vocabSize: number; tokenizerVocab: number; seqLen: number };
  assert.deepEqual([s.architecture, s.vocabSize, s.tokenizerVocab, s.seqLen], ['LlamaForCausalLM', 304, 300, 48]);
  const ck = await loadCheckpoint(out, { withOptimizer: false });
  const direct = await loadHfModel(fixture('gqa'));
  assert.equal(ck.model.config.seqLen, 48);
  assert.deepEqual(ck.model.params, direct.model.params);
  assert.equal(ck.tokenizer.vocabSize, 300, 'tokenizer vocab below the model\'s is accepted (padded embeddings)');
  assert.ok(ck.extraMetadata?.hf_config?.includes('LlamaForCausalLM'));
  assert.ok(worstLogitError(ck.model, await reference('gqa')) < REL_TOL);
  // the folder itself, anywhere a checkpoint is read for an anchor
  assert.equal(await isHfModelDir(fixture('gqa')), true);
  assert.equal(await isHfModelDir(out), false);
  // generate from the imported checkpoint (CLI, greedy): the tokenizer decodes the model's tokens
  const g = await run(process.execPath, [CLI, 'generate', '--ckpt', out, '--temperature', '0', '--max-tokens', '5', 'Hello, world!']);
  assert.ok(g.stdout.startsWith('Hello, world!'));
  const over = await run(process.execPath, [CLI, 'import', 'hf', fixture('gqa'), '--out', out, '--seq-len', '4096']).then(() => null, (e: { code: number; stderr: string }) => e);
  assert.ok(over && over.code === 2 && /E_INVALID_ARGUMENT.*max_position_embeddings 128/.test(over.stderr), over?.stderr);
});

test('generation never samples the padded embedding rows past the tokenizer\'s ids (they would not decode)', async () => {
  const m = await loadHfModel(fixture('gqa'), { seqLen: 32 });
  // make the padded rows 300..303 win: large random directions in the tied head
  const emb = m.model.tensor('tok_embeddings.weight');
  let s = 5;
  for (let i = 300 * 32; i < 304 * 32; i++) emb[i] = 1000 * (((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) - 0.5);
  const prompt = Int32Array.of(72, 101, 108);
  const free = generate(m.model, prompt, { maxTokens: 12, temperature: 0 });
  assert.ok([...free].some((t) => t >= 300), 'without the limit a padded row is chosen (the check can fail)');
  const limited = [...generate(limitVocab(m.model, 300), prompt, { maxTokens: 12, temperature: 0 })];
  assert.ok(limited.length === 12 && limited.every((t) => t < 300));
  // the same through the CLI: generate decodes what it samples
  const ck = path.join(dir, 'padded-wins.safetensors');
  await saveCheckpoint(ck, { model: m.model, tokenizer: m.tokenizer });
  const g = await run(process.execPath, [CLI, 'generate', '--ckpt', ck, '--temperature', '0', '--max-tokens', '12', 'Hel']);
  assert.ok(g.stdout.startsWith('Hel'));
});

/** config.json of the gqa fixture with `edit` applied, in a fresh copy of the folder. */
async function withConfig(name: string, edit: (c: Record<string, unknown>) => void, from = 'gqa'): Promise<string> {
  const d = copyFixture(from, path.join(dir, name));
  const c = JSON.parse(await readFile(path.join(d, 'config.json'), 'utf8')) as Record<string, unknown>;
  edit(c);
  await writeFile(path.join(d, 'config.json'), JSON.stringify(c));
  return d;
}

test('configs the anchor cannot compute exactly are refused with E_CONFIG_INCOMPATIBLE naming the field', async () => {
  const cases: Array<[string, (c: Record<string, unknown>) => void, RegExp]> = [
    ['arch', (c) => { c.architectures = ['GPTNeoXForCausalLM']; }, /architectures/],
    ['qwen3', (c) => { c.architectures = ['Qwen3ForCausalLM']; c.model_type = 'qwen3'; }, /architectures/],
    ['type', (c) => { c.model_type = 'qwen2'; }, /model_type/],
    ['act', (c) => { c.hidden_act = 'gelu'; }, /hidden_act/],
    ['attn-bias', (c) => { c.attention_bias = true; }, /attention_bias/],
    ['mlp-bias', (c) => { c.mlp_bias = true; }, /mlp_bias/],
    ['rope-linear', (c) => { c.rope_scaling = { rope_type: 'linear', factor: 2 }; }, /rope_scaling\.rope_type/],
    ['rope-yarn', (c) => { c.rope_scaling = { type: 'yarn', factor: 4 }; }, /rope_scaling\.rope_type/],
    ['moe', (c) => { c.num_local_experts = 8; }, /num_local_experts/],
    ['quant', (c) => { c.quantization_config = { quant_method: 'gptq' }; }, /quantization_config/],
    ['mistral-window', (c) => { c.architectures = ['MistralForCausalLM']; c.model_type = 'mistral'; c.sliding_window = 4096; }, /sliding_window/],
  ];
  for (const [name, edit, re] of cases) await rejectsWith(() => withConfig(name, edit).then((d) => loadHfModel(d)), 'E_CONFIG_INCOMPATIBLE', re);
  await rejectsWith(() => withConfig('qwen-window', (c) => { c.use_sliding_window = true; }, 'qwen2').then((d) => loadHfModel(d)), 'E_CONFIG_INCOMPATIBLE', /use_sliding_window/);
  // Mistral without a sliding window is Llama: the same weights give the gqa reference's logits
  const mistral = await withConfig('mistral', (c) => { c.architectures = ['MistralForCausalLM']; c.model_type = 'mistral'; c.sliding_window = null; });
  const mm = await loadHfModel(mistral);
  assert.equal(mm.architecture, 'MistralForCausalLM');
  assert.ok(worstLogitError(mm.model, await reference('gqa')) < REL_TOL);
  // a Qwen2 config keeps its (unused) sliding_window when use_sliding_window is false; "default" rope is none
  assert.equal(modelConfigFromHf({ ...JSON.parse(await readFile(path.join(fixture('qwen2'), 'config.json'), 'utf8')) as object, rope_scaling: { rope_type: 'default' } }).config.ropeScaling, null);
});

test('bad config.json values are E_CONFIG_INVALID naming the field; a missing one E_IO', async () => {
  const cases: Array<[string, (c: Record<string, unknown>) => void, RegExp]> = [
    ['no-hidden', (c) => { delete c.hidden_size; }, /hidden_size/],
    ['neg-layers', (c) => { c.num_hidden_layers = -2; }, /num_hidden_layers/],
    ['kv-heads', (c) => { c.num_key_value_heads = 3; }, /nKvHeads/],
    ['eps', (c) => { c.rms_norm_eps = 'tiny'; }, /rms_norm_eps/],
    ['tie', (c) => { c.tie_word_embeddings = 'yes'; }, /tie_word_embeddings/],
    ['archs', (c) => { c.architectures = 'LlamaForCausalLM'; }, /architectures/],
    ['rope-factor', (c) => { c.rope_scaling = { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4 }; }, /original_max_position_embeddings/],
  ];
  for (const [name, edit, re] of cases) await rejectsWith(() => withConfig(name, edit).then((d) => loadHfModel(d)), 'E_CONFIG_INVALID', re);
  const d = copyFixture('gqa', path.join(dir, 'not-json'));
  await writeFile(path.join(d, 'config.json'), '{"architectures": [');
  await rejectsWith(() => loadHfModel(d), 'E_CONFIG_INVALID', /not valid JSON/);
  await rejectsWith(() => loadHfModel(path.join(dir, 'nowhere')), 'E_IO');
  const noTok = copyFixture('gqa', path.join(dir, 'no-tokenizer'));
  await unlink(path.join(noTok, 'tokenizer.json'));
  await rejectsWith(() => loadHfModel(noTok), 'E_IO', /tokenizer\.json/);
  const noWeights = copyFixture('gqa', path.join(dir, 'no-weights'));
  await unlink(path.join(noWeights, 'model.safetensors'));
  await rejectsWith(() => loadHfModel(noWeights), 'E_IO', /model\.safetensors/);
});

/** The gqa fixture's weights rewritten by `edit` (name → tensor), in a fresh copy. */
async function withTensors(name: string, edit: (t: Map<string, { dtype: string; shape: number[]; data: ArrayBufferView }>) => void, from = 'gqa'): Promise<string> {
  const d = copyFixture(from, path.join(dir, name));
  const f = await readSafetensors(path.join(d, 'model.safetensors'));
  const t = new Map([...f.tensors].map(([n, x]) => [n, { dtype: x.dtype as string, shape: x.shape, data: x.data as ArrayBufferView }]));
  edit(t);
  await writeSafetensors(path.join(d, 'model.safetensors'), [...t].map(([n, x]) => ({ name: n, dtype: x.dtype as 'F32', shape: x.shape, data: x.data as Float32Array })), f.metadata);
  return d;
}

test('tensors that do not fit the config are refused: missing, extra, wrong shape or dtype, a tied head that differs, NaN', async () => {
  const load = (d: Promise<string>) => () => d.then((x) => loadHfModel(x));
  await rejectsWith(load(withTensors('missing', (t) => t.delete('model.layers.1.mlp.up_proj.weight'))), 'E_CONFIG_INCOMPATIBLE', /up_proj.*missing/);
  await rejectsWith(load(withTensors('o-bias', (t) => t.set('model.layers.0.self_attn.o_proj.bias', { dtype: 'F32', shape: [32], data: new Float32Array(32) }))), 'E_CONFIG_INCOMPATIBLE', /o_proj\.bias/);
  await rejectsWith(load(withTensors('q-norm', (t) => t.set('model.layers.0.self_attn.q_norm.weight', { dtype: 'F32', shape: [8], data: new Float32Array(8) }))), 'E_CONFIG_INCOMPATIBLE', /q_norm/);
  await rejectsWith(load(withTensors('shape', (t) => { const x = t.get('model.norm.weight')!; t.set('model.norm.weight', { ...x, shape: [4, 8] }); })), 'E_CONFIG_INCOMPATIBLE', /model\.norm\.weight has shape \[4, 8\]/);
  await rejectsWith(load(withTensors('dtype', (t) => t.set('model.norm.weight', { dtype: 'I32', shape: [32], data: new Int32Array(32) }))), 'E_CONFIG_INCOMPATIBLE', /I32/);
  await rejectsWith(load(withTensors('nan', (t) => { (t.get('model.norm.weight')!.data as Float32Array)[3] = NaN; })), 'E_CHECKPOINT_CORRUPT', /non-finite/);
  // tie_word_embeddings true with a stored head: the same values load; others are refused
  const same = await withTensors('tied-same', (t) => t.set('lm_head.weight', { ...t.get('model.embed_tokens.weight')! }));
  assert.ok(worstLogitError((await loadHfModel(same)).model, await reference('gqa')) < REL_TOL);
  await rejectsWith(load(withTensors('tied-differs', (t) => t.set('lm_head.weight', { dtype: 'F32', shape: [304, 32], data: new Float32Array(304 * 32) }))), 'E_CONFIG_INCOMPATIBLE', /tie_word_embeddings/);
  // an untied model without its head
  await rejectsWith(load(withTensors('no-head', (t) => t.delete('lm_head.weight'), 'untied')), 'E_CONFIG_INCOMPATIBLE', /lm_head\.weight is missing/);
  // old transformers' rotary buffers are ignored
  const inv = await withTensors('inv-freq', (t) => t.set('model.layers.0.self_attn.rotary_emb.inv_freq', { dtype: 'F32', shape: [4], data: new Float32Array(4) }));
  assert.ok(worstLogitError((await loadHfModel(inv)).model, await reference('gqa')) < REL_TOL);
  // a tokenizer with more ids than embedding rows
  const small = await withConfig('small-vocab', (c) => { c.vocab_size = 200; });
  await rejectsWith(() => loadHfModel(small), 'E_CONFIG_INCOMPATIBLE', /vocab_size is 200/);
});

test('a sharded index that lies, names paths outside the folder, or points at a truncated shard is a typed error', async () => {
  const idxOf = async (d: string) => JSON.parse(await readFile(path.join(d, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
  const edited = async (name: string, edit: (idx: { weight_map: Record<string, string> }, d: string) => Promise<void> | void) => {
    const d = copyFixture('sharded', path.join(dir, name));
    const idx = await idxOf(d);
    await edit(idx, d);
    await writeFile(path.join(d, 'model.safetensors.index.json'), JSON.stringify(idx));
    return d;
  };
  const shard1 = 'model-00001-of-00002.safetensors', shard2 = 'model-00002-of-00002.safetensors';
  await rejectsWith(async () => loadHfModel(await edited('escape', (i) => { i.weight_map['model.norm.weight'] = '../gqa/model.safetensors'; })), 'E_CHECKPOINT_CORRUPT', /not a file name/);
  await rejectsWith(async () => loadHfModel(await edited('lies', (i) => { i.weight_map['model.norm.weight'] = i.weight_map['model.norm.weight'] === shard1 ? shard2 : shard1; })), 'E_CHECKPOINT_CORRUPT');
  await rejectsWith(async () => loadHfModel(await edited('no-map', (i) => { (i as { weight_map?: unknown }).weight_map = undefined; })), 'E_CHECKPOINT_CORRUPT', /weight_map/);
  await rejectsWith(async () => loadHfModel(await edited('gone', async (_, d) => { await unlink(path.join(d, shard2)); })), 'E_IO');
  await rejectsWith(async () => loadHfModel(await edited('cut', async (_, d) => { await truncate(path.join(d, shard2), 5000); })), 'E_CHECKPOINT_CORRUPT');
  const bad = copyFixture('sharded', path.join(dir, 'idx-json'));
  await writeFile(path.join(bad, 'model.safetensors.index.json'), '{"weight_map": {');
  await rejectsWith(() => loadHfModel(bad), 'E_CONFIG_INVALID', /not valid JSON/);
});

test('the committed fixtures are what scripts/make-llama-fixture.py writes', { skip: torchMissing(), timeout: 120_000 }, async () => {
  const out = path.join(dir, 'regenerated');
  execFileSync('/usr/bin/python3', [SCRIPT, out], { stdio: 'pipe' });
  const list = async (d: string): Promise<string[]> => (await readdir(d, { recursive: true, withFileTypes: true }))
    .filter((e) => e.isFile()).map((e) => path.relative(d, path.join(e.parentPath ?? (e as unknown as { path: string }).path, e.name))).sort();
  const files = await list(FIXTURES);
  assert.deepEqual(await list(out), files);
  for (const f of files) assert.ok((await readFile(path.join(out, f))).equals(await readFile(path.join(FIXTURES, f))), `${f} differs from a fresh run of the script`);
});
