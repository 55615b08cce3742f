/**
 * `hiermem prepare`: one streaming pass over a corpus tokenises (and, with a tree, routes) every
 * document on worker threads into token shards, then packs by leaf on disk (prepare-pack.ts).
 * Memory is bounded by the batches in flight and one shard's buffer, not by the corpus.
 *
 * JSONL and one-per-line text reach the workers as raw byte chunks (readers/chunks.ts): the main
 * thread only reads, gunzips, collects results in order and writes; other formats are parsed here.
 *
 * Crash safety: shards are written atomically and describe themselves, so a rerun with the same
 * settings keeps the finished ones (it re-reads their documents, and re-tokenises those that came
 * in raw chunks, but writes nothing for them); the packing phase is redone from the shards; the
 * manifest is written last and marks the folder done.
 */
import { closeSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { HiermemError } from '../errors.js';
import { RetrievalTree } from '../retrieval/tree.js';
import { CorpusReader, readLineChunks, type CorpusReadOptions } from './readers/index.js';
import { ByteTokenizer, type Tokenizer } from './tokenizer.js';
import { TokenizePool, type EncodedBatch } from './prepare-pool.js';
import { packShards } from './prepare-pack.js';
import {
  AtomicFile, MANIFEST_FILE, PREPARED_FORMAT, PREPARED_VERSION, SHARD_DIR, TREE_COPY, encodeShard, fileSha256, openFile, packedLayout,
  readExact, readShardInfo, sha256, shardFileName, tokenDtype, tokenizerHash, type PreparedManifest, type ShardHeader, type ShardInfo,
} from './prepared-format.js';

export interface PrepareOptions extends CorpusReadOptions {
  /** Files, folders or globs (see readers/files.ts). */
  corpus: string | readonly string[];
  out: string;
  /** Default: the byte tokenizer. */
  tokenizer?: Tokenizer;
  /** A tree file written by `hiermem cluster`: route and pack by leaf. */
  tree?: string;
  /** Sequence length of the packed sequences (with a tree; must equal the model's). */
  seqLen?: number;
  /** Tokenising threads; 0 = this thread (any tokenizer). Default 2. */
  threads?: number;
  /** Tokens per shard, whole documents (default 2^24: a 32 MiB buffer of uint16). */
  shardTokens?: number;
  /** Held-out share of documents, the last ones (default 0.05, as `train` splits). */
  valFraction?: number;
  onProgress?: (e: PrepareProgress) => void;
}

export interface PrepareProgress {
  phase: 'tokenize' | 'pack';
  bytesRead: number;
  totalBytes: number;
  /** Documents read (tokenize) or spilled (pack) so far. */
  documents: number;
  /** Documents in all (known in the pack phase). */
  totalDocuments: number | null;
  tokens: number;
}

export interface PrepareSummary {
  out: string;
  documents: number;
  tokens: number;
  shards: number;
  /** Shards a previous, interrupted run had finished. */
  resumedShards: number;
  leaves: number | null;
  leavesUsed: number | null;
  sequences: { train: number; val: number } | null;
  skippedRecords: number;
  /** Already prepared with these settings: nothing was done. */
  upToDate: boolean;
  seconds: number;
  peakRssBytes: number;
}

const BATCH_CHARS = 1 << 20;
const BATCH_DOCS = 4096;

/** Held-out documents, as splitDocuments counts them (the last ones, at least one). */
export function valDocumentCount(n: number, valFraction: number): number {
  return n < 2 ? 0 : Math.min(n - 1, Math.max(1, Math.round(n * valFraction)));
}

export async function prepareData(o: PrepareOptions): Promise<PrepareSummary> {
  const t0 = performance.now();
  const tokenizer = o.tokenizer ?? new ByteTokenizer();
  const threads = o.threads ?? 2;
  const shardTokens = o.shardTokens ?? 1 << 24;
  const valFraction = o.valFraction ?? 0.05;
  if (!Number.isInteger(threads) || threads < 0 || threads > 256) throw new HiermemError('E_INVALID_ARGUMENT', `threads must be an integer in 0..256, got ${threads}`);
  if (!Number.isInteger(shardTokens) || shardTokens < 1) throw new HiermemError('E_INVALID_ARGUMENT', `shardTokens must be a positive integer, got ${shardTokens}`);
  if (!(valFraction >= 0 && valFraction < 1)) throw new HiermemError('E_INVALID_ARGUMENT', `valFraction must be in [0, 1), got ${valFraction}`);
  const reader = await CorpusReader.open(o.corpus, o);
  const tree = o.tree !== undefined ? { file: o.tree, loaded: await RetrievalTree.load(o.tree), sha256: await fileSha256(o.tree) } : null;
  if (tree && (o.seqLen === undefined || !Number.isInteger(o.seqLen) || o.seqLen < 1)) {
    throw new HiermemError('E_INVALID_ARGUMENT', 'packing by leaf needs seqLen, the model\'s sequence length');
  }
  if (tree && tokenizer.padId === undefined) throw new HiermemError('E_INVALID_ARGUMENT', 'packing documents per leaf needs a tokenizer with a pad token');
  const dtype = tokenDtype(tokenizer.vocabSize);
  const levels = tree ? tree.loaded.p : 0;
  const tokHash = tokenizerHash(tokenizer);
  const config = sha256(JSON.stringify({
    files: reader.files.map((f) => ({ path: path.resolve(f.path), bytes: f.bytes })), format: o.format ?? 'auto', field: o.field ?? 'text',
    skipBad: o.skipBad === true, tokenizer: tokHash, tree: tree?.sha256 ?? null, seqLen: tree ? o.seqLen : null, shardTokens, valFraction,
  }));

  const shardDir = path.join(o.out, SHARD_DIR);
  mkdirSync(shardDir, { recursive: true });
  const manifestPath = path.join(o.out, MANIFEST_FILE);
  const old = await readManifestIfAny(manifestPath);
  const summary = (m: PreparedManifest, upToDate: boolean, resumedShards: number, leavesUsed: number | null, skipped: number): PrepareSummary => ({
    out: o.out, documents: m.documents, tokens: m.tokens, shards: m.shards.length, resumedShards,
    leaves: tree ? tree.loaded.leafCount : null, leavesUsed, sequences: m.packed ? { train: m.packed.train.sequences, val: m.packed.val.sequences } : null,
    skippedRecords: skipped, upToDate, seconds: (performance.now() - t0) / 1000, peakRssBytes: process.resourceUsage().maxRSS * 1024,
  });
  if (old !== null) {
    if (old.config === config) return summary(old, true, old.shards.length, null, old.corpus.skippedRecords);
    throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${o.out} holds data prepared from another corpus, tokenizer, tree or settings; give a new --out folder or delete it`);
  }

  // Finished shards of an interrupted run with these settings (consecutive from 0).
  const done: { file: string; info: ShardInfo; sha256: string }[] = [];
  for (const name of readdirSync(shardDir).sort()) {
    const file = path.join(shardDir, name);
    if (name.endsWith('.tmp')) { rmSync(file, { force: true }); continue; }
    if (name !== shardFileName(done.length)) { rmSync(file, { force: true }); continue; }
    const info = readShardInfo(file, statSync(file).size);
    if (info.header.config !== config) {
      throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${file} was prepared with other settings; give a new --out folder or delete it`);
    }
    done.push({ file, info, sha256: await fileSha256(file) });
  }
  const skipDocs = done.reduce((n, s) => n + s.info.header.docs, 0);
  const resumedShards = done.length;

  const progress = { documents: 0, totalDocuments: null as number | null, tokens: done.reduce((n, s) => n + s.info.header.tokens, 0) };
  const report = (phase: PrepareProgress['phase']) => o.onProgress?.({ phase, bytesRead: reader.stats.bytesRead, totalBytes: reader.totalBytes, documents: progress.documents,
    totalDocuments: progress.totalDocuments, tokens: progress.tokens });
  const builder = new ShardBuilder(shardDir, done.length, skipDocs, shardTokens, dtype, levels, tokenizer.eotId, config);
  const pool = new TokenizePool(threads, tokenizer, tree, dtype);
  // docs: known when submitted (texts parsed here); null: a raw chunk, parsed by the worker (its lines come back)
  const inFlight: { source: string; docs: { source: string; line: number }[] | null; result: Promise<EncodedBatch> }[] = [];
  const maxInFlight = Math.max(2, 2 * threads);
  let batch: { source: string; line: number }[] = [], texts: string[] = [], chars = 0;
  let seen = 0;
  const drainOne = async () => {
    const b = inFlight.shift()!;
    let r = await b.result;
    let docs = b.docs;
    if (docs === null) {
      for (const bad of r.bad ?? []) reader.bad({ source: b.source, line: bad.line, unit: 'line', reason: bad.reason });
      docs = Array.from(r.lines!, (line) => ({ source: b.source, line }));
      reader.stats.documents += docs.length;
      progress.documents += docs.length;
      // a resumed run drops the documents its finished shards hold (parsed again, not kept)
      const drop = Math.min(docs.length, Math.max(0, skipDocs - seen));
      seen += docs.length;
      if (drop > 0) {
        let off = 0;
        for (let d = 0; d < drop; d++) off += r.lengths[d]!;
        r = { tokens: r.tokens.subarray(off), lengths: r.lengths.subarray(drop), paths: r.paths ? r.paths.subarray(drop * levels) : null };
        docs = docs.slice(drop);
      }
    }
    for (const s of builder.add(docs, r)) done.push(s);
    progress.tokens += r.tokens.length + docs.length;
    report('tokenize');
  };
  const submit = async (job: (typeof inFlight)[number]) => {
    inFlight.push(job);
    while (inFlight.length >= maxInFlight) await drainOne();
  };
  const flushTexts = async () => {
    if (texts.length === 0) return;
    await submit({ source: '', docs: batch, result: pool.encode(texts) });
    batch = []; texts = []; chars = 0;
  };
  try {
    for (const f of reader.files) {
      const format = reader.formatOf(f);
      if (format === 'jsonl' || format === 'lines') {
        // one document per line: the main thread only cuts bytes, workers decode and parse (prepare's bottleneck was JSON.parse here)
        await flushTexts();
        for await (const chunk of readLineChunks(f.path, reader.stats)) await submit({ source: f.path, docs: null, result: pool.encodeChunk(chunk, format, reader.field) });
        continue;
      }
      // chunks count their documents when drained: drain them before counting here (resume skips by count)
      while (inFlight.length > 0) await drainOne();
      for await (const doc of reader.readFile(f)) {
        progress.documents++;
        if (seen++ < skipDocs) continue;
        batch.push({ source: doc.source, line: doc.line });
        texts.push(doc.text);
        chars += doc.text.length;
        if (chars >= BATCH_CHARS || texts.length >= BATCH_DOCS) await flushTexts();
      }
    }
    await flushTexts();
    while (inFlight.length > 0) await drainOne();
    const last = builder.finish();
    if (last) done.push(last);
  } finally {
    for (const b of inFlight) b.result.catch(() => undefined);
    await pool.close();
  }
  const documents = progress.documents;
  if (documents === 0) throw new HiermemError('E_INVALID_ARGUMENT', `${o.out}: the corpus has no documents`);
  if (skipDocs > documents) {
    throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${o.out}: its finished shards hold ${skipDocs} documents, the corpus has ${documents}; give a new --out folder or delete it`);
  }
  const valDocuments = valDocumentCount(documents, valFraction);
  const trainDocuments = documents - valDocuments;
  const trainTokens = trainStreamTokens(done, trainDocuments, levels);

  let packed: PreparedManifest['packed'] = null;
  let tree_: PreparedManifest['tree'] = null;
  let leavesUsed: number | null = null;
  if (tree) {
    const layout = packedLayout(o.seqLen!, levels, tokenizer.vocabSize);
    progress.totalDocuments = documents;
    progress.documents = 0;
    report('pack');
    const r = packShards({ out: o.out, shards: done, trainDocs: trainDocuments, k: tree.loaded.k, p: tree.loaded.p, layout, eotId: tokenizer.eotId, padId: tokenizer.padId!,
      onDocs: (n) => { progress.documents = n; report('pack'); } });
    progress.documents = documents;
    report('pack');
    packed = { ...layout, ...r };
    const treeCopy = new AtomicFile(path.join(o.out, TREE_COPY));
    treeCopy.write(await readFile(tree.file));
    const copied = treeCopy.commit();
    if (copied.sha256 !== tree.sha256) throw new HiermemError('E_IO', `${tree.file} changed while it was being prepared from`);
    tree_ = { file: TREE_COPY, sha256: tree.sha256, k: tree.loaded.k, p: tree.loaded.p };
    leavesUsed = countLeaves(done, levels);
  }
  const manifest: PreparedManifest = {
    format: PREPARED_FORMAT, version: PREPARED_VERSION, config,
    tokenizer: { json: tokenizer.toJSON(), sha256: tokHash, vocabSize: tokenizer.vocabSize, eotId: tokenizer.eotId, padId: tokenizer.padId ?? null },
    tree: tree_, dtype, documents, tokens: done.reduce((n, s) => n + s.info.header.tokens, 0), valFraction, trainDocuments, valDocuments, trainTokens,
    shards: done.map((s) => ({ file: path.join(SHARD_DIR, path.basename(s.file)), bytes: s.info.bytes, sha256: s.sha256, firstDoc: s.info.header.firstDoc, docs: s.info.header.docs, tokens: s.info.header.tokens })),
    packed,
    corpus: { files: reader.files.map((f) => ({ path: f.path, bytes: f.bytes })), skippedRecords: reader.stats.badRecords },
  };
  const mf = new AtomicFile(manifestPath);
  mf.write(Buffer.from(JSON.stringify(manifest, null, 1) + '\n'));
  mf.commit();
  return summary(manifest, false, resumedShards, leavesUsed, reader.stats.badRecords);
}

async function readManifestIfAny(file: string): Promise<PreparedManifest | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return null;
  }
  try {
    return JSON.parse(text) as PreparedManifest;
  } catch {
    throw new HiermemError('E_CHECKPOINT_CORRUPT', `${file}: not valid JSON; delete the folder and prepare again`);
  }
}

/** Stream tokens of the first `trainDocs` documents: the offset where document trainDocs starts. */
function trainStreamTokens(shards: { file: string; info: ShardInfo }[], trainDocs: number, levels: number): number {
  let base = 0;
  for (const s of shards) {
    const h = s.info.header;
    if (trainDocs < h.firstDoc + h.docs) {
      const { readIndexRow } = indexReader(s.file, s.info, levels);
      return base + readIndexRow(trainDocs - h.firstDoc)[0]!;
    }
    base += h.tokens;
  }
  return base;
}

function countLeaves(shards: { file: string; info: ShardInfo }[], levels: number): number {
  const used = new Set<number>();
  for (const s of shards) {
    const { all } = indexReader(s.file, s.info, levels);
    const rowU32 = 4 + levels;
    const idx = all();
    for (let d = 0; d < s.info.header.docs; d++) used.add(idx[d * rowU32 + 3 + levels]!);
  }
  return used.size;
}

/** Rows of a shard's document index, read on demand. */
function indexReader(file: string, info: ShardInfo, levels: number) {
  const rowU32 = 4 + levels;
  const read = (first: number, n: number) => {
    const fd = openFile(file);
    try {
      const out = new Uint32Array(n * rowU32);
      readExact(fd, file, new Uint8Array(out.buffer), info.indexOffset + first * rowU32 * 4);
      return out;
    } finally {
      closeSync(fd);
    }
  };
  return { readIndexRow: (d: number) => read(d, 1), all: () => read(0, info.header.docs) };
}

/** Collects encoded documents into shards of about shardTokens tokens and writes each atomically. */
class ShardBuilder {
  private tokens: Uint16Array | Uint32Array;
  private fill = 0;
  /** (offset, length, source, line, path...) per document; a typed buffer (a number[] grew slowly at 10^5 documents). */
  private index = new Uint32Array(1 << 12);
  private indexFill = 0;
  private sources = new Map<string, number>();
  private docs = 0;
  constructor(
    private readonly dir: string, private shard: number, private firstDoc: number, private readonly shardTokens: number,
    private readonly dtype: 'uint16' | 'uint32', private readonly levels: number, private readonly eotId: number, private readonly config: string,
  ) {
    this.tokens = this.alloc(Math.min(shardTokens + 1024, 1 << 16));
  }

  private alloc(n: number): Uint16Array | Uint32Array {
    return this.dtype === 'uint16' ? new Uint16Array(n) : new Uint32Array(n);
  }

  /** Adds a batch in order; returns the shards it completed. */
  add(docs: readonly { source: string; line: number }[], r: EncodedBatch): { file: string; info: ShardInfo; sha256: string }[] {
    const out: { file: string; info: ShardInfo; sha256: string }[] = [];
    let at = 0;
    for (let d = 0; d < docs.length; d++) {
      const len = r.lengths[d]!;
      if (this.fill + len + 1 > this.tokens.length) {
        const bigger = this.alloc(Math.max(this.fill + len + 1, this.tokens.length * 2));
        bigger.set(this.tokens.subarray(0, this.fill));
        this.tokens = bigger;
      }
      this.tokens.set(r.tokens.subarray(at, at + len), this.fill);
      let src = this.sources.get(docs[d]!.source);
      if (src === undefined) this.sources.set(docs[d]!.source, (src = this.sources.size));
      const row = 4 + this.levels;
      if (this.indexFill + row > this.index.length) {
        const bigger = new Uint32Array(this.index.length * 2);
        bigger.set(this.index);
        this.index = bigger;
      }
      const ix = this.index;
      let at_ = this.indexFill;
      ix[at_++] = this.fill; ix[at_++] = len; ix[at_++] = src; ix[at_++] = docs[d]!.line;
      for (let l = 0; l < this.levels; l++) ix[at_++] = r.paths![d * this.levels + l]!;
      this.indexFill = at_;
      this.fill += len;
      this.tokens[this.fill++] = this.eotId;
      this.docs++;
      at += len;
      if (this.fill >= this.shardTokens) out.push(this.write());
    }
    return out;
  }

  finish(): { file: string; info: ShardInfo; sha256: string } | null {
    return this.docs > 0 ? this.write() : null;
  }

  private write(): { file: string; info: ShardInfo; sha256: string } {
    const header: ShardHeader = {
      version: PREPARED_VERSION, shard: this.shard, firstDoc: this.firstDoc, docs: this.docs, tokens: this.fill, dtype: this.dtype,
      levels: this.levels, sources: [...this.sources.keys()], config: this.config,
    };
    const file = path.join(this.dir, shardFileName(this.shard));
    const f = new AtomicFile(file);
    for (const part of encodeShard(header, this.index.subarray(0, this.indexFill), this.tokens.subarray(0, this.fill))) f.write(part);
    const { bytes, sha256: hash } = f.commit();
    const info = readShardInfo(file, bytes);
    this.shard++;
    this.firstDoc += this.docs;
    this.docs = 0;
    this.fill = 0;
    this.indexFill = 0;
    this.sources = new Map();
    return { file, info, sha256: hash };
  }
}
