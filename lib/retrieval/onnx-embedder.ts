/**
 * A sentence-encoder embedder run by onnxruntime-node, for a model folder the user supplies, e.g.
 * all-MiniLM-L6-v2 exported to ONNX (the paper's retriever): `model.onnx` plus a BERT WordPiece
 * `vocab.txt`. Output = mean of the token embeddings over the attention mask, L2-normalised, which
 * is what sentence-transformers computes for MiniLM.
 *
 * onnxruntime-node is an optional dependency (about 110 MB): it is loaded by dynamic import on first
 * use, and its absence is E_NATIVE_UNAVAILABLE, never a failure to load hiermem.
 *
 * The model file's and vocab's SHA-256 are recorded in the tree file, so a tree is never used with
 * a different model than the one it was fitted with (E_CONFIG_INCOMPATIBLE).
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { HiermemError } from '../errors.js';
import type { Embedder, EmbedderJSON, EmbedderLoadOptions } from './embedder.js';
import { checkInt, checkTexts, normalizeRows } from './common.js';
import { WordPieceTokenizer } from './wordpiece.js';

export const ONNX_EMBEDDER_TYPE = 'onnx';
const VERSION = 1;

// The slice of onnxruntime-node's API used here, declared locally so hiermem compiles without it.
interface OrtTensor {
  readonly dims: readonly number[];
  readonly data: unknown;
  readonly type: string;
}
interface OrtSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
  release(): Promise<void>;
}
interface OrtModule {
  Tensor: new (type: 'int64', data: BigInt64Array, dims: readonly number[]) => OrtTensor;
  InferenceSession: { create(model: Uint8Array, options?: Record<string, unknown>): Promise<OrtSession> };
}

let ortPromise: Promise<OrtModule> | null = null;

/** Loads onnxruntime-node once; E_NATIVE_UNAVAILABLE when it is not installed or cannot load. */
export function loadOnnxRuntime(): Promise<OrtModule> {
  ortPromise ??= (async () => {
    const name = 'onnxruntime-node'; // a variable, so TypeScript does not need the package's types
    try {
      const mod = (await import(name)) as Partial<OrtModule> & { default?: Partial<OrtModule> };
      const ort = mod.InferenceSession !== undefined ? mod : mod.default;
      if (ort?.InferenceSession === undefined || ort.Tensor === undefined) throw new Error('unexpected module shape');
      return ort as OrtModule;
    } catch (err) {
      ortPromise = null; // let a later call retry (e.g. after installing it)
      throw new HiermemError(
        'E_NATIVE_UNAVAILABLE',
        `the ONNX embedder needs the optional dependency onnxruntime-node (npm install onnxruntime-node@1.30.0): ${(err as Error).message}`,
        { cause: err },
      );
    }
  })();
  return ortPromise;
}

/** True when onnxruntime-node can be loaded here. */
export async function onnxRuntimeAvailable(): Promise<boolean> {
  try {
    await loadOnnxRuntime();
    return true;
  } catch {
    return false;
  }
}

export interface OnnxEmbedderOptions {
  /** Model file inside the folder (default "model.onnx"). */
  modelFile?: string;
  /** WordPiece vocabulary inside the folder (default "vocab.txt"). */
  vocabFile?: string;
  /** Word pieces per text including [CLS]/[SEP] (default 256, sentence-transformers' MiniLM setting). */
  maxLength?: number;
  /** Uncased tokenization (default true). */
  lowercase?: boolean;
  /** Texts per inference call (default 32). */
  batchSize?: number;
  /** Output holding the token embeddings (default: "last_hidden_state" or "token_embeddings" if present, else the first). */
  outputName?: string;
  /** onnxruntime intra-op threads (default: onnxruntime's choice). */
  threads?: number;
}

/** Everything needed to reopen the same model the same way. */
interface OnnxSettings {
  /** Absolute path of the model folder when the tree was fitted. */
  modelDir: string;
  modelFile: string;
  vocabFile: string;
  maxLength: number;
  lowercase: boolean;
  batchSize: number;
  outputName: string;
  dim: number;
  modelSha256: string;
  vocabSha256: string;
}

export type OnnxEmbedderJSON = EmbedderJSON & OnnxSettings & { type: typeof ONNX_EMBEDDER_TYPE };

export class OnnxEmbedder implements Embedder {
  readonly name: string;
  readonly dim: number;
  readonly tokenizer: WordPieceTokenizer;
  private readonly session: OrtSession;
  private readonly ort: OrtModule;
  private readonly settings: OnnxSettings;
  private readonly hasTokenTypes: boolean;
  private disposed = false;

  private constructor(
    ort: OrtModule,
    session: OrtSession,
    tokenizer: WordPieceTokenizer,
    settings: OnnxSettings,
  ) {
    this.ort = ort;
    this.session = session;
    this.tokenizer = tokenizer;
    this.settings = settings;
    this.dim = settings.dim;
    this.hasTokenTypes = session.inputNames.includes('token_type_ids');
    this.name = `onnx(${settings.modelDir}, dim=${settings.dim})`;
  }

  /**
   * Opens `modelDir` (model.onnx + vocab.txt). Missing files → E_IO; onnxruntime-node absent →
   * E_NATIVE_UNAVAILABLE; a model without input_ids/attention_mask inputs or with an output that is
   * not (batch, sequence, hidden) → E_CONFIG_INVALID.
   */
  static async load(modelDir: string, options: OnnxEmbedderOptions = {}): Promise<OnnxEmbedder> {
    if (typeof modelDir !== 'string' || modelDir.length === 0) {
      throw new HiermemError('E_INVALID_ARGUMENT', 'OnnxEmbedder.load: modelDir must be a non-empty string');
    }
    const dir = resolve(modelDir);
    const modelFile = options.modelFile ?? 'model.onnx';
    const vocabFile = options.vocabFile ?? 'vocab.txt';
    const maxLength = checkInt(options.maxLength ?? 256, 2, 1 << 16, 'OnnxEmbedder maxLength');
    const batchSize = checkInt(options.batchSize ?? 32, 1, 1 << 16, 'OnnxEmbedder batchSize');
    const lowercase = options.lowercase ?? true;
    const ort = await loadOnnxRuntime();
    const modelBytes = await readBytes(join(dir, modelFile));
    const vocabBytes = await readBytes(join(dir, vocabFile));
    const tokenizer = WordPieceTokenizer.fromText(new TextDecoder().decode(vocabBytes), { maxLength, lowercase });
    const sessionOptions: Record<string, unknown> = { graphOptimizationLevel: 'all' };
    if (options.threads !== undefined) sessionOptions.intraOpNumThreads = checkInt(options.threads, 1, 1024, 'OnnxEmbedder threads');
    let session: OrtSession;
    try {
      session = await ort.InferenceSession.create(modelBytes, sessionOptions);
    } catch (err) {
      throw new HiermemError('E_CONFIG_INVALID', `${join(dir, modelFile)}: onnxruntime cannot load the model: ${(err as Error).message}`, { cause: err });
    }
    try {
      const where = join(dir, modelFile);
      for (const need of ['input_ids', 'attention_mask']) {
        if (!session.inputNames.includes(need)) {
          throw new HiermemError('E_CONFIG_INVALID', `${where}: the model has no ${need} input (inputs: ${session.inputNames.join(', ')})`);
        }
      }
      const outputName =
        options.outputName ?? ['last_hidden_state', 'token_embeddings'].find((n) => session.outputNames.includes(n)) ?? session.outputNames[0]!;
      if (!session.outputNames.includes(outputName)) {
        throw new HiermemError('E_CONFIG_INVALID', `${where}: the model has no output ${outputName} (outputs: ${session.outputNames.join(', ')})`);
      }
      const settings: OnnxSettings = {
        modelDir: dir,
        modelFile,
        vocabFile,
        maxLength,
        lowercase,
        batchSize,
        outputName,
        dim: 0,
        modelSha256: sha256(modelBytes),
        vocabSha256: sha256(vocabBytes),
      };
      // The width is whatever the model produces; one tiny run (on "[CLS] [SEP]") finds it.
      const hidden = await new OnnxEmbedder(ort, session, tokenizer, settings).runBatch([tokenizer.encode('')]);
      return new OnnxEmbedder(ort, session, tokenizer, { ...settings, dim: hidden.dims[2]! });
    } catch (err) {
      await session.release().catch(() => undefined);
      throw err;
    }
  }

  async embed(texts: readonly string[]): Promise<Float32Array> {
    checkTexts(texts, 'OnnxEmbedder.embed');
    if (this.disposed) throw new HiermemError('E_DISPOSED', 'OnnxEmbedder.embed: the embedder was disposed');
    const dim = this.dim;
    const out = new Float32Array(texts.length * dim);
    for (let b0 = 0; b0 < texts.length; b0 += this.settings.batchSize) {
      const batch = texts.slice(b0, b0 + this.settings.batchSize).map((t) => this.tokenizer.encode(t));
      const hidden = await this.runBatch(batch);
      const [, seq, width] = hidden.dims as [number, number, number];
      if (width !== dim) throw new HiermemError('E_SHAPE_MISMATCH', `onnx embedder: the model returned width ${width}, expected ${dim}`);
      const h = hidden.data as Float32Array;
      // Mean over the real tokens (the attention mask), as sentence-transformers' mean pooling.
      const acc = new Float64Array(dim);
      for (let i = 0; i < batch.length; i++) {
        const len = batch[i]!.length;
        acc.fill(0);
        for (let t = 0; t < len; t++) {
          const ho = (i * seq + t) * dim;
          for (let j = 0; j < dim; j++) acc[j] = acc[j]! + h[ho + j]!;
        }
        const o = (b0 + i) * dim;
        for (let j = 0; j < dim; j++) out[o + j] = acc[j]! / len;
      }
    }
    normalizeRows(out, texts.length, dim);
    return out;
  }

  /** Runs one padded batch; returns the token embeddings (batch, seq, hidden) as float32. */
  private async runBatch(batch: readonly Int32Array[]): Promise<OrtTensor> {
    const n = batch.length;
    const seq = Math.max(...batch.map((b) => b.length));
    const ids = new BigInt64Array(n * seq).fill(BigInt(this.tokenizer.padId));
    const mask = new BigInt64Array(n * seq);
    batch.forEach((b, i) => {
      for (let t = 0; t < b.length; t++) {
        ids[i * seq + t] = BigInt(b[t]!);
        mask[i * seq + t] = 1n;
      }
    });
    const feeds: Record<string, OrtTensor> = {
      input_ids: new this.ort.Tensor('int64', ids, [n, seq]),
      attention_mask: new this.ort.Tensor('int64', mask, [n, seq]),
    };
    if (this.hasTokenTypes) feeds.token_type_ids = new this.ort.Tensor('int64', new BigInt64Array(n * seq), [n, seq]);
    let result: Record<string, OrtTensor>;
    try {
      result = await this.session.run(feeds);
    } catch (err) {
      throw new HiermemError('E_CONFIG_INVALID', `onnx embedder: inference failed: ${(err as Error).message}`, { cause: err });
    }
    const out = result[this.settings.outputName];
    if (out === undefined || out.type !== 'float32' || out.dims.length !== 3 || out.dims[0] !== n || out.dims[1] !== seq) {
      throw new HiermemError(
        'E_CONFIG_INVALID',
        `onnx embedder: output ${this.settings.outputName} must be float32 (batch, sequence, hidden) = (${n}, ${seq}, *), got ${out?.type} ${JSON.stringify(out?.dims)}`,
      );
    }
    return out;
  }

  toJSON(): OnnxEmbedderJSON {
    return { type: ONNX_EMBEDDER_TYPE, version: VERSION, ...this.settings };
  }

  /** Releases the onnxruntime session; later embed() calls throw E_DISPOSED. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.session.release();
  }
}

/**
 * The factory behind embedderFromJSON: reopens the model (from options.modelDir when given) and checks
 * that it is byte-identical to the one the tree was fitted with.
 */
export async function onnxEmbedderFromJSON(
  json: EmbedderJSON,
  _tensors: ReadonlyMap<string, Float32Array | Int32Array>,
  options: EmbedderLoadOptions,
): Promise<OnnxEmbedder> {
  if (json.version !== VERSION) {
    throw new HiermemError('E_CONFIG_INCOMPATIBLE', `onnx embedder version ${String(json.version)}, this build reads ${VERSION}`);
  }
  const j = json as Partial<OnnxEmbedderJSON>;
  const str = (v: unknown): v is string => typeof v === 'string' && v.length > 0;
  if (
    !str(j.modelDir) || !str(j.modelFile) || !str(j.vocabFile) || !str(j.outputName) || !str(j.modelSha256) || !str(j.vocabSha256) ||
    typeof j.lowercase !== 'boolean' || !Number.isInteger(j.maxLength) || !Number.isInteger(j.batchSize) || !Number.isInteger(j.dim)
  ) {
    throw new HiermemError('E_CHECKPOINT_CORRUPT', 'onnx embedder JSON is malformed');
  }
  const embedder = await OnnxEmbedder.load(options.modelDir ?? j.modelDir, {
    modelFile: j.modelFile,
    vocabFile: j.vocabFile,
    maxLength: j.maxLength,
    lowercase: j.lowercase,
    batchSize: j.batchSize,
    outputName: j.outputName,
  });
  const got = embedder.toJSON();
  if (got.modelSha256 !== j.modelSha256 || got.vocabSha256 !== j.vocabSha256 || got.dim !== j.dim) {
    await embedder.dispose();
    throw new HiermemError(
      'E_CONFIG_INCOMPATIBLE',
      `the model in ${got.modelDir} is not the one the tree was fitted with (SHA-256 or width differs)`,
    );
  }
  return embedder;
}

async function readBytes(path: string): Promise<Uint8Array> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new HiermemError('E_IO', `cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}
