/**
 * Reader and writer for the safetensors format:
 *   [u64 little-endian N][N bytes of JSON header][data section]
 * The header maps tensor name → {dtype, shape, data_offsets: [begin, end]} (offsets relative to the
 * start of the data section), plus an optional "__metadata__": {string: string}.
 *
 * Reading treats the file as hostile: everything is validated before any tensor buffer is allocated.
 */
import { open, readdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { HiermemError } from '../errors.js';

export type SafetensorsDtype =
  | 'F64'
  | 'F32'
  | 'F16'
  | 'BF16'
  | 'I64'
  | 'I32'
  | 'I16'
  | 'I8'
  | 'U64'
  | 'U32'
  | 'U16'
  | 'U8'
  | 'BOOL';

/** F16 and BF16 are kept as raw bit patterns in a Uint16Array; BOOL as a Uint8Array of 0/1. */
export type TensorData =
  | Float64Array
  | Float32Array
  | BigInt64Array
  | Int32Array
  | Int16Array
  | Int8Array
  | BigUint64Array
  | Uint32Array
  | Uint16Array
  | Uint8Array;

interface DtypeSpec {
  size: number;
  /** Name of the typed array class, compared via Symbol.toStringTag so arrays from other realms pass. */
  arrayTag: string;
  make(length: number): TensorData;
}

const DTYPES: Readonly<Record<SafetensorsDtype, DtypeSpec>> = {
  F64: { size: 8, arrayTag: 'Float64Array', make: (n) => new Float64Array(n) },
  F32: { size: 4, arrayTag: 'Float32Array', make: (n) => new Float32Array(n) },
  F16: { size: 2, arrayTag: 'Uint16Array', make: (n) => new Uint16Array(n) },
  BF16: { size: 2, arrayTag: 'Uint16Array', make: (n) => new Uint16Array(n) },
  I64: { size: 8, arrayTag: 'BigInt64Array', make: (n) => new BigInt64Array(n) },
  I32: { size: 4, arrayTag: 'Int32Array', make: (n) => new Int32Array(n) },
  I16: { size: 2, arrayTag: 'Int16Array', make: (n) => new Int16Array(n) },
  I8: { size: 1, arrayTag: 'Int8Array', make: (n) => new Int8Array(n) },
  U64: { size: 8, arrayTag: 'BigUint64Array', make: (n) => new BigUint64Array(n) },
  U32: { size: 4, arrayTag: 'Uint32Array', make: (n) => new Uint32Array(n) },
  U16: { size: 2, arrayTag: 'Uint16Array', make: (n) => new Uint16Array(n) },
  U8: { size: 1, arrayTag: 'Uint8Array', make: (n) => new Uint8Array(n) },
  BOOL: { size: 1, arrayTag: 'Uint8Array', make: (n) => new Uint8Array(n) },
};

/** Same limit as the reference implementation; protects against absurd allocations. */
export const MAX_HEADER_BYTES = 100_000_000;
const METADATA_KEY = '__metadata__';
/** Keep single read/write calls well under the 2 GiB per-call limit of fs. */
const IO_CHUNK = 1 << 28;

export function isSafetensorsDtype(s: unknown): s is SafetensorsDtype {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPES, s);
}

export function dtypeByteSize(dtype: SafetensorsDtype): number {
  return DTYPES[dtype].size;
}

export interface TensorToWrite {
  name: string;
  dtype: SafetensorsDtype;
  shape: readonly number[];
  /**
   * The dtype's typed array (Uint16Array for F16/BF16), or raw little-endian bytes as a Uint8Array or
   * DataView. Read only when this tensor's turn comes, so a getter may materialise it lazily.
   */
  data: ArrayBufferView;
}

export interface TensorInfo {
  dtype: SafetensorsDtype;
  shape: number[];
  /** Byte offsets relative to the data section start (header.dataStart). */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  /** N, the JSON header's byte length including padding. */
  headerLength: number;
  /** Absolute file offset of the data section (8 + N). */
  dataStart: number;
  /** In data-section order. */
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
}

export interface LoadedTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  data: TensorData;
}

export interface SafetensorsContents {
  tensors: Map<string, LoadedTensor>;
  metadata: Record<string, string>;
}

export interface TensorExpectation {
  dtype?: SafetensorsDtype;
  shape?: readonly number[];
}

export interface ReadSafetensorsOptions {
  /** Tensors that must be present with this dtype/shape; otherwise E_CONFIG_INCOMPATIBLE (before any data is read). */
  expect?: Readonly<Record<string, TensorExpectation>> | ReadonlyMap<string, TensorExpectation>;
  /** Load only these tensors (default: all). A listed name missing from the file → E_CONFIG_INCOMPATIBLE. */
  names?: Iterable<string>;
}

// Typed arrays use host byte order and the format is little-endian.
const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function requireLittleEndian(): void {
  if (!HOST_LITTLE_ENDIAN) {
    throw new HiermemError('E_IO', 'safetensors I/O is only supported on little-endian hosts');
  }
}

function errnoText(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code && !err.message.startsWith(code) ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}

/** JSON for messages, without throwing on BigInt or cycles from untyped callers. */
function show(v: unknown): string {
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

function ioError(what: string, path: string, err: unknown): HiermemError {
  if (err instanceof HiermemError) return err;
  return new HiermemError('E_IO', `${what} ${path}: ${errnoText(err)}`, { cause: err });
}

// ---------------------------------------------------------------------------------------------
// Writing

interface PlannedTensor {
  source: TensorToWrite;
  dtype: SafetensorsDtype;
  shape: number[];
  byteLength: number;
}

function validateShape(shape: unknown, where: string): number[] {
  if (!Array.isArray(shape)) {
    throw new HiermemError('E_INVALID_ARGUMENT', `${where}: shape must be an array of non-negative integers`);
  }
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || (d as number) < 0) {
      throw new HiermemError('E_INVALID_ARGUMENT', `${where}: shape ${show(shape)} has an invalid dimension`);
    }
  }
  return [...(shape as number[])];
}

/** product(shape) * size, or null if it exceeds Number.MAX_SAFE_INTEGER. */
function byteLengthOf(shape: readonly number[], size: number): number | null {
  if (shape.includes(0)) return 0;
  // Stop at the first overflow: a hostile shape with millions of huge dims must not grow a giant BigInt.
  const limit = BigInt(Number.MAX_SAFE_INTEGER);
  let n = BigInt(size);
  for (const d of shape) {
    n *= BigInt(d);
    if (n > limit) return null;
  }
  return Number(n);
}

function dataBytes(t: PlannedTensor, path: string): Uint8Array {
  const data = t.source.data;
  const where = `writeSafetensors ${path}: tensor ${JSON.stringify(t.source.name)}`;
  if (!ArrayBuffer.isView(data)) {
    throw new HiermemError('E_INVALID_ARGUMENT', `${where}: data must be a typed array or DataView`);
  }
  const tag = (data as unknown as { [Symbol.toStringTag]?: string })[Symbol.toStringTag];
  const spec = DTYPES[t.dtype];
  if (tag !== spec.arrayTag && tag !== 'Uint8Array' && tag !== 'DataView') {
    throw new HiermemError(
      'E_INVALID_ARGUMENT',
      `${where}: dtype ${t.dtype} needs a ${spec.arrayTag} (or raw bytes as Uint8Array/DataView), got ${String(tag)}`,
    );
  }
  if (data.byteLength !== t.byteLength) {
    throw new HiermemError(
      'E_SHAPE_MISMATCH',
      `${where}: shape ${JSON.stringify(t.shape)} of ${t.dtype} needs ${t.byteLength} bytes, data has ${data.byteLength}`,
    );
  }
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** Builds the header bytes, padded with spaces so the data section starts at a multiple of 8. */
function encodeHeader(planned: PlannedTensor[], metadata: Record<string, string> | undefined): Uint8Array {
  // Null prototype: a tensor named "__proto__" must become a key, not replace the prototype.
  const header: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  if (metadata !== undefined) header[METADATA_KEY] = metadata;
  let offset = 0;
  for (const t of planned) {
    header[t.source.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.byteLength] };
    offset += t.byteLength;
  }
  // Integer-like names ("0", "1") would be reordered by a plain object; order does not matter to readers.
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil((8 + json.length) / 8) * 8 - 8;
  const out = new Uint8Array(padded).fill(0x20);
  out.set(json);
  return out;
}

async function writeAll(fh: FileHandle, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const len = Math.min(IO_CHUNK, bytes.length - done);
    const { bytesWritten } = await fh.write(bytes, done, len, null);
    if (bytesWritten <= 0) throw new Error('write made no progress');
    done += bytesWritten;
  }
}

async function fsyncDirectory(dir: string): Promise<void> {
  // Windows cannot open a directory for fsync; rename is as durable as it gets there.
  if (process.platform === 'win32') return;
  const dh = await open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/** Validates names, dtypes, shapes and metadata; returns the planned tensors and the header bytes. */
function planFile(path: string, tensors: readonly TensorToWrite[], metadata: Record<string, string> | undefined): { planned: PlannedTensor[]; header: Uint8Array; total: number } {
  requireLittleEndian();
  if (typeof path !== 'string' || path.length === 0) {
    throw new HiermemError('E_INVALID_ARGUMENT', 'writeSafetensors: path must be a non-empty string');
  }
  if (!Array.isArray(tensors)) {
    throw new HiermemError('E_INVALID_ARGUMENT', `writeSafetensors ${path}: tensors must be an array`);
  }
  if (metadata !== undefined) {
    if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata)) {
      throw new HiermemError('E_INVALID_ARGUMENT', `writeSafetensors ${path}: metadata must be an object of strings`);
    }
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') {
        throw new HiermemError('E_INVALID_ARGUMENT', `writeSafetensors ${path}: metadata ${JSON.stringify(k)} is not a string`);
      }
    }
  }

  // Names, dtypes and shapes are needed for the header, so they are checked up front; data later.
  const planned: PlannedTensor[] = [];
  const seen = new Set<string>();
  let total = 0;
  for (const t of tensors) {
    const name: unknown = t?.name;
    if (typeof name !== 'string' || name === METADATA_KEY || seen.has(name)) {
      throw new HiermemError(
        'E_INVALID_ARGUMENT',
        `writeSafetensors ${path}: tensor name ${show(name)} is not a string, is reserved, or is repeated`,
      );
    }
    seen.add(name);
    const where = `writeSafetensors ${path}: tensor ${JSON.stringify(name)}`;
    const dtype: unknown = t.dtype; // callers without types can pass anything
    if (!isSafetensorsDtype(dtype)) {
      throw new HiermemError('E_INVALID_ARGUMENT', `${where}: unsupported dtype ${show(dtype)}`);
    }
    const shape = validateShape(t.shape, where);
    const byteLength = byteLengthOf(shape, DTYPES[dtype].size);
    if (byteLength === null || total + byteLength > Number.MAX_SAFE_INTEGER) {
      throw new HiermemError('E_INVALID_ARGUMENT', `${where}: tensor data is too large`);
    }
    total += byteLength;
    planned.push({ source: t, dtype, shape, byteLength });
  }
  const header = encodeHeader(planned, metadata);
  if (header.length > MAX_HEADER_BYTES) {
    throw new HiermemError('E_INVALID_ARGUMENT', `writeSafetensors ${path}: header would exceed ${MAX_HEADER_BYTES} bytes`);
  }
  return { planned, header, total };
}

/** Name of the temp file a writer of `path` uses: `<path>.tmp-<pid>-<12 hex>`. */
const TEMP_RE = /\.tmp-(\d+)-[0-9a-f]{12}$/;

function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // exists, owned by someone else
  }
}

/**
 * Removes temp files that killed writers left in `dir`: names `<target>.tmp-<pid>-<hex>` where
 * `accept(target)` holds and process `pid` no longer runs (a live writer's temp file is kept).
 * Best effort: errors are ignored. Returns the names removed.
 */
export async function removeStaleTempFiles(dir: string, accept: (target: string) => boolean): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const m = TEMP_RE.exec(name);
    if (!m || !accept(name.slice(0, m.index)) || processAlive(Number(m[1]))) continue;
    try {
      await unlink(join(dir, name));
      removed.push(name);
    } catch {
      // raced with another cleaner, or not ours to remove
    }
  }
  return removed;
}

/**
 * The atomic part shared by every writer: a temp file next to `path` gets a zero 8-byte length,
 * the header, and the data section (filled by `writeData`); once the data is on disk the real
 * length is written over the zero, then fsync, rename over `path`, fsync the directory. Until that
 * last length write the temp file has an empty header, so a writer killed midway never leaves a
 * file that a reader accepts. On failure the temp file is removed and any previous file at `path`
 * is untouched; temp files of writers that were killed are removed by the next write of `path`.
 */
async function writeFileAtomically(
  path: string,
  header: Uint8Array,
  writeData: (fh: FileHandle, tmpPath: string, dataStart: number) => Promise<void>,
): Promise<void> {
  const target = basename(path);
  await removeStaleTempFiles(dirname(path), (t) => t === target);
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  let fh: FileHandle | undefined;
  let renamed = false;
  try {
    fh = await open(tmp, 'wx');
    await writeAll(fh, new Uint8Array(8)); // header length 0: invalid until the file is complete
    await writeAll(fh, header);
    await writeData(fh, tmp, 8 + header.length);
    await fh.datasync(); // the data is durable before the length that makes the file valid
    const prefix = new Uint8Array(8);
    new DataView(prefix.buffer).setBigUint64(0, BigInt(header.length), true);
    const { bytesWritten } = await fh.write(prefix, 0, 8, 0);
    if (bytesWritten !== 8) throw new Error('short write of the header length');
    await fh.sync();
    await fh.close();
    fh = undefined;
    await rename(tmp, path);
    renamed = true;
    await fsyncDirectory(dirname(path));
  } catch (err) {
    if (fh !== undefined) await fh.close().catch(() => undefined);
    if (!renamed) await unlink(tmp).catch(() => undefined);
    throw ioError(renamed ? 'writeSafetensors: cannot fsync the directory of' : 'writeSafetensors: cannot write', path, err);
  }
}

/**
 * Writes tensors atomically: into a temp file next to `path`, fsync, rename over `path`, fsync the
 * directory. Tensor bytes are streamed, never concatenated. On failure the temp file is removed and
 * any previous file at `path` is untouched. Bad arguments → E_INVALID_ARGUMENT / E_SHAPE_MISMATCH;
 * OS failures → E_IO.
 */
export async function writeSafetensors(
  path: string,
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string>,
): Promise<void> {
  const { planned, header } = planFile(path, tensors, metadata);
  await writeFileAtomically(path, header, async (fh) => {
    for (const t of planned) await writeAll(fh, dataBytes(t, path));
  });
}

/** A tensor of a file whose data section is written by someone else (e.g. native code). */
export interface TensorLayout {
  name: string;
  dtype: SafetensorsDtype;
  shape: readonly number[];
}

/**
 * Creates a safetensors file atomically whose data section (tensors back to back, in the given
 * order) starts as zeros — a sparse file, so a huge bank costs no disk until written — and is then
 * filled by `fill(tmpPath, dataStart)` before the file is fsynced and renamed into place.
 */
export async function createSafetensorsFile(
  path: string,
  layout: readonly TensorLayout[],
  metadata: Record<string, string> | undefined,
  fill?: (tmpPath: string, dataStart: number) => Promise<void> | void,
): Promise<{ dataStart: number; dataBytes: number }> {
  const empty = new Uint8Array(0);
  const { header, total } = planFile(path, layout.map((t) => ({ ...t, data: empty })), metadata);
  let dataStart = 0;
  await writeFileAtomically(path, header, async (fh, tmp, start) => {
    dataStart = start;
    await fh.truncate(start + total);
    if (fill) await fill(tmp, start);
  });
  return { dataStart, dataBytes: total };
}

// ---------------------------------------------------------------------------------------------
// Reading

function corrupt(path: string, problem: string): HiermemError {
  return new HiermemError('E_CHECKPOINT_CORRUPT', `corrupt safetensors file ${path}: ${problem}`);
}

async function readExactly(fh: FileHandle, into: Uint8Array, position: number, path: string): Promise<void> {
  let done = 0;
  while (done < into.length) {
    const len = Math.min(IO_CHUNK, into.length - done);
    const { bytesRead } = await fh.read(into, done, len, position + done);
    if (bytesRead === 0) throw corrupt(path, `file ended early (needed ${into.length} bytes at offset ${position})`);
    done += bytesRead;
  }
}

/**
 * Finds a repeated key in any object of an already-valid JSON text. JSON.parse keeps the last
 * duplicate silently, which would let two readers disagree about a file's contents.
 */
function findDuplicateJsonKey(json: string): string | null {
  const stack: Array<{ keys: Set<string> | null; expectKey: boolean }> = [];
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      while (j < json.length && json.charCodeAt(j) !== 0x22) j += json.charCodeAt(j) === 0x5c /* \ */ ? 2 : 1;
      const top = stack[stack.length - 1];
      if (top?.keys && top.expectKey) {
        const key = JSON.parse(json.slice(i, j + 1)) as string; // normalises escapes: "\u0061" is "a"
        if (top.keys.has(key)) return key;
        top.keys.add(key);
        top.expectKey = false;
      }
      i = j;
    } else if (c === 0x7b /* { */) {
      stack.push({ keys: new Set(), expectKey: true });
    } else if (c === 0x5b /* [ */) {
      stack.push({ keys: null, expectKey: false });
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
    } else if (c === 0x2c /* , */) {
      const top = stack[stack.length - 1];
      if (top?.keys) top.expectKey = true;
    }
  }
  return null;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseHeader(path: string, headerBytes: Uint8Array, fileSize: number): SafetensorsHeader {
  const headerLength = headerBytes.length;
  const dataStart = 8 + headerLength;
  const dataLength = fileSize - dataStart;

  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw corrupt(path, 'header is not valid UTF-8');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw corrupt(path, `header is not valid JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  if (!isPlainObject(parsed)) throw corrupt(path, 'header is not a JSON object');
  const dup = findDuplicateJsonKey(text);
  if (dup !== null) throw corrupt(path, `header repeats the key ${JSON.stringify(dup)}`);

  let metadata: Record<string, string> = {};
  const entries: Array<[string, TensorInfo]> = [];
  for (const [name, raw] of Object.entries(parsed)) {
    if (name === METADATA_KEY) {
      if (!isPlainObject(raw)) throw corrupt(path, '__metadata__ is not an object');
      const md: Record<string, string> = {};
      for (const [k, v] of Object.entries(raw)) {
        if (typeof v !== 'string') throw corrupt(path, `__metadata__ value for ${JSON.stringify(k)} is not a string`);
        // defineProperty: a "__proto__" key must stay an ordinary entry.
        Object.defineProperty(md, k, { value: v, enumerable: true, writable: true, configurable: true });
      }
      metadata = md;
      continue;
    }
    const what = `tensor ${JSON.stringify(name)}`;
    if (!isPlainObject(raw)) throw corrupt(path, `${what} is not an object`);
    const { dtype, shape, data_offsets: offsets } = raw;
    if (typeof dtype !== 'string') throw corrupt(path, `${what} has no string dtype`);
    if (!isSafetensorsDtype(dtype)) throw corrupt(path, `${what} has unsupported dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape)) throw corrupt(path, `${what} has no shape array`);
    for (const d of shape) {
      if (!Number.isSafeInteger(d) || (d as number) < 0) {
        throw corrupt(path, `${what} has invalid dimension ${JSON.stringify(d)} in its shape`);
      }
    }
    if (!Array.isArray(offsets) || offsets.length !== 2) throw corrupt(path, `${what} has no [begin, end] data_offsets`);
    const [begin, end] = offsets as unknown[];
    if (!Number.isSafeInteger(begin) || !Number.isSafeInteger(end)) {
      throw corrupt(path, `${what} has data_offsets that are not safe integers`);
    }
    const b = begin as number;
    const e = end as number;
    if (b < 0 || e < b || e > dataLength) {
      throw corrupt(path, `${what} data_offsets [${b}, ${e}] lie outside the data section of ${dataLength} bytes`);
    }
    const expected = byteLengthOf(shape as number[], DTYPES[dtype].size);
    if (expected === null || expected !== e - b) {
      throw corrupt(
        path,
        `${what} of ${dtype} shape ${JSON.stringify(shape)} needs ${expected ?? 'too many'} bytes but data_offsets span ${e - b}`,
      );
    }
    entries.push([name, { dtype, shape: [...(shape as number[])], begin: b, end: e }]);
  }

  // Tensors must tile the data section exactly: no overlaps, no holes, nothing trailing.
  entries.sort((x, y) => x[1].begin - y[1].begin || x[1].end - y[1].end);
  let cursor = 0;
  for (const [name, info] of entries) {
    if (info.begin < cursor) throw corrupt(path, `tensor ${JSON.stringify(name)} overlaps the tensor before it`);
    if (info.begin > cursor) throw corrupt(path, `hole in the data section at bytes [${cursor}, ${info.begin})`);
    cursor = info.end;
  }
  if (cursor !== dataLength) {
    throw corrupt(path, `tensors cover ${cursor} bytes but the data section has ${dataLength}`);
  }
  return { headerLength, dataStart, tensors: new Map(entries), metadata };
}

async function openForRead(path: string): Promise<{ fh: FileHandle; size: number }> {
  if (typeof path !== 'string' || path.length === 0) {
    throw new HiermemError('E_INVALID_ARGUMENT', 'safetensors path must be a non-empty string');
  }
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    throw ioError('cannot open', path, err);
  }
  try {
    const st = await fh.stat();
    // A FIFO or device could block forever or never end.
    if (!st.isFile()) throw new HiermemError('E_IO', `cannot read ${path}: not a regular file`);
    return { fh, size: st.size };
  } catch (err) {
    await fh.close().catch(() => undefined);
    throw ioError('cannot stat', path, err);
  }
}

async function readHeaderFrom(fh: FileHandle, size: number, path: string): Promise<SafetensorsHeader> {
  if (size < 8) throw corrupt(path, `file is ${size} bytes, shorter than the 8-byte header length`);
  const prefix = new Uint8Array(8);
  await readExactly(fh, prefix, 0, path);
  const n = new DataView(prefix.buffer).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) throw corrupt(path, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  if (n > BigInt(size - 8)) throw corrupt(path, `header length ${n} exceeds the ${size - 8} bytes after the length field`);
  const headerBytes = new Uint8Array(Number(n));
  await readExactly(fh, headerBytes, 8, path);
  return parseHeader(path, headerBytes, size);
}

async function withFile<T>(path: string, body: (fh: FileHandle, size: number) => Promise<T>): Promise<T> {
  requireLittleEndian();
  const { fh, size } = await openForRead(path);
  try {
    return await body(fh, size);
  } catch (err) {
    throw ioError('cannot read', path, err);
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/** Reads and validates only the header (the file may be many GB). */
export async function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  return withFile(path, (fh, size) => readHeaderFrom(fh, size, path));
}

function checkExpectations(path: string, header: SafetensorsHeader, opts: ReadSafetensorsOptions): void {
  if (opts.expect === undefined) return;
  const pairs: Iterable<[string, TensorExpectation]> =
    opts.expect instanceof Map ? opts.expect.entries() : Object.entries(opts.expect);
  for (const [name, want] of pairs) {
    const got = header.tensors.get(name);
    if (got === undefined) throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${path}: missing tensor ${JSON.stringify(name)}`);
    if (want.dtype !== undefined && want.dtype !== got.dtype) {
      throw new HiermemError(
        'E_CONFIG_INCOMPATIBLE',
        `${path}: tensor ${JSON.stringify(name)} is ${got.dtype}, expected ${want.dtype}`,
      );
    }
    if (
      want.shape !== undefined &&
      (want.shape.length !== got.shape.length || want.shape.some((d, i) => d !== got.shape[i]))
    ) {
      throw new HiermemError(
        'E_CONFIG_INCOMPATIBLE',
        `${path}: tensor ${JSON.stringify(name)} has shape ${JSON.stringify(got.shape)}, expected ${JSON.stringify(want.shape)}`,
      );
    }
  }
}

/** Reads a whole file (or the tensors in opts.names) into freshly allocated, aligned typed arrays. */
export async function readSafetensors(path: string, opts: ReadSafetensorsOptions = {}): Promise<SafetensorsContents> {
  return withFile(path, async (fh, size) => {
    const header = await readHeaderFrom(fh, size, path);
    checkExpectations(path, header, opts);
    let selected: Array<[string, TensorInfo]>;
    if (opts.names === undefined) {
      selected = [...header.tensors];
    } else {
      const wanted = new Set(opts.names);
      for (const name of wanted) {
        if (!header.tensors.has(name)) {
          throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${path}: missing tensor ${JSON.stringify(name)}`);
        }
      }
      selected = [...header.tensors].filter(([name]) => wanted.has(name));
    }
    const tensors = new Map<string, LoadedTensor>();
    for (const [name, info] of selected) {
      const spec = DTYPES[info.dtype];
      const data = spec.make((info.end - info.begin) / spec.size);
      await readExactly(fh, new Uint8Array(data.buffer, 0, data.byteLength), header.dataStart + info.begin, path);
      tensors.set(name, { dtype: info.dtype, shape: info.shape, data });
    }
    return { tensors, metadata: header.metadata };
  });
}

/** A JSON value stored as a string in a file's __metadata__; missing or invalid → E_CHECKPOINT_CORRUPT. */
export function metadataJson(path: string, meta: Record<string, string>, key: string): unknown {
  const raw = meta[key];
  if (raw === undefined) throw new HiermemError('E_CHECKPOINT_CORRUPT', `${path}: metadata has no "${key}" entry`);
  try {
    return JSON.parse(raw);
  } catch {
    throw new HiermemError('E_CHECKPOINT_CORRUPT', `${path}: metadata "${key}" is not valid JSON`);
  }
}
