/**
 * Cluster-frequency buckets of the prose experiment: how much training text a document's leaf
 * holds. Leaves are ordered from the most to the least training tokens (ties: lower leaf first)
 * and cut into buckets of about equal training text, whole leaves at a time, so B1 is a few big
 * clusters and B5 many small ones (a leaf no training document reached counts as the smallest).
 * Held-out and training documents take the bucket of the leaf they are routed to.
 */
import { HiermemError } from '../errors.js';
import type { DocumentPerplexity, PerplexityStats } from './perplexity.js';

export const PROSE_BUCKETS = 5;

export interface LeafBuckets {
  /** Bucket index (0 = B1) of every leaf that training documents reach. */
  bucketOfLeaf: Map<number, number>;
  /** Training tokens per leaf. */
  tokensOfLeaf: Map<number, number>;
  summary: Array<{ name: string; leaves: number; minTokens: number; maxTokens: number; trainTokens: number }>;
}

const leafAt = (paths: Int32Array, p: number, i: number) => paths[i * p + p - 1]!;

/** Buckets from the training documents' paths (n × p) and their token counts. */
export function leafBuckets(trainPaths: Int32Array, p: number, tokens: readonly number[], buckets = PROSE_BUCKETS): LeafBuckets {
  if (trainPaths.length !== tokens.length * p) {
    throw new HiermemError('E_SHAPE_MISMATCH', `leafBuckets: ${trainPaths.length} path entries for ${tokens.length} documents of ${p} levels`);
  }
  const tokensOfLeaf = new Map<number, number>();
  tokens.forEach((t, i) => tokensOfLeaf.set(leafAt(trainPaths, p, i), (tokensOfLeaf.get(leafAt(trainPaths, p, i)) ?? 0) + t));
  const total = tokens.reduce((a, b) => a + b, 0);
  const order = [...tokensOfLeaf.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0]);
  const bucketOfLeaf = new Map<number, number>();
  let before = 0;
  for (const [leaf, t] of order) {
    bucketOfLeaf.set(leaf, total > 0 ? Math.min(buckets - 1, Math.floor((before * buckets) / total)) : buckets - 1);
    before += t;
  }
  const summary = Array.from({ length: buckets }, (_, b) => {
    const ts = order.filter(([leaf]) => bucketOfLeaf.get(leaf) === b).map(([, t]) => t);
    return { name: `B${b + 1}`, leaves: ts.length, minTokens: ts.length ? Math.min(...ts) : 0, maxTokens: ts.length ? Math.max(...ts) : 0,
      trainTokens: ts.reduce((a, c) => a + c, 0) };
  });
  return { bucketOfLeaf, tokensOfLeaf, summary };
}

/** Bucket name of each document routed to `paths` (n × p); unseen leaves are the rarest bucket. */
export function bucketNames(lb: LeafBuckets, paths: Int32Array, p: number, buckets = PROSE_BUCKETS): string[] {
  return Array.from({ length: paths.length / p }, (_, i) => `B${(lb.bucketOfLeaf.get(leafAt(paths, p, i)) ?? buckets - 1) + 1}`);
}

/**
 * Share of held-out documents routed to a leaf whose training documents are mostly of the
 * document's own group (Brown genre or WordNet lexicographer file): how topical the routes are.
 */
export function routingPurity(trainPaths: Int32Array, trainGroups: readonly string[], heldPaths: Int32Array, heldGroups: readonly string[], p: number): number {
  const counts = new Map<number, Map<string, number>>();
  trainGroups.forEach((g, i) => {
    const m = counts.get(leafAt(trainPaths, p, i)) ?? new Map<string, number>();
    m.set(g, (m.get(g) ?? 0) + 1);
    counts.set(leafAt(trainPaths, p, i), m);
  });
  const major = new Map<number, string>();
  for (const [leaf, m] of counts) major.set(leaf, [...m.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))[0]![0]);
  let hit = 0;
  heldGroups.forEach((g, i) => { if (major.get(leafAt(heldPaths, p, i)) === g) hit++; });
  return heldGroups.length ? hit / heldGroups.length : 0;
}

/** Perplexity statistics of a set of scored documents (as lib/eval/perplexity.ts reports them). */
export function pooledStats(name: string, docs: readonly DocumentPerplexity[]): PerplexityStats {
  const tokens = docs.reduce((s, d) => s + d.tokens, 0), bytes = docs.reduce((s, d) => s + d.bytes, 0), nll = docs.reduce((s, d) => s + d.nll, 0);
  const nllPerToken = tokens ? nll / tokens : 0;
  return { name, documents: docs.length, tokens, bytes, nll, nllPerToken, perplexity: Math.exp(nllPerToken), bitsPerByte: bytes ? nll / Math.LN2 / bytes : 0 };
}

/** Stats per bucket B1..Bn in order (an empty bucket: zeros, perplexity 1). */
export function statsPerBucket(docs: readonly DocumentPerplexity[], buckets = PROSE_BUCKETS): PerplexityStats[] {
  return Array.from({ length: buckets }, (_, b) => pooledStats(`B${b + 1}`, docs.filter((d) => d.bucket === `B${b + 1}`)));
}
