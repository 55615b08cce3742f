/**
 * Communicators for n ranks inside one process (tests only): each collective waits until every
 * rank has called it, then computes what MPI would (sums in rank order, concatenation, the root's
 * buffer) and resolves on every rank. Lets the sharded step and sharded checkpoints run as 2 ranks
 * where no MPI is installed.
 */
import type { CommStats, Communicator } from '../lib/dist/communicator.js';
import { orderedSum } from '../lib/dist/communicator.js';

interface Pending {
  bufs: Float32Array[];
  done: Array<(out: Float32Array) => void>;
  arrived: number;
}

export function fakeCommunicators(n: number): Communicator[] {
  const seq = new Array<number>(n).fill(0);
  const pending = new Map<number, Pending>();
  const collective = (rank: number, buf: Float32Array, combine: (bufs: Float32Array[]) => Float32Array): Promise<Float32Array> => {
    const id = seq[rank]!++;
    let p = pending.get(id);
    if (!p) {
      p = { bufs: new Array<Float32Array>(n), done: new Array(n), arrived: 0 };
      pending.set(id, p);
    }
    const entry = p;
    return new Promise((resolve) => {
      entry.bufs[rank] = buf.slice();
      entry.done[rank] = resolve;
      if (++entry.arrived === n) {
        pending.delete(id);
        const out = combine(entry.bufs);
        entry.done.forEach((d) => d(out));
      }
    });
  };
  return Array.from({ length: n }, (_, rank): Communicator => {
    const stats: CommStats = { collectives: 0, bytesSent: 0 };
    const count = (bytes: number) => { stats.collectives++; stats.bytesSent += bytes; };
    return {
      kind: 'mpi', rank, size: n, stats,
      async allReduceSum(buf) {
        count(buf.byteLength * 2 * (n - 1) / n);
        buf.set(await collective(rank, buf, orderedSum));
      },
      async allReduceMean(buf) {
        count(buf.byteLength * 2 * (n - 1) / n);
        const s = await collective(rank, buf, orderedSum);
        for (let i = 0; i < buf.length; i++) buf[i] = s[i]! / n;
      },
      async allGather(buf) {
        count(buf.byteLength * (n - 1));
        return collective(rank, buf, (bufs) => {
          const out = new Float32Array(buf.length * n);
          bufs.forEach((b, r) => out.set(b, r * buf.length));
          return out;
        });
      },
      async broadcast(buf, root = 0) {
        count(rank === root ? buf.byteLength * (n - 1) : 0);
        buf.set(await collective(rank, buf, (bufs) => bufs[root]!));
      },
      async barrier() {
        await collective(rank, new Float32Array(0), () => new Float32Array(0));
      },
      abort(code) {
        throw new Error(`fake communicator: abort(${code})`);
      },
      close() {},
    };
  });
}
