/**
 * Which Hugging Face tensor (Llama / Qwen2 names and shapes) becomes which anchor tensor. One table
 * serves import and export. Our stacked q/k/v projection is the three HF projections' rows in
 * order [q; k; v] (and their biases likewise); the SwiGLU's w1 is the SiLU gate (gate_proj), w2 the
 * up projection, w3 the down projection. RoPE rotates the pairs (i, i + headDim/2) of each head, as
 * transformers' rotate_half does, so q and k rows need no permutation.
 */
import type { ResolvedModelConfig } from '../model/config.js';

/** An anchor tensor and the HF tensors whose rows, in order, make it (one part unless stacked). */
export interface HfTensorMapping {
  ours: string;
  parts: Array<{ hf: string; shape: number[] }>;
}

/** The anchor tensors of `cfg` in HF terms (the untied head included when the config has one). */
export function hfTensorPlan(cfg: ResolvedModelConfig): HfTensorMapping[] {
  const { vocabSize: V, dModel: C, nHeads: H, nKvHeads: Hkv, headDim: hd, ffnHidden: F } = cfg;
  const D = H * hd, Dkv = Hkv * hd;
  const one = (ours: string, hf: string, shape: number[]): HfTensorMapping => ({ ours, parts: [{ hf, shape }] });
  const plan: HfTensorMapping[] = [one('tok_embeddings.weight', 'model.embed_tokens.weight', [V, C])];
  for (let l = 0; l < cfg.nLayers; l++) {
    const p = `layers.${l}.`, h = `model.layers.${l}.`;
    plan.push(one(`${p}attn_norm.weight`, `${h}input_layernorm.weight`, [C]));
    plan.push({ ours: `${p}attn.wqkv`, parts: [
      { hf: `${h}self_attn.q_proj.weight`, shape: [D, C] },
      { hf: `${h}self_attn.k_proj.weight`, shape: [Dkv, C] },
      { hf: `${h}self_attn.v_proj.weight`, shape: [Dkv, C] },
    ] });
    if (cfg.qkvBias) {
      plan.push({ ours: `${p}attn.bqkv`, parts: [
        { hf: `${h}self_attn.q_proj.bias`, shape: [D] },
        { hf: `${h}self_attn.k_proj.bias`, shape: [Dkv] },
        { hf: `${h}self_attn.v_proj.bias`, shape: [Dkv] },
      ] });
    }
    plan.push(one(`${p}attn.wo`, `${h}self_attn.o_proj.weight`, [C, D]));
    plan.push(one(`${p}ffn_norm.weight`, `${h}post_attention_layernorm.weight`, [C]));
    plan.push(one(`${p}ffn.w1`, `${h}mlp.gate_proj.weight`, [F, C]));
    plan.push(one(`${p}ffn.w2`, `${h}mlp.up_proj.weight`, [F, C]));
    plan.push(one(`${p}ffn.w3`, `${h}mlp.down_proj.weight`, [C, F]));
  }
  plan.push(one('final_norm.weight', 'model.norm.weight', [C]));
  if (!cfg.tieEmbeddings) plan.push(one('lm_head.weight', 'lm_head.weight', [V, C]));
  return plan;
}

/**
 * Tensors some HF checkpoints carry that hold nothing the model needs: rotary inverse-frequency
 * buffers saved by older transformers versions (recomputed from the config).
 */
export function isIgnorableHfTensor(name: string): boolean {
  return /(^|\.)rotary_emb\.inv_freq$/.test(name);
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
