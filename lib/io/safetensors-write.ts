/**
 * Writing safetensors files: validation of what is written, the header, and the atomic
 * temp-file → fsync → rename sequence shared by whole-file writes and pre-sized files whose data
 * section native code fills.
 */
import { open, readdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { HiermemError } from '../errors.js';
import {
  DTYPES, IO_CHUNK, MAX_HEADER_BYTES, METADATA_KEY, byteLengthOf, ioError, isSafetensorsDtype, requireLittleEndian, show,
  type SafetensorsDtype, type TensorToWrite,
} from './safetensors-format.js';

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
