/**
 * The anchor model's configuration: plain data, validated once, recorded in every checkpoint.
 */
import { HiermemError } from '../errors.js';
import type { AnchorDims } from '../native-types.js';

export interface ModelConfig {
  vocabSize: number;
  dModel: number;
  nLayers: number;
  nHeads: number;
  headDim: number;
  ffnHidden: number;
  seqLen: number;
  /** RMSNorm epsilon (default 1e-5). */
  normEps: number;
  /** RoPE base frequency (paper: 1e5). */
  ropeBase: number;
  /** Seed of the parameter init. */
  seed: number;
  // The Llama-family fields (optional here, so configs written before them still type-check;
  // resolveModelConfig always fills them: ResolvedModelConfig).
  /** Key/value heads (grouped-query attention): nHeads % nKvHeads === 0. Default nHeads. */
  nKvHeads?: number;
  /** RMSNorm over the full q and k rows before RoPE (ours, Qwen3; Llama has none). Default true. */
  qkNorm?: boolean;
  /** Biases of the q/k/v projection (Qwen2). Default false. */
  qkvBias?: boolean;
  /** The output head is the token embedding (default true); false: a separate lm_head.weight. */
  tieEmbeddings?: boolean;
  /** Llama-3.1 RoPE frequency scaling, or null (default). */
  ropeScaling?: RopeScaling | null;
}

/** Hugging Face transformers' `rope_scaling` of rope_type "llama3" (field names in camelCase). */
export interface RopeScaling {
  type: 'llama3';
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositions: number;
}

export interface LlamaFields {
  nKvHeads: number;
  qkNorm: boolean;
  qkvBias: boolean;
  tieEmbeddings: boolean;
  ropeScaling: RopeScaling | null;
}

/** A config as resolveModelConfig returns it: every field present and checked. */
export type ResolvedModelConfig = ModelConfig & LlamaFields;

/** The Llama-family fields' defaults (nKvHeads: nHeads): today's anchor. */
export const LLAMA_DEFAULTS = Object.freeze({ qkNorm: true, qkvBias: false, tieEmbeddings: true, ropeScaling: null });

/** The Llama-family fields of any config, defaults filled in (no validation: resolveModelConfig's job). */
export function llamaFields(cfg: ModelConfig): LlamaFields {
  // only undefined means "not set": a null (say, from a JSON file) is left for validation to refuse
  const or = <T>(v: T | undefined, d: T): T => (v === undefined ? d : v);
  return {
    nKvHeads: or(cfg.nKvHeads, cfg.nHeads),
    qkNorm: or(cfg.qkNorm, LLAMA_DEFAULTS.qkNorm),
    qkvBias: or(cfg.qkvBias, LLAMA_DEFAULTS.qkvBias),
    tieEmbeddings: or(cfg.tieEmbeddings, LLAMA_DEFAULTS.tieEmbeddings),
    ropeScaling: or(cfg.ropeScaling, null),
  };
}

type BaseConfig = Omit<ModelConfig, keyof LlamaFields>;

export const DEFAULT_MODEL: Omit<BaseConfig, 'vocabSize'> = {
  dModel: 128,
  nLayers: 4,
  nHeads: 4,
  headDim: 32,
  ffnHidden: 384,
  seqLen: 128,
  normEps: 1e-5,
  ropeBase: 1e5,
  seed: 1,
};

/** Named sizes used by the CLI, tests and benchmarks (vocab comes from the tokenizer). */
export const MODEL_PRESETS: Record<string, Omit<BaseConfig, 'vocabSize' | 'seed'>> = {
  // ~0.1M parameters: unit tests
  tiny: { dModel: 32, nLayers: 2, nHeads: 2, headDim: 16, ffnHidden: 64, seqLen: 64, normEps: 1e-5, ropeBase: 1e5 },
  // ~0.9M: the default `hiermem train` run
  small: { dModel: 128, nLayers: 4, nHeads: 4, headDim: 32, ffnHidden: 384, seqLen: 128, normEps: 1e-5, ropeBase: 1e5 },
  // ~4.3M: the shape PyTorch was measured on (a GPT with 4 layers, d 256, seq 256, MLP 4x);
  // our SwiGLU of width 1024 has 3 matrices, so 1.5x that model's MLP parameters
  medium: { dModel: 256, nLayers: 4, nHeads: 4, headDim: 64, ffnHidden: 1024, seqLen: 256, normEps: 1e-5, ropeBase: 1e5 },
  // ~10M
  large: { dModel: 384, nLayers: 6, nHeads: 6, headDim: 64, ffnHidden: 1024, seqLen: 256, normEps: 1e-5, ropeBase: 1e5 },
};

const INT_FIELDS = ['vocabSize', 'dModel', 'nLayers', 'nHeads', 'nKvHeads', 'headDim', 'ffnHidden', 'seqLen', 'seed'] as const;
const BOOL_FIELDS = ['qkNorm', 'qkvBias', 'tieEmbeddings'] as const;

/** Fills defaults and validates; throws HiermemError('E_CONFIG_INVALID') naming the bad field. */
export function resolveModelConfig(partial: Partial<ModelConfig> & { vocabSize: number }): ResolvedModelConfig {
  const merged = { ...DEFAULT_MODEL, ...partial };
  // a Llama-family field missing or given as undefined (an optional flag not set) takes its default
  const cfg: ResolvedModelConfig = { ...merged, ...llamaFields(merged) };
  for (const k of INT_FIELDS) {
    const v = cfg[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < (k === 'seed' ? 0 : 1)) {
      throw new HiermemError('E_CONFIG_INVALID', `model config: ${k} must be a positive integer, got ${String(v)}`);
    }
  }
  if (cfg.vocabSize < 2) throw new HiermemError('E_CONFIG_INVALID', 'model config: vocabSize must be >= 2');
  if (cfg.headDim % 2 !== 0) {
    throw new HiermemError('E_CONFIG_INVALID', `model config: headDim must be even for rotary embeddings, got ${cfg.headDim}`);
  }
  if (!(cfg.normEps > 0 && cfg.normEps < 1)) throw new HiermemError('E_CONFIG_INVALID', 'model config: normEps must be in (0, 1)');
  if (!(cfg.ropeBase > 1 && Number.isFinite(cfg.ropeBase))) {
    throw new HiermemError('E_CONFIG_INVALID', 'model config: ropeBase must be a finite number > 1');
  }
  if (cfg.nHeads % cfg.nKvHeads !== 0) {
    throw new HiermemError('E_CONFIG_INVALID', `model config: nKvHeads (${cfg.nKvHeads}) must divide nHeads (${cfg.nHeads})`);
  }
  for (const k of BOOL_FIELDS) {
    if (typeof cfg[k] !== 'boolean') throw new HiermemError('E_CONFIG_INVALID', `model config: ${k} must be true or false, got ${String(cfg[k])}`);
  }
  cfg.ropeScaling = checkRopeScaling(cfg.ropeScaling);
  return cfg;
}

function checkRopeScaling(v: unknown): RopeScaling | null {
  if (v === null) return null;
  const bad = (why: string): never => {
    throw new HiermemError('E_CONFIG_INVALID', `model config: ropeScaling ${why}`);
  };
  if (typeof v !== 'object' || Array.isArray(v)) return bad('must be null or an object');
  const o = v as Record<string, unknown>;
  const known = ['type', 'factor', 'lowFreqFactor', 'highFreqFactor', 'originalMaxPositions'];
  for (const k of Object.keys(o)) if (!known.includes(k)) bad(`has an unknown field "${k}" (known: ${known.join(', ')})`);
  if (o.type !== 'llama3') bad(`.type must be "llama3", got ${JSON.stringify(o.type) ?? 'undefined'}`);
  const num = (k: string): number => {
    const x = o[k];
    if (typeof x !== 'number' || !Number.isFinite(x) || x <= 0) bad(`.${k} must be a finite number > 0, got ${String(x)}`);
    return x as number;
  };
  const out: RopeScaling = { type: 'llama3', factor: num('factor'), lowFreqFactor: num('lowFreqFactor'),
    highFreqFactor: num('highFreqFactor'), originalMaxPositions: num('originalMaxPositions') };
  if (out.factor < 1) bad(`.factor must be >= 1, got ${out.factor}`);
  if (!(out.highFreqFactor > out.lowFreqFactor)) bad(`.highFreqFactor (${out.highFreqFactor}) must exceed lowFreqFactor (${out.lowFreqFactor})`);
  return out;
}

/**
 * The config as a checkpoint records it: a field of the Llama family is left out where it has its
 * default (nKvHeads where it equals nHeads), so a default model's checkpoint is byte for byte what
 * it was before these fields existed, and resolveModelConfig reads either form back.
 */
export function modelConfigRecord(config: ModelConfig): Record<string, unknown> {
  const cfg = { ...config, ...llamaFields(config) };
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(cfg)) {
    if (k === 'nKvHeads' ? v === cfg.nHeads : k in LLAMA_DEFAULTS && v === (LLAMA_DEFAULTS as Record<string, unknown>)[k]) continue;
    out[k] = v;
  }
  return out;
}

export function toDims(config: ModelConfig): AnchorDims {
  const cfg = { ...config, ...llamaFields(config) };
  return {
    vocabSize: cfg.vocabSize,
    dModel: cfg.dModel,
    nLayers: cfg.nLayers,
    nHeads: cfg.nHeads,
    headDim: cfg.headDim,
    ffnHidden: cfg.ffnHidden,
    seqLen: cfg.seqLen,
    normEps: cfg.normEps,
    ropeBase: cfg.ropeBase,
    nKvHeads: cfg.nKvHeads,
    qkNorm: cfg.qkNorm,
    qkvBias: cfg.qkvBias,
    tieEmbeddings: cfg.tieEmbeddings,
    ropeScaling: cfg.ropeScaling ? { ...cfg.ropeScaling } : null,
  };
}

/** Parameter count of the anchor (paper §2.1 formula, generalised: GQA, q/k/v biases, QK-norm, untied head). */
export function anchorParamCount(config: ModelConfig): number {
  const cfg = { ...config, ...llamaFields(config) };
  const { vocabSize: V, dModel: C, nLayers: L, nHeads: H, nKvHeads: Hkv, headDim: hd, ffnHidden: F } = cfg;
  const D = H * hd, Dkv = Hkv * hd, W = D + 2 * Dkv;
  const perLayer = 2 * C + W * C + (cfg.qkvBias ? W : 0) + (cfg.qkNorm ? D + Dkv : 0) + C * D + 3 * F * C;
  return V * C + L * perLayer + C + (cfg.tieEmbeddings ? 0 : V * C);
}

/** Model FLOPs of one training token: 6 * (non-embedding params) + attention, as in the PaLM appendix. */
export function trainFlopsPerToken(config: ModelConfig): number {
  const cfg = { ...config, ...llamaFields(config) };
  const { dModel: C, nLayers: L, nHeads: H, nKvHeads: Hkv, headDim: hd, ffnHidden: F, seqLen: T, vocabSize: V } = cfg;
  const D = H * hd, W = D + 2 * Hkv * hd;
  const matmulParams = L * (W * C + C * D + 3 * F * C) + V * C; // classifier counts (tied or not: one V x C product)
  const attention = L * 2 * 2 * D * T / 2; // QK^T and PV over the causal half, fwd
  return 6 * matmulParams + 3 * attention;
}
