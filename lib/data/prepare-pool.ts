/**
 * Tokenising and routing batches of documents on worker threads, results handed back in submission
 * order (so shards do not depend on the thread count). threads = 0 works in this thread, with any
 * tokenizer; workers rebuild theirs from its JSON (tokenizerFromJSON).
 */
import { Worker } from 'node:worker_threads';
import { HiermemError, type HiermemErrorCode } from '../errors.js';
import type { RetrievalTree } from '../retrieval/tree.js';
import type { Tokenizer, TokenizerJSON } from './tokenizer.js';
import type { TokenDtype } from './prepared-format.js';

export interface WorkerInit {
  tokenizer: TokenizerJSON;
  dtype: TokenDtype;
  treeFile: string | null;
}
export interface WorkerRequest {
  id: number;
  texts: string[];
}
export interface EncodedBatch {
  /** Every document's tokens, concatenated, in the shards' dtype (copied into a shard as is). */
  tokens: Uint16Array | Uint32Array;
  lengths: Int32Array;
  /** (docs, p) paths, with a tree. */
  paths: Int32Array | null;
}
export type WorkerReply = ({ id: number } & EncodedBatch) | { id: number; error: { code: HiermemErrorCode; message: string } };

export async function encodeBatch(texts: readonly string[], tokenizer: Tokenizer, tree: RetrievalTree | null, dtype: TokenDtype): Promise<EncodedBatch> {
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

export class TokenizePool {
  private readonly workers: Worker[] = [];
  private readonly idle: Worker[] = [];
  private readonly waiting: { req: WorkerRequest; resolve: (r: EncodedBatch) => void; reject: (e: unknown) => void }[] = [];
  private readonly pending = new Map<number, { resolve: (r: EncodedBatch) => void; reject: (e: unknown) => void }>();
  private nextId = 0;
  private failed: unknown = null;

  constructor(
    threads: number, private readonly tokenizer: Tokenizer, private readonly tree: { file: string; loaded: RetrievalTree } | null, private readonly dtype: TokenDtype,
  ) {
    const init: WorkerInit = { tokenizer: tokenizer.toJSON(), dtype, treeFile: tree?.file ?? null };
    for (let i = 0; i < threads; i++) {
      const w = new Worker(new URL('./prepare-worker.js', import.meta.url), { workerData: init });
      w.on('message', (m: WorkerReply) => this.onReply(w, m));
      w.on('error', (e) => this.fail(new HiermemError('E_IO', `prepare worker failed: ${e.message}`, { cause: e })));
      this.workers.push(w);
      this.idle.push(w);
    }
  }

  /** Encodes a batch; the promise settles when its result is back (any order; callers keep theirs). */
  encode(texts: string[]): Promise<EncodedBatch> {
    if (this.failed) return Promise.reject(this.failed);
    if (this.workers.length === 0) return encodeBatch(texts, this.tokenizer, this.tree?.loaded ?? null, this.dtype);
    return new Promise((resolve, reject) => {
      this.waiting.push({ req: { id: this.nextId++, texts }, resolve, reject });
      this.dispatch();
    });
  }

  private dispatch(): void {
    while (this.idle.length > 0 && this.waiting.length > 0) {
      const w = this.idle.pop()!;
      const job = this.waiting.shift()!;
      this.pending.set(job.req.id, job);
      w.postMessage(job.req);
    }
  }

  private onReply(w: Worker, m: WorkerReply): void {
    const job = this.pending.get(m.id);
    this.pending.delete(m.id);
    this.idle.push(w);
    if (job) {
      if ('error' in m) job.reject(new HiermemError(m.error.code, m.error.message));
      else job.resolve({ tokens: m.tokens, lengths: m.lengths, paths: m.paths });
    }
    this.dispatch();
  }

  private fail(e: unknown): void {
    this.failed = e;
    for (const j of [...this.pending.values(), ...this.waiting]) j.reject(e);
    this.pending.clear();
    this.waiting.length = 0;
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
