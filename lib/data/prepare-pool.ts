/**
 * Tokenising and routing batches of documents on worker threads, results handed back in submission
 * order (so shards do not depend on the thread count). threads = 0 works in this thread, with any
 * tokenizer; workers rebuild theirs from its JSON (tokenizerFromJSON).
 */
import { HiermemError } from '../errors.js';
import { WorkerPool, type PoolReply } from '../util/worker-pool.js';
import type { RetrievalTree } from '../retrieval/tree.js';
import { ByteTokenizer, type Tokenizer, type TokenizerJSON } from './tokenizer.js';
import type { TokenDtype } from './prepared-format.js';
import { parseLineChunk, type LineChunk, type ParsedChunk } from './readers/chunks.js';

export interface WorkerInit {
  tokenizer: TokenizerJSON;
  dtype: TokenDtype;
  treeFile: string | null;
}
/** Texts to encode, or a chunk of raw JSONL / 'lines' bytes to parse and encode (readers/chunks.ts). */
export type WorkerRequest = { id: number; texts: string[] } | { id: number; chunk: LineChunk; format: 'jsonl' | 'lines'; field: string };
export interface EncodedBatch {
  /** Every document's tokens, concatenated, in the shards' dtype (copied into a shard as is). */
  tokens: Uint16Array | Uint32Array;
  lengths: Int32Array;
  /** (docs, p) paths, with a tree. */
  paths: Int32Array | null;
  /** For a chunk: each document's line, and the bad records met, in order. */
  lines?: Float64Array;
  bad?: ParsedChunk['bad'];
}
export type WorkerReply = PoolReply<EncodedBatch>;

const utf8 = new TextEncoder();

export async function encodeBatch(texts: readonly string[], tokenizer: Tokenizer, tree: RetrievalTree | null, dtype: TokenDtype): Promise<EncodedBatch> {
  if (tokenizer instanceof ByteTokenizer) {
    // The byte tokenizer's ids are the UTF-8 bytes (what its encode returns): encode every text
    // into one buffer and widen it once, instead of an array per text and a checked copy.
    const buf = new Uint8Array(texts.reduce((n, t) => n + 3 * t.length, 0));
    const lengths = new Int32Array(texts.length);
    let o = 0;
    for (let i = 0; i < texts.length; i++) {
      const w = utf8.encodeInto(texts[i]!, buf.subarray(o)).written;
      lengths[i] = w;
      o += w;
    }
    const tokens = dtype === 'uint16' ? new Uint16Array(o) : new Uint32Array(o);
    tokens.set(buf.subarray(0, o));
    return { tokens, lengths, paths: tree ? await tree.assignTexts(texts) : null };
  }
  const parts = texts.map((t) => tokenizer.encode(t));
  const lengths = Int32Array.from(parts, (p) => p.length);
  const total = lengths.reduce((n, l) => n + l, 0);
  const tokens = dtype === 'uint16' ? new Uint16Array(total) : new Uint32Array(total);
  const V = tokenizer.vocabSize;
  let o = 0;
  for (const p of parts) {
    for (let i = 0; i < p.length; i++) {
      const id = p[i]!;
      if (!(id >= 0 && id < V)) throw new HiermemError('E_TOKEN_OUT_OF_RANGE', `tokenizer ${tokenizer.name} produced id ${id}, outside 0..${V - 1}`);
      tokens[o++] = id;
    }
  }
  return { tokens, lengths, paths: tree ? await tree.assignTexts(texts) : null };
}

/** What a worker does with one request (also run on this thread when threads = 0). */
export async function handleRequest(req: WorkerRequest, tokenizer: Tokenizer, tree: RetrievalTree | null, dtype: TokenDtype): Promise<EncodedBatch> {
  if ('texts' in req) return encodeBatch(req.texts, tokenizer, tree, dtype);
  const parsed = parseLineChunk(req.chunk, req.format, req.field);
  return { ...(await encodeBatch(parsed.texts, tokenizer, tree, dtype)), lines: Float64Array.from(parsed.lines), bad: parsed.bad };
}

export class TokenizePool {
  private readonly pool: WorkerPool<WorkerRequest, EncodedBatch, EncodedBatch>;

  constructor(
    threads: number, private readonly tokenizer: Tokenizer, private readonly tree: { file: string; loaded: RetrievalTree } | null, private readonly dtype: TokenDtype,
  ) {
    const init: WorkerInit = { tokenizer: tokenizer.toJSON(), dtype, treeFile: tree?.file ?? null };
    this.pool = new WorkerPool({
      script: new URL('./prepare-worker.js', import.meta.url), workerData: init, threads, what: 'prepare worker',
      result: (m) => ({ tokens: m.tokens, lengths: m.lengths, paths: m.paths, ...(m.lines ? { lines: m.lines, bad: m.bad ?? [] } : {}) }),
      transfer: (req) => ('chunk' in req ? [req.chunk.bytes.buffer as ArrayBuffer] : []),
    });
  }

  /** Encodes a batch; the promise settles when its result is back (any order; callers keep theirs). */
  encode(texts: string[]): Promise<EncodedBatch> {
    return this.submit({ id: this.pool.id(), texts });
  }

  /** Parses a chunk of JSONL / 'lines' bytes and encodes its documents (the chunk's bytes are transferred). */
  encodeChunk(chunk: LineChunk, format: 'jsonl' | 'lines', field: string): Promise<EncodedBatch> {
    return this.submit({ id: this.pool.id(), chunk, format, field });
  }

  private submit(req: WorkerRequest): Promise<EncodedBatch> {
    if (this.pool.size === 0) return handleRequest(req, this.tokenizer, this.tree?.loaded ?? null, this.dtype);
    return this.pool.submit(req);
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}
