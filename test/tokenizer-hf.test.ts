/**
 * Hugging Face tokenizer.json tokenizers: one trained by `hiermem tokenizer train`, and the
 * byte-level and SentencePiece-style fixtures, give exactly what Hugging Face's libraries give
 * (@huggingface/tokenizers, and the Rust `tokenizers` through its napi package); malformed files
 * and mismatched checkpoints are typed errors; checkpoints and prepared folders record them.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import tokenizers from 'tokenizers';
import { Tokenizer as HfLib } from '@huggingface/tokenizers';
import { HiermemError } from '../lib/errors.js';
import { HfTokenizer, loadHfTokenizer } from '../lib/data/hf-tokenizer.js';
import { ByteTokenizer, checkSameTokenizer, tokenizerFromJSON } from '../lib/data/tokenizer.js';
import { AnchorModel } from '../lib/model/anchor.js';
import { loadCheckpoint, saveCheckpoint, readCheckpointTokenizer } from '../lib/train/checkpoint.js';
import { writeSafetensors, readSafetensors, readSafetensorsHeader } from '../lib/io/safetensors.js';
import { prepareData } from '../lib/data/prepare.js';
import { PreparedData } from '../lib/data/prepared.js';
import { byteLevelFixture, sentencePieceFixture, MULTILINGUAL } from './tokenizer-fixtures.js';

const run = promisify(execFile);
const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../lib/cli/main.js');
const code = (c: string) => (e: unknown) => e instanceof HiermemError && e.code === c;

let dir = '';
let trainedFile = '';

/** A small multilingual corpus, so the trained merges cover several scripts. */
function corpus(): string[] {
  const words = ['the', 'quick', 'brown', 'fox', 'café', 'naïve', 'élan', '東京', '大学', '学ぶ', '한국어', '😀', '🚀', 'memory', 'tree', 'leaf', 'Osmium', 'metal'];
  let s = 7;
  const next = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
  return Array.from({ length: 300 }, () => Array.from({ length: 14 }, () => words[Math.floor(next() * words.length)]).join(' ') + '.');
}

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'hiermem-tok-'));
  await writeFile(path.join(dir, 'docs.jsonl'), corpus().map((text) => JSON.stringify({ text })).join('\n') + '\n');
  trainedFile = path.join(dir, 'tokenizer.json');
  const { stdout } = await run(process.execPath, [CLI, 'tokenizer', 'train', '--corpus', path.join(dir, 'docs.jsonl'), '--vocab', '320', '--out', trainedFile, '--json']);
  const s = JSON.parse(stdout) as { vocabSize: number; merges: number; requested: number };
  assert.equal(s.requested, 320);
  assert.equal(s.vocabSize, 320, 'the corpus has enough merges for 320 tokens');
  assert.ok(s.merges >= 320 - 258);
});

after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Copies a safetensors file with its metadata edited. */
async function rewrite(from: string, to: string, edit: (meta: Record<string, string>) => Record<string, string>): Promise<void> {
  const f = await readSafetensors(from);
  await writeSafetensors(to, [...f.tensors.entries()].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape, data: t.data })), edit(f.metadata));
}

/** Ours against both of Hugging Face's implementations, on the multilingual text and the corpus. */
async function assertLikeHuggingFace(json: Record<string, unknown>, texts: readonly string[], roundTrip: boolean): Promise<void> {
  const ours = new HfTokenizer(json);
  const lib = new HfLib(json, { clean_up_tokenization_spaces: false });
  const rust = tokenizers.Tokenizer.fromString(JSON.stringify(json));
  for (const text of texts) {
    const ids = ours.encode(text);
    assert.deepEqual([...ids], lib.encode(text, { add_special_tokens: false }).ids, `@huggingface/tokenizers ids of ${JSON.stringify(text)}`);
    assert.deepEqual([...ids], (await rust.encode(text, null, { addSpecialTokens: false })).getIds(), `Rust tokenizers ids of ${JSON.stringify(text)}`);
    const decoded = ours.decode(ids);
    assert.equal(decoded, await rust.decode([...ids], true), 'decode equals the Rust library\'s');
    if (roundTrip) assert.equal(decoded, text, 'exact round trip');
  }
}

test('a tokenizer trained by `hiermem tokenizer train` encodes and decodes multilingual text exactly as Hugging Face does', async () => {
  const json = JSON.parse(await readFile(trainedFile, 'utf8')) as Record<string, unknown>;
  const tok = await loadHfTokenizer(trainedFile);
  assert.equal(tok.vocabSize, 320);
  assert.equal(tok.eotId, 0);
  assert.equal(tok.padId, 1);
  assert.equal(tok.decode(tok.encode(MULTILINGUAL)), MULTILINGUAL);
  assert.ok(tok.encode('the quick brown fox').length < 'the quick brown fox'.length / 2, 'merges learnt from the corpus are used');
  await assertLikeHuggingFace(json, [MULTILINGUAL, ...corpus().slice(0, 20), '', ' leading space', 'Ω≈ç√∫ \u0000 nul'], true);
});

test('byte-level and SentencePiece-style (Llama-2) fixtures match Hugging Face\'s libraries', async () => {
  await assertLikeHuggingFace(byteLevelFixture(), [MULTILINGUAL, 'the heater is there', ''], true);
  const sp = new HfTokenizer(sentencePieceFixture());
  assert.deepEqual([sp.eotId, sp.bosId, sp.padId, sp.vocabSize], [2, 1, 2, sp.vocabSize]);
  // byte fallback: characters outside the vocabulary come back exactly
  assert.equal(sp.decode(sp.encode(MULTILINGUAL)), MULTILINGUAL);
  await assertLikeHuggingFace(sentencePieceFixture(), [MULTILINGUAL, 'the world is there', 'Hello World!'], false);
});

test('decode: specials dropped, eot as a newline on request, ids out of range refused', async () => {
  const tok = await loadHfTokenizer(trainedFile);
  const a = [...tok.encode('café')], b = [...tok.encode('東京')];
  assert.equal(tok.decode([...a, tok.eotId, tok.padId, ...b]), 'café東京');
  assert.equal(tok.decode([...a, tok.eotId, ...b], { eotAsNewline: true }), 'café\n東京');
  assert.throws(() => tok.decode([tok.vocabSize]), code('E_TOKEN_OUT_OF_RANGE'));
  assert.throws(() => tok.decode([-1]), code('E_TOKEN_OUT_OF_RANGE'));
  // the bytes of one emoji split across tokens decode without throwing
  for (let id = 0; id < tok.vocabSize; id++) assert.equal(typeof tok.decode([id]), 'string');
});

test('malformed tokenizer.json files are typed errors', async () => {
  const cases: [string, string][] = [
    ['not-json', '{"model": '],
    ['array', '[]'],
    ['no-model', '{"version": "1.0"}'],
    ['unigram', JSON.stringify({ ...byteLevelFixture(), model: { type: 'Unigram', vocab: [['a', 0]] } })],
    ['bad-merges', JSON.stringify({ ...byteLevelFixture(), model: { ...(byteLevelFixture().model as object), merges: 7 } })],
    ['bad-id', JSON.stringify({ ...byteLevelFixture(), model: { ...(byteLevelFixture().model as object), vocab: { a: 'x', b: 1 } } })],
    ['no-eot', JSON.stringify({ ...byteLevelFixture(), added_tokens: [], model: { ...(byteLevelFixture().model as object), vocab: Object.fromEntries(Object.entries((byteLevelFixture().model as { vocab: Record<string, number> }).vocab).filter(([k]) => !k.startsWith('<|')).map(([k], i) => [k, i])) } })],
  ];
  for (const [name, text] of cases) {
    const f = path.join(dir, `${name}.json`);
    await writeFile(f, text);
    await assert.rejects(loadHfTokenizer(f), code('E_CONFIG_INVALID'), name);
  }
  await assert.rejects(loadHfTokenizer(path.join(dir, 'missing.json')), code('E_IO'));
  assert.throws(() => tokenizerFromJSON({ type: 'hf', version: 1, sha256: 'x', tokenizer: byteLevelFixture(), config: {} }), code('E_CONFIG_INVALID'));
  assert.throws(() => tokenizerFromJSON({ type: 'hf', version: 2 }), code('E_CONFIG_INCOMPATIBLE'));
});

test('checkpoints record their tokenizer; another tokenizer is refused; old checkpoints are byte-tokenized', async () => {
  const tok = await loadHfTokenizer(trainedFile);
  const model = AnchorModel.create({ vocabSize: tok.vocabSize, dModel: 8, nLayers: 1, nHeads: 1, headDim: 8, ffnHidden: 16, seqLen: 8, seed: 1 }, { maxBatch: 1 });
  const file = path.join(dir, 'ck.safetensors');
  await saveCheckpoint(file, { model, tokenizer: tok });
  const ck = await loadCheckpoint(file, { tokenizer: await loadHfTokenizer(trainedFile) });
  assert.ok(ck.tokenizer instanceof HfTokenizer);
  assert.equal((ck.tokenizer as HfTokenizer).sha256, tok.sha256);
  assert.equal(ck.tokenizer.decode(ck.tokenizer.encode(MULTILINGUAL)), MULTILINGUAL);
  assert.equal((await readCheckpointTokenizer(file)).name, tok.name);
  await assert.rejects(loadCheckpoint(file, { tokenizer: new ByteTokenizer() }), code('E_CONFIG_INCOMPATIBLE'));
  await assert.rejects(loadCheckpoint(file, { tokenizer: new HfTokenizer(byteLevelFixture()) }), code('E_CONFIG_INCOMPATIBLE'));
  assert.throws(() => checkSameTokenizer(new ByteTokenizer(), tok, 'x'), code('E_CONFIG_INCOMPATIBLE'));

  // a record whose contents do not match its hash: a corrupt checkpoint
  const rec = JSON.parse((await readSafetensorsHeader(file)).metadata.tokenizer!) as { tokenizer: { model: { vocab: Record<string, number> } } };
  rec.tokenizer.model.vocab['zzz'] = 0;
  const bad = path.join(dir, 'bad.safetensors');
  await rewrite(file, bad, (meta) => ({ ...meta, tokenizer: JSON.stringify(rec) }));
  await assert.rejects(loadCheckpoint(bad), code('E_CHECKPOINT_CORRUPT'));

  // no tokenizer entry (checkpoints from before it was recorded): bytes
  const byteModel = AnchorModel.create({ vocabSize: 259, dModel: 8, nLayers: 1, nHeads: 1, headDim: 8, ffnHidden: 16, seqLen: 8, seed: 1 }, { maxBatch: 1 });
  const old = path.join(dir, 'old.safetensors');
  await saveCheckpoint(old, { model: byteModel, tokenizer: new ByteTokenizer() });
  await rewrite(old, old, (meta) => Object.fromEntries(Object.entries(meta).filter(([k]) => k !== 'tokenizer')));
  assert.equal((await loadCheckpoint(old)).tokenizer.name, 'byte');
});

test('prepare tokenises with it on worker threads; the folder refuses another tokenizer', async () => {
  const tok = await loadHfTokenizer(trainedFile);
  const docs = corpus().slice(0, 40);
  const out = path.join(dir, 'prepared');
  await prepareData({ corpus: path.join(dir, 'docs.jsonl'), out, tokenizer: tok, threads: 1, valFraction: 0.1 });
  const d = await PreparedData.open(out, { tokenizer: await loadHfTokenizer(trainedFile) });
  try {
    const s = d.tokenStream('train');
    const ids = s.read(0, Math.min(s.length, 4000));
    const first = ids.subarray(0, ids.indexOf(tok.eotId));
    assert.equal(tok.decode(first), docs[0]);
    assert.deepEqual(tokenizerFromJSON(d.manifest.tokenizer.json).name, tok.name);
  } finally {
    d.close();
  }
  await assert.rejects(PreparedData.open(out, { tokenizer: new ByteTokenizer() }), code('E_CONFIG_INCOMPATIBLE'));
});
