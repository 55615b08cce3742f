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
}

export const DEFAULT_MODEL: Omit<ModelConfig, 'vocabSize'> = {
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
export const MODEL_PRESETS: Record<string, Omit<ModelConfig, 'vocabSize' | 'seed'>> = {
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

const INT_FIELDS = ['vocabSize', 'dModel', 'nLayers', 'nHeads', 'headDim', 'ffnHidden', 'seqLen', 'seed'] as const;

/** Fills defaults and validates; throws HiermemError('E_CONFIG_INVALID') naming the bad field. */
export function resolveModelConfig(partial: Partial<ModelConfig> & { vocabSize: number }): ModelConfig {
  const cfg: ModelConfig = { ...DEFAULT_MODEL, ...partial };
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
  return cfg;
}

export function toDims(cfg: ModelConfig): AnchorDims {
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
  };
}

/** Parameter count of the anchor (tied embeddings; paper §2.1 formula). */
export function anchorParamCount(cfg: ModelConfig): number {
  const { vocabSize: V, dModel: C, nLayers: L, nHeads: H, headDim: hd, ffnHidden: F } = cfg;
  const D = H * hd;
  return V * C + L * (2 * C + 3 * D * C + 2 * D + C * D + 3 * F * C) + C;
}

/** Model FLOPs of one training token: 6 * (non-embedding params) + attention, as in the PaLM appendix. */
export function trainFlopsPerToken(cfg: ModelConfig): number {
  const { dModel: C, nLayers: L, nHeads: H, headDim: hd, ffnHidden: F, seqLen: T, vocabSize: V } = cfg;
  const D = H * hd;
  const matmulParams = L * (3 * D * C + C * D + 3 * F * C) + V * C; // classifier counts (tied)
  const attention = L * 2 * 2 * D * T / 2; // QK^T and PV over the causal half, fwd
  return 6 * matmulParams + 3 * attention;
}
