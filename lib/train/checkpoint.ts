/**
 * Checkpoints: one safetensors file (PyTorch's `safetensors` opens it) holding the model's named
 * tensors, optionally the AdamW moments and the trainer's RNG state, with the configs as JSON in
 * the header's __metadata__. Written atomically (temp file, fsync, rename) by writeSafetensors.
 */
import { HiermemError } from '../errors.js';
import { metadataJson, readSafetensors, writeSafetensors, type TensorToWrite, type TensorExpectation } from '../io/safetensors.js';
import { AnchorModel } from '../model/anchor.js';
import { type ModelConfig, modelConfigRecord, resolveModelConfig, toDims } from '../model/config.js';
import { loadNative } from '../native.js';
import { ByteTokenizer, type Tokenizer, checkSameTokenizer, tokenizerFromJSON } from '../data/tokenizer.js';
import { AdamW, type AdamWOptions } from './adamw.js';

export const CHECKPOINT_FORMAT = 'hiermem-checkpoint';
export const CHECKPOINT_VERSION = '1';

/** Trainer progress saved with a checkpoint so a run can resume exactly. */
export interface TrainerState {
  step: number;
  tokensSeen: number;
  /** Data sampler RNG state (xoshiro128** words). */
  rngState?: number[];
  [key: string]: unknown;
}

export interface CheckpointContents {
  model: AnchorModel;
  tokenizer: Tokenizer;
  optimizer?: AdamW;
  trainer?: TrainerState;
  /** Further string metadata (e.g. the memory bank beside this checkpoint). */
  extraMetadata?: Record<string, string>;
}

export async function saveCheckpoint(path: string, c: CheckpointContents): Promise<void> {
  const tensors: TensorToWrite[] = c.model.layout.map((s) => ({
    name: s.name,
    dtype: 'F32',
    shape: s.shape,
    data: c.model.tensor(s.name),
  }));
  const metadata: Record<string, string> = {
    ...c.extraMetadata,
    format: CHECKPOINT_FORMAT,
    version: CHECKPOINT_VERSION,
    model_config: JSON.stringify(modelConfigRecord(c.model.config)),
    tokenizer: JSON.stringify(c.tokenizer.toJSON()),
  };
  if (c.optimizer) {
    const n = c.model.paramCount;
    tensors.push({ name: 'optimizer.adamw.m', dtype: 'F32', shape: [n], data: c.optimizer.m });
    tensors.push({ name: 'optimizer.adamw.v', dtype: 'F32', shape: [n], data: c.optimizer.v });
    metadata.optimizer = JSON.stringify({ ...c.optimizer.options, stepCount: c.optimizer.stepCount });
  }
  if (c.trainer) metadata.trainer = JSON.stringify(c.trainer);
  await writeSafetensors(path, tensors, metadata);
}


export interface LoadCheckpointOptions {
  maxBatch?: number;
  /** Load the optimizer state too (default true when present). */
  withOptimizer?: boolean;
  /** The tokenizer the caller will use: another than the checkpoint's → E_CONFIG_INCOMPATIBLE. */
  tokenizer?: Tokenizer;
}

/**
 * The tokenizer a checkpoint's metadata records. Checkpoints from before tokenizers were
 * recorded have none and are byte-tokenized; a record that cannot be rebuilt → E_CHECKPOINT_CORRUPT
 * (an unknown type or version stays E_CONFIG_INCOMPATIBLE: a newer hiermem's checkpoint).
 */
export function tokenizerOfMetadata(path: string, meta: Record<string, string>): Tokenizer {
  if (meta.tokenizer === undefined) return new ByteTokenizer();
  try {
    return tokenizerFromJSON(metadataJson(path, meta, 'tokenizer'));
  } catch (e) {
    if (e instanceof HiermemError && e.code === 'E_CONFIG_INVALID') {
      throw new HiermemError('E_CHECKPOINT_CORRUPT', `${path}: its tokenizer record is malformed: ${e.message}`, { cause: e });
    }
    throw e;
  }
}

/** The tokenizer recorded in a checkpoint (file or run folder resolved by the caller), from its header only. */
export async function readCheckpointTokenizer(path: string): Promise<Tokenizer> {
  const { readSafetensorsHeader } = await import('../io/safetensors.js');
  return tokenizerOfMetadata(path, (await readSafetensorsHeader(path)).metadata);
}

export async function loadCheckpoint(path: string, options: LoadCheckpointOptions = {}): Promise<CheckpointContents> {
  // First pass: header only (cheap), to validate the metadata before reading tensor data.
  const { readSafetensorsHeader } = await import('../io/safetensors.js');
  const header = await readSafetensorsHeader(path);
  const meta = header.metadata;
  if (meta.format !== CHECKPOINT_FORMAT) {
    throw new HiermemError('E_CHECKPOINT_CORRUPT', `${path}: not a hiermem checkpoint (metadata.format = ${String(meta.format)})`);
  }
  if (meta.version !== CHECKPOINT_VERSION) {
    throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${path}: checkpoint version ${String(meta.version)}, this build reads ${CHECKPOINT_VERSION}`);
  }
  const rawCfg = metadataJson(path, meta, 'model_config');
  if (rawCfg === null || typeof rawCfg !== 'object') throw new HiermemError('E_CHECKPOINT_CORRUPT', `${path}: model_config is not an object`);
  let config: ModelConfig;
  try {
    config = resolveModelConfig(rawCfg as ModelConfig);
  } catch (e) {
    throw new HiermemError('E_CHECKPOINT_CORRUPT', `${path}: invalid model_config: ${(e as Error).message}`, { cause: e });
  }
  const tokenizer = tokenizerOfMetadata(path, meta);
  if (options.tokenizer) checkSameTokenizer(tokenizer, options.tokenizer, path);
  // an imported model may pad its embedding rows past the tokenizer's ids; ids past the model's rows cannot be
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${path}: tokenizer vocab ${tokenizer.vocabSize} > model vocab ${config.vocabSize}`);
  }
  // The file's tensors must match the layout the config implies before the model is allocated, so
  // a config naming a huge model is refused by the file's size, not by running out of memory.
  const layout = loadNative().anchorLayout(toDims(config));
  for (const s of layout) {
    const t = header.tensors.get(s.name);
    if (t === undefined || t.dtype !== 'F32' || t.shape.length !== s.shape.length || t.shape.some((d, i) => d !== s.shape[i])) {
      throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${path}: tensor ${s.name} is ${t ? `${t.dtype} [${t.shape.join(', ')}]` : 'missing'}, model_config needs F32 [${s.shape.join(', ')}]`);
    }
  }
  const model = AnchorModel.create(config, { maxBatch: options.maxBatch ?? 8, skipInit: true });
  const expect = new Map<string, TensorExpectation>(model.layout.map((s) => [s.name, { dtype: 'F32', shape: s.shape }]));
  const wantOptimizer = (options.withOptimizer ?? true) && meta.optimizer !== undefined;
  if (wantOptimizer) {
    expect.set('optimizer.adamw.m', { dtype: 'F32', shape: [model.paramCount] });
    expect.set('optimizer.adamw.v', { dtype: 'F32', shape: [model.paramCount] });
  }
  const file = await readSafetensors(path, { expect, names: expect.keys() });
  for (const s of model.layout) model.tensor(s.name).set(file.tensors.get(s.name)!.data as Float32Array);
  const out: CheckpointContents = { model, tokenizer };
  const extra = Object.fromEntries(Object.entries(meta).filter(([k]) => !['format', 'version', 'model_config', 'tokenizer', 'optimizer', 'trainer'].includes(k)));
  if (Object.keys(extra).length) out.extraMetadata = extra;
  if (wantOptimizer) {
    const o = metadataJson(path, meta, 'optimizer') as Partial<AdamWOptions> & { stepCount?: unknown };
    if (typeof o !== 'object' || o === null || typeof o.stepCount !== 'number' || !Number.isInteger(o.stepCount) || o.stepCount < 0) {
      throw new HiermemError('E_CHECKPOINT_CORRUPT', `${path}: optimizer metadata is malformed`);
    }
    const { stepCount, ...opts } = o;
    const opt = new AdamW(model, opts);
    opt.m.set(file.tensors.get('optimizer.adamw.m')!.data as Float32Array);
    opt.v.set(file.tensors.get('optimizer.adamw.v')!.data as Float32Array);
    opt.stepCount = stepCount as number;
    out.optimizer = opt;
  }
  if (meta.trainer !== undefined) {
    const t = metadataJson(path, meta, 'trainer') as TrainerState;
    if (typeof t !== 'object' || t === null || !Number.isInteger(t.step) || typeof t.tokensSeen !== 'number') {
      throw new HiermemError('E_CHECKPOINT_CORRUPT', `${path}: trainer metadata is malformed`);
    }
    out.trainer = t;
  }
  return out;
}
