/**
 * Streaming corpus readers: documents one at a time, with their file and line/row, from text,
 * JSONL, gzip-compressed shards of either, and Parquet; files, folders or globs. Bad records fail
 * the read (E_INVALID_ARGUMENT naming file and line/row) unless `skipBad`, which counts them.
 */
import { HiermemError } from '../../errors.js';
import { formatOf, resolveCorpusFiles, type CorpusFile } from './files.js';
import { readJsonlFile } from './jsonl.js';
import { readParquetFile } from './parquet.js';
import { readTextFile } from './text.js';
import type { BadRecord, CorpusDocument, CorpusFormat, CorpusReadOptions, FileReader, ReadStats } from './types.js';

export type { BadRecord, CorpusDocument, CorpusFormat, CorpusReadOptions, ReadStats } from './types.js';
export { resolveCorpusFiles, formatOf, type CorpusFile } from './files.js';
export { readLineChunks, parseLineChunk, type LineChunk, type ParsedChunk } from './chunks.js';

const READERS: Record<'jsonl' | 'text' | 'lines' | 'parquet', FileReader> = {
  jsonl: readJsonlFile, text: readTextFile, lines: readTextFile, parquet: readParquetFile,
};

/** One pass over a corpus. `stats` and `files` are live while it is iterated. */
export class CorpusReader implements AsyncIterable<CorpusDocument> {
  readonly stats: ReadStats = { bytesRead: 0, documents: 0, badRecords: 0 };
  private constructor(readonly files: readonly CorpusFile[], private readonly o: CorpusReadOptions) {}

  static async open(specs: string | readonly string[], o: CorpusReadOptions = {}): Promise<CorpusReader> {
    const field = o.field ?? 'text';
    if (typeof field !== 'string' || field.length === 0) throw new HiermemError('E_INVALID_ARGUMENT', 'field must be a non-empty string');
    const files = await resolveCorpusFiles(typeof specs === 'string' ? [specs] : specs);
    return new CorpusReader(files, o);
  }

  get totalBytes(): number {
    return this.files.reduce((n, f) => n + f.bytes, 0);
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<CorpusDocument> {
    for (const f of this.files) yield* this.readFile(f);
  }

  /** The format a file of this corpus is read as. */
  formatOf(f: CorpusFile): Exclude<CorpusFormat, 'auto'> {
    return formatOf(f.path, this.o.format ?? 'auto');
  }

  /** The JSONL field / Parquet column read. */
  get field(): string {
    return this.o.field ?? 'text';
  }

  /** Documents of one of the corpus's files (counted in `stats`). */
  async *readFile(f: CorpusFile): AsyncGenerator<CorpusDocument> {
    const format = this.formatOf(f);
    for await (const doc of READERS[format](f.path, { field: this.field, format, stats: this.stats, bad: (r) => this.bad(r) })) {
      this.stats.documents++;
      yield doc;
    }
  }

  /** Counts and reports a bad record; throws (E_INVALID_ARGUMENT, with file and line/row) unless skipping. */
  bad(r: BadRecord): void {
    this.stats.badRecords++;
    this.o.onBadRecord?.(r);
    if (!this.o.skipBad) {
      throw new HiermemError('E_INVALID_ARGUMENT', `${r.source}:${r.unit === 'row' ? ' row ' : ''}${r.line}: ${r.reason} (--skip-bad skips such records)`);
    }
  }
}

/** Documents of a corpus, streamed (see CorpusReader for stats). */
export async function* readCorpus(specs: string | readonly string[], o: CorpusReadOptions = {}): AsyncGenerator<CorpusDocument> {
  yield* await CorpusReader.open(specs, o);
}
