/**
 * Second phase of `prepare` with a tree: documents are spilled from the token shards into at most
 * 256 bucket files by leaf (a bucket is a contiguous range of leaves), then each bucket is read
 * back leaf by leaf, in document order, and packed with packLeafStream, the in-memory path's
 * packer, into fixed-size records. Memory holds one bucket's small index (16 bytes a document) and
 * I/O buffers, never a leaf's tokens. The phase is redone from the shards after a crash.
 */
import { closeSync, mkdirSync, readSync, rmSync, writeSync } from 'node:fs';
import { HiermemError } from '../errors.js';
import path from 'node:path';
import { packLeafStream, type PackedSequence } from './packing.js';
import {
  AtomicFile, PACKED_FILES, dtypeBytes, openFile, readExact, type FileEntry, type PackedLayout, type ShardInfo, type TokenDtype,
} from './prepared-format.js';

export interface PackInput {
  out: string;
  shards: { file: string; info: ShardInfo }[];
  /** Documents with index < trainDocs are training documents; the rest validation. */
  trainDocs: number;
  k: number;
  p: number;
  layout: PackedLayout;
  eotId: number;
  padId: number;
  onDocs?: (done: number) => void;
}

export type PackResult = Record<'train' | 'val', FileEntry & { sequences: number }>;

const MAX_BUCKETS = 256;
const REC_HEAD = 12; // u32 doc, u32 leaf, u32 length

export function packShards(o: PackInput): PackResult {
  const spill = path.join(o.out, 'spill');
  rmSync(spill, { recursive: true, force: true });
  mkdirSync(spill, { recursive: true });
  const leaves = o.k ** o.p;
  const buckets = Math.min(leaves, MAX_BUCKETS);
  const bucketOf = (leaf: number) => Math.floor((leaf * buckets) / leaves);
  const dtype = o.layout.dtype;
  const b = dtypeBytes(dtype);

  // 1. spill: documents to bucket files, in document order
  const writers = Array.from({ length: buckets }, (_, i) => new BufferedAppend(path.join(spill, `bucket-${i}.bin`)));
  let done = 0;
  for (const s of o.shards) {
    const h = s.info.header;
    const fd = openFile(s.file);
    try {
      const rowU32 = 4 + h.levels;
      const index = new Uint32Array(h.docs * rowU32);
      readExact(fd, s.file, new Uint8Array(index.buffer), s.info.indexOffset);
      const reader = new WindowReader(fd, s.file);
      for (let d = 0; d < h.docs; d++) {
        const off = index[d * rowU32]!, len = index[d * rowU32 + 1]!;
        const leaf = index[d * rowU32 + 3 + h.levels]!; // the last path entry
        const head = new Uint32Array([h.firstDoc + d, leaf, len]);
        const w = writers[bucketOf(leaf)]!;
        w.write(new Uint8Array(head.buffer));
        w.write(reader.read(s.info.tokensOffset + off * b, len * b));
        if (++done % 4096 === 0) o.onDocs?.(done);
      }
    } finally {
      closeSync(fd);
    }
  }
  for (const w of writers) w.close();

  // 2. pack: bucket by bucket, leaf by leaf (ascending, as packByLeaf), training then validation
  const outs = { train: new RecordWriter(path.join(o.out, PACKED_FILES.train), o.layout), val: new RecordWriter(path.join(o.out, PACKED_FILES.val), o.layout) };
  const pack = { seqLen: o.layout.seqLen, eotId: o.eotId, padId: o.padId };
  for (const w of writers) {
    if (w.bytes === 0) continue;
    const fd = openFile(w.file);
    try {
      const docs = scanBucket(fd, w.file, w.bytes, b);
      const reader = new WindowReader(fd, w.file);
      const read = (i: number) => decode(reader.read(docs.pos[i]! + REC_HEAD, docs.len[i]! * b), dtype);
      for (let g = 0; g < docs.order.length;) {
        const leaf = docs.leaf[docs.order[g]!]!;
        let end = g;
        while (end < docs.order.length && docs.leaf[docs.order[end]!] === leaf) end++;
        const group = docs.order.subarray(g, end);
        const pathOf = leafPath(leaf, o.k, o.p);
        const pick = function* (train: boolean) {
          for (const i of group) if ((docs.doc[i]! < o.trainDocs) === train) yield read(i);
        };
        for (const seq of packLeafStream(pick(true), pathOf, pack)) outs.train.write(seq);
        for (const seq of packLeafStream(pick(false), pathOf, pack)) outs.val.write(seq);
        g = end;
      }
    } finally {
      closeSync(fd);
    }
  }
  const result = { train: outs.train.commit(), val: outs.val.commit() };
  rmSync(spill, { recursive: true, force: true });
  return result;
}

/** The root-to-leaf path of a leaf: its ancestor at level l is leaf / k^(p-l) (see tree.ts indexing). */
export function leafPath(leaf: number, k: number, p: number): Int32Array {
  const out = new Int32Array(p);
  for (let l = p; l >= 1; l--) out[l - 1] = Math.floor(leaf / k ** (p - l));
  return out;
}

/** A bucket's records: where each is, its document and leaf; `order` groups by leaf, document order within. */
function scanBucket(fd: number, file: string, bytes: number, b: number) {
  let n = 0, cap = 1024;
  let pos = new Float64Array(cap), doc = new Uint32Array(cap), leaf = new Uint32Array(cap), len = new Uint32Array(cap);
  const head = new Uint8Array(REC_HEAD);
  const hv = new Uint32Array(head.buffer);
  for (let at = 0; at < bytes;) {
    readExact(fd, file, head, at);
    if (n === cap) {
      cap *= 2;
      pos = grow(pos, cap); doc = grow(doc, cap); leaf = grow(leaf, cap); len = grow(len, cap);
    }
    pos[n] = at; doc[n] = hv[0]!; leaf[n] = hv[1]!; len[n] = hv[2]!;
    at += REC_HEAD + hv[2]! * b;
    n++;
  }
  const order = Uint32Array.from({ length: n }, (_, i) => i).sort((x, y) => leaf[x]! - leaf[y]! || x - y);
  return { pos, doc, leaf, len, order };
}

function grow<T extends Float64Array | Uint32Array>(a: T, cap: number): T {
  const out = new (a.constructor as new (n: number) => T)(cap);
  out.set(a);
  return out;
}

function decode(bytes: Uint8Array, dtype: TokenDtype): Int32Array {
  const copy = bytes.slice(); // aligned, and the window buffer is reused
  return Int32Array.from(dtype === 'uint16' ? new Uint16Array(copy.buffer, 0, copy.length / 2) : new Uint32Array(copy.buffer, 0, copy.length / 4));
}

/** Positioned reads through a buffer that slides forward: sequential access costs one read per 1 MiB. */
class WindowReader {
  private buf = new Uint8Array(0);
  private start = 0;
  constructor(private readonly fd: number, private readonly file: string) {}
  read(pos: number, len: number): Uint8Array {
    if (pos < this.start || pos + len > this.start + this.buf.length) {
      const buf = new Uint8Array(Math.max(len, 1 << 20));
      let got = 0;
      // the last window may run past the end of the file: take what there is
      while (got < buf.length) {
        const n = readSync(this.fd, buf, got, buf.length - got, pos + got);
        if (n === 0) break;
        got += n;
      }
      if (got < len) throw new HiermemError('E_CHECKPOINT_CORRUPT', `${this.file}: ends before byte ${pos + len} (truncated?)`);
      this.buf = buf.subarray(0, got);
      this.start = pos;
    }
    return this.buf.subarray(pos - this.start, pos - this.start + len);
  }
}

/** Appends to a file through a 256 KiB buffer (at most 256 of them are open at once). */
class BufferedAppend {
  private readonly fd: number;
  private chunks: Uint8Array[] = [];
  private held = 0;
  bytes = 0;
  constructor(readonly file: string) {
    this.fd = openFile(file, 'w');
  }
  write(c: Uint8Array): void {
    this.chunks.push(c.slice());
    this.held += c.length;
    this.bytes += c.length;
    if (this.held >= 1 << 18) this.flush();
  }
  private flush(): void {
    const all = Buffer.concat(this.chunks);
    try {
      for (let o = 0; o < all.length;) o += writeSync(this.fd, all, o, all.length - o);
    } catch (err) {
      throw new HiermemError('E_IO', `cannot write ${this.file}: ${(err as Error).message}`, { cause: err });
    }
    this.chunks = [];
    this.held = 0;
  }
  close(): void {
    this.flush();
    closeSync(this.fd);
  }
}

/** Packed sequences → fixed-size records (layout in prepared-format.ts), written atomically. */
class RecordWriter {
  private readonly f: AtomicFile;
  private batch: Uint8Array[] = [];
  sequences = 0;
  constructor(file: string, private readonly l: PackedLayout) {
    this.f = new AtomicFile(file);
  }
  write(s: PackedSequence): void {
    const l = this.l, T = l.seqLen, rec = new Uint8Array(l.recordBytes);
    const Tok = l.dtype === 'uint16' ? Uint16Array : Uint32Array;
    const Ds = l.docStartDtype === 'uint16' ? Uint16Array : Uint32Array;
    new Tok(rec.buffer, 0, T).set(s.tokens);
    const tg = new Tok(rec.buffer, l.targetsOffset, T);
    for (let t = 0; t < T; t++) tg[t] = s.targets[t]! < 0 ? (l.dtype === 'uint16' ? 0xffff : 0xffffffff) : s.targets[t]!;
    new Ds(rec.buffer, l.docStartOffset, T).set(s.docStart);
    new Int32Array(rec.buffer, l.pathOffset, l.levels).set(s.path);
    this.batch.push(rec);
    this.sequences++;
    if (this.batch.length * l.recordBytes >= 1 << 20) this.flush();
  }
  private flush(): void {
    if (this.batch.length) this.f.write(Buffer.concat(this.batch));
    this.batch = [];
  }
  commit(): FileEntry & { sequences: number } {
    this.flush();
    const { bytes, sha256 } = this.f.commit();
    return { file: path.basename(this.f.file), bytes, sha256, sequences: this.sequences };
  }
}
