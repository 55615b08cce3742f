/**
 * Reading safetensors files. The file is treated as hostile: the whole header is validated (dtypes,
 * shapes, offsets that tile the data section exactly, no repeated keys) before any tensor buffer
 * is allocated.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { HiermemError } from '../errors.js';
import {
  DTYPES, IO_CHUNK, MAX_HEADER_BYTES, METADATA_KEY, byteLengthOf, ioError, isSafetensorsDtype, requireLittleEndian,
  type LoadedTensor, type ReadSafetensorsOptions, type SafetensorsContents, type SafetensorsHeader, type TensorExpectation,
  type TensorInfo,
} from './safetensors-format.js';

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
