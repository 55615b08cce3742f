import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  SAMPLE_CORPUS_PATH,
  loadSampleCorpus,
  readJsonlDocuments,
  readTextDocuments,
  splitTextDocuments,
} from '../lib/data/corpus.js';
import { ByteTokenizer } from '../lib/data/tokenizer.js';
import { HiermemError } from '../lib/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'hiermem-corpus-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let counter = 0;
function file(content: string | Buffer, ext = 'txt'): string {
  const path = join(dir, `c-${counter++}.${ext}`);
  writeFileSync(path, content);
  return path;
}

async function rejectsWith(p: Promise<unknown>, code: string, message?: string | RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof HiermemError, String(err));
    assert.equal(err.code, code, err.message);
    if (typeof message === 'string') assert.ok(err.message.includes(message), err.message);
    else if (message) assert.match(err.message, message);
    return true;
  });
}

test('the sample corpus resolves from the compiled location and has one document per entry', () => {
  assert.ok(existsSync(SAMPLE_CORPUS_PATH), SAMPLE_CORPUS_PATH);
  assert.ok(statSync(SAMPLE_CORPUS_PATH).size < 300 * 1024);
  const docs = loadSampleCorpus();
  assert.equal(docs.length, 128);
  assert.match(docs[0] ?? '', /^Hydrogen: symbol H; atomic number 1;/);
  assert.ok(docs.some((d) => d.startsWith('Oxygen: symbol O; atomic number 8;')));
  assert.ok(docs.some((d) => d.startsWith('Meitnerium: symbol Mt; atomic number 109;')));
  // Wikipedia-derived superheavy entries are left out (see data/README.md).
  assert.ok(!docs.some((d) => /^(Darmstadtium|Roentgenium|Ununoctium)\b/.test(d)));
  for (const d of docs) {
    assert.equal(d, d.trim());
    assert.ok(d.length > 0);
    assert.ok(!d.includes('\n\n'));
    assert.ok(!/[{}]/.test(d), `dictd markup left in: ${d.slice(0, 60)}`);
  }
  // Every byte of the corpus is a valid token.
  const tok = new ByteTokenizer();
  assert.equal(tok.decode(tok.encode(docs.join('\n\n'))), docs.join('\n\n'));
});

test('splitTextDocuments: blank-line and line separators', () => {
  const text = '\uFEFFfirst para\nline two\n\n\n  \nsecond\r\n\r\nthird\n \t\n';
  assert.deepEqual(splitTextDocuments(text), ['first para\nline two', 'second', 'third']);
  assert.deepEqual(splitTextDocuments(text, 'line'), ['first para', 'line two', 'second', 'third']);
  assert.deepEqual(splitTextDocuments(''), []);
  assert.throws(() => splitTextDocuments('x', 'para' as 'line'), (e: unknown) => e instanceof HiermemError && e.code === 'E_INVALID_ARGUMENT');
});

test('readTextDocuments splits on blank lines by default, handles CRLF and a BOM', async () => {
  const path = file('\uFEFFAlpha one.\r\nAlpha two.\r\n\r\nBeta.\r\n\r\n\r\nGamma\n');
  assert.deepEqual(await readTextDocuments(path), ['Alpha one.\nAlpha two.', 'Beta.', 'Gamma']);
  assert.deepEqual(await readTextDocuments(path, { separator: 'line' }), ['Alpha one.', 'Alpha two.', 'Beta.', 'Gamma']);
});

test('readTextDocuments: no trailing newline, and documents spanning read chunks', async () => {
  assert.deepEqual(await readTextDocuments(file('only')), ['only']);
  // Lines longer than the 1 MiB read buffer, with a multi-byte character straddling the boundary.
  const a = 'a'.repeat((1 << 20) - 1) + '€' + 'b'.repeat(10);
  const b = '漢'.repeat(500_000);
  const docs = await readTextDocuments(file(`${a}\n\n${b}\n`));
  assert.equal(docs.length, 2);
  assert.equal(docs[0], a);
  assert.equal(docs[1], b);
});

test('readTextDocuments replaces invalid UTF-8 instead of failing', async () => {
  const path = file(Buffer.from([0x6f, 0x6b, 0xff, 0x0a, 0x0a, 0xc3, 0x28]));
  assert.deepEqual(await readTextDocuments(path), ['ok\uFFFD', '\uFFFD(']);
});

test('readTextDocuments: empty corpus, missing file, bad separator', async () => {
  await rejectsWith(readTextDocuments(file('')), 'E_INVALID_ARGUMENT', 'no documents');
  await rejectsWith(readTextDocuments(file('\n \n\t\n\r\n')), 'E_INVALID_ARGUMENT', 'no documents');
  await rejectsWith(readTextDocuments(file(' \n'), { separator: 'line' }), 'E_INVALID_ARGUMENT');
  await rejectsWith(readTextDocuments(join(dir, 'missing.txt')), 'E_IO', 'missing.txt');
  await rejectsWith(readTextDocuments(dir), 'E_IO', 'not a regular file');
  await rejectsWith(readTextDocuments(file('x'), { separator: 'para' as 'line' }), 'E_INVALID_ARGUMENT');
});

test('readJsonlDocuments reads the text field, skipping blank lines and empty strings', async () => {
  const path = file(
    ['{"text":"first","id":1}', '', '{"text":"sec\\nond"}\r', '{"text":""}', '  {"text":"ünï 🧪"}  ', ''].join('\n'),
    'jsonl',
  );
  assert.deepEqual(await readJsonlDocuments(path), ['first', 'sec\nond', 'ünï 🧪']);
  const other = file('{"body":"x","text":1}\n{"body":"y"}', 'jsonl');
  assert.deepEqual(await readJsonlDocuments(other, 'body'), ['x', 'y']);
});

test('readJsonlDocuments names the file and line of a bad record', async () => {
  const lines = (bad: string) => file(['{"text":"ok"}', '', bad, '{"text":"after"}'].join('\n'), 'jsonl');
  await rejectsWith(readJsonlDocuments(lines('{"text": "unterminated')), 'E_INVALID_ARGUMENT', /c-\d+\.jsonl:3: not valid JSON/);
  await rejectsWith(readJsonlDocuments(lines('{"other":"x"}')), 'E_INVALID_ARGUMENT', /:3: missing field "text"/);
  await rejectsWith(readJsonlDocuments(lines('{"text":42}')), 'E_INVALID_ARGUMENT', /:3: non-string field "text"/);
  await rejectsWith(readJsonlDocuments(lines('{"text":null}')), 'E_INVALID_ARGUMENT', /:3: non-string/);
  await rejectsWith(readJsonlDocuments(lines('["text"]')), 'E_INVALID_ARGUMENT', /:3: expected a JSON object/);
  await rejectsWith(readJsonlDocuments(lines('"text"')), 'E_INVALID_ARGUMENT', /:3: expected a JSON object/);
  // Inherited properties do not count as the field.
  await rejectsWith(readJsonlDocuments(file('{}', 'jsonl'), 'constructor'), 'E_INVALID_ARGUMENT', /:1: missing field/);
});

test('readJsonlDocuments: empty corpus, missing file, bad field name', async () => {
  await rejectsWith(readJsonlDocuments(file('', 'jsonl')), 'E_INVALID_ARGUMENT', 'no documents');
  await rejectsWith(readJsonlDocuments(file('{"text":""}\n\n', 'jsonl')), 'E_INVALID_ARGUMENT', 'no documents');
  await rejectsWith(readJsonlDocuments(join(dir, 'missing.jsonl')), 'E_IO', 'missing.jsonl');
  await rejectsWith(readJsonlDocuments(file('{"text":"x"}', 'jsonl'), ''), 'E_INVALID_ARGUMENT');
});
