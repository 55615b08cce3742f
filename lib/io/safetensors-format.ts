/**
 * The safetensors format's vocabulary, shared by the reader (safetensors-read.ts) and the writer
 * (safetensors-write.ts): dtypes and their typed arrays, the public types, size arithmetic and
 * error helpers. lib/io/safetensors.ts re-exports the public part.
 */
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


export interface DtypeSpec {
  size: number;
  /** Name of the typed array class, compared via Symbol.toStringTag so arrays from other realms pass. */
  arrayTag: string;
  make(length: number): TensorData;
}

export const DTYPES: Readonly<Record<SafetensorsDtype, DtypeSpec>> = {
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
export const METADATA_KEY = '__metadata__';
/** Keep single read/write calls well under the 2 GiB per-call limit of fs. */
export const IO_CHUNK = 1 << 28;

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

export function requireLittleEndian(): void {
  if (!HOST_LITTLE_ENDIAN) {
    throw new HiermemError('E_IO', 'safetensors I/O is only supported on little-endian hosts');
  }
}

export function errnoText(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code && !err.message.startsWith(code) ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}

/** JSON for messages, without throwing on BigInt or cycles from untyped callers. */
export function show(v: unknown): string {
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

export function ioError(what: string, path: string, err: unknown): HiermemError {
  if (err instanceof HiermemError) return err;
  return new HiermemError('E_IO', `${what} ${path}: ${errnoText(err)}`, { cause: err });
}

/** product(shape) * size, or null if it exceeds Number.MAX_SAFE_INTEGER. */
export function byteLengthOf(shape: readonly number[], size: number): number | null {
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
