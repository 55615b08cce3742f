/**
 * Every failure hiermem reports on purpose is a HiermemError with a stable `code`.
 * Codes are part of the public contract: extend the list, never rename an entry.
 */
export type HiermemErrorCode =
  | 'E_INVALID_ARGUMENT' // a value is of the wrong type or out of its allowed range
  | 'E_SHAPE_MISMATCH' // a buffer's length does not match the shape the call needs
  | 'E_TOKEN_OUT_OF_RANGE' // a token id is negative or >= vocabSize
  | 'E_CONFIG_INVALID' // a model / memory / training config cannot be built
  | 'E_CONFIG_INCOMPATIBLE' // a checkpoint or bank does not match the config it is loaded into
  | 'E_CHECKPOINT_CORRUPT' // a checkpoint / safetensors file is truncated or malformed
  | 'E_IO' // a read or write failed (disk full, permission, missing file)
  | 'E_NON_FINITE' // a loss or gradient became NaN or infinite
  | 'E_BUSY' // a native object is already running an asynchronous call
  | 'E_DISPOSED' // the object was disposed
  | 'E_NATIVE_UNAVAILABLE' // the native addon could not be loaded
  | 'E_ABORTED' // an AbortSignal fired
  | 'E_BACKEND_UNAVAILABLE' // the requested compute backend (CUDA) cannot be used here; the message says why
  | 'E_CUDA' // a CUDA call failed on the device (out of memory, launch failure, ...)
  | 'E_CACHE_FULL' // a KV cache already holds seqLen positions (generation falls back to a sliding window)
  | 'E_COMM'; // a collective across processes (MPI) failed or timed out: a peer died, hangs or the network broke

export class HiermemError extends Error {
  readonly code: HiermemErrorCode;
  constructor(code: HiermemErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'HiermemError';
    this.code = code;
  }
}

/** Throws E_INVALID_ARGUMENT unless `cond` holds. */
export function check(cond: unknown, code: HiermemErrorCode, message: string): asserts cond {
  if (!cond) throw new HiermemError(code, message);
}

/**
 * Native code throws plain Errors whose message starts with "[E_CODE] ".
 * This turns them back into typed HiermemErrors; anything else is rethrown unchanged.
 */
export function fromNativeError(err: unknown): unknown {
  if (err instanceof Error && !(err instanceof HiermemError)) {
    const m = /^\[(E_[A-Z_]+)\] ([\s\S]*)$/.exec(err.message);
    if (m) return new HiermemError(m[1] as HiermemErrorCode, m[2] as string, { cause: err });
  }
  return err;
}
