/**
 * `prepare` (lib/data/prepare.ts) and its reader (lib/data/prepared.ts): whatever the reader or the
 * thread count, the same token stream and byte-identical packed sequences, equal to the in-memory
 * path's (encodeDocuments, packByLeaf) and sampled into the same batches; mismatched tokenizer or
 * tree, and corrupt or truncated shards and manifests, are refused with typed errors.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, truncate, writeFile, cp, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { prepareData, type PrepareOptions } from '../lib/data/prepare.js';
import { PreparedData } from '../lib/data/prepared.js';
import { packByLeaf, PathBatchSampler } from '../lib/data/packing.js';
import { encodeDocuments, splitDocuments } from '../lib/data/stream.js';
import { WindowSampler } from '../lib/data/windows.js';
import { ByteTokenizer, type Tokenizer } from '../lib/data/tokenizer.js';
import { RetrievalTree } from '../lib/retrieval/tree.js';
import { HiermemError } from '../lib/errors.js';
import { makeDocs, writeCorpora, type CorpusFiles } from './data-corpora.js';

const SEQ = 64;
const tok = new ByteTokenizer();
const docs = makeDocs(150, 3);
let dir: string, files: CorpusFiles, treeFile: string, tree: RetrievalTree, ref: string;

const code = (c: string, re?: RegExp) => (e: unknown) => e instanceof HiermemError && e.code === c && (!re || re.test(e.message));

async function prep(name: string, o: Partial<PrepareOptions> = {}) {
  const out = path.join(dir, name);
  const s = await prepareData({ corpus: files.jsonl, out, tree: treeFile, seqLen: SEQ, shardTokens: 3000, threads: 1, ...o });
  return { out, s };
}

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'hiermem-prepare-'));
  files = await writeCorpora(path.join(dir, 'corpus'), docs);
  tree = (await RetrievalTree.fitTexts(docs, { k: 3, p: 2, seed: 5 })).tree;
  treeFile = path.join(dir, 'tree.safetensors');
  await tree.save(treeFile);
  ref = (await prep('ref')).out;
});
after(async () => { await rm(dir, { recursive: true, force: true }); });

function streamOf(d: PreparedData, split: 'train' | 'val'): number[] {
  const s = d.tokenStream(split);
  return Array.from(s.read(0, s.length));
}

test('prepared data equals the in-memory path: token stream, packed sequences and sampled batches', async () => {
  const d = await PreparedData.open(ref, { tokenizer: tok, tree: treeFile, verify: true });
  try {
    const m = d.manifest;
    assert.ok(m.shards.length > 3, 'several shards');
    assert.equal(m.dtype, 'uint16');
    const { train, val } = splitDocuments(docs, 0.05);
    assert.equal(m.trainDocuments, train.length);
    assert.deepEqual(streamOf(d, 'train'), Array.from(encodeDocuments(train, tok)));
    assert.deepEqual(streamOf(d, 'val'), Array.from(encodeDocuments(val, tok)));
    const pack = async (texts: string[]) => packByLeaf({ docs: texts.map((t) => tok.encode(t)), paths: await tree.assignTexts(texts), levels: 2 },
      { seqLen: SEQ, eotId: tok.eotId, padId: tok.padId });
    const memTrain = await pack(train), memVal = await pack(val);
    const seqs = d.sequences('train'), vseqs = d.sequences('val');
    assert.equal(seqs.length, memTrain.length);
    assert.equal(vseqs.length, memVal.length);
    for (let i = 0; i < memTrain.length; i++) assert.deepEqual(seqs.at(i), memTrain[i], `sequence ${i}`);
    for (let i = 0; i < memVal.length; i++) assert.deepEqual(vseqs.at(i), memVal[i], `val sequence ${i}`);
    // the samplers draw the same batches from disk as from memory
    const a = new PathBatchSampler(memTrain, { seed: 9, genericK: 3 }), b = new PathBatchSampler(seqs, { seed: 9, genericK: 3 });
    for (let i = 0; i < 5; i++) assert.deepEqual(b.next(4), a.next(4));
    assert.deepEqual(b.rngState(), a.rngState());
    const trainStream = encodeDocuments(train, tok);
    const w1 = new WindowSampler(trainStream, SEQ, 4), w2 = new WindowSampler(d.tokenStream('train'), SEQ, 4);
    for (let i = 0; i < 5; i++) assert.deepEqual(w2.next(3), w1.next(3));
    assert.deepEqual(w2.rngState(), w1.rngState());
  } finally {
    d.close();
  }
});

test('every reader and thread count gives the same tokens and byte-identical packed files', async () => {
  const refPacked = await readFile(path.join(ref, 'packed-train.bin'));
  const refVal = await readFile(path.join(ref, 'packed-val.bin'));
  const r = await PreparedData.open(ref);
  const refTrain = streamOf(r, 'train'), refShards = r.manifest.shards.map((s) => [s.docs, s.tokens]);
  r.close();
  const variants: [string, Partial<PrepareOptions>][] = [
    ['text', { corpus: files.text }], ['gz', { corpus: files.jsonlGz }], ['textgz', { corpus: files.textGz }], ['parquet', { corpus: files.parquet }],
    ['folder', { corpus: files.folder }], ['glob', { corpus: files.glob, threads: 2 }], ['t0', { threads: 0 }], ['t2', { threads: 2 }],
  ];
  for (const [name, o] of variants) {
    const { out } = await prep(name, o);
    const d = await PreparedData.open(out, { verify: true });
    assert.deepEqual(streamOf(d, 'train'), refTrain, name);
    assert.deepEqual(d.manifest.shards.map((s) => [s.docs, s.tokens]), refShards, name);
    d.close();
    assert.ok((await readFile(path.join(out, 'packed-train.bin'))).equals(refPacked), `${name}: packed-train.bin`);
    assert.ok((await readFile(path.join(out, 'packed-val.bin'))).equals(refVal), `${name}: packed-val.bin`);
  }
  // same reader, other thread count: the shards themselves are byte-identical
  for (const s of ['shard-00000.bin', 'shard-00003.bin']) {
    assert.ok((await readFile(path.join(dir, 't2', 'shards', s))).equals(await readFile(path.join(ref, 'shards', s))), s);
  }
});

test('without a tree: token shards only; a rerun is a no-op; other settings in the same folder are refused', async () => {
  const { out, s } = await prep('notree', { tree: undefined });
  assert.equal(s.sequences, null);
  const again = await prepareData({ corpus: files.jsonl, out, shardTokens: 3000, threads: 1 });
  assert.equal(again.upToDate, true);
  await assert.rejects(prepareData({ corpus: files.jsonl, out, shardTokens: 5000 }), code('E_CONFIG_INCOMPATIBLE'));
  await assert.rejects(prepareData({ corpus: files.jsonl, out, tree: treeFile, seqLen: SEQ, shardTokens: 3000 }), code('E_CONFIG_INCOMPATIBLE'));
  const d = await PreparedData.open(out, { tokenizer: tok });
  assert.throws(() => d.sequences('train'), code('E_INVALID_ARGUMENT'));
  d.close();
  await assert.rejects(PreparedData.open(out, { tree: treeFile }), code('E_CONFIG_INCOMPATIBLE', /without a tree/));
});

test('a different tokenizer or tree is refused with E_CONFIG_INCOMPATIBLE', async () => {
  const other: Tokenizer = Object.assign(Object.create(tok) as Tokenizer, { toJSON: () => ({ type: 'byte', version: 2 }) });
  await assert.rejects(PreparedData.open(ref, { tokenizer: other }), code('E_CONFIG_INCOMPATIBLE', /tokenised with/));
  const t2 = (await RetrievalTree.fitTexts(docs, { k: 3, p: 2, seed: 6 })).tree;
  const f2 = path.join(dir, 'tree2.safetensors');
  await t2.save(f2);
  await assert.rejects(PreparedData.open(ref, { tree: f2 }), code('E_CONFIG_INCOMPATIBLE', /another tree/));
  // the tree saved with the data is the one it was routed with
  const d = await PreparedData.open(ref, { tree: treeFile });
  assert.ok(d.treeFile);
  d.close();
  await PreparedData.open(ref, { tree: d.treeFile! }).then((x) => x.close());
});

test('corrupt or truncated shards, packed files and manifests are refused with E_CHECKPOINT_CORRUPT', async () => {
  const corrupt = async (name: string, damage: (dir: string) => Promise<void>, re: RegExp, verify = false) => {
    const d = path.join(dir, `bad-${name}`);
    await cp(ref, d, { recursive: true });
    await damage(d);
    await assert.rejects(PreparedData.open(d, { verify }), code('E_CHECKPOINT_CORRUPT', re), name);
  };
  const shard = (d: string) => path.join(d, 'shards', 'shard-00001.bin');
  await corrupt('trunc-shard', (d) => truncate(shard(d), 100), /bytes, the manifest says/);
  await corrupt('trunc-packed', (d) => truncate(path.join(d, 'packed-train.bin'), 1000), /bytes, the manifest says/);
  await corrupt('trunc-manifest', async (d) => { const p = path.join(d, 'manifest.json'); await writeFile(p, (await readFile(p, 'utf8')).slice(0, 200)); }, /not valid JSON/);
  await corrupt('manifest-fields', async (d) => {
    const p = path.join(d, 'manifest.json');
    const m = JSON.parse(await readFile(p, 'utf8'));
    m.shards[0].tokens += 1;
    await writeFile(p, JSON.stringify(m));
  }, /do not add up/);
  await corrupt('shard-magic', async (d) => { const fh = await open(shard(d), 'r+'); await fh.write(Buffer.from('XX'), 0, 2, 0); await fh.close(); }, /bad magic/);
  await corrupt('missing-shard', (d) => rm(shard(d)), /missing/);
  await corrupt('flipped-byte', async (d) => {
    const fh = await open(path.join(d, 'packed-train.bin'), 'r+');
    await fh.write(Buffer.from([0x41]), 0, 1, 5);
    await fh.close();
  }, /sha256/, true);
  // a token outside the vocabulary is caught when read, without verify
  const d = path.join(dir, 'bad-token');
  await cp(ref, d, { recursive: true });
  const size = (await readFile(shard(d))).length;
  const fh = await open(shard(d), 'r+');
  await fh.write(Buffer.from([0xfe, 0xff]), 0, 2, size - 2);
  await fh.close();
  const p = await PreparedData.open(d);
  const s = p.tokenStream('train');
  assert.throws(() => s.read(0, s.length), code('E_CHECKPOINT_CORRUPT', /outside the vocabulary/));
  p.close();
  await assert.rejects(PreparedData.open(path.join(dir, 'corpus')), code('E_IO', /not a prepared data folder/));
});

test('bad JSONL records met by the workers: fatal with file:line, or skipped and counted (the same shards as a clean corpus)', async () => {
  const bad = path.join(dir, 'with-bad.jsonl');
  const lines = docs.slice(0, 20).map((text) => JSON.stringify({ text }));
  lines.splice(5, 0, '{"text": 5}', 'oops');
  await writeFile(bad, lines.join('\n') + '\n');
  const clean = path.join(dir, 'clean.jsonl');
  await writeFile(clean, docs.slice(0, 20).map((text) => JSON.stringify({ text })).join('\n') + '\n');
  await assert.rejects(prepareData({ corpus: bad, out: path.join(dir, 'bad-fatal'), threads: 2 }), code('E_INVALID_ARGUMENT', /with-bad\.jsonl:6: non-string field/));
  const seen: number[] = [];
  const s = await prepareData({ corpus: bad, out: path.join(dir, 'bad-skip'), threads: 2, skipBad: true, onBadRecord: (r) => seen.push(r.line) });
  assert.deepEqual(seen, [6, 7]);
  assert.equal(s.skippedRecords, 2);
  assert.equal(s.documents, 20);
  const c = await prepareData({ corpus: clean, out: path.join(dir, 'bad-clean'), threads: 0 });
  const a = await PreparedData.open(path.join(dir, 'bad-skip')), b = await PreparedData.open(path.join(dir, 'bad-clean'));
  assert.equal(c.tokens, s.tokens);
  assert.deepEqual(a.tokenStream('train').read(0, 500), b.tokenStream('train').read(0, 500));
  a.close(); b.close();
});

test('an interrupted prepare over JSONL chunks and text documents resumes to the same files', async () => {
  const { readdir } = await import('node:fs/promises');
  const a = path.join(dir, 'mixed-a'), b = path.join(dir, 'mixed-b');
  const o = { corpus: [files.jsonl, files.text], shardTokens: 1500, threads: 2 };
  const full = await prepareData({ ...o, out: a });
  assert.ok(full.shards >= 6, `${full.shards} shards`);
  await cp(a, b, { recursive: true });
  await rm(path.join(b, 'manifest.json'));
  const shards = (await readdir(path.join(b, 'shards'))).sort();
  for (const s of shards.slice(Math.floor(shards.length / 2) + 1)) await rm(path.join(b, 'shards', s)); // past the JSONL file's shards
  const again = await prepareData({ ...o, out: b });
  assert.ok(again.resumedShards > 0);
  for (const s of shards) assert.deepEqual(await readFile(path.join(b, 'shards', s)), await readFile(path.join(a, 'shards', s)), s);
});
