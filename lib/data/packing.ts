/**
 * The memory data path (paper App. A.2): documents are grouped by their leaf; each training
 * sequence packs documents of ONE leaf (<|eot|> after each, attention masked per document, rotary
 * positions restarting) and carries that leaf's root-to-leaf path; sequences are shuffled globally
 * so a batch mixes paths. Optionally (the paper's control) a sequence uses the generic memory with
 * probability 1/(k+1) instead of its path.
 *
 * Targets: the last text token of a document predicts <|eot|>; the position of <|eot|> predicts
 * nothing (-1), so no document is ever asked to predict the next one.
 */
import { HiermemError, check } from '../errors.js';
import type { PathBatch } from '../memory/memory-model.js';
import { GENERIC_PATH } from '../memory/memory-model.js';
import { Rng } from '../util/random.js';

export interface PackedSequence {
  tokens: Int32Array; // (T)
  targets: Int32Array; // (T)
  docStart: Int32Array; // (T)
  path: Int32Array; // (p)
}

export interface PackOptions {
  seqLen: number;
  eotId: number;
  padId: number;
}

/**
 * Packs tokenised documents that share a leaf into sequences of seqLen tokens. A document longer
 * than a sequence continues in the next one (as a fresh document there: its context restarts).
 */
export function packLeaf(docs: readonly Int32Array[], path: Int32Array, o: PackOptions): PackedSequence[] {
  return Array.from(packLeafStream(docs, path, o));
}

/**
 * packLeaf one sequence at a time, over documents that may come from disk (prepare packs leaves
 * larger than memory this way); yields exactly what packLeaf returns, in order.
 */
export function* packLeafStream(docs: Iterable<Int32Array>, path: Int32Array, o: PackOptions): Generator<PackedSequence> {
  const T = o.seqLen;
  const out: PackedSequence[] = [];
  let cur: PackedSequence | null = null;
  let fill = 0;
  let curDocStart = 0;
  const flush = () => {
    if (!cur) return;
    for (let t = fill; t < T; t++) {
      cur.tokens[t] = o.padId;
      cur.targets[t] = -1;
      cur.docStart[t] = t === fill ? t : cur.docStart[t - 1]!; // padding is its own "document"
    }
    out.push(cur);
    cur = null;
  };
  for (const doc of docs) {
    // token stream of this document: text then <|eot|>; targets: next token, -1 at <|eot|>
    const n = doc.length + 1;
    let i = 0;
    while (i < n) {
      if (!cur) {
        cur = { tokens: new Int32Array(T), targets: new Int32Array(T), docStart: new Int32Array(T), path };
        fill = 0;
      }
      curDocStart = fill; // a document (or its continuation) starts here
      while (i < n && fill < T) {
        const tok = i < doc.length ? doc[i]! : o.eotId;
        cur.tokens[fill] = tok;
        cur.targets[fill] = i < doc.length - 1 ? doc[i + 1]! : i === doc.length - 1 ? o.eotId : -1;
        cur.docStart[fill] = curDocStart;
        fill++;
        i++;
      }
      if (fill === T) flush(); // a cut document keeps its last target: the true next token
      yield* out.splice(0);
    }
  }
  flush();
  yield* out.splice(0);
}

export interface LeafCorpus {
  /** Tokenised documents. */
  docs: Int32Array[];
  /** (numDocs, p): each document's path. */
  paths: Int32Array;
  levels: number;
}

/** Groups documents by leaf (the last path entry) and packs each group. Deterministic order. */
export function packByLeaf(c: LeafCorpus, o: PackOptions): PackedSequence[] {
  check(c.paths.length === c.docs.length * c.levels, 'E_SHAPE_MISMATCH', `paths has ${c.paths.length} entries for ${c.docs.length} documents x ${c.levels} levels`);
  if (c.docs.length === 0) throw new HiermemError('E_INVALID_ARGUMENT', 'no documents to pack');
  const byLeaf = new Map<number, number[]>();
  for (let i = 0; i < c.docs.length; i++) {
    const leaf = c.paths[i * c.levels + c.levels - 1]!;
    const list = byLeaf.get(leaf);
    if (list) list.push(i);
    else byLeaf.set(leaf, [i]);
  }
  const out: PackedSequence[] = [];
  for (const leaf of [...byLeaf.keys()].sort((a, b) => a - b)) {
    const idx = byLeaf.get(leaf)!;
    const path = c.paths.slice(idx[0]! * c.levels, (idx[0]! + 1) * c.levels);
    out.push(...packLeaf(idx.map((i) => c.docs[i]!), path, o));
  }
  return out;
}

export interface PathSamplerOptions {
  seed: number;
  /** Resume exactly where a sampler stopped (its `rngState()`, saved in a checkpoint). */
  state?: readonly number[];
  /** Use the generic memory for a sequence with probability 1/(k+1) (paper §4.5); 0 = never. */
  genericK?: number;
}

/**
 * Sequences by index: an array, or sequences read on demand from a prepared folder
 * (lib/data/prepared.ts), so the sampler shuffles indices and never holds the data.
 */
export interface SequenceSource {
  readonly length: number;
  at(index: number): PackedSequence | undefined;
}

/**
 * Epochs over packed sequences, globally shuffled; each batch is sorted by path (grouped GEMMs).
 * Epoch e's order is a permutation drawn from (seed, e) alone, so the sampler's whole state is
 * (seed, epoch, position, generic-choice RNG) and a resumed run sees the same data order.
 */
export class PathBatchSampler {
  readonly sequences: SequenceSource;
  private readonly seed: number;
  private rng: Rng;
  private epoch = -1;
  private order: number[] = [];
  private pos = 0;
  private readonly genericK: number;

  constructor(sequences: SequenceSource, o: PathSamplerOptions) {
    if (sequences.length === 0) throw new HiermemError('E_INVALID_ARGUMENT', 'no packed sequences to sample');
    this.sequences = sequences;
    this.seed = o.seed;
    this.genericK = o.genericK ?? 0;
    this.rng = new Rng(o.seed ^ 0x5bd1e995);
    if (o.state) {
      const st = o.state;
      check(st.length === 7 && st.every((x) => Number.isInteger(x)) && st[0] === o.seed, 'E_CHECKPOINT_CORRUPT',
        'sampler state does not belong to this seed or is malformed');
      this.epoch = st[1]! - 1;
      this.startEpoch();
      this.pos = st[2]!;
      this.rng = new Rng(Uint32Array.from(st.slice(3)));
    }
  }

  /** [seed, epoch, position, rng x4]: pass back as `state` to resume. */
  rngState(): number[] {
    return [this.seed, this.epoch, this.pos, ...Array.from(this.rng.state())];
  }

  private startEpoch(): void {
    this.epoch++;
    this.order = new Rng((this.seed * 0x9e3779b1 + this.epoch) >>> 0).shuffle(Array.from({ length: this.sequences.length }, (_, i) => i));
    this.pos = 0;
  }

  private nextIndex(): number {
    if (this.epoch < 0 || this.pos >= this.order.length) this.startEpoch();
    return this.order[this.pos++]!;
  }

  next(batchSize: number): PathBatch {
    const picked = Array.from({ length: batchSize }, () => this.nextIndex());
    const rows = picked.map((i) => {
      const s = this.sequences.at(i)!;
      const levels = s.path.length;
      const generic = this.genericK > 0 && this.rng.uniform() < 1 / (this.genericK + 1);
      return { s, path: generic ? new Int32Array(levels).fill(GENERIC_PATH) : s.path };
    });
    rows.sort((a, b) => comparePaths(a.path, b.path));
    const T = rows[0]!.s.tokens.length;
    const levels = rows[0]!.path.length;
    const batch: PathBatch = {
      tokens: new Int32Array(batchSize * T),
      targets: new Int32Array(batchSize * T),
      docStart: new Int32Array(batchSize * T),
      batchSize,
      paths: new Int32Array(batchSize * levels),
    };
    rows.forEach((r, b) => {
      batch.tokens.set(r.s.tokens, b * T);
      batch.targets.set(r.s.targets, b * T);
      batch.docStart!.set(r.s.docStart, b * T);
      batch.paths.set(r.path, b * levels);
    });
    return batch;
  }
}

function comparePaths(a: Int32Array, b: Int32Array): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}
