/**
 * The retriever's embedder contract: text in, one L2-normalised row per text out. The tree only ever
 * sees vectors, so any embedder that keeps this contract can route (the paper uses a frozen
 * sentence encoder, all-MiniLM-L6-v2; our default needs no model, see hashed-tfidf.ts).
 *
 * An embedder is saved with the tree it was used to fit (routing must use the exact same function at
 * training and inference), as small JSON in the tree file's metadata plus optional named tensors for
 * bulky fitted state (the TF-IDF document frequencies).
 */
import { HiermemError } from '../errors.js';
import type { SafetensorsDtype } from '../io/safetensors.js';
import { HASHED_TFIDF_TYPE, hashedTfidfFromJSON } from './hashed-tfidf.js';
import { ONNX_EMBEDDER_TYPE, onnxEmbedderFromJSON } from './onnx-embedder.js';

/** What a tree file records about its embedder; `type` selects the factory in embedderFromJSON. */
export interface EmbedderJSON {
  type: string;
  version: number;
  /** Type-specific settings; JSON values only. */
  [key: string]: unknown;
}

/** A tensor of fitted embedder state, stored in the tree file under `embedder.<name>`. */
export interface EmbedderTensor {
  name: string;
  dtype: Extract<SafetensorsDtype, 'F32' | 'I32'>;
  shape: number[];
  data: Float32Array | Int32Array;
}

export interface Embedder {
  readonly name: string;
  /** Width of every output row. */
  readonly dim: number;
  /** (texts.length, dim), row-major; each row has unit L2 norm (or is all zeros, see the embedder). */
  embed(texts: readonly string[]): Promise<Float32Array>;
  toJSON(): EmbedderJSON;
  /** Fitted state too large for JSON (optional). */
  stateTensors?(): EmbedderTensor[];
}

export interface EmbedderLoadOptions {
  /**
   * For model-backed embedders: the folder holding the model, overriding the one recorded in the
   * JSON (a tree fitted on one machine and used on another).
   */
  modelDir?: string;
}

/** Rebuilds an embedder from its JSON and the tensors it saved (names without the `embedder.` prefix). */
export type EmbedderFactory = (
  json: EmbedderJSON,
  tensors: ReadonlyMap<string, Float32Array | Int32Array>,
  options: EmbedderLoadOptions,
) => Embedder | Promise<Embedder>;

// Built-in types are looked up first, so a custom registration cannot shadow them. The built-in
// modules import only types from this file, so there is no import cycle at run time.
const BUILT_IN: ReadonlyMap<string, EmbedderFactory> = new Map<string, EmbedderFactory>([
  [HASHED_TFIDF_TYPE, hashedTfidfFromJSON],
  [ONNX_EMBEDDER_TYPE, onnxEmbedderFromJSON],
]);
const registry = new Map<string, EmbedderFactory>();

/** Makes a custom embedder type loadable from tree files. Built-in types cannot be replaced. */
export function registerEmbedder(type: string, factory: EmbedderFactory): void {
  if (typeof type !== 'string' || type.length === 0 || typeof factory !== 'function') {
    throw new HiermemError('E_INVALID_ARGUMENT', 'registerEmbedder: need a non-empty type and a factory function');
  }
  if (BUILT_IN.has(type)) throw new HiermemError('E_INVALID_ARGUMENT', `registerEmbedder: ${JSON.stringify(type)} is built in`);
  registry.set(type, factory);
}

/** Is `v` a plain JSON object with a string `type` and an integer `version`? */
export function isEmbedderJSON(v: unknown): v is EmbedderJSON {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const o = v as Record<string, unknown>;
  return typeof o.type === 'string' && Number.isInteger(o.version);
}

/**
 * Rebuilds a saved embedder. Unknown type → E_CONFIG_INCOMPATIBLE; malformed JSON or tensors →
 * E_CHECKPOINT_CORRUPT (from the factory).
 */
export async function embedderFromJSON(
  json: unknown,
  tensors: ReadonlyMap<string, Float32Array | Int32Array> = new Map(),
  options: EmbedderLoadOptions = {},
): Promise<Embedder> {
  if (!isEmbedderJSON(json)) {
    throw new HiermemError('E_CHECKPOINT_CORRUPT', 'embedder JSON must be an object with a string "type" and an integer "version"');
  }
  const factory = BUILT_IN.get(json.type) ?? registry.get(json.type);
  if (factory === undefined) {
    const known = [...BUILT_IN.keys(), ...registry.keys()].join(', ');
    throw new HiermemError('E_CONFIG_INCOMPATIBLE', `unknown embedder type ${JSON.stringify(json.type)} (known: ${known})`);
  }
  return factory(json, tensors, options);
}
