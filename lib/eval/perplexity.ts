/**
 * Perplexity evaluation: the negative log-likelihood of each document under a model, each
 * document with its own memory route (routed by its own text, as generation routes a prompt),
 * reported overall and per bucket, in nats per token (and its exp, perplexity) and in bits per
 * UTF-8 byte of text — the unit that compares models with different tokenizers.
 *
 * What is scored: the document's tokens, each predicted from an end-of-text token (the separator
 * every training document follows) and the document's earlier tokens. The closing end of text is
 * not scored, so bits per byte is about the text alone. A document longer than the model's
 * context is scored in windows of seqLen tokens advancing by `stride`; each window scores only
 * the targets no earlier window scored, so every token is predicted once, from at least
 * seqLen − stride tokens of context (all of them while it fits).
 */
import { HiermemError } from '../errors.js';
import type { Tokenizer } from '../data/tokenizer.js';
import type { AnchorModel, Batch } from '../model/anchor.js';
import type { HierarchicalModel } from '../memory/memory-model.js';
import { readJsonlObjects } from '../io/jsonl-records.js';

export interface PerplexityDocument {
  text: string;
  /** Bucket name from the file (e.g. a frequency bucket); absent: buckets by leaf frequency, if routed. */
  bucket?: string;
}

/** What evaluatePerplexity needs of a model: the mean loss of a batch, with document `doc`'s memory. */
export interface PerplexityModel {
  readonly seqLen: number;
  /** Sequences per loss call (at most the model's maxBatch). */
  readonly maxBatch: number;
  /** Mean NLL (nats) over the batch's scored targets (target -1: not scored). */
  meanLoss(batch: Batch, doc: number): Promise<number>;
}

export interface PerplexityStats {
  name: string;
  documents: number;
  tokens: number;
  bytes: number;
  /** Total negative log-likelihood, nats. */
  nll: number;
  /** nll / tokens. */
  nllPerToken: number;
  /** exp(nllPerToken). */
  perplexity: number;
  /** nll / ln 2 / bytes. */
  bitsPerByte: number;
}

export interface DocumentPerplexity {
  index: number;
  bucket: string | null;
  tokens: number;
  bytes: number;
  nll: number;
  /** The memory path the document was routed to (memory checkpoints). */
  path?: number[];
}

export interface PerplexityResult {
  overall: PerplexityStats;
  /** 'field': the documents' `bucket`; 'leaf-frequency': B1 (most frequent leaves) .. B5 (least); 'none'. */
  bucketing: 'field' | 'leaf-frequency' | 'none';
  buckets: PerplexityStats[];
  documents: DocumentPerplexity[];
}

export interface PerplexityOptions {
  /** Each document's memory path (n × levels), for per-document results and leaf-frequency buckets. */
  paths?: { paths: Int32Array; levels: number };
  /** Window advance for documents longer than seqLen (default seqLen / 2). */
  stride?: number;
  onProgress?: (done: number, total: number) => void;
}

export const LEAF_FREQUENCY_BUCKETS = 5;

/** An anchor (no memory). */
export function anchorPerplexityModel(model: AnchorModel, maxBatch = model.maxBatch): PerplexityModel {
  return { seqLen: model.config.seqLen, maxBatch: Math.min(maxBatch, model.maxBatch), meanLoss: (batch) => model.loss(batch) };
}

/** A model with memories; document i fetches the blocks of paths[i·p .. (i+1)·p). */
export function memoryPerplexityModel(hm: HierarchicalModel, paths: Int32Array, maxBatch = hm.anchor.maxBatch): PerplexityModel {
  const p = hm.levels;
  return {
    seqLen: hm.anchor.config.seqLen,
    maxBatch: Math.min(maxBatch, hm.anchor.maxBatch),
    meanLoss: (batch, doc) => {
      const one = paths.subarray(doc * p, (doc + 1) * p);
      const all = new Int32Array(batch.batchSize * p);
      for (let b = 0; b < batch.batchSize; b++) all.set(one, b * p);
      return hm.loss({ ...batch, paths: all });
    },
  };
}

/** The windows scoring a document of n tokens (after its leading end of text): [start, end) over [eot, t0 .. t(n-1)], scoring targets from `from`. */
export function documentWindows(n: number, seqLen: number, stride: number): Array<{ start: number; end: number; from: number }> {
  const out: Array<{ start: number; end: number; from: number }> = [];
  let scored = 0; // targets t0..t(scored-1) are done; target j is x[j+1], predicted at position j
  while (scored < n) {
    const end = Math.min(scored === 0 ? seqLen : scored + stride, n); // positions [start, end) predict targets start..end-1
    const start = Math.max(0, end - seqLen);
    out.push({ start, end, from: scored });
    scored = end;
  }
  return out;
}

/** Total NLL (nats) of one document's tokens; `ids` without the leading end of text. */
export async function documentNll(model: PerplexityModel, ids: Int32Array, eotId: number, padId: number, doc: number, stride: number): Promise<number> {
  const T = model.seqLen;
  const x = new Int32Array(ids.length + 1);
  x[0] = eotId;
  x.set(ids, 1);
  const windows = documentWindows(ids.length, T, stride);
  let nll = 0;
  for (let w0 = 0; w0 < windows.length; w0 += model.maxBatch) {
    const group = windows.slice(w0, w0 + model.maxBatch);
    const B = group.length;
    const tokens = new Int32Array(B * T).fill(padId), targets = new Int32Array(B * T).fill(-1);
    let count = 0;
    group.forEach((w, b) => {
      tokens.set(x.subarray(w.start, w.end), b * T);
      for (let j = w.from; j < w.end; j++) targets[b * T + j - w.start] = x[j + 1]!;
      count += w.end - w.from;
    });
    const mean = await model.meanLoss({ tokens, targets, batchSize: B }, doc);
    if (!Number.isFinite(mean)) throw new HiermemError('E_NON_FINITE', `document ${doc}: loss is ${mean}`);
    nll += mean * count;
  }
  return nll;
}

/** Scores every document; see the file comment for what is scored. */
export async function evaluatePerplexity(docs: readonly PerplexityDocument[], tokenizer: Tokenizer, model: PerplexityModel,
                                         o: PerplexityOptions = {}): Promise<PerplexityResult> {
  if (docs.length === 0) throw new HiermemError('E_INVALID_ARGUMENT', 'perplexity: no documents');
  const stride = o.stride ?? Math.max(1, Math.floor(model.seqLen / 2));
  if (!Number.isInteger(stride) || stride < 1 || stride > model.seqLen) {
    throw new HiermemError('E_INVALID_ARGUMENT', `perplexity: stride must be an integer in 1..${model.seqLen}, got ${stride}`);
  }
  if (o.paths && o.paths.paths.length !== docs.length * o.paths.levels) {
    throw new HiermemError('E_SHAPE_MISMATCH', `perplexity: ${o.paths.paths.length} path entries for ${docs.length} documents of ${o.paths.levels} levels`);
  }
  const padId = tokenizer.padId ?? tokenizer.eotId;
  const encoder = new TextEncoder();
  const per: DocumentPerplexity[] = [];
  for (let i = 0; i < docs.length; i++) {
    const ids = tokenizer.encode(docs[i]!.text);
    const nll = ids.length ? await documentNll(model, ids, tokenizer.eotId, padId, i, stride) : 0;
    const d: DocumentPerplexity = { index: i, bucket: docs[i]!.bucket ?? null, tokens: ids.length, bytes: encoder.encode(docs[i]!.text).length, nll };
    if (o.paths) d.path = Array.from(o.paths.paths.subarray(i * o.paths.levels, (i + 1) * o.paths.levels));
    per.push(d);
    o.onProgress?.(i + 1, docs.length);
  }
  let bucketing: PerplexityResult['bucketing'] = 'none';
  if (docs.some((d) => d.bucket !== undefined)) {
    bucketing = 'field';
    for (const d of per) d.bucket ??= '(none)';
  } else if (o.paths) {
    bucketing = 'leaf-frequency';
    const names = leafFrequencyBuckets(o.paths.paths, o.paths.levels);
    per.forEach((d, i) => { d.bucket = names[i]!; });
  }
  const groups = new Map<string, DocumentPerplexity[]>();
  if (bucketing !== 'none') for (const d of per) groups.set(d.bucket!, [...(groups.get(d.bucket!) ?? []), d]);
  const buckets = [...groups.entries()].sort(([a], [b]) => a.localeCompare(b, 'en', { numeric: true })).map(([name, ds]) => stats(name, ds));
  return { overall: stats('all', per), bucketing, buckets, documents: per };
}

/**
 * B1..B5 by how many of the documents share each document's leaf: leaves ordered from the most
 * to the least populated (ties: lower leaf first), then cut into five groups of about equal
 * document counts, whole leaves at a time (a leaf's documents share one bucket).
 */
export function leafFrequencyBuckets(paths: Int32Array, levels: number, buckets = LEAF_FREQUENCY_BUCKETS): string[] {
  const n = paths.length / levels;
  const leafOf = (i: number) => paths[i * levels + levels - 1]!;
  const counts = new Map<number, number>();
  for (let i = 0; i < n; i++) counts.set(leafOf(i), (counts.get(leafOf(i)) ?? 0) + 1);
  const order = [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0]);
  const bucketOfLeaf = new Map<number, number>();
  let before = 0;
  for (const [leaf, c] of order) {
    bucketOfLeaf.set(leaf, Math.min(buckets - 1, Math.floor((before * buckets) / n)));
    before += c;
  }
  return Array.from({ length: n }, (_, i) => `B${bucketOfLeaf.get(leafOf(i))! + 1}`);
}

function stats(name: string, ds: readonly DocumentPerplexity[]): PerplexityStats {
  const tokens = ds.reduce((s, d) => s + d.tokens, 0), bytes = ds.reduce((s, d) => s + d.bytes, 0), nll = ds.reduce((s, d) => s + d.nll, 0);
  const nllPerToken = tokens ? nll / tokens : 0;
  return { name, documents: ds.length, tokens, bytes, nll, nllPerToken, perplexity: Math.exp(nllPerToken), bitsPerByte: bytes ? nll / Math.LN2 / bytes : 0 };
}

/**
 * Reads the documents to score: JSON Lines, each an object with the string `field` (default
 * "text") and an optional string "bucket". Unreadable → E_IO; a bad line → E_INVALID_ARGUMENT
 * naming file and line; no documents → E_INVALID_ARGUMENT.
 */
export async function readPerplexityDocuments(file: string, field = 'text'): Promise<PerplexityDocument[]> {
  const out: PerplexityDocument[] = [];
  for (const { record: r, line } of await readJsonlObjects(file, 'documents')) {
    if (typeof r[field] !== 'string' || (r.bucket !== undefined && typeof r.bucket !== 'string')) {
      throw new HiermemError('E_INVALID_ARGUMENT', `${file}:${line}: expected an object with a string ${JSON.stringify(field)} (and an optional string "bucket")`);
    }
    out.push({ text: r[field] as string, ...(r.bucket !== undefined ? { bucket: r.bucket as string } : {}) });
  }
  if (out.length === 0) throw new HiermemError('E_INVALID_ARGUMENT', `${file}: no documents`);
  return out;
}
