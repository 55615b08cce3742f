import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { appendFileSync, cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { HiermemError } from '../lib/errors.js';
import { OnnxEmbedder, onnxRuntimeAvailable } from '../lib/retrieval/onnx-embedder.js';
import { WordPieceTokenizer } from '../lib/retrieval/wordpiece.js';
import { RetrievalTree } from '../lib/retrieval/tree.js';

// The fixture lives in the source tree (test/fixtures), two levels above dist/test.
const FIXTURE = fileURLToPath(new URL('../../test/fixtures/tiny-encoder/', import.meta.url));
interface Expected {
  maxLength: number;
  dim: number;
  sentences: string[];
  ids: number[][];
  embeddings: number[][];
}
const expected = JSON.parse(readFileSync(join(FIXTURE, 'expected.json'), 'utf8')) as Expected;
const vocabText = readFileSync(join(FIXTURE, 'vocab.txt'), 'utf8');

const dir = mkdtempSync(join(tmpdir(), 'hiermem-onnx-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const ortMissing = (await onnxRuntimeAvailable()) ? false : 'onnxruntime-node is not installed (optional dependency)';

function isCode(code: string): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof HiermemError, String(err));
    assert.equal(err.code, code, err.message);
    return true;
  };
}

// ---------------------------------------------------------------------------------------------
// WordPiece (pure TypeScript, always runs)

test('WordPiece: ids match the independent Python tokenizer of the fixture', () => {
  const tok = WordPieceTokenizer.fromText(vocabText, { maxLength: expected.maxLength });
  expected.sentences.forEach((s, i) => assert.deepEqual(Array.from(tok.encode(s)), expected.ids[i], s));
});

test('WordPiece: basic tokenization, greedy longest match, [UNK], truncation', () => {
  const vocab = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', 'un', '##aff', '##able', '##a', 'aff', ',', '!', 'hello', '中', 'x', '##y', '##xy'];
  const tok = new WordPieceTokenizer(vocab);
  assert.deepEqual(tok.basicTokens('Héllo,\tWORLD!中文 a\u0000b'), ['hello', ',', 'world', '!', '中', '文', 'ab']);
  assert.deepEqual(tok.wordPieces('unaffable'), [4, 5, 6]); // un ##aff ##able
  assert.deepEqual(tok.wordPieces('unaffa'), [4, 5, 7]);
  assert.deepEqual(tok.wordPieces('xxy'), [13, 15]); // longest match "##xy", not "##x" (absent) + ...
  assert.deepEqual(tok.wordPieces('unknown'), [1]); // a word without a full segmentation is one [UNK]
  assert.deepEqual(tok.wordPieces('x'.repeat(101)), [1]);
  assert.deepEqual(Array.from(tok.encode('Hello, unaffable!')), [2, 11, 9, 4, 5, 6, 10, 3]);
  assert.deepEqual(Array.from(tok.encode('')), [2, 3]);
  const short = new WordPieceTokenizer(vocab, { maxLength: 5 });
  assert.deepEqual(Array.from(short.encode('Hello, unaffable!')), [2, 11, 9, 4, 3]);
  const cased = new WordPieceTokenizer(vocab, { lowercase: false });
  assert.deepEqual(Array.from(cased.encode('Hello hello')), [2, 1, 11, 3]);
  assert.throws(() => new WordPieceTokenizer(['[PAD]', '[UNK]', '[CLS]']), isCode('E_CONFIG_INVALID')); // no [SEP]
  assert.throws(() => new WordPieceTokenizer([]), isCode('E_CONFIG_INVALID'));
  assert.throws(() => new WordPieceTokenizer(vocab, { maxLength: 1 }), isCode('E_CONFIG_INVALID'));
});

test('WordPiece: vocab files (BOM, CRLF, trailing newline) and a missing file', async () => {
  const path = join(dir, 'vocab-crlf.txt');
  writeFileSync(path, '\uFEFF[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\nhi\r\n');
  const tok = await WordPieceTokenizer.fromFile(path);
  assert.equal(tok.vocabSize, 5);
  assert.deepEqual(Array.from(tok.encode('hi')), [2, 4, 3]);
  await assert.rejects(WordPieceTokenizer.fromFile(join(dir, 'none.txt')), isCode('E_IO'));
});

test('onnx embedder: without onnxruntime-node it is E_NATIVE_UNAVAILABLE, and hiermem still loads', () => {
  // A child process whose module resolution hides onnxruntime-node, as on an install with --omit=optional.
  const hooks = join(dir, 'hide-ort-hooks.mjs');
  writeFileSync(
    hooks,
    `export async function resolve(specifier, context, next) {
  if (specifier === 'onnxruntime-node') {
    const err = new Error("Cannot find package 'onnxruntime-node'");
    err.code = 'ERR_MODULE_NOT_FOUND';
    throw err;
  }
  return next(specifier, context);
}\n`,
  );
  const register = join(dir, 'hide-ort.mjs');
  writeFileSync(register, `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hooks).href)});\n`);
  const moduleUrl = new URL('../lib/retrieval/index.js', import.meta.url).href;
  const script = `
    const m = await import(${JSON.stringify(moduleUrl)});
    const available = await m.onnxRuntimeAvailable();
    try { await m.OnnxEmbedder.load(${JSON.stringify(FIXTURE)}); console.log('loaded', available); }
    catch (err) { console.log(err.code, available); }`;
  const out = execFileSync(process.execPath, ['--import', pathToFileURL(register).href, '--input-type=module', '-e', script], {
    encoding: 'utf8',
  });
  assert.equal(out.trim(), 'E_NATIVE_UNAVAILABLE false');
});

// ---------------------------------------------------------------------------------------------
// ONNX inference (skipped without onnxruntime-node)

test('onnx embedder: mean-pooled, normalised embeddings match PyTorch (1e-4), any batch size', { skip: ortMissing }, async () => {
  for (const batchSize of [1, 2, 32]) {
    const emb = await OnnxEmbedder.load(FIXTURE, { batchSize });
    try {
      assert.equal(emb.dim, expected.dim);
      const got = await emb.embed(expected.sentences);
      assert.equal(got.length, expected.sentences.length * expected.dim);
      let worst = 0;
      expected.embeddings.flat().forEach((v, i) => (worst = Math.max(worst, Math.abs(v - got[i]!))));
      assert.ok(worst <= 1e-4, `batch ${batchSize}: max |diff| ${worst}`);
      assert.deepEqual(await emb.embed([]), new Float32Array(0));
    } finally {
      await emb.dispose();
    }
  }
});

test('onnx embedder: a tree fitted with it saves, reloads the model by hash, and routes the same', { skip: ortMissing }, async () => {
  const emb = await OnnxEmbedder.load(FIXTURE, { batchSize: 4 });
  const texts = [
    ...expected.sentences,
    'Osmium is a hard metal.',
    'Helium is a gas.',
    'Hydrogen and helium are elements.',
    'The number of the element is 12.',
    'Platinum, iridium and osmium.',
    'Hello world!',
    'A naive quiz.',
    'Tokenization of a resume.',
    'The weight of the atomic symbol.',
  ];
  const { tree, paths } = await RetrievalTree.fitTexts(texts, { k: 2, p: 2, seed: 1, embedder: emb });
  assert.deepEqual(await tree.assignTexts(texts), paths);
  const path = join(dir, 'onnx-tree.safetensors');
  await tree.save(path);

  const back = await RetrievalTree.load(path);
  assert.ok(back.embedder instanceof OnnxEmbedder);
  assert.deepEqual(await back.assignTexts(texts), paths);
  await back.embedder.dispose();

  // The model folder moved: point at the copy.
  const moved = join(dir, 'moved-model');
  cpSync(FIXTURE, moved, { recursive: true });
  const relocated = await RetrievalTree.load(path, { modelDir: moved });
  assert.deepEqual(await relocated.assignTexts(texts), paths);
  await (relocated.embedder as OnnxEmbedder).dispose();

  // A different vocabulary (or model) than the one the tree was fitted with.
  const changed = join(dir, 'changed-model');
  cpSync(FIXTURE, changed, { recursive: true });
  appendFileSync(join(changed, 'vocab.txt'), 'extra\n');
  await assert.rejects(RetrievalTree.load(path, { modelDir: changed }), isCode('E_CONFIG_INCOMPATIBLE'));
  await assert.rejects(RetrievalTree.load(path, { modelDir: join(dir, 'no-such-model') }), isCode('E_IO'));

  await emb.dispose();
  await assert.rejects(emb.embed(['x']), isCode('E_DISPOSED'));
});

test('onnx embedder: bad model folders are typed errors', { skip: ortMissing }, async () => {
  await assert.rejects(OnnxEmbedder.load(join(dir, 'nothing-here')), isCode('E_IO'));
  const broken = join(dir, 'broken-model');
  cpSync(FIXTURE, broken, { recursive: true });
  writeFileSync(join(broken, 'model.onnx'), 'not a model');
  await assert.rejects(OnnxEmbedder.load(broken), isCode('E_CONFIG_INVALID'));
  await assert.rejects(OnnxEmbedder.load(FIXTURE, { outputName: 'pooler_output' }), isCode('E_CONFIG_INVALID'));
  await assert.rejects(OnnxEmbedder.load(''), isCode('E_INVALID_ARGUMENT'));
  await assert.rejects(OnnxEmbedder.load(FIXTURE, { batchSize: 0 }), isCode('E_INVALID_ARGUMENT'));
});
