import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ByteTokenizer, tokenizerFromJSON, type Tokenizer } from '../lib/data/tokenizer.js';
import { HiermemError } from '../lib/errors.js';
import { mulberry32 } from './helpers.js';

function hasCode(code: string): (err: unknown) => boolean {
  return (err: unknown) => err instanceof HiermemError && err.code === code;
}


test('ids and vocabulary are the documented constants', () => {
  const tok = new ByteTokenizer();
  assert.equal(tok.name, 'byte');
  assert.equal(tok.vocabSize, 259);
  assert.equal(tok.eotId, 256);
  assert.equal(tok.padId, 257);
  assert.equal(tok.bosId, 258);
  assert.equal(ByteTokenizer.EOT, 256);
  assert.equal(ByteTokenizer.PAD, 257);
  assert.equal(ByteTokenizer.BOS, 258);
});

test('encode yields the UTF-8 bytes as an Int32Array', () => {
  const tok = new ByteTokenizer();
  const ids = tok.encode('Hé€');
  assert.ok(ids instanceof Int32Array);
  assert.deepEqual([...ids], [0x48, 0xc3, 0xa9, 0xe2, 0x82, 0xac]);
  assert.equal(tok.encode('').length, 0);
});

test('round trip on ASCII, emoji, CJK and mixed text', () => {
  const tok = new ByteTokenizer();
  const samples = [
    'hello, world\n',
    '👩‍👩‍👧 family 🧪 and flags 🇯🇵',
    '漢字とかなカナ、한국어, 中文标点。',
    'Ünïcödé — “quotes” ‘single’ … \t tabs \r\n crlf',
    '\u0000 nul and \u{10FFFF} max code point',
    '',
  ];
  for (const s of samples) assert.equal(tok.decode(tok.encode(s)), s);
});

test('round trip on random code points (seeded)', () => {
  const tok = new ByteTokenizer();
  const rand = mulberry32(1234);
  for (let trial = 0; trial < 200; trial++) {
    let s = '';
    const len = Math.floor(rand() * 40);
    for (let i = 0; i < len; i++) {
      let cp = Math.floor(rand() * 0x110000);
      if (cp >= 0xd800 && cp <= 0xdfff) cp = 0x41; // lone surrogates are not valid scalar values
      s += String.fromCodePoint(cp);
    }
    assert.equal(tok.decode(tok.encode(s)), s);
  }
});

test('decode drops specials; eot becomes a newline only when asked', () => {
  const tok = new ByteTokenizer();
  const ids = [258, 0x61, 256, 0x62, 257, 257];
  assert.equal(tok.decode(ids), 'ab');
  assert.equal(tok.decode(ids, { eotAsNewline: true }), 'a\nb');
  assert.equal(tok.decode([256, 257, 258]), '');
});

test('decode accepts any ArrayLike of numbers', () => {
  const tok = new ByteTokenizer();
  assert.equal(tok.decode(new Int32Array([0x6f, 0x6b])), 'ok');
  assert.equal(tok.decode(new Uint16Array([0x6f, 0x6b, 256])), 'ok');
  assert.equal(tok.decode(new Float32Array([0x6f, 0x6b])), 'ok');
  assert.equal(tok.decode({ length: 2, 0: 0x6f, 1: 0x6b }), 'ok');
});

test('decode never throws on invalid UTF-8 byte sequences', () => {
  const tok = new ByteTokenizer();
  assert.equal(tok.decode([0xff, 0x41]), '\uFFFDA');
  assert.equal(tok.decode([0x41, 0xe6, 0xbc]), 'A\uFFFD'); // truncated 3-byte sequence
  assert.equal(tok.decode([0xc0, 0x80]), '\uFFFD\uFFFD'); // overlong encoding
  assert.equal(tok.decode([0xed, 0xa0, 0x80]), '\uFFFD\uFFFD\uFFFD'); // encoded surrogate
  // Specials between the bytes of a character do not rescue it (they are dropped first).
  assert.equal(tok.decode([0xc3, 256, 0xa9]), 'é');
  const rand = mulberry32(99);
  for (let trial = 0; trial < 200; trial++) {
    const ids = Array.from({ length: Math.floor(rand() * 30) }, () => Math.floor(rand() * 259));
    assert.equal(typeof tok.decode(ids), 'string');
  }
});

test('a leading byte order mark survives the round trip', () => {
  const tok = new ByteTokenizer();
  assert.equal(tok.decode(tok.encode('\uFEFFx')), '\uFEFFx');
});

test('encoding a lone surrogate yields U+FFFD rather than throwing', () => {
  const tok = new ByteTokenizer();
  assert.equal(tok.decode(tok.encode('a\uD800b')), 'a\uFFFDb');
});

test('decode rejects ids out of range with E_TOKEN_OUT_OF_RANGE', () => {
  const tok = new ByteTokenizer();
  for (const bad of [-1, 259, 1000, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    assert.throws(() => tok.decode([0x41, bad]), hasCode('E_TOKEN_OUT_OF_RANGE'), `id ${bad}`);
  }
  assert.throws(() => tok.decode([259]), /259.*position 0/);
});

test('encode rejects non-strings', () => {
  const tok = new ByteTokenizer();
  assert.throws(() => tok.encode(42 as unknown as string), hasCode('E_INVALID_ARGUMENT'));
});

test('toJSON / tokenizerFromJSON round trip', () => {
  const tok = new ByteTokenizer();
  assert.deepEqual(tok.toJSON(), { type: 'byte', version: 1 });
  assert.equal(JSON.stringify(tok), '{"type":"byte","version":1}');
  const back: Tokenizer = tokenizerFromJSON(JSON.parse(JSON.stringify(tok)));
  assert.ok(back instanceof ByteTokenizer);
  assert.equal(back.vocabSize, 259);
  assert.equal(back.decode(back.encode('x€')), 'x€');
});

test('tokenizerFromJSON rejects unknown descriptions with E_CONFIG_INCOMPATIBLE', () => {
  const bad: unknown[] = [
    { type: 'bpe', version: 1 },
    { type: 'byte', version: 2 },
    { type: 'byte' },
    {},
    null,
    'byte',
    [],
    42,
    { type: 'byte', version: 1n },
  ];
  for (const obj of bad) assert.throws(() => tokenizerFromJSON(obj), hasCode('E_CONFIG_INCOMPATIBLE'));
  assert.throws(() => tokenizerFromJSON({ type: 'bpe', version: 1 }), /"bpe"/);
});
