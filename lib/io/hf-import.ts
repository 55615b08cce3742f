/**
 * A Hugging Face model folder (config.json; model.safetensors or model.safetensors.index.json and
 * its shards; tokenizer.json) → an AnchorModel with its tokenizer. bf16 and f16 weights become f32 exactly. Every file is
 * treated as hostile: headers are validated before data is read, every tensor's dtype and shape
 * are checked against what config.json implies, and a tensor the anchor has no place for is
 * refused rather than dropped. (Saving the checkpoint is lib/cli/import.ts's.)
 */
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { HiermemError } from '../errors.js';
import { AnchorModel } from '../model/anchor.js';
import { loadHfTokenizer, type HfTokenizer } from '../data/hf-tokenizer.js';
import { checkSameTokenizer, type Tokenizer } from '../data/tokenizer.js';
import { readSafetensors, readSafetensorsHeader } from './safetensors.js';
import type { LoadedTensor, TensorInfo } from './safetensors-format.js';
import { modelConfigFromHf, type HfConfigImport } from './hf-config.js';
import { elementCount, hfTensorPlan, isIgnorableHfTensor } from './hf-tensors.js';

/** Checkpoint metadata key holding the config.json a model was imported from (export keeps its other fields). */
export const HF_CONFIG_METADATA = 'hf_config';
export const HF_INDEX_FILE = 'model.safetensors.index.json';
export const HF_WEIGHTS_FILE = 'model.safetensors';

export interface LoadHfOptions {
  /** Context length (default: max_position_embeddings, at most DEFAULT_IMPORT_SEQ_LEN). */
  seqLen?: number;
  /** Largest training batch the model will see (sizes activation buffers). Default 1. */
  maxBatch?: number;
  /** The tokenizer the caller will use: another than the folder's → E_CONFIG_INCOMPATIBLE. */
  tokenizer?: Tokenizer;
}

export interface LoadedHfModel extends HfConfigImport {
  model: AnchorModel;
  tokenizer: HfTokenizer;
  /** config.json as read. */
  hfConfig: Record<string, unknown>;
  /** dtype → number of tensors of it in the files. */
  dtypes: Record<string, number>;
}

function corrupt(file: string, why: string): HiermemError {
  return new HiermemError('E_CHECKPOINT_CORRUPT', `${file}: ${why}`);
}

async function readJsonFile(file: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new HiermemError('E_IO', `cannot read ${what} ${file}: ${(e as Error).message}`, { cause: e });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new HiermemError('E_CONFIG_INVALID', `${file}: not valid JSON (${(e as Error).message})`, { cause: e });
  }
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}

/** A folder holding a Hugging Face model (its config.json), as opposed to a hiermem run folder or checkpoint file. */
export async function isHfModelDir(p: string): Promise<boolean> {
  try {
    if (!(await stat(p)).isDirectory()) return false;
  } catch {
    return false;
  }
  return isFile(path.join(p, 'config.json'));
}

/**
 * Where each tensor lives: model.safetensors alone, or the shards model.safetensors.index.json
 * names (its weight_map: tensor → file name in the same folder).
 */
async function weightFiles(dir: string): Promise<Map<string, string>> {
  const single = path.join(dir, HF_WEIGHTS_FILE);
  const indexFile = path.join(dir, HF_INDEX_FILE);
  if (await isFile(single)) {
    const h = await readSafetensorsHeader(single);
    return new Map([...h.tensors.keys()].map((n) => [n, single]));
  }
  if (!(await isFile(indexFile))) {
    throw new HiermemError('E_IO', `${dir} has neither ${HF_WEIGHTS_FILE} nor ${HF_INDEX_FILE} (PyTorch .bin weights are not read: save the model with safetensors)`);
  }
  const idx = await readJsonFile(indexFile, 'index');
  const map = typeof idx === 'object' && idx !== null && !Array.isArray(idx) ? (idx as Record<string, unknown>).weight_map : undefined;
  if (typeof map !== 'object' || map === null || Array.isArray(map)) throw corrupt(indexFile, 'has no "weight_map" object of tensor name → shard file');
  const out = new Map<string, string>();
  for (const [name, file] of Object.entries(map)) {
    if (typeof file !== 'string' || file.length === 0 || path.basename(file) !== file || file === '.' || file === '..') {
      throw corrupt(indexFile, `weight_map[${JSON.stringify(name)}] is ${JSON.stringify(file)}, not a file name in the model folder`);
    }
    out.set(name, path.join(dir, file));
  }
  if (out.size === 0) throw corrupt(indexFile, 'weight_map is empty');
  // every shard must hold exactly the tensors the index gives it: a stale or truncated shard is caught here
  const byFile = new Map<string, string[]>();
  for (const [name, file] of out) byFile.set(file, [...(byFile.get(file) ?? []), name]);
  for (const [file, names] of byFile) {
    const h = await readSafetensorsHeader(file);
    for (const n of names) if (!h.tensors.has(n)) throw corrupt(indexFile, `says ${n} is in ${path.basename(file)}, which has no such tensor`);
    for (const n of h.tensors.keys()) if (out.get(n) !== file) throw corrupt(indexFile, `does not list ${n}, which ${path.basename(file)} holds`);
  }
  return out;
}

/** IEEE half → float (exact: every half is a float). */
function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f, f = h & 0x3ff;
  if (e === 0) return sign * f * 2 ** -24;
  if (e === 31) return f ? NaN : sign * Infinity;
  return sign * (1 + f / 1024) * 2 ** (e - 15);
}

/** A loaded F32 / BF16 / F16 tensor as float32 values (bf16 is the high half of a float32). */
function toFloat32(t: LoadedTensor): Float32Array {
  if (t.dtype === 'F32') return t.data as Float32Array;
  const src = t.data as Uint16Array;
  if (t.dtype === 'BF16') {
    const bits = new Uint32Array(src.length);
    for (let i = 0; i < src.length; i++) bits[i] = src[i]! << 16;
    return new Float32Array(bits.buffer);
  }
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = halfToFloat(src[i]!);
  return out;
}

const FLOAT_DTYPES = new Set(['F32', 'BF16', 'F16']);

/**
 * Reads a Hugging Face model folder into an AnchorModel (see the file comment). Malformed files →
 * E_CHECKPOINT_CORRUPT; a config or tensor the anchor cannot represent → E_CONFIG_INCOMPATIBLE;
 * a bad config.json value → E_CONFIG_INVALID; a missing file → E_IO.
 */
export async function loadHfModel(dir: string, opts: LoadHfOptions = {}): Promise<LoadedHfModel> {
  const configFile = path.join(dir, 'config.json');
  const hfConfig = await readJsonFile(configFile, 'model config');
  const imported = modelConfigFromHf(hfConfig, configFile, opts.seqLen !== undefined ? { seqLen: opts.seqLen } : {});
  const { config } = imported;
  const tokFile = path.join(dir, 'tokenizer.json');
  if (!(await isFile(tokFile))) throw new HiermemError('E_IO', `${dir} has no tokenizer.json (a SentencePiece tokenizer.model alone is not read: save the tokenizer with transformers to get tokenizer.json)`);
  const tokenizer = await loadHfTokenizer(tokFile);
  if (opts.tokenizer) checkSameTokenizer(tokenizer, opts.tokenizer, dir);
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${dir}: tokenizer.json has ids up to ${tokenizer.vocabSize - 1} but the model's vocab_size is ${config.vocabSize}`);
  }

  const files = await weightFiles(dir);
  // 9 tensors a layer at least: a config claiming more layers than the files could hold is refused
  // before its tensor plan is built (a huge num_hidden_layers must not cost time or memory)
  if (config.nLayers * 9 > files.size) {
    throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${dir}: config.json says ${config.nLayers} layers, but the weights hold ${files.size} tensors (a layer has 9 at least)`);
  }
  const plan = hfTensorPlan(config);
  const wanted = new Map(plan.flatMap((m) => m.parts.map((p) => [p.hf, p.shape] as const)));
  // the tied head may be stored anyway; it is read to check it is the embedding
  const tiedHead = config.tieEmbeddings && files.has('lm_head.weight');
  if (tiedHead) wanted.set('lm_head.weight', [config.vocabSize, config.dModel]);
  for (const name of files.keys()) {
    if (wanted.has(name) || isIgnorableHfTensor(name)) continue;
    if (name === 'lm_head.weight') continue; // handled above
    throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${dir}: tensor ${name} has no place in a ${imported.architecture} as config.json describes it (a bias, norm or layer the anchor does not have)`);
  }
  const headers = new Map<string, Map<string, TensorInfo>>();
  for (const [name, shape] of wanted) {
    const file = files.get(name);
    if (file === undefined) throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${dir}: tensor ${name} is missing (config.json implies it${name === 'lm_head.weight' ? ': tie_word_embeddings is false' : ''})`);
    if (!headers.has(file)) headers.set(file, (await readSafetensorsHeader(file)).tensors);
    const t = headers.get(file)!.get(name)!;
    if (!FLOAT_DTYPES.has(t.dtype)) throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${file}: tensor ${name} is ${t.dtype}; F32, BF16 and F16 are read`);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${file}: tensor ${name} has shape [${t.shape.join(', ')}], config.json implies [${shape.join(', ')}]`);
    }
  }

  const model = AnchorModel.create(config, { maxBatch: opts.maxBatch ?? 1, skipInit: true });
  const target = new Map(plan.flatMap((m) => {
    let row = 0;
    const dst = model.tensor(m.ours);
    return m.parts.map((p) => {
      const n = elementCount(p.shape);
      const view = dst.subarray(row, row + n);
      row += n;
      return [p.hf, view] as const;
    });
  }));
  const dtypes: Record<string, number> = {};
  let head: Float32Array | null = null;
  const byFile = new Map<string, string[]>();
  for (const name of wanted.keys()) byFile.set(files.get(name)!, [...(byFile.get(files.get(name)!) ?? []), name]);
  for (const [file, names] of byFile) {
    const loaded = await readSafetensors(file, { names });
    for (const name of names) {
      const t = loaded.tensors.get(name)!;
      dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + 1;
      const values = toFloat32(t);
      for (let i = 0; i < values.length; i++) {
        if (!Number.isFinite(values[i]!)) throw corrupt(file, `tensor ${name} holds a non-finite value at element ${i}`);
      }
      if (name === 'lm_head.weight' && tiedHead) head = values;
      else target.get(name)!.set(values);
    }
  }
  if (head !== null) {
    const emb = model.tensor('tok_embeddings.weight');
    const i = head.findIndex((v, j) => v !== emb[j]);
    if (i >= 0) throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${dir}: tie_word_embeddings is true but lm_head.weight differs from model.embed_tokens.weight (element ${i}); set it to false if the head is its own`);
  }
  return { ...imported, model, tokenizer, hfConfig: hfConfig as Record<string, unknown>, dtypes };
}
