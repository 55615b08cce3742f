/**
 * The retrieval tree (paper §3.2–3.3): a hierarchical balanced k-means over L2-normalised document
 * embeddings, fitted root to leaves, and greedy top-down routing to the nearest child centroid.
 *
 * Indexing. Levels l = 1..p below the root have k^l nodes; a path is an Int32Array of length p whose
 * entry l-1 is the node index at level l, in [0, k^l). The children of node i at level l are
 * i·k + c (c in [0, k)) at level l+1. Centroids are stored per parent level: `centroids(l)` for
 * l = 0..p-1 has shape (k^l, k, dim) and row (i, c) is the centroid of node i·k + c at level l+1.
 *
 * One routing function (`nearestCentroid`, ties to the lowest index) serves fitting and inference:
 * the vectors that reach a node at fit time are exactly those `assign` sends there, so the path of a
 * training document is `assign(embed(doc))`, bit for bit when the embedder gives each text the same
 * vector whatever batch it is in (the hashed TF-IDF does; an ONNX model may differ in the last bits
 * between batch shapes, which can only matter for a document lying exactly between two centroids).
 *
 * Tiny nodes: see kmeans.ts. A node that no training vector reaches gets k exact copies of its own
 * centroid; routing never enters it. Every node of the full k-ary tree therefore has centroids.
 */
import { HiermemError } from '../errors.js';
import {
  readSafetensors,
  readSafetensorsHeader,
  writeSafetensors,
  type TensorExpectation,
  type TensorToWrite,
  metadataJson,
} from '../io/safetensors.js';
import { Rng } from '../util/random.js';
import { checkInt, checkTexts, fmix32, normalizeRows } from './common.js';
import { embedderFromJSON, type Embedder, type EmbedderLoadOptions } from './embedder.js';
import { HashedTfidfEmbedder, type HashedTfidfOptions } from './hashed-tfidf.js';
import { nearestCentroid, sphericalKMeans } from './kmeans.js';

export const TREE_FORMAT = 'hiermem-retrieval-tree';
export const TREE_VERSION = '1';
/** Upper bound on the number of leaves, so a typo cannot ask for terabytes of centroids. */
export const MAX_LEAVES = 1 << 24;

export interface TreeFitOptions {
  /** Branching factor (>= 2; the paper uses 16). */
  k: number;
  /** Depth: number of levels below the root (>= 1; the paper uses 4). */
  p: number;
  /** Seed of every random choice (default 0). */
  seed?: number;
  /** Lloyd iterations per node (default 20). */
  iterations?: number;
  /** Balancing threshold as a multiple of n/k (default 1.5, the paper's). */
  balanceFactor?: number;
  /** A node with more vectors fits its k-means on a seeded sample of this many (default 16384); all are routed. */
  maxFitSamples?: number;
  /** Allow k^p leaves > number of documents (some leaves then hold no document). Default false. */
  allowEmptyLeaves?: boolean;
}

export interface TreeSpec {
  k: number;
  p: number;
  dim: number;
  seed: number;
  iterations: number;
  balanceFactor: number;
  maxFitSamples: number;
}

export interface FitTextsOptions extends TreeFitOptions {
  /** Embedder to use; default: a HashedTfidfEmbedder fitted on the same texts with `hashedTfidf` options. */
  embedder?: Embedder;
  hashedTfidf?: HashedTfidfOptions;
}

export interface FitResult {
  tree: RetrievalTree;
  /** (n, p) paths of the fitted vectors, row i = assign(vector i). */
  paths: Int32Array;
}

export interface TreeLoadOptions extends EmbedderLoadOptions {
  /** Use this embedder instead of rebuilding the saved one (its dim must match). */
  embedder?: Embedder;
}

export interface AssignOptions {
  /**
   * Route around the level-1 subtree greedy routing would choose: take the next-best level-1 child,
   * then descend greedily (the paper's blocking test, §5.4: retrieval with the best-matching 1/k of
   * the bank blocked). Never used for training paths.
   */
  avoidLevel1?: boolean;
}

export class RetrievalTree {
  readonly k: number;
  readonly p: number;
  readonly dim: number;
  readonly spec: Readonly<TreeSpec>;
  /** The embedder the tree was fitted with; null for a tree fitted on raw vectors. */
  readonly embedder: Embedder | null;
  /** levels[l]: (k^l, k, dim). */
  private readonly levels: Float32Array[];

  private constructor(spec: TreeSpec, levels: Float32Array[], embedder: Embedder | null) {
    this.spec = Object.freeze({ ...spec });
    this.k = spec.k;
    this.p = spec.p;
    this.dim = spec.dim;
    this.levels = levels;
    this.embedder = embedder;
  }

  /** Number of leaves, k^p. */
  get leafCount(): number {
    return this.k ** this.p;
  }

  /** A copy of the children centroids of every level-l node, shape (k^l, k, dim). */
  centroids(level: number): Float32Array {
    checkInt(level, 0, this.p - 1, 'centroids level');
    return this.levels[level]!.slice();
  }

  /**
   * Fits the tree to n vectors (row-major (n, dim); rows are L2-normalised for clustering, routed
   * as given). Returns the tree and the vectors' paths.
   */
  static fit(vectors: Float32Array, dim: number, options: TreeFitOptions & { embedder?: Embedder | null }): FitResult {
    const spec = resolveSpec(options, dim);
    if (!(vectors instanceof Float32Array)) throw new HiermemError('E_INVALID_ARGUMENT', 'RetrievalTree.fit: vectors must be a Float32Array');
    if (vectors.length === 0) throw new HiermemError('E_INVALID_ARGUMENT', 'RetrievalTree.fit: no documents to fit (empty corpus)');
    if (vectors.length % dim !== 0) {
      throw new HiermemError('E_SHAPE_MISMATCH', `RetrievalTree.fit: ${vectors.length} values is not a whole number of rows of dim ${dim}`);
    }
    const n = vectors.length / dim;
    for (let i = 0; i < vectors.length; i++) {
      if (!Number.isFinite(vectors[i]!)) throw new HiermemError('E_INVALID_ARGUMENT', `RetrievalTree.fit: vector ${Math.floor(i / dim)} has a non-finite value`);
    }
    checkLeafCount(spec, n, options.allowEmptyLeaves);
    const embedder = options.embedder ?? null;
    if (embedder !== null && embedder.dim !== dim) {
      throw new HiermemError('E_SHAPE_MISMATCH', `RetrievalTree.fit: embedder ${embedder.name} has dim ${embedder.dim}, vectors have ${dim}`);
    }

    const unit = vectors.slice();
    normalizeRows(unit, n, dim);
    const { k, p } = spec;
    const levels: Float32Array[] = [];
    // Vectors grouped by the node they reached: `order` lists vector ids node by node, `start[i]` is node i's first.
    let order = Int32Array.from({ length: n }, (_, i) => i);
    let start = Int32Array.from([0, n]);
    const paths = new Int32Array(n * p);
    let parentCentroids: Float32Array | null = null; // (k^l, dim) centroids of the level-l nodes
    for (let l = 0; l < p; l++) {
      const nodes = k ** l;
      const cents = new Float32Array(nodes * k * dim);
      const childOf = new Int32Array(n);
      const childCount = new Int32Array(nodes * k);
      for (let i = 0; i < nodes; i++) {
        const rows = order.subarray(start[i]!, start[i + 1]!);
        let c: Float32Array;
        if (rows.length === 0) {
          // Nothing reaches this node: copies of its own centroid (never routed to, see kmeans.ts).
          c = new Float32Array(k * dim);
          for (let j = 0; j < k; j++) c.set(parentCentroids!.subarray(i * dim, i * dim + dim), j * dim);
        } else {
          const rng = new Rng(nodeSeed(spec.seed, l, i));
          const fitRows = rows.length > spec.maxFitSamples ? sampleRows(rows, spec.maxFitSamples, rng) : rows;
          c = sphericalKMeans(unit, dim, fitRows, { k, rng, iterations: spec.iterations, balanceFactor: spec.balanceFactor });
        }
        cents.set(c, i * k * dim);
        for (const v of rows) {
          const child = i * k + nearestCentroid(cents, i * k, k, dim, vectors, v * dim);
          childOf[v] = child;
          childCount[child]!++;
          paths[v * p + l] = child;
        }
      }
      levels.push(cents);
      // Regroup the vectors by child (counting sort keeps the order stable and deterministic).
      const nextStart = new Int32Array(nodes * k + 1);
      for (let c = 0; c < nodes * k; c++) nextStart[c + 1] = nextStart[c]! + childCount[c]!;
      const fill = nextStart.slice(0, nodes * k);
      const nextOrder = new Int32Array(n);
      for (const v of order) nextOrder[fill[childOf[v]!]!++] = v;
      order = nextOrder;
      start = nextStart;
      parentCentroids = cents; // row (i, c) is the centroid of node i·k + c, i.e. row i·k + c of (k^(l+1), dim)
    }
    return { tree: new RetrievalTree(spec, levels, embedder), paths };
  }

  /** Embeds the texts (fitting a HashedTfidfEmbedder on them unless one is given) and fits the tree. */
  static async fitTexts(texts: readonly string[], options: FitTextsOptions): Promise<FitResult> {
    checkTexts(texts, 'RetrievalTree.fitTexts');
    if (texts.length === 0) throw new HiermemError('E_INVALID_ARGUMENT', 'RetrievalTree.fitTexts: no documents to fit (empty corpus)');
    // Fail on a bad tree before the (possibly slow) embedding.
    checkLeafCount(resolveSpec(options, 1), texts.length, options.allowEmptyLeaves);
    const embedder = options.embedder ?? HashedTfidfEmbedder.fit(texts, options.hashedTfidf);
    const vectors = await embedder.embed(texts);
    return RetrievalTree.fit(vectors, embedder.dim, { ...options, embedder });
  }

  /** The path of one vector of length dim: greedy descent to the nearest child centroid at each level. */
  assign(vec: Float32Array, options: AssignOptions = {}): Int32Array {
    if (!(vec instanceof Float32Array) || vec.length !== this.dim) {
      throw new HiermemError('E_SHAPE_MISMATCH', `RetrievalTree.assign: need a Float32Array of length ${this.dim}`);
    }
    return this.assignMany(vec, options);
  }

  /** Paths of the rows of (n, dim): (n, p) row-major. */
  assignMany(vectors: Float32Array, options: AssignOptions = {}): Int32Array {
    const { k, p, dim } = this;
    if (!(vectors instanceof Float32Array) || vectors.length % dim !== 0) {
      throw new HiermemError('E_SHAPE_MISMATCH', `RetrievalTree.assignMany: need a Float32Array of rows of length ${dim}`);
    }
    const n = vectors.length / dim;
    const out = new Int32Array(n * p);
    for (let v = 0; v < n; v++) {
      let node = 0;
      for (let l = 0; l < p; l++) {
        const blocked = l === 0 && options.avoidLevel1 === true ? nearestCentroid(this.levels[0]!, 0, k, dim, vectors, v * dim) : -1;
        node = node * k + nearestCentroid(this.levels[l]!, node * k, k, dim, vectors, v * dim, blocked);
        out[v * p + l] = node;
      }
    }
    return out;
  }

  /** Path of a text through the tree's embedder. */
  async assignText(text: string, options: AssignOptions = {}): Promise<Int32Array> {
    return this.assignTexts([text], options);
  }

  /** (n, p) paths of texts through the tree's embedder. */
  async assignTexts(texts: readonly string[], options: AssignOptions = {}): Promise<Int32Array> {
    checkTexts(texts, 'RetrievalTree.assignTexts');
    if (this.embedder === null) {
      throw new HiermemError('E_CONFIG_INVALID', 'this retrieval tree was fitted on raw vectors and has no embedder; use assign()');
    }
    return this.assignMany(await this.embedder.embed(texts), options);
  }

  /** Writes the tree (and its embedder's settings and fitted state) as one safetensors file, atomically. */
  async save(path: string): Promise<void> {
    const tensors: TensorToWrite[] = this.levels.map((data, l) => ({
      name: `centroids.level${l}`,
      dtype: 'F32',
      shape: [this.k ** l, this.k, this.dim],
      data,
    }));
    const metadata: Record<string, string> = {
      format: TREE_FORMAT,
      version: TREE_VERSION,
      tree: JSON.stringify(this.spec),
    };
    if (this.embedder !== null) {
      metadata.embedder = JSON.stringify(this.embedder.toJSON());
      for (const t of this.embedder.stateTensors?.() ?? []) tensors.push({ ...t, name: `embedder.${t.name}` });
    }
    await writeSafetensors(path, tensors, metadata);
  }

  /**
   * Reads a tree written by save(). Wrong format or malformed metadata → E_CHECKPOINT_CORRUPT;
   * another version, tensor shapes that disagree with the metadata, or an embedder whose dim differs
   * → E_CONFIG_INCOMPATIBLE; missing file → E_IO.
   */
  static async load(path: string, options: TreeLoadOptions = {}): Promise<RetrievalTree> {
    const header = await readSafetensorsHeader(path);
    const meta = header.metadata;
    if (meta.format !== TREE_FORMAT) {
      throw new HiermemError('E_CHECKPOINT_CORRUPT', `${path}: not a hiermem retrieval tree (metadata.format = ${String(meta.format)})`);
    }
    if (meta.version !== TREE_VERSION) {
      throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${path}: retrieval tree version ${String(meta.version)}, this build reads ${TREE_VERSION}`);
    }
    const rawSpec = metadataJson(path, meta, 'tree');
    let spec: TreeSpec;
    try {
      if (typeof rawSpec !== 'object' || rawSpec === null) throw new HiermemError('E_CONFIG_INVALID', 'not an object');
      const s = rawSpec as Partial<TreeSpec>;
      spec = resolveSpec(s as TreeFitOptions, s.dim as number);
    } catch (err) {
      throw new HiermemError('E_CHECKPOINT_CORRUPT', `${path}: invalid tree metadata: ${(err as Error).message}`, { cause: err });
    }
    const expect = new Map<string, TensorExpectation>();
    for (let l = 0; l < spec.p; l++) expect.set(`centroids.level${l}`, { dtype: 'F32', shape: [spec.k ** l, spec.k, spec.dim] });
    const embedderTensorNames = [...header.tensors.keys()].filter((name) => name.startsWith('embedder.'));
    const file = await readSafetensors(path, { expect, names: [...expect.keys(), ...embedderTensorNames] });
    const levels: Float32Array[] = [];
    for (let l = 0; l < spec.p; l++) {
      const data = file.tensors.get(`centroids.level${l}`)!.data as Float32Array;
      for (let i = 0; i < data.length; i++) {
        if (!Number.isFinite(data[i]!)) throw new HiermemError('E_CHECKPOINT_CORRUPT', `${path}: centroids.level${l} has a non-finite value`);
      }
      levels.push(data);
    }
    let embedder: Embedder | null = options.embedder ?? null;
    if (embedder === null && meta.embedder !== undefined) {
      const state = new Map<string, Float32Array | Int32Array>();
      for (const name of embedderTensorNames) {
        const t = file.tensors.get(name)!;
        if (!(t.data instanceof Float32Array) && !(t.data instanceof Int32Array)) {
          throw new HiermemError('E_CHECKPOINT_CORRUPT', `${path}: tensor ${name} is ${t.dtype}, embedder state must be F32 or I32`);
        }
        state.set(name.slice('embedder.'.length), t.data);
      }
      embedder = await embedderFromJSON(metadataJson(path, meta, 'embedder'), state, options);
    }
    if (embedder !== null && embedder.dim !== spec.dim) {
      throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${path}: tree dim ${spec.dim} but embedder ${embedder.name} has dim ${embedder.dim}`);
    }
    return new RetrievalTree(spec, levels, embedder);
  }
}

function resolveSpec(o: TreeFitOptions, dim: number): TreeSpec {
  if (typeof o !== 'object' || o === null) throw new HiermemError('E_CONFIG_INVALID', 'retrieval tree options must be an object');
  const k = checkInt(o.k, 2, 1 << 16, 'retrieval tree k (branching factor)', 'E_CONFIG_INVALID');
  const p = checkInt(o.p, 1, 64, 'retrieval tree p (depth)', 'E_CONFIG_INVALID');
  if (k ** p > MAX_LEAVES) throw new HiermemError('E_CONFIG_INVALID', `retrieval tree k=${k}, p=${p} has ${k ** p} leaves, more than ${MAX_LEAVES}`);
  checkInt(dim, 1, 1 << 16, 'retrieval tree dim', 'E_CONFIG_INVALID');
  const seed = checkInt(o.seed ?? 0, 0, 0xffffffff, 'retrieval tree seed', 'E_CONFIG_INVALID');
  const iterations = checkInt(o.iterations ?? 20, 0, 10_000, 'retrieval tree iterations', 'E_CONFIG_INVALID');
  const maxFitSamples = checkInt(o.maxFitSamples ?? 16384, 1, 2 ** 31 - 1, 'retrieval tree maxFitSamples', 'E_CONFIG_INVALID');
  const balanceFactor = o.balanceFactor ?? 1.5;
  if (typeof balanceFactor !== 'number' || !(balanceFactor >= 1)) {
    throw new HiermemError('E_CONFIG_INVALID', `retrieval tree balanceFactor must be a number >= 1, got ${String(balanceFactor)}`);
  }
  // Non-finite balanceFactor (balancing off) is not representable in JSON; keep it finite in the spec.
  return { k, p, dim, seed, iterations, balanceFactor: Number.isFinite(balanceFactor) ? balanceFactor : Number.MAX_VALUE, maxFitSamples };
}

/** More leaves than documents cannot make sense unless the caller says so (issue: a typed error). */
function checkLeafCount(spec: TreeSpec, n: number, allowEmptyLeaves: boolean | undefined): void {
  const leaves = spec.k ** spec.p;
  if (leaves > n && allowEmptyLeaves !== true) {
    throw new HiermemError(
      'E_CONFIG_INVALID',
      `retrieval tree k=${spec.k}, p=${spec.p} has ${leaves} leaves but only ${n} documents; use a smaller tree or allowEmptyLeaves`,
    );
  }
}

/** A seed per node, independent of the order nodes are visited in. */
function nodeSeed(seed: number, level: number, node: number): number {
  return fmix32((fmix32((seed ^ Math.imul(level + 1, 0x9e3779b9)) >>> 0) + node) >>> 0);
}

/** `count` distinct rows chosen uniformly (partial Fisher-Yates), in their original order. */
function sampleRows(rows: Int32Array, count: number, rng: Rng): Int32Array {
  const idx = Int32Array.from(rows);
  for (let i = 0; i < count; i++) {
    const j = i + rng.int(idx.length - i);
    const t = idx[i]!;
    idx[i] = idx[j]!;
    idx[j] = t;
  }
  return idx.subarray(0, count).sort();
}

