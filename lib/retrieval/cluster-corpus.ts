/**
 * `hiermem cluster` at any corpus size (issue #17 item 3): one streaming pass draws a seeded
 * reservoir sample of `sample` documents (the order they had in the corpus), the tree and its
 * embedder are fitted on that sample alone, and a second streaming pass routes every document on
 * worker threads to count leaf sizes. Memory holds the sample and the batches in flight, never the
 * corpus. A corpus of at most `sample` documents is the sample itself, in order: the tree is then
 * exactly the one fitTexts fits on the whole corpus (what cluster did before), and its fit paths
 * are every document's paths, so no second pass is needed.
 *
 * Deeper nodes see about sample / k^l documents each (and at most the tree's maxFitSamples): raise
 * `sample` for deep trees.
 */
import { HiermemError } from '../errors.js';
import { CorpusReader, type CorpusReadOptions } from '../data/readers/index.js';
import { Rng } from '../util/random.js';
import { RetrievalTree } from './tree.js';
import { RoutePool } from './route-pool.js';

/** Default reservoir: fitting (TF-IDF, embedding, k-means) takes seconds to a minute on 2 cores. */
export const DEFAULT_CLUSTER_SAMPLE = 20_000;
const BATCH_DOCS = 2048;

export interface ClusterCorpusOptions extends CorpusReadOptions {
  corpus: string | readonly string[];
  out: string;
  k: number;
  levels: number;
  seed?: number;
  /** Documents the tree is fitted on (default DEFAULT_CLUSTER_SAMPLE). */
  sample?: number;
  /** Routing worker threads of the assignment pass (default 2; 0 = this thread). */
  threads?: number;
  onProgress?: (e: ClusterProgress) => void;
}

export interface ClusterProgress {
  phase: 'sample' | 'fit' | 'assign';
  bytesRead: number;
  totalBytes: number;
  documents: number;
  /** Known in the assign phase. */
  totalDocuments: number | null;
}

export interface ClusterSummary {
  documents: number;
  /** Documents the tree was fitted on (= documents when the corpus fits the sample). */
  sampled: number;
  k: number;
  levels: number;
  leavesUsed: number;
  leaves: number;
  /** Documents in the fullest leaf, and its size over the mean of the used leaves (1 = even). */
  largestLeaf: number;
  largestOverMean: number;
  skippedRecords: number;
  fitSeconds: number;
  assignSeconds: number;
  seconds: number;
  peakRssBytes: number;
  out: string;
}

export async function clusterCorpus(o: ClusterCorpusOptions): Promise<ClusterSummary> {
  const t0 = performance.now();
  const sampleSize = o.sample ?? DEFAULT_CLUSTER_SAMPLE;
  const seed = o.seed ?? 1;
  const threads = o.threads ?? 2;
  if (!Number.isInteger(sampleSize) || sampleSize < 1) throw new HiermemError('E_INVALID_ARGUMENT', `sample must be a positive integer, got ${sampleSize}`);
  if (Number.isInteger(o.k) && Number.isInteger(o.levels) && o.k >= 2 && o.levels >= 1 && o.k ** o.levels > sampleSize) {
    throw new HiermemError('E_INVALID_ARGUMENT', `a sample of ${sampleSize} documents cannot fill ${o.k ** o.levels} leaves; raise --sample`);
  }
  const reader = await CorpusReader.open(o.corpus, o);
  const report = (phase: ClusterProgress['phase'], documents: number, totalDocuments: number | null) =>
    o.onProgress?.({ phase, bytesRead: reader.stats.bytesRead, totalBytes: reader.totalBytes, documents, totalDocuments });

  // Pass 1: reservoir sample (algorithm R), seeded apart from the tree's own choices.
  const rng = new Rng((seed ^ 0x5bd1e995) >>> 0);
  const texts: string[] = [];
  const index: number[] = [];
  let n = 0;
  for await (const doc of reader) {
    if (n < sampleSize) {
      texts.push(doc.text);
      index.push(n);
    } else {
      const j = rng.int(n + 1);
      if (j < sampleSize) { texts[j] = doc.text; index[j] = n; }
    }
    n++;
    if ((n & 4095) === 0) report('sample', n, null);
  }
  if (n === 0) throw new HiermemError('E_INVALID_ARGUMENT', 'the corpus has no documents');
  const order = index.map((_, i) => i).sort((a, b) => index[a]! - index[b]!);
  const sample = order.map((i) => texts[i]!);
  texts.length = 0;

  report('fit', n, n);
  const tFit = performance.now();
  const { tree, paths } = await RetrievalTree.fitTexts(sample, { k: o.k, p: o.levels, seed });
  await tree.save(o.out);
  const fitSeconds = (performance.now() - tFit) / 1000;

  const P = o.levels;
  const leafCount = new Map<number, number>();
  const countLeaves = (ps: Int32Array) => {
    for (let i = P - 1; i < ps.length; i += P) leafCount.set(ps[i]!, (leafCount.get(ps[i]!) ?? 0) + 1);
  };
  const tAssign = performance.now();
  if (n <= sampleSize) {
    countLeaves(paths);
  } else {
    // Pass 2: route every document (the sample's paths are recomputed: same function, same result).
    sample.length = 0;
    const pool = new RoutePool(o.out, threads);
    const inFlight: Promise<Int32Array>[] = [];
    const maxInFlight = Math.max(2, 2 * threads);
    let batch: string[] = [];
    let routed = 0;
    const drainOne = async () => {
      const ps = await inFlight.shift()!;
      countLeaves(ps);
      routed += ps.length / P;
      report('assign', routed, n);
    };
    try {
      const again = await CorpusReader.open(o.corpus, { ...o, onBadRecord: undefined });
      for await (const doc of again) {
        batch.push(doc.text);
        if (batch.length >= BATCH_DOCS) {
          inFlight.push(pool.route(batch));
          batch = [];
          while (inFlight.length >= maxInFlight) await drainOne();
        }
      }
      if (batch.length > 0) inFlight.push(pool.route(batch));
      while (inFlight.length > 0) await drainOne();
      if (routed !== n) throw new HiermemError('E_IO', `the corpus changed between passes (${n} documents, then ${routed})`);
    } finally {
      for (const p of inFlight) p.catch(() => undefined);
      await pool.close();
    }
  }
  const sizes = [...leafCount.values()];
  const largestLeaf = Math.max(...sizes);
  return {
    documents: n, sampled: Math.min(n, sampleSize), k: o.k, levels: o.levels, leavesUsed: leafCount.size, leaves: tree.leafCount,
    largestLeaf, largestOverMean: largestLeaf / (n / leafCount.size), skippedRecords: reader.stats.badRecords,
    fitSeconds, assignSeconds: (performance.now() - tAssign) / 1000, seconds: (performance.now() - t0) / 1000,
    peakRssBytes: process.resourceUsage().maxRSS * 1024, out: o.out,
  };
}
