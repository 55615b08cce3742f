#!/usr/bin/env node
// Builds data/sample/elements.txt from Debian's public-domain `dict-elements` package.
//
//   cd /tmp && apt-get download dict-elements && dpkg -x dict-elements_*.deb x
//   node scripts/make-sample-corpus.mjs /tmp/x/usr/share/dictd/elements.dict.dz
//
// Arguments: <elements.dict[.dz]> [elements.index] [output.txt]
// The index defaults to the sibling `elements.index`; the output to data/sample/elements.txt.
// Output: one entry per paragraph (a single line of prose), paragraphs separated by one blank line.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const [dictPath, indexArg, outArg] = process.argv.slice(2);
if (!dictPath) {
  console.error('usage: node scripts/make-sample-corpus.mjs <elements.dict[.dz]> [elements.index] [out.txt]');
  process.exit(2);
}
const indexPath = indexArg ?? join(dirname(dictPath), 'elements.index');
const outPath = outArg ?? fileURLToPath(new URL('../data/sample/elements.txt', import.meta.url));

// dictzip is gzip with an extra header field, so plain gunzip reads it.
let raw = readFileSync(dictPath);
if (raw[0] === 0x1f && raw[1] === 0x8b) raw = gunzipSync(raw);

// dictd index offsets are byte offsets into the uncompressed file, written in dictd's base64.
const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
function b64num(s) {
  let n = 0;
  for (const ch of s) {
    const d = B64.indexOf(ch);
    if (d < 0) throw new Error(`bad dictd base64 digit ${JSON.stringify(ch)} in ${JSON.stringify(s)}`);
    n = n * 64 + d;
  }
  return n;
}

// The upstream file is ISO-8859-1; accept UTF-8 too in case a later package version converts it.
function decodeText(bytes) {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return new TextDecoder('latin1').decode(bytes);
  }
}

// Debian added these superheavy-element entries in 2009 (changelog 20001107-a-5), and the database
// header says their texts are copied from Wikipedia (CC BY-SA), not Kominek's public-domain data.
// Leaving them out keeps the shipped corpus public domain.
const WIKIPEDIA_DERIVED = new Set([
  'darmstadtium',
  'roentgenium',
  'ununbium',
  'ununtrium',
  'ununquadium',
  'ununpentium',
  'ununhexium',
  'ununseptium',
  'ununoctium',
]);

const entries = new Map(); // offset -> { headword, offset, length }
const excluded = [];
for (const line of readFileSync(indexPath, 'latin1').split('\n')) {
  if (!line.trim()) continue;
  const [headword, off, len] = line.split('\t');
  if (!headword || off === undefined || len === undefined) throw new Error(`bad index line: ${line}`);
  if (headword.startsWith('00database')) continue; // dictd's own metadata entries
  if (WIKIPEDIA_DERIVED.has(headword.toLowerCase())) {
    excluded.push(headword);
    continue;
  }
  const offset = b64num(off);
  if (!entries.has(offset)) entries.set(offset, { headword, offset, length: b64num(len) });
}

// Field lines at the top of an entry; the upstream data misspells some of them.
const FIELDS = new Map([
  ['symbol', 'symbol'],
  ['atomic number', 'atomic number'],
  ['atomic weight', 'atomic weight'],
  ['atmic weight', 'atomic weight'],
  ['weight', 'weight'],
]);

function capitalise(s) {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function clean(s) {
  return s
    .replace(/\{([^{}]*)\}/g, '$1') // dictd cross-reference markup
    .replace(/\s*\[\d{4} Webster\]/g, '') // source tag on the one Webster-derived entry
    .replace(/\s+/g, ' ')
    .replace(/ ([,.;])/g, '$1')
    .trim();
}

const paragraphs = [];
for (const { headword, offset, length } of [...entries.values()].sort((a, b) => a.offset - b.offset)) {
  const lines = decodeText(raw.subarray(offset, offset + length)).split('\n');
  // dictfmt repeats the headword, in its original case (e.g. "IUPAC"), as the entry's first line.
  let name = headword;
  if (lines[0]?.trim().toLowerCase() === headword.toLowerCase()) name = lines.shift().trim();
  const facts = [];
  while (lines.length > 0) {
    const m = /^([A-Za-z ]+):\s*(.*)$/.exec(lines[0]);
    const field = m && FIELDS.get(m[1].toLowerCase());
    if (!m || !field) break;
    lines.shift();
    const value = m[2].trim();
    if (value && !/^\?+$/.test(value)) facts.push(`${field} ${value}`);
  }
  const prose = clean(lines.join(' '));
  const head = capitalise(name);
  const parts = [facts.length > 0 ? `${head}: ${facts.join('; ')}.` : `${head}.`];
  if (prose) parts.push(prose);
  paragraphs.push(parts.join(' '));
}

const text = paragraphs.join('\n\n') + '\n';
mkdirSync(dirname(outPath), { recursive: true });
writeFileSync(outPath, text);
console.log(`left out ${excluded.length} Wikipedia-derived entries: ${excluded.join(', ')}`);
console.log(`wrote ${paragraphs.length} entries, ${Buffer.byteLength(text)} bytes to ${outPath}`);
