/**
 * Hugging Face `config.json` of a Llama-family model (LlamaForCausalLM, MistralForCausalLM without a
 * sliding window, Qwen2ForCausalLM) to a ModelConfig and back. What the anchor cannot compute the
 * same way is refused with E_CONFIG_INCOMPATIBLE naming the field, never approximated: another
 * rope_scaling type, a sliding window, experts, biases on o_proj or the MLP, an activation other
 * than SiLU, quantized weights.
 */
import { HiermemError } from '../errors.js';
import { type ResolvedModelConfig, type RopeScaling, resolveModelConfig } from '../model/config.js';

/** The architectures imported, with their model_type and whether q/k/v carry biases. */
const ARCHITECTURES: Record<string, { modelType: string; qkvBias: boolean }> = {
  LlamaForCausalLM: { modelType: 'llama', qkvBias: false },
  MistralForCausalLM: { modelType: 'mistral', qkvBias: false },
  Qwen2ForCausalLM: { modelType: 'qwen2', qkvBias: true },
};

/** Context length of an imported model when max_position_embeddings is larger and no cap is given: activations grow with it. */
export const DEFAULT_IMPORT_SEQ_LEN = 2048;

export interface HfConfigImport {
  /** The anchor's config (seqLen: max_position_embeddings capped by the caller's limit). */
  config: ResolvedModelConfig;
  architecture: string;
  /** The weights' dtype as config.json states it (torch_dtype), if it does. */
  torchDtype?: string;
}

function incompatible(source: string, field: string, why: string): never {
  throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${source}: ${field} ${why}; hiermem imports Llama-family models (${Object.keys(ARCHITECTURES).join(', ')}) whose attention and MLP it computes exactly`);
}

function invalid(source: string, field: string, why: string): never {
  throw new HiermemError('E_CONFIG_INVALID', `${source}: ${field} ${why}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A positive integer field (required unless `fallback`). */
function intField(c: Record<string, unknown>, key: string, source: string, fallback?: number): number {
  const v = c[key] ?? fallback;
  if (v === undefined) invalid(source, key, 'is missing');
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) invalid(source, key, `must be a positive integer, got ${JSON.stringify(v)}`);
  return v as number;
}

function numField(c: Record<string, unknown>, key: string, source: string, fallback: number): number {
  const v = c[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) invalid(source, key, `must be a finite number > 0, got ${JSON.stringify(v)}`);
  return v as number;
}

function ropeScalingOf(v: unknown, source: string): RopeScaling | null {
  if (v === null || v === undefined) return null;
  if (!isObject(v)) invalid(source, 'rope_scaling', 'must be null or an object');
  const o = v as Record<string, unknown>;
  const type = o.rope_type ?? o.type;
  if (type === 'default') return null;
  if (type !== 'llama3') incompatible(source, 'rope_scaling.rope_type', `is ${JSON.stringify(type)} (only "llama3" frequency scaling is supported)`);
  const num = (k: string): number => {
    const x = o[k];
    if (typeof x !== 'number' || !Number.isFinite(x) || x <= 0) invalid(source, `rope_scaling.${k}`, `must be a finite number > 0, got ${JSON.stringify(x)}`);
    return x as number;
  };
  if (o.attention_factor !== undefined && o.attention_factor !== 1) incompatible(source, 'rope_scaling.attention_factor', `is ${JSON.stringify(o.attention_factor)} (only 1)`);
  return { type: 'llama3', factor: num('factor'), lowFreqFactor: num('low_freq_factor'), highFreqFactor: num('high_freq_factor'),
    originalMaxPositions: num('original_max_position_embeddings') };
}

/**
 * config.json (parsed) → the anchor's config. `seqLen`: the context the imported model is trained
 * and evaluated with (default: max_position_embeddings, at most DEFAULT_IMPORT_SEQ_LEN); it may
 * not exceed max_position_embeddings.
 */
export function modelConfigFromHf(raw: unknown, source = 'config.json', opts: { seqLen?: number } = {}): HfConfigImport {
  if (!isObject(raw)) invalid(source, 'config', 'must be a JSON object');
  const c = raw as Record<string, unknown>;
  const archs = c.architectures;
  if (!Array.isArray(archs) || archs.length !== 1 || typeof archs[0] !== 'string') invalid(source, 'architectures', `must list one architecture, got ${JSON.stringify(archs)}`);
  const architecture = (archs as string[])[0]!;
  const arch = ARCHITECTURES[architecture];
  if (!arch) incompatible(source, 'architectures', `is ${JSON.stringify(architecture)}`);
  if (c.model_type !== undefined && c.model_type !== arch!.modelType) incompatible(source, 'model_type', `is ${JSON.stringify(c.model_type)} but architectures says ${architecture} ("${arch!.modelType}")`);

  const act = c.hidden_act ?? c.hidden_activation ?? 'silu';
  if (act !== 'silu') incompatible(source, 'hidden_act', `is ${JSON.stringify(act)} (SwiGLU with SiLU only)`);
  if (c.attention_bias === true) incompatible(source, 'attention_bias', 'is true (Llama then also biases o_proj, which the anchor has not)');
  if (c.mlp_bias === true) incompatible(source, 'mlp_bias', 'is true (the MLP has no biases)');
  if (c.use_sliding_window === true) incompatible(source, 'use_sliding_window', 'is true (full causal attention only)');
  if (architecture === 'MistralForCausalLM' && c.sliding_window !== null && c.sliding_window !== undefined) {
    incompatible(source, 'sliding_window', `is ${JSON.stringify(c.sliding_window)} (full causal attention only: null)`);
  }
  for (const k of ['num_experts', 'num_local_experts', 'n_routed_experts', 'moe_intermediate_size']) {
    if (c[k] !== undefined && c[k] !== null && c[k] !== 0) incompatible(source, k, `is ${JSON.stringify(c[k])} (mixture of experts is not supported)`);
  }
  if (c.quantization_config !== undefined && c.quantization_config !== null) incompatible(source, 'quantization_config', 'is set (quantized weights are not supported: give the float16/bfloat16/float32 model)');
  if (c.qk_norm === true || c.use_qk_norm === true) incompatible(source, 'qk_norm', 'is true (per-head QK-norm is not supported)');

  const dModel = intField(c, 'hidden_size', source);
  const nHeads = intField(c, 'num_attention_heads', source);
  const nKvHeads = intField(c, 'num_key_value_heads', source, nHeads);
  if (c.head_dim === undefined && dModel % nHeads !== 0) invalid(source, 'hidden_size', `${dModel} is not a multiple of num_attention_heads ${nHeads} and head_dim is not given`);
  const headDim = intField(c, 'head_dim', source, Math.floor(dModel / nHeads));
  const maxPos = intField(c, 'max_position_embeddings', source, 2048);
  const seqLen = opts.seqLen ?? Math.min(maxPos, DEFAULT_IMPORT_SEQ_LEN);
  if (!Number.isSafeInteger(seqLen) || seqLen < 2) throw new HiermemError('E_INVALID_ARGUMENT', `seqLen must be an integer >= 2, got ${seqLen}`);
  if (seqLen > maxPos) throw new HiermemError('E_INVALID_ARGUMENT', `seqLen ${seqLen} exceeds the model's max_position_embeddings ${maxPos}`);
  const tie = c.tie_word_embeddings ?? false; // transformers' default for Llama, Mistral and Qwen2
  if (typeof tie !== 'boolean') invalid(source, 'tie_word_embeddings', `must be true or false, got ${JSON.stringify(tie)}`);
  const partial = {
    vocabSize: intField(c, 'vocab_size', source),
    dModel, nLayers: intField(c, 'num_hidden_layers', source), nHeads, nKvHeads, headDim,
    ffnHidden: intField(c, 'intermediate_size', source), seqLen,
    normEps: numField(c, 'rms_norm_eps', source, 1e-6),
    ropeBase: numField(c, 'rope_theta', source, 10000),
    seed: 0, qkNorm: false, qkvBias: arch!.qkvBias, tieEmbeddings: tie as boolean,
    ropeScaling: ropeScalingOf(c.rope_scaling, source),
  };
  let config: ResolvedModelConfig;
  try {
    config = resolveModelConfig(partial);
  } catch (e) {
    if (e instanceof HiermemError) throw new HiermemError(e.code, `${source}: ${e.message}`, { cause: e });
    throw e;
  }
  const out: HfConfigImport = { config, architecture };
  if (typeof c.torch_dtype === 'string') out.torchDtype = c.torch_dtype;
  return out;
}

/** Token ids a config.json states, from the tokenizer the checkpoint embeds. */
export interface HfTokenIds {
  bos?: number;
  eos: number;
  pad?: number;
}

/**
 * The anchor's config → a config.json transformers loads as LlamaForCausalLM (Qwen2ForCausalLM when
 * q/k/v carry biases). `base`: a config.json whose other fields (max_position_embeddings, token
 * ids, …) are kept — the one the model was imported from. A config the Llama family cannot express
 * (QK-norm, hiermem's own anchors) → E_CONFIG_INCOMPATIBLE.
 */
export function hfConfigFromModel(cfg: ResolvedModelConfig, ids: HfTokenIds, base?: Record<string, unknown>): Record<string, unknown> {
  if (cfg.qkNorm) {
    throw new HiermemError('E_CONFIG_INCOMPATIBLE', 'qkNorm: this model normalises q and k (hiermem\'s own anchor), which Llama-family models in transformers do not; only models without QK-norm (imported ones, or trained with "qkNorm": false) export');
  }
  const baseArch = Array.isArray(base?.architectures) ? base!.architectures[0] : undefined;
  const architecture = cfg.qkvBias ? 'Qwen2ForCausalLM' : baseArch === 'MistralForCausalLM' ? 'MistralForCausalLM' : 'LlamaForCausalLM';
  const modelType = ARCHITECTURES[architecture]!.modelType;
  const keepBase = base !== undefined && baseArch === architecture ? base : {};
  const basePos = typeof keepBase.max_position_embeddings === 'number' ? keepBase.max_position_embeddings : 0;
  const out: Record<string, unknown> = {
    ...keepBase,
    architectures: [architecture],
    model_type: modelType,
    vocab_size: cfg.vocabSize,
    hidden_size: cfg.dModel,
    intermediate_size: cfg.ffnHidden,
    num_hidden_layers: cfg.nLayers,
    num_attention_heads: cfg.nHeads,
    num_key_value_heads: cfg.nKvHeads,
    head_dim: cfg.headDim,
    hidden_act: 'silu',
    max_position_embeddings: Math.max(basePos, cfg.seqLen),
    rms_norm_eps: cfg.normEps,
    rope_theta: cfg.ropeBase,
    rope_scaling: cfg.ropeScaling === null ? null : {
      rope_type: 'llama3', factor: cfg.ropeScaling.factor, low_freq_factor: cfg.ropeScaling.lowFreqFactor,
      high_freq_factor: cfg.ropeScaling.highFreqFactor, original_max_position_embeddings: cfg.ropeScaling.originalMaxPositions,
    },
    tie_word_embeddings: cfg.tieEmbeddings,
    torch_dtype: 'float32',
    bos_token_id: keepBase.bos_token_id ?? ids.bos ?? ids.eos,
    eos_token_id: keepBase.eos_token_id ?? ids.eos,
    use_cache: true,
  };
  if (modelType === 'llama') Object.assign(out, { attention_bias: false, mlp_bias: false });
  if (modelType === 'qwen2') Object.assign(out, { use_sliding_window: false });
  if (ids.pad !== undefined && keepBase.pad_token_id === undefined && ids.pad !== ids.eos) out.pad_token_id = ids.pad;
  return out;
}
