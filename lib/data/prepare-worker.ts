/**
 * A tokenising (and routing) worker of `prepare`: rebuilds the tokenizer from its JSON and loads
 * the tree from its file, then answers batches of texts (or raw chunks of JSONL / lines, parsed here)
 * with their tokens, lengths and paths.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { HiermemError } from '../errors.js';
import { RetrievalTree } from '../retrieval/tree.js';
import { tokenizerFromJSON } from './tokenizer.js';
import { handleRequest, type WorkerInit, type WorkerReply, type WorkerRequest } from './prepare-pool.js';

const init = workerData as WorkerInit;
const tokenizer = tokenizerFromJSON(init.tokenizer);
const tree = init.treeFile !== null ? RetrievalTree.load(init.treeFile) : null;

parentPort!.on('message', (msg: WorkerRequest) => {
  void (async () => {
    try {
      const r = await handleRequest(msg, tokenizer, tree ? await tree : null, init.dtype);
      const reply: WorkerReply = { id: msg.id, ...r };
      const transfer = [r.tokens.buffer, r.lengths.buffer, ...(r.paths ? [r.paths.buffer] : []), ...(r.lines ? [r.lines.buffer] : [])] as ArrayBuffer[];
      parentPort!.postMessage(reply, transfer);
    } catch (err) {
      const e = err instanceof HiermemError ? err : new HiermemError('E_IO', `prepare worker: ${(err as Error).message}`);
      parentPort!.postMessage({ id: msg.id, error: { code: e.code, message: e.message } } satisfies WorkerReply);
    }
  })();
});
