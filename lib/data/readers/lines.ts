/**
 * Lines of a text file, plain or gzip-compressed (by the .gz extension), streamed in 1 MiB chunks.
 * Splits on "\n" only and strips one trailing "\r" per line, as lib/data/corpus.ts does, so a
 * streamed corpus yields exactly the documents the in-memory readers return. Invalid UTF-8 becomes
 * U+FFFD (StringDecoder), a leading BOM is dropped.
 */
import { createReadStream } from 'node:fs';
import { createGunzip } from 'node:zlib';
import { StringDecoder } from 'node:string_decoder';
import type { Readable } from 'node:stream';
import { HiermemError } from '../../errors.js';
import type { ReadStats } from './types.js';

export async function* readFileLines(file: string, stats: ReadStats): AsyncGenerator<string> {
  const raw = createReadStream(file, { highWaterMark: 1 << 20 });
  raw.on('data', (b) => { stats.bytesRead += b.length; });
  const gz = file.toLowerCase().endsWith('.gz');
  const input: Readable = gz ? raw.pipe(createGunzip()) : raw;
  if (gz) raw.on('error', (err) => input.destroy(err)); // pipe() does not forward source errors
  const decoder = new StringDecoder('utf8');
  let pending = '';
  let first = true;
  try {
    for await (const chunk of input as AsyncIterable<Buffer>) {
      let text = decoder.write(chunk);
      if (first && text.length > 0) {
        text = text.replace(/^\uFEFF/, '');
        first = false;
      }
      pending += text;
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) yield stripCR(line);
    }
  } catch (err) {
    if (err instanceof HiermemError) throw err;
    const what = gz && !(err as NodeJS.ErrnoException).syscall ? 'cannot decompress' : 'cannot read';
    throw new HiermemError('E_IO', `${what} ${file}: ${(err as Error).message}`, { cause: err });
  } finally {
    raw.destroy();
  }
  pending += decoder.end();
  if (pending.length > 0) yield stripCR(pending);
}

function stripCR(line: string): string {
  return line.endsWith('\r') ? line.slice(0, -1) : line;
}
