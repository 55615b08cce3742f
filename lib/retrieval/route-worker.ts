/** A routing worker of RoutePool: loads the tree file once, answers batches of texts with their paths. */
import { parentPort, workerData } from 'node:worker_threads';
import { HiermemError } from '../errors.js';
import { RetrievalTree } from './tree.js';
import type { RouteReply, RouteRequest } from './route-pool.js';

const tree = RetrievalTree.load((workerData as { treeFile: string }).treeFile);
tree.catch(() => undefined); // reported with the first request

parentPort!.on('message', (msg: RouteRequest) => {
  void (async () => {
    try {
      const paths = await (await tree).assignTexts(msg.texts);
      parentPort!.postMessage({ id: msg.id, paths } satisfies RouteReply, [paths.buffer as ArrayBuffer]);
    } catch (err) {
      const e = err instanceof HiermemError ? err : new HiermemError('E_IO', `routing worker: ${(err as Error).message}`);
      parentPort!.postMessage({ id: msg.id, error: { code: e.code, message: e.message } } satisfies RouteReply);
    }
  })();
});
