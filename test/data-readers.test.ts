/**
 * Streaming readers (lib/data/readers): every format and layout yields the same documents, the
 * same as the in-memory readers; bad records fail with file and line/row, or are skipped and counted.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { parquetWriteFile } from 'hyparquet-writer';
import { CorpusReader, readCorpus, type BadRecord } from '../lib/data/readers/index.js';
import { readJsonlDocuments, readTextDocuments } from '../lib/data/corpus.js';
import { HiermemError } from '../lib/errors.js';
import { makeDocs, writeCorpora, type CorpusFiles } from './data-corpora.js';

let dir: string;
let files: CorpusFiles;
const docs = makeDocs(60, 7);

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'hiermem-readers-'));
  files = await writeCorpora(dir, docs);
});
after(async () => { await rm(dir, { recursive: true, force: true }); });

async function texts(spec: string | string[], o = {}): Promise<string[]> {
  const out: string[] = [];
  for await (const d of readCorpus(spec, o)) out.push(d.text);
  return out;
}

test('every format, folder and glob yields the same documents as the in-memory readers', async () => {
  assert.deepEqual(await readJsonlDocuments(files.jsonl), docs);
  assert.deepEqual(await readTextDocuments(files.text), docs);
  for (const spec of [files.jsonl, files.jsonlGz, files.text, files.textGz, files.parquet, files.folder, files.glob]) {
    assert.deepEqual(await texts(spec), docs, spec);
  }
  // several specs, in the order given
  assert.deepEqual(await texts([files.jsonl, files.parquet]), [...docs, ...docs]);
});

test('documents carry their file and line (text: first line of the paragraph) or Parquet row', async () => {
  const got: { source: string; line: number }[] = [];
  for await (const d of readCorpus(files.text)) got.push({ source: d.source, line: d.line });
  assert.deepEqual(got.slice(0, 3), [{ source: files.text, line: 1 }, { source: files.text, line: 3 }, { source: files.text, line: 5 }]);
  const rows: number[] = [];
  for await (const d of readCorpus(files.parquet)) rows.push(d.line);
  assert.deepEqual(rows, docs.map((_, i) => i));
  const r = await CorpusReader.open(files.jsonlGz);
  for await (const _ of r) { /* drain */ }
  assert.equal(r.stats.documents, docs.length);
  assert.equal(r.stats.bytesRead, r.totalBytes, 'compressed bytes are counted');
});

test('bad JSONL records: fatal with file:line by default, skipped and counted with skipBad', async () => {
  const bad = path.join(dir, 'bad.jsonl');
  await writeFile(bad, '{"text":"one"}\n{"text": 5}\nnot json\n\n["array"]\n{"other":"x"}\n{"text":"two"}\n');
  await assert.rejects(texts(bad), (e: unknown) => e instanceof HiermemError && e.code === 'E_INVALID_ARGUMENT' && e.message.includes(`${bad}:2: non-string field "text"`));
  const seen: BadRecord[] = [];
  const r = await CorpusReader.open(bad, { skipBad: true, onBadRecord: (b) => seen.push(b) });
  const out: string[] = [];
  for await (const d of r) out.push(d.text);
  assert.deepEqual(out, ['one', 'two']);
  assert.equal(r.stats.badRecords, 4);
  assert.deepEqual(seen.map((b) => b.line), [2, 3, 5, 6]);
});

test('Parquet: null values are bad records with their row; a missing column is named; other fields by name', async () => {
  const pq = path.join(dir, 'nulls.parquet');
  parquetWriteFile({ filename: pq, columnData: [{ name: 'body', data: ['a', null, 'b', 'c'], type: 'STRING', nullable: true }], rowGroupSize: 2 });
  await assert.rejects(texts(pq, { field: 'body' }), (e: unknown) => e instanceof HiermemError && e.code === 'E_INVALID_ARGUMENT' && e.message.includes(`${pq}: row 1: null`));
  const r = await CorpusReader.open(pq, { field: 'body', skipBad: true });
  const out: string[] = [];
  for await (const d of r) out.push(d.text);
  assert.deepEqual(out, ['a', 'b', 'c']);
  assert.equal(r.stats.badRecords, 1);
  await assert.rejects(texts(pq), (e: unknown) => e instanceof HiermemError && e.code === 'E_INVALID_ARGUMENT' && /no column "text" \(columns: body\)/.test(e.message));
});

test('unreadable inputs are typed errors: missing path, empty glob, corrupt gzip, not Parquet', async () => {
  const isIo = (e: unknown) => e instanceof HiermemError && e.code === 'E_IO';
  await assert.rejects(texts(path.join(dir, 'missing.jsonl')), isIo);
  await assert.rejects(texts(path.join(dir, 'nothing-*.jsonl')), isIo);
  const gz = path.join(dir, 'broken.jsonl.gz');
  await writeFile(gz, gzipSync('{"text":"a"}\n'.repeat(1000)).subarray(0, 40));
  await assert.rejects(texts(gz), (e: unknown) => isIo(e) && (e as Error).message.includes(gz));
  const fake = path.join(dir, 'fake.parquet');
  await writeFile(fake, 'not a parquet file at all');
  await assert.rejects(texts(fake), (e: unknown) => isIo(e) && (e as Error).message.includes('as Parquet'));
});

test('raw line chunks parsed off the main thread give what the streaming readers give (BOM, CRLF, bad UTF-8, bad records, tiny chunks)', async () => {
  const { readLineChunks, parseLineChunk } = await import('../lib/data/readers/index.js');
  const body = Buffer.concat([Buffer.from('\uFEFF{"text":"första"}\r\n\n'), Buffer.from('{"text":"a\\u00e9 日本"}\n{"text": 3}\nnot json\n{"text":"bad '),
    Buffer.from([0xe6, 0x97, 0x0a]), Buffer.from('{"text":""}\n{"x":1,"text":"last, no newline"}')]);
  const plain = path.join(dir, 'chunks.jsonl');
  await writeFile(plain, body);
  await writeFile(plain + '.gz', gzipSync(body));
  for (const file of [plain, plain + '.gz']) {
    for (const format of ['jsonl', 'lines'] as const) {
      const want: { docs: [string, number][]; bad: [number, string][] } = { docs: [], bad: [] };
      for await (const d of readCorpus(file, { format, skipBad: true, onBadRecord: (r) => want.bad.push([r.line, r.reason]) })) want.docs.push([d.text, d.line]);
      for (const size of [1, 7, 64, 1 << 20]) {
        const got: typeof want = { docs: [], bad: [] };
        for await (const c of readLineChunks(file, { bytesRead: 0, documents: 0, badRecords: 0 }, size)) {
          const p = parseLineChunk(c, format, 'text');
          p.texts.forEach((t, i) => got.docs.push([t, p.lines[i]!]));
          for (const b of p.bad) got.bad.push([b.line, b.reason]);
        }
        assert.deepEqual(got, want, `${file} ${format} chunks of ${size}`);
      }
    }
  }
});
