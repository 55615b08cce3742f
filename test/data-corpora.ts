/**
 * Small corpora written in every format the readers take (JSONL, text, gzip, Parquet in two
 * shards), all holding the same documents, for the data-* tests.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { parquetWriteFile } from 'hyparquet-writer';
import { mulberry32 } from './helpers.js';

const WORDS = ['osmium', 'argon', 'neon', 'the', 'atomic', 'number', 'of', 'is', 'a', 'metal', 'gas', 'élément', 'dense', 'noble', 'blue', 'ünïcode', '日本', 'lattice'];

/** n single-line documents (lengths 1..~120 words, so some exceed a 64-token sequence). */
export function makeDocs(n: number, seed = 1): string[] {
  const r = mulberry32(seed);
  return Array.from({ length: n }, (_, i) => {
    const len = 1 + Math.floor(r() ** 3 * 120);
    const words = Array.from({ length: len }, () => WORDS[Math.floor(r() * WORDS.length)]!);
    return `doc ${i}: ${words.join(' ')}.`;
  });
}

export interface CorpusFiles {
  jsonl: string;
  jsonlGz: string;
  text: string;
  textGz: string;
  parquet: string;
  /** A folder of JSONL shards (two files, plus a hidden file that must be ignored). */
  folder: string;
  /** A glob over two Parquet shards. */
  glob: string;
}

export async function writeCorpora(dir: string, docs: readonly string[]): Promise<CorpusFiles> {
  await mkdir(dir, { recursive: true });
  const jsonl = docs.map((d, i) => JSON.stringify({ id: i, text: d })).join('\n') + '\n';
  const text = docs.join('\n\n') + '\n';
  const f: CorpusFiles = {
    jsonl: path.join(dir, 'c.jsonl'), jsonlGz: path.join(dir, 'c.jsonl.gz'), text: path.join(dir, 'c.txt'), textGz: path.join(dir, 'c.txt.gz'),
    parquet: path.join(dir, 'c.parquet'), folder: path.join(dir, 'folder'), glob: path.join(dir, 'pq', 'part-*.parquet'),
  };
  await writeFile(f.jsonl, jsonl);
  await writeFile(f.jsonlGz, gzipSync(jsonl));
  await writeFile(f.text, text);
  // two gzip members: readers must decode concatenated streams
  const half = Math.floor(text.length / 2);
  await writeFile(f.textGz, Buffer.concat([gzipSync(text.slice(0, half)), gzipSync(text.slice(half))]));
  parquetWriteFile({ filename: f.parquet, columnData: [{ name: 'id', data: docs.map((_, i) => i), type: 'INT32' }, { name: 'text', data: [...docs], type: 'STRING' }], rowGroupSize: 17 });
  await mkdir(f.folder, { recursive: true });
  const cut = Math.floor(docs.length / 3);
  await writeFile(path.join(f.folder, 'a.jsonl'), docs.slice(0, cut).map((d) => JSON.stringify({ text: d })).join('\n') + '\n');
  await writeFile(path.join(f.folder, 'b.jsonl'), docs.slice(cut).map((d) => JSON.stringify({ text: d })).join('\n') + '\n');
  await writeFile(path.join(f.folder, '.partial.jsonl'), '{"text": "never read"}\n');
  await mkdir(path.join(dir, 'pq'), { recursive: true });
  parquetWriteFile({ filename: path.join(dir, 'pq', 'part-0.parquet'), columnData: [{ name: 'text', data: docs.slice(0, cut), type: 'STRING' }], rowGroupSize: 5 });
  parquetWriteFile({ filename: path.join(dir, 'pq', 'part-1.parquet'), columnData: [{ name: 'text', data: docs.slice(cut), type: 'STRING' }], rowGroupSize: 5 });
  return f;
}
