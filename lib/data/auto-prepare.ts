/**
 * `train --corpus` on a large corpus (issue #17 item 4): the corpus is prepared into a temporary
 * folder and read from disk like `--data`, which draws exactly the batches of the in-memory path
 * (bit-identical losses: test/data-train.test.ts), in bounded memory.
 *
 * Below IN_MEMORY_CORPUS_BYTES the in-memory path stays: preparing costs worker start-up, shard
 * writes and fsyncs (about a second even for the demo's corpus) that a small run does not need,
 * and memory is no issue there. Runs that resume or start from an anchor, and MPI runs, also stay
 * in memory: their model settings, or several ranks preparing at once, would need more plumbing.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { resolveCorpusFiles, type CorpusFormat } from './readers/index.js';
import { prepareData, type PrepareProgress } from './prepare.js';
import type { Tokenizer } from './tokenizer.js';

/**
 * Corpora at least this large (bytes on disk, all files) are prepared on disk by `train --corpus`;
 * HIERMEM_IN_MEMORY_CORPUS_BYTES overrides it (tests use 1 to take the disk path on a small corpus).
 */
export const IN_MEMORY_CORPUS_BYTES = Number(process.env.HIERMEM_IN_MEMORY_CORPUS_BYTES ?? '') || 64 * 2 ** 20;

export interface TemporaryPrepared { dir: string; dispose(): void }

/** Total bytes of the corpus's files. */
export async function corpusBytes(corpus: string): Promise<number> {
  return (await resolveCorpusFiles([corpus])).reduce((n, f) => n + f.bytes, 0);
}

/** Prepares `corpus` (with a tree: routed and packed at seqLen) into a new temporary folder. */
export async function prepareTemporary(o: {
  corpus: string; format: CorpusFormat; field: string; tokenizer: Tokenizer; tree?: string; seqLen: number; onProgress?: (e: PrepareProgress) => void;
}): Promise<TemporaryPrepared> {
  const dir = mkdtempSync(path.join(tmpdir(), 'hiermem-corpus-'));
  const dispose = () => rmSync(dir, { recursive: true, force: true });
  try {
    await prepareData({
      corpus: o.corpus, out: dir, format: o.format, field: o.field, tokenizer: o.tokenizer, valFraction: 0.05,
      ...(o.tree !== undefined ? { tree: o.tree, seqLen: o.seqLen } : {}), ...(o.onProgress ? { onProgress: o.onProgress } : {}),
    });
  } catch (e) {
    dispose();
    throw e;
  }
  return { dir, dispose };
}
