/**
 * Reading a folder `hiermem prepare` wrote: checked against its manifest (sizes always, sha256 with
 * `verify`), refused when the tokenizer or tree of the run differ from those it was made with, and
 * read by positioned reads of fixed-size records, so that samplers shuffle indices and memory holds
 * one batch. (Node has no mmap; the page cache serves these reads the way it would serve a mapping.)
 */
import { closeSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { HiermemError } from '../errors.js';
import type { PackedSequence, SequenceSource } from './packing.js';
import type { Tokenizer } from './tokenizer.js';
import type { TokenSource } from './windows.js';
import {
  MANIFEST_FILE, PREPARED_FORMAT, PREPARED_VERSION, dtypeBytes, fileSha256, openFile, packedLayout, readExact, readShardInfo, tokenizerHash,
  type PackedLayout, type PreparedManifest, type ShardInfo,
} from './prepared-format.js';

export interface OpenPreparedOptions {
  /** The run's tokenizer: must be the one the data was made with (E_CONFIG_INCOMPATIBLE otherwise). */
  tokenizer?: Tokenizer;
  /** The run's tree file: must have the content the data was routed with. */
  tree?: string;
  /** Also check every file's sha256 (reads all of them once). */
  verify?: boolean;
}

export type Split = 'train' | 'val';

export class PreparedData {
  private readonly fds: number[] = [];
  private constructor(readonly dir: string, readonly manifest: PreparedManifest, private readonly shards: ShardInfo[]) {}

  static async open(dir: string, o: OpenPreparedOptions = {}): Promise<PreparedData> {
    const file = path.join(dir, MANIFEST_FILE);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      throw new HiermemError('E_IO', `${dir} is not a prepared data folder (no readable ${MANIFEST_FILE}: run hiermem prepare, or let it finish)`, { cause: err });
    }
    const m = parseManifest(file, text);
    if (o.tokenizer && tokenizerHash(o.tokenizer) !== m.tokenizer.sha256) {
      throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${dir} was tokenised with ${JSON.stringify(m.tokenizer.json)}, this run uses ${JSON.stringify(o.tokenizer.toJSON())}; prepare it again`);
    }
    if (o.tree !== undefined) {
      if (m.tree === null) throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${dir} was prepared without a tree; prepare it again with --tree ${o.tree}`);
      if ((await fileSha256(o.tree)) !== m.tree.sha256) {
        throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${dir} was routed with another tree than ${o.tree} (content hashes differ); prepare it again with this tree`);
      }
    }
    const files = [...m.shards, ...(m.packed ? [m.packed.train, m.packed.val] : [])];
    for (const f of files) {
      const p = path.join(dir, f.file);
      let size: number;
      try {
        size = statSync(p).size;
      } catch (err) {
        throw new HiermemError('E_CHECKPOINT_CORRUPT', `${p}: missing (${(err as Error).message})`, { cause: err });
      }
      if (size !== f.bytes) throw new HiermemError('E_CHECKPOINT_CORRUPT', `${p}: ${size} bytes, the manifest says ${f.bytes} (truncated or replaced)`);
      if (o.verify && (await fileSha256(p)) !== f.sha256) throw new HiermemError('E_CHECKPOINT_CORRUPT', `${p}: content differs from the manifest (sha256)`);
    }
    const shards = m.shards.map((s) => {
      const info = readShardInfo(path.join(dir, s.file), s.bytes);
      const h = info.header;
      if (h.config !== m.config || h.firstDoc !== s.firstDoc || h.docs !== s.docs || h.tokens !== s.tokens || h.dtype !== m.dtype) {
        throw new HiermemError('E_CHECKPOINT_CORRUPT', `${path.join(dir, s.file)}: its header disagrees with the manifest`);
      }
      return info;
    });
    return new PreparedData(dir, m, shards);
  }

  /** The tree file saved with the data (null without one). */
  get treeFile(): string | null {
    return this.manifest.tree ? path.join(this.dir, this.manifest.tree.file) : null;
  }

  /** Packed sequences of a split, read on demand (for PathBatchSampler). */
  sequences(split: Split): PreparedSequences {
    const p = this.manifest.packed;
    if (!p) throw new HiermemError('E_INVALID_ARGUMENT', `${this.dir} has no packed sequences (prepared without a tree)`);
    const fd = openFile(path.join(this.dir, p[split].file));
    this.fds.push(fd);
    return new PreparedSequences(fd, path.join(this.dir, p[split].file), this.manifest, p[split].sequences);
  }

  /** The token stream of a split (documents each followed by <|eot|>), as encodeDocuments builds it. */
  tokenStream(split: Split): TokenStream {
    const m = this.manifest;
    const fds = m.shards.map((s) => {
      const fd = openFile(path.join(this.dir, s.file));
      this.fds.push(fd);
      return fd;
    });
    const [start, end] = split === 'train' ? [0, m.trainTokens] : [m.trainTokens, m.tokens];
    return new TokenStream(fds, m.shards.map((s) => path.join(this.dir, s.file)), this.shards, m.tokenizer.vocabSize, start, end);
  }

  close(): void {
    for (const fd of this.fds.splice(0)) closeSync(fd);
  }
}

function parseManifest(file: string, text: string): PreparedManifest {
  let m: PreparedManifest;
  const bad = (why: string) => new HiermemError('E_CHECKPOINT_CORRUPT', `${file}: ${why}; prepare the folder again`);
  try {
    m = JSON.parse(text) as PreparedManifest;
  } catch {
    throw bad('not valid JSON (truncated?)');
  }
  if (typeof m !== 'object' || m === null || m.format !== PREPARED_FORMAT) throw bad('not a hiermem prepared-data manifest');
  if (m.version !== PREPARED_VERSION) throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${file}: version ${String(m.version)}, this build reads ${PREPARED_VERSION}`);
  const count = (x: unknown) => Number.isSafeInteger(x) && (x as number) >= 0;
  if (!count(m.documents) || !count(m.tokens) || !count(m.trainTokens) || !count(m.trainDocuments) || !(m.trainTokens <= m.tokens)
    || !Array.isArray(m.shards) || (m.dtype !== 'uint16' && m.dtype !== 'uint32') || typeof m.tokenizer?.sha256 !== 'string'
    || !count(m.tokenizer.vocabSize)) throw bad('malformed fields');
  for (const s of m.shards) {
    if (typeof s?.file !== 'string' || s.file.includes('..') || !count(s.bytes) || !count(s.docs) || !count(s.tokens)) throw bad('malformed shard entry');
  }
  if (m.shards.reduce((n, s) => n + s.tokens, 0) !== m.tokens) throw bad('shard token counts do not add up');
  const p = m.packed;
  if (p !== null) {
    if (typeof p !== 'object' || !count(p.seqLen) || p.seqLen < 1 || p.seqLen > 1 << 24 || !count(p.levels) || p.levels > 64) throw bad('malformed packed layout');
    // the layout is a function of (seqLen, levels, vocabulary): offsets read from the file are never trusted
    const want = packedLayout(p.seqLen, p.levels, m.tokenizer.vocabSize);
    for (const k of Object.keys(want) as (keyof PackedLayout)[]) if (p[k] !== want[k]) throw bad(`packed layout field ${k} is ${String(p[k])}, expected ${String(want[k])}`);
    const t = m.tree;
    if (typeof t !== 'object' || t === null || !count(t.k) || t.k < 2 || t.p !== p.levels || t.k ** t.p > 2 ** 31 || typeof t.file !== 'string' || t.file.includes('..')) throw bad('malformed tree entry');
    for (const f of [p.train, p.val]) {
      if (typeof f?.file !== 'string' || f.file.includes('..') || !count(f.sequences) || f.bytes !== f.sequences * p.recordBytes) throw bad('malformed packed file entry');
    }
  }
  return m;
}

/** Packed sequences of one split, one positioned read per sequence. */
export class PreparedSequences implements SequenceSource {
  private readonly m: NonNullable<PreparedManifest['packed']>;
  private readonly vocab: number;
  constructor(private readonly fd: number, private readonly file: string, manifest: PreparedManifest, readonly length: number) {
    this.m = manifest.packed!;
    this.vocab = manifest.tokenizer.vocabSize;
    this.k = manifest.tree?.k ?? 2 ** 31;
  }
  private readonly k: number;

  at(index: number): PackedSequence | undefined {
    if (!Number.isInteger(index) || index < 0 || index >= this.length) return undefined;
    const l = this.m, T = l.seqLen;
    const rec = new Uint8Array(l.recordBytes);
    readExact(this.fd, this.file, rec, index * l.recordBytes);
    const Tok = l.dtype === 'uint16' ? Uint16Array : Uint32Array;
    const none = l.dtype === 'uint16' ? 0xffff : 0xffffffff;
    const tokens = Int32Array.from(new Tok(rec.buffer, 0, T));
    const targets = Int32Array.from(new Tok(rec.buffer, l.targetsOffset, T), (x) => (x === none ? -1 : x));
    const docStart = Int32Array.from(new (l.docStartDtype === 'uint16' ? Uint16Array : Uint32Array)(rec.buffer, l.docStartOffset, T));
    const pathArr = Int32Array.from(new Int32Array(rec.buffer, l.pathOffset, l.levels));
    let bad = false;
    for (let t = 0; t < T; t++) if (tokens[t]! >= this.vocab || targets[t]! >= this.vocab || docStart[t]! > t) bad = true;
    for (let l = 0, nodes = this.k; l < pathArr.length; l++, nodes *= this.k) if (!(pathArr[l]! >= 0 && pathArr[l]! < nodes)) bad = true;
    if (bad) throw new HiermemError('E_CHECKPOINT_CORRUPT', `${this.file}: sequence ${index} holds values out of range (corrupt)`);
    return { tokens, targets, docStart, path: pathArr };
  }
}

/** A contiguous range of the prepared token stream, read across shard boundaries. */
export class TokenStream implements TokenSource {
  /** Stream offset where each shard's tokens start. */
  private readonly bases: number[] = [];
  readonly length: number;
  constructor(
    private readonly fds: number[], private readonly files: string[], private readonly shards: ShardInfo[], private readonly vocab: number,
    private readonly start: number, end: number,
  ) {
    let b = 0;
    for (const s of shards) {
      this.bases.push(b);
      b += s.header.tokens;
    }
    this.length = end - start;
  }

  /** Tokens [from, from + n) of this range. */
  read(from: number, n: number): Int32Array {
    if (from < 0 || n < 0 || from + n > this.length) throw new HiermemError('E_INVALID_ARGUMENT', `tokens ${from}..${from + n} outside 0..${this.length}`);
    const out = new Int32Array(n);
    let pos = this.start + from, done = 0;
    let s = upperBound(this.bases, pos) - 1;
    while (done < n) {
      const info = this.shards[s]!, b = dtypeBytes(info.header.dtype);
      const local = pos - this.bases[s]!;
      const take = Math.min(n - done, info.header.tokens - local);
      const bytes = new Uint8Array(take * b);
      readExact(this.fds[s]!, this.files[s]!, bytes, info.tokensOffset + local * b);
      const view = b === 2 ? new Uint16Array(bytes.buffer) : new Uint32Array(bytes.buffer);
      for (let i = 0; i < take; i++) {
        const v = view[i]!;
        if (v >= this.vocab) throw new HiermemError('E_CHECKPOINT_CORRUPT', `${this.files[s]}: token ${v} at ${local + i} is outside the vocabulary (corrupt)`);
        out[done + i] = v;
      }
      done += take;
      pos += take;
      s++;
    }
    return out;
  }
}

function upperBound(a: readonly number[], x: number): number {
  let lo = 0, hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (a[mid]! <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
