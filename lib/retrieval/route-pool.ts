/**
 * Routing batches of texts through a saved retrieval tree on worker threads (each loads the tree
 * file, embedder included), results in submission order. threads = 0 routes on this thread. Paths
 * are bit-identical whichever thread computed them: the embedder gives a text the same vector in
 * any batch (hashed TF-IDF; see tree.ts), and routing is one deterministic function.
 */
import { HiermemError } from '../errors.js';
import { WorkerPool, type PoolReply } from '../util/worker-pool.js';
import { RetrievalTree } from './tree.js';

export interface RouteRequest { id: number; texts: string[] }
export type RouteReply = PoolReply<{ paths: Int32Array }>;

export class RoutePool {
  private readonly pool: WorkerPool<RouteRequest, { paths: Int32Array }, Int32Array>;
  private local: Promise<RetrievalTree> | null = null;

  constructor(private readonly treeFile: string, threads: number) {
    if (!Number.isInteger(threads) || threads < 0 || threads > 256) throw new HiermemError('E_INVALID_ARGUMENT', `threads must be an integer in 0..256, got ${threads}`);
    this.pool = new WorkerPool({
      script: new URL('./route-worker.js', import.meta.url), workerData: { treeFile }, threads, what: 'routing worker',
      result: (m) => m.paths,
    });
  }

  /** (texts.length, p) paths. */
  route(texts: string[]): Promise<Int32Array> {
    if (this.pool.size === 0) {
      this.local ??= RetrievalTree.load(this.treeFile);
      return this.local.then((t) => t.assignTexts(texts));
    }
    return this.pool.submit({ id: this.pool.id(), texts });
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}
