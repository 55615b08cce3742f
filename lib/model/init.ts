/**
 * Parameter init after OpenLM (paper §2.1): in-projections (wqkv, w1, w2) and embeddings
 * trunc-normal with std 1/sqrt(d); out-projections (wo, w3) std 1/sqrt(fan_in) scaled by
 * 1/sqrt(2 (layer + 1)); norm gains 1; q/k/v biases 0; an untied lm_head as the embeddings.
 * All truncated at ±3σ. Deterministic from the seed.
 */
import { Rng } from '../util/random.js';
import type { TensorSlot } from '../native-types.js';
import type { ModelConfig } from './config.js';

export function initAnchorParams(cfg: ModelConfig, layout: TensorSlot[], params: Float32Array): void {
  const rng = new Rng(cfg.seed);
  const dStd = 1 / Math.sqrt(cfg.dModel);
  for (const slot of layout) {
    const view = params.subarray(slot.offset, slot.offset + slot.size);
    const m = /^layers\.(\d+)\.(.*)$/.exec(slot.name);
    const layer = m ? Number(m[1]) : 0;
    const leaf = m ? m[2]! : slot.name;
    let std: number;
    if (leaf.endsWith('norm.weight')) {
      view.fill(1);
      continue;
    } else if (leaf === 'attn.bqkv') {
      view.fill(0); // biases start at zero (and draw nothing, so the other tensors' init is unchanged)
      continue;
    } else if (leaf === 'attn.wo' || leaf === 'ffn.w3') {
      const fanIn = slot.shape[1]!;
      std = 1 / Math.sqrt(fanIn) / Math.sqrt(2 * (layer + 1));
    } else {
      std = dStd;
    }
    for (let i = 0; i < view.length; i++) view[i] = rng.truncNormal(std);
  }
}
