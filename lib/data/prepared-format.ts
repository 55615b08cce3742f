/**
 * The on-disk layout `hiermem prepare` writes (all little-endian, fixed-size records, so any
 * reader can memory-map the files, e.g. numpy.memmap):
 *
 *   DATA/shards/shard-NNNNN.bin  one per ~shardTokens tokens, whole documents only:
 *       "HMSHARD\0", u32 header length, header JSON (padded with spaces to 8 bytes),
 *       index: docs x (4 + levels) u32 = [token offset in shard, length, source id, line/row, path...],
 *       tokens: each document's tokens then <|eot|> (the stream encodeDocuments builds), u16 or u32.
 *   DATA/packed-train.bin, packed-val.bin  (with a tree) fixed-size sequence records:
 *       tokens[T], targets[T] (dtype; -1 stored as the dtype's max), docStart[T] (u16/u32),
 *       path[p] (i32), padded to 8 bytes.
 *   DATA/tree.safetensors  a copy of the tree the documents were routed with.
 *   DATA/manifest.json  written last: what was made, from what (content hashes), file sizes and sha256.
 *
 * A shard is self-describing, so a crashed prepare finds its finished shards without a manifest.
 */
import { createHash } from 'node:crypto';
import { createReadStream, closeSync, fsyncSync, openSync, readSync, renameSync, writeSync, type PathLike } from 'node:fs';
import { HiermemError } from '../errors.js';
import type { Tokenizer, TokenizerJSON } from './tokenizer.js';

export const MANIFEST_FILE = 'manifest.json';
export const SHARD_DIR = 'shards';
export const TREE_COPY = 'tree.safetensors';
export const PACKED_FILES = { train: 'packed-train.bin', val: 'packed-val.bin' } as const;
export const PREPARED_FORMAT = 'hiermem-prepared';
export const PREPARED_VERSION = 1;
const SHARD_MAGIC = Buffer.from('HMSHARD\0', 'latin1');

export type TokenDtype = 'uint16' | 'uint32';

/** uint16 when every id and the -1 sentinel (stored as 0xffff) fit. */
export function tokenDtype(vocabSize: number): TokenDtype {
  return vocabSize <= 0xffff ? 'uint16' : 'uint32';
}
export function dtypeBytes(d: TokenDtype): 2 | 4 {
  return d === 'uint16' ? 2 : 4;
}

export function shardFileName(i: number): string {
  return `shard-${String(i).padStart(5, '0')}.bin`;
}

export interface ShardHeader {
  version: number;
  shard: number;
  firstDoc: number;
  docs: number;
  tokens: number;
  dtype: TokenDtype;
  levels: number;
  sources: string[];
  /** Hash of the preparation's settings (see prepare.ts): a resumed run only keeps shards of its own. */
  config: string;
}

export interface FileEntry {
  file: string;
  bytes: number;
  sha256: string;
}

export interface PackedLayout {
  seqLen: number;
  levels: number;
  dtype: TokenDtype;
  docStartDtype: TokenDtype;
  recordBytes: number;
  targetsOffset: number;
  docStartOffset: number;
  pathOffset: number;
}

export interface PreparedManifest {
  format: typeof PREPARED_FORMAT;
  version: number;
  config: string;
  tokenizer: { json: TokenizerJSON; sha256: string; vocabSize: number; eotId: number; padId: number | null };
  tree: { file: string; sha256: string; k: number; p: number } | null;
  dtype: TokenDtype;
  documents: number;
  /** Stream tokens (each document's tokens plus one <|eot|>). */
  tokens: number;
  valFraction: number;
  trainDocuments: number;
  valDocuments: number;
  /** Stream tokens of the training documents (they come first; the rest is validation). */
  trainTokens: number;
  shards: (FileEntry & { firstDoc: number; docs: number; tokens: number })[];
  packed: (PackedLayout & { train: FileEntry & { sequences: number }; val: FileEntry & { sequences: number } }) | null;
  corpus: { files: { path: string; bytes: number }[]; skippedRecords: number };
}

export function packedLayout(seqLen: number, levels: number, vocabSize: number): PackedLayout {
  const dtype = tokenDtype(vocabSize);
  const docStartDtype = tokenDtype(seqLen);
  const b = dtypeBytes(dtype);
  const targetsOffset = seqLen * b;
  const docStartOffset = 2 * seqLen * b;
  const pathOffset = align(docStartOffset + seqLen * dtypeBytes(docStartDtype), 4);
  return { seqLen, levels, dtype, docStartDtype, recordBytes: align(pathOffset + 4 * levels, 8), targetsOffset, docStartOffset, pathOffset };
}

export function align(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

export function tokenizerHash(t: Tokenizer): string {
  return sha256(JSON.stringify(t.toJSON()));
}

export function sha256(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export async function fileSha256(file: PathLike): Promise<string> {
  const h = createHash('sha256');
  try {
    for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  } catch (err) {
    throw new HiermemError('E_IO', `cannot read ${String(file)}: ${(err as Error).message}`, { cause: err });
  }
  return h.digest('hex');
}

/** The bytes of a shard file: magic, header, index and tokens. */
export function encodeShard(header: ShardHeader, index: Uint32Array, tokens: Uint16Array | Uint32Array): Buffer[] {
  let json = JSON.stringify(header);
  json += ' '.repeat(align(12 + Buffer.byteLength(json), 8) - 12 - Buffer.byteLength(json));
  const head = Buffer.alloc(12 + Buffer.byteLength(json));
  SHARD_MAGIC.copy(head, 0);
  head.writeUInt32LE(Buffer.byteLength(json), 8);
  head.write(json, 12, 'utf8');
  return [head, Buffer.from(index.buffer, index.byteOffset, index.byteLength), Buffer.from(tokens.buffer, tokens.byteOffset, tokens.byteLength)];
}

export interface ShardInfo {
  header: ShardHeader;
  /** Byte offsets of the index and the tokens in the file. */
  indexOffset: number;
  tokensOffset: number;
  bytes: number;
}

/** Reads and checks a shard's header against its size; anything off → E_CHECKPOINT_CORRUPT. */
export function readShardInfo(file: string, fileBytes: number): ShardInfo {
  const fd = openFile(file);
  try {
    const bad = (why: string) => new HiermemError('E_CHECKPOINT_CORRUPT', `${file}: not a valid token shard (${why})`);
    const head = Buffer.alloc(12);
    if (readSync(fd, head, 0, 12, 0) !== 12 || !head.subarray(0, 8).equals(SHARD_MAGIC)) throw bad('bad magic');
    const len = head.readUInt32LE(8);
    if (len > 64 << 20 || 12 + len > fileBytes) throw bad('header longer than the file');
    const jb = Buffer.alloc(len);
    readSync(fd, jb, 0, len, 12);
    let h: ShardHeader;
    try {
      h = JSON.parse(jb.toString('utf8')) as ShardHeader;
    } catch {
      throw bad('header is not JSON');
    }
    const ints = [h.version, h.shard, h.firstDoc, h.docs, h.tokens, h.levels];
    if (!ints.every((x) => Number.isSafeInteger(x) && x >= 0) || (h.dtype !== 'uint16' && h.dtype !== 'uint32')
      || !Array.isArray(h.sources) || typeof h.config !== 'string') throw bad('malformed header');
    if (h.version !== PREPARED_VERSION) throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${file}: shard version ${h.version}, this build reads ${PREPARED_VERSION}`);
    const indexOffset = 12 + len;
    const tokensOffset = indexOffset + h.docs * (4 + h.levels) * 4;
    const bytes = tokensOffset + h.tokens * dtypeBytes(h.dtype);
    if (bytes !== fileBytes) throw bad(`${fileBytes} bytes, the header implies ${bytes} (truncated?)`);
    return { header: h, indexOffset, tokensOffset, bytes };
  } finally {
    closeSync(fd);
  }
}

export function openFile(file: string, flags: 'r' | 'w' = 'r'): number {
  try {
    return openSync(file, flags);
  } catch (err) {
    throw new HiermemError('E_IO', `cannot open ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/** Exactly `length` bytes at `position`, else E_CHECKPOINT_CORRUPT (the file is shorter than recorded). */
export function readExact(fd: number, file: string, into: Uint8Array, position: number): void {
  let done = 0;
  while (done < into.length) {
    const n = readSync(fd, into, done, into.length - done, position + done);
    if (n === 0) throw new HiermemError('E_CHECKPOINT_CORRUPT', `${file}: ends before byte ${position + into.length} (truncated?)`);
    done += n;
  }
}

/**
 * Writes a file so that it either exists complete or not at all: a temp file, fsynced, renamed
 * over the target, then the folder fsynced (the rename itself survives a power cut).
 */
export class AtomicFile {
  private readonly fd: number;
  private readonly hash = createHash('sha256');
  bytes = 0;
  constructor(readonly file: string) {
    this.fd = openFile(`${file}.tmp`, 'w');
  }

  write(chunk: Uint8Array): void {
    this.hash.update(chunk);
    let done = 0;
    try {
      while (done < chunk.length) done += writeSync(this.fd, chunk, done, chunk.length - done);
    } catch (err) {
      closeSync(this.fd);
      throw new HiermemError('E_IO', `cannot write ${this.file}.tmp: ${(err as Error).message}`, { cause: err });
    }
    this.bytes += chunk.length;
  }

  /** Completes the file; returns its size and sha256. */
  commit(): { bytes: number; sha256: string } {
    try {
      fsyncSync(this.fd);
      closeSync(this.fd);
      renameSync(`${this.file}.tmp`, this.file);
      syncDir(this.file);
    } catch (err) {
      throw new HiermemError('E_IO', `cannot write ${this.file}: ${(err as Error).message}`, { cause: err });
    }
    return { bytes: this.bytes, sha256: this.hash.digest('hex') };
  }

  abort(): void {
    try { closeSync(this.fd); } catch { /* already closed */ }
  }
}

function syncDir(file: string): void {
  const dir = file.replace(/[\\/][^\\/]*$/, '') || '.';
  try {
    const fd = openSync(dir, 'r');
    try { fsyncSync(fd); } finally { closeSync(fd); }
  } catch {
    // some file systems cannot fsync a folder; the rename is still atomic
  }
}
