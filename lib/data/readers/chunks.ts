/**
 * Raw chunks of whole lines, for parsing off the main thread (prepare's workers): the main thread
 * only reads (and gunzips) bytes and cuts them after a "\n"; decoding, line splitting and JSON
 * parsing happen in parseLineChunk, which yields exactly what readJsonlFile / readTextFile ('lines')
 * yield for those lines. A cut right after a "\n" byte never splits a UTF-8 sequence, so decoding
 * chunk by chunk gives the text StringDecoder gives over the whole stream.
 */
import { createReadStream } from 'node:fs';
import { createGunzip } from 'node:zlib';
import type { Readable } from 'node:stream';
import { HiermemError } from '../../errors.js';
import type { ReadStats } from './types.js';

export interface LineChunk {
  bytes: Uint8Array;
  /** 1-based number of the chunk's first line in its file. */
  firstLine: number;
  /** The file's first chunk (a leading BOM is dropped). */
  first: boolean;
}

export interface ParsedChunk {
  texts: string[];
  lines: number[];
  bad: { line: number; reason: string }[];
}

const NL = 0x0a;

/** Chunks of about `size` bytes of whole lines (a longer line makes a longer chunk). */
export async function* readLineChunks(file: string, stats: ReadStats, size = 1 << 20): AsyncGenerator<LineChunk> {
  const raw = createReadStream(file, { highWaterMark: size });
  raw.on('data', (b) => { stats.bytesRead += b.length; });
  const gz = file.toLowerCase().endsWith('.gz');
  const input: Readable = gz ? raw.pipe(createGunzip()) : raw;
  if (gz) raw.on('error', (err) => input.destroy(err)); // pipe() does not forward source errors
  let parts: Buffer[] = [];
  let held = 0;
  let line = 1;
  let first = true;
  const emit = (bytes: Uint8Array): LineChunk => {
    const c = { bytes, firstLine: line, first };
    first = false;
    const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = b.indexOf(NL); i >= 0; i = b.indexOf(NL, i + 1)) line++; // memchr, not a loop over bytes
    return c;
  };
  try {
    for await (const chunk of input as AsyncIterable<Buffer>) {
      parts.push(chunk);
      held += chunk.length;
      if (held < size) continue;
      const all = Buffer.concat(parts, held);
      const cut = all.lastIndexOf(NL) + 1;
      if (cut === 0) { parts = [all]; continue; }
      parts = cut < all.length ? [all.subarray(cut)] : [];
      held = all.length - cut;
      // a copy: the chunk is transferred to a worker, and a pooled Buffer's memory cannot be
      yield emit(Uint8Array.prototype.slice.call(all, 0, cut));
    }
  } catch (err) {
    if (err instanceof HiermemError) throw err;
    const what = gz && !(err as NodeJS.ErrnoException).syscall ? 'cannot decompress' : 'cannot read';
    throw new HiermemError('E_IO', `${what} ${file}: ${(err as Error).message}`, { cause: err });
  } finally {
    raw.destroy();
  }
  if (held > 0) yield emit(Uint8Array.prototype.slice.call(Buffer.concat(parts, held)));
}

/** The documents and bad records of a chunk, as the streaming JSONL and 'lines' readers find them. */
export function parseLineChunk(c: LineChunk, format: 'jsonl' | 'lines', field: string): ParsedChunk {
  let text = Buffer.from(c.bytes.buffer, c.bytes.byteOffset, c.bytes.byteLength).toString('utf8');
  if (c.first) text = text.replace(/^\uFEFF/, '');
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const out: ParsedChunk = { texts: [], lines: [], bad: [] };
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i]!;
    if (line.endsWith('\r')) line = line.slice(0, -1);
    const lineNo = c.firstLine + i;
    if (format === 'lines') {
      if (line.trim() !== '') { out.texts.push(line); out.lines.push(lineNo); }
      continue;
    }
    if (line.trim() === '') continue;
    let record: unknown;
    try {
      record = JSON.parse(line);
    } catch (err) {
      out.bad.push({ line: lineNo, reason: `not valid JSON (${(err as Error).message})` });
      continue;
    }
    if (typeof record !== 'object' || record === null || Array.isArray(record)) {
      out.bad.push({ line: lineNo, reason: 'expected a JSON object' });
      continue;
    }
    const value = Object.prototype.hasOwnProperty.call(record, field) ? (record as Record<string, unknown>)[field] : undefined;
    if (typeof value !== 'string') {
      out.bad.push({ line: lineNo, reason: `${value === undefined ? 'missing' : 'non-string'} field ${JSON.stringify(field)}` });
      continue;
    }
    if (value.length > 0) { out.texts.push(value); out.lines.push(lineNo); }
  }
  return out;
}
