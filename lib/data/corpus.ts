import { readFileSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { StringDecoder } from 'node:string_decoder';
import { HiermemError } from '../errors.js';

export type DocumentSeparator = 'blank-line' | 'line';

export interface ReadTextOptions {
  /** 'blank-line' (default): documents are paragraphs separated by blank lines; 'line': one per line. */
  separator?: DocumentSeparator;
}

/**
 * The embedded sample corpus (see data/README.md). Resolved from the compiled location
 * dist/lib/data/corpus.js, three levels below the package root.
 */
export const SAMPLE_CORPUS_PATH: string = fileURLToPath(new URL('../../../data/sample/elements.txt', import.meta.url));

/** Documents (one per element entry) of the embedded sample corpus. */
export function loadSampleCorpus(): string[] {
  let text: string;
  try {
    text = readFileSync(SAMPLE_CORPUS_PATH, 'utf8');
  } catch (err) {
    throw new HiermemError('E_IO', `cannot read the sample corpus ${SAMPLE_CORPUS_PATH}: ${errText(err)}`, { cause: err });
  }
  const docs = splitTextDocuments(text, 'blank-line');
  if (docs.length === 0) throw new HiermemError('E_IO', `the sample corpus ${SAMPLE_CORPUS_PATH} is empty`);
  return docs;
}

/** Splits text into documents; whitespace-only lines count as blank, empty documents are dropped. */
export function splitTextDocuments(text: string, separator: DocumentSeparator = 'blank-line'): string[] {
  checkSeparator(separator);
  const splitter = new DocumentSplitter(separator);
  for (const line of text.replace(/^\uFEFF/, '').split('\n')) splitter.push(stripCR(line));
  return splitter.finish();
}

/**
 * Reads a UTF-8 text file as documents. Invalid UTF-8 becomes U+FFFD rather than failing.
 * Missing/unreadable file → E_IO; no documents → E_INVALID_ARGUMENT.
 */
export async function readTextDocuments(path: string, options: ReadTextOptions = {}): Promise<string[]> {
  const separator = options.separator ?? 'blank-line';
  checkSeparator(separator);
  const splitter = new DocumentSplitter(separator);
  for await (const line of readLines(path)) splitter.push(line);
  const docs = splitter.finish();
  if (docs.length === 0) throw new HiermemError('E_INVALID_ARGUMENT', `${path}: the corpus has no documents`);
  return docs;
}

/**
 * Reads JSON Lines, taking the string `field` of each record as a document. Blank lines and empty
 * strings are skipped. A line that is not a JSON object with a string `field` → E_INVALID_ARGUMENT
 * naming the file and 1-based line number; no documents → E_INVALID_ARGUMENT.
 */
export async function readJsonlDocuments(path: string, field = 'text'): Promise<string[]> {
  if (typeof field !== 'string' || field.length === 0) {
    throw new HiermemError('E_INVALID_ARGUMENT', 'readJsonlDocuments: field must be a non-empty string');
  }
  const docs: string[] = [];
  let lineNo = 0;
  for await (const line of readLines(path)) {
    lineNo++;
    if (line.trim() === '') continue;
    let record: unknown;
    try {
      record = JSON.parse(line);
    } catch (err) {
      throw new HiermemError('E_INVALID_ARGUMENT', `${path}:${lineNo}: not valid JSON (${errText(err)})`);
    }
    if (typeof record !== 'object' || record === null || Array.isArray(record)) {
      throw new HiermemError('E_INVALID_ARGUMENT', `${path}:${lineNo}: expected a JSON object`);
    }
    const value = Object.prototype.hasOwnProperty.call(record, field)
      ? (record as Record<string, unknown>)[field]
      : undefined;
    if (typeof value !== 'string') {
      throw new HiermemError(
        'E_INVALID_ARGUMENT',
        `${path}:${lineNo}: ${value === undefined ? 'missing' : 'non-string'} field ${JSON.stringify(field)}`,
      );
    }
    if (value.length > 0) docs.push(value);
  }
  if (docs.length === 0) throw new HiermemError('E_INVALID_ARGUMENT', `${path}: the corpus has no documents`);
  return docs;
}

class DocumentSplitter {
  private readonly docs: string[] = [];
  private current: string[] = [];
  constructor(private readonly separator: DocumentSeparator) {}

  push(line: string): void {
    const blank = line.trim() === '';
    if (this.separator === 'line') {
      if (!blank) this.docs.push(line);
    } else if (blank) {
      this.flush();
    } else {
      this.current.push(line);
    }
  }

  finish(): string[] {
    this.flush();
    return this.docs;
  }

  private flush(): void {
    if (this.current.length > 0) this.docs.push(this.current.join('\n').trim());
    this.current = [];
  }
}

function checkSeparator(separator: unknown): asserts separator is DocumentSeparator {
  if (separator !== 'blank-line' && separator !== 'line') {
    throw new HiermemError('E_INVALID_ARGUMENT', `separator must be 'blank-line' or 'line', got ${String(separator)}`);
  }
}

function stripCR(line: string): string {
  return line.endsWith('\r') ? line.slice(0, -1) : line;
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Streams lines (without terminators) so corpora larger than the maximum string length still load. */
async function* readLines(path: string): AsyncGenerator<string> {
  if (typeof path !== 'string' || path.length === 0) {
    throw new HiermemError('E_INVALID_ARGUMENT', 'corpus path must be a non-empty string');
  }
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    throw new HiermemError('E_IO', `cannot open ${path}: ${errText(err)}`, { cause: err });
  }
  try {
    if (!(await fh.stat()).isFile()) throw new HiermemError('E_IO', `cannot read ${path}: not a regular file`);
    const decoder = new StringDecoder('utf8'); // replaces invalid sequences with U+FFFD
    const buf = Buffer.allocUnsafe(1 << 20);
    let pending = '';
    let first = true;
    for (;;) {
      let bytesRead: number;
      try {
        ({ bytesRead } = await fh.read(buf, 0, buf.length, null));
      } catch (err) {
        throw new HiermemError('E_IO', `cannot read ${path}: ${errText(err)}`, { cause: err });
      }
      let chunk = bytesRead === 0 ? decoder.end() : decoder.write(buf.subarray(0, bytesRead));
      if (first && chunk.length > 0) {
        chunk = chunk.replace(/^\uFEFF/, '');
        first = false;
      }
      pending += chunk;
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) yield stripCR(line);
      if (bytesRead === 0) break;
    }
    if (pending.length > 0) yield stripCR(pending);
  } finally {
    await fh.close().catch(() => undefined);
  }
}
