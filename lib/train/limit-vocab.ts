/**
 * Generation limited to the ids a tokenizer can decode. An imported model may have more embedding
 * rows than its tokenizer has ids (Qwen2.5 pads 151,665 tokens to 151,936 rows); sampling one of
 * those rows would end a run in E_TOKEN_OUT_OF_RANGE when the text is decoded, so the logits of
 * ids past the tokenizer are cut off before sampling.
 */
import type { AnchorModel, TokenDecoder } from '../model/anchor.js';
import type { NextTokenLogits } from '../model/generate.js';

/** `model` (an anchor or a next-token function) with its logits cut to ids 0..vocabSize-1; an anchor itself when nothing is cut. */
export function limitVocab(model: NextTokenLogits, vocabSize: number): NextTokenLogits;
export function limitVocab(model: AnchorModel | NextTokenLogits, vocabSize: number): AnchorModel | NextTokenLogits;
export function limitVocab(model: AnchorModel | NextTokenLogits, vocabSize: number): AnchorModel | NextTokenLogits {
  const full = typeof model === 'function' ? model : null;
  const anchor = typeof model === 'function' ? null : model;
  if (anchor !== null && anchor.config.vocabSize <= vocabSize) return model;
  const cut = (x: Float32Array) => (x.length > vocabSize ? x.subarray(0, vocabSize) : x);
  const logits = (ctx: Int32Array) => cut(full ? full(ctx) : anchor!.nextTokenLogits(ctx));
  const makeDecoder = full ? full.decoder : () => anchor!.decoder();
  if (makeDecoder === undefined) return logits;
  const decoder = (): TokenDecoder => {
    const d = makeDecoder();
    return {
      get length() {
        return d.length;
      },
      capacity: d.capacity,
      prefill: (prompt) => cut(d.prefill(prompt)),
      step: (token) => cut(d.step(token)),
    };
  };
  return Object.assign(logits, { decoder });
}
