/**
 * A fixed set of worker threads serving requests one at a time each, in submission order of
 * dispatch; each request's promise settles with its own reply (callers keep their order). A worker
 * that crashes fails every request in flight and every later one with the error it gave.
 */
import { Worker } from 'node:worker_threads';
import { HiermemError, type HiermemErrorCode } from '../errors.js';

/** What a worker posts back: its result, or a typed error. */
export type PoolReply<R> = ({ id: number } & R) | { id: number; error: { code: HiermemErrorCode; message: string } };

interface Job<Res> { resolve: (r: Res) => void; reject: (e: unknown) => void }

export interface WorkerPoolOptions<Req, Rep, Res> {
  script: URL;
  workerData: unknown;
  threads: number;
  /** Names the workers in error messages ("routing worker"). */
  what: string;
  /** The result a reply resolves to. */
  result: (reply: { id: number } & Rep) => Res;
  /** Buffers to move to the worker instead of copying them. */
  transfer?: (req: Req) => ArrayBuffer[];
}

export class WorkerPool<Req extends { id: number }, Rep, Res> {
  private readonly workers: Worker[] = [];
  private readonly idle: Worker[] = [];
  private readonly waiting: (Job<Res> & { req: Req })[] = [];
  private readonly pending = new Map<number, Job<Res>>();
  private nextId = 0;
  private failed: unknown = null;

  constructor(private readonly o: WorkerPoolOptions<Req, Rep, Res>) {
    for (let i = 0; i < o.threads; i++) {
      const w = new Worker(o.script, { workerData: o.workerData });
      w.on('message', (m: PoolReply<Rep>) => this.onReply(w, m));
      w.on('error', (e) => this.fail(new HiermemError('E_IO', `${o.what} failed: ${e.message}`, { cause: e })));
      this.workers.push(w);
      this.idle.push(w);
    }
  }

  get size(): number {
    return this.workers.length;
  }

  /** A fresh request id. */
  id(): number {
    return this.nextId++;
  }

  submit(req: Req): Promise<Res> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      this.waiting.push({ req, resolve, reject });
      this.dispatch();
    });
  }

  private dispatch(): void {
    while (this.idle.length > 0 && this.waiting.length > 0) {
      const w = this.idle.pop()!;
      const job = this.waiting.shift()!;
      this.pending.set(job.req.id, job);
      w.postMessage(job.req, this.o.transfer?.(job.req) ?? []);
    }
  }

  private onReply(w: Worker, m: PoolReply<Rep>): void {
    const job = this.pending.get(m.id);
    this.pending.delete(m.id);
    this.idle.push(w);
    if (job) {
      if ('error' in m) job.reject(new HiermemError(m.error.code, m.error.message));
      else job.resolve(this.o.result(m));
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
