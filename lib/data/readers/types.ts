/**
 * What the streaming corpus readers yield and report. A reader never holds more than one chunk
 * (a buffer of lines, or one Parquet row group) of its file in memory.
 */

/** 'auto': by extension (.jsonl/.ndjson/.json → jsonl, .parquet → parquet, else text); '.gz' is stripped first. */
export type CorpusFormat = 'auto' | 'jsonl' | 'text' | 'lines' | 'parquet';

export interface CorpusDocument {
  text: string;
  /** The file it came from. */
  source: string;
  /** 1-based line (text: the document's first line; JSONL: its line) or, for Parquet, the 0-based row. */
  line: number;
}

/** A record that is not a document: reported with where it is, never dropped silently. */
export interface BadRecord {
  source: string;
  line: number;
  /** 'line' for text and JSONL, 'row' for Parquet (how `line` counts). */
  unit: 'line' | 'row';
  reason: string;
}

export interface CorpusReadOptions {
  format?: CorpusFormat;
  /** JSONL field / Parquet column holding the text (default "text"). */
  field?: string;
  /** Skip bad records (counted, and passed to onBadRecord) instead of failing on the first. */
  skipBad?: boolean;
  onBadRecord?: (r: BadRecord) => void;
}

/** Running totals a reader keeps while it streams (read them for progress bars and summaries). */
export interface ReadStats {
  /** Bytes of the input files consumed so far (compressed bytes for .gz; for Parquet, row groups done). */
  bytesRead: number;
  documents: number;
  badRecords: number;
}

/** Yields documents of one file; reports bad records through `bad` (which throws unless skipping). */
export type FileReader = (
  file: string,
  o: { field: string; format: Exclude<CorpusFormat, 'auto'>; stats: ReadStats; bad: (r: BadRecord) => void },
) => AsyncGenerator<CorpusDocument>;
