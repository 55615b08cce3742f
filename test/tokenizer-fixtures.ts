/**
 * tokenizer.json fixtures built here (no network): a GPT-2-style byte-level BPE and a Llama-2-style
 * SentencePiece BPE with byte fallback, small enough to read, in Hugging Face's own format.
 */
import { byteLevelAlphabet } from '../lib/data/hf-tokenizer-train.js';

const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });

/** Byte-level BPE (GPT-2 / Llama-3 / Qwen layout): <|endoftext|>, <|pad|>, 256 bytes, a few merges. */
export function byteLevelFixture(): Record<string, unknown> {
  const vocab: Record<string, number> = { '<|endoftext|>': 0, '<|pad|>': 1 };
  let n = 2;
  for (const c of byteLevelAlphabet()) vocab[c] = n++;
  const merges: [string, string][] = [['Ġ', 't'], ['h', 'e'], ['Ġt', 'he'], ['Ġ', 'a'], ['i', 's'], ['Ġ', 'is'], ['e', 'r'], ['å', '¤']];
  for (const [a, b] of merges) if (!((a + b) in vocab)) vocab[a + b] = n++;
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: '1.0', truncation: null, padding: null, added_tokens: [special(0, '<|endoftext|>'), special(1, '<|pad|>')],
    normalizer: null, pre_tokenizer: byteLevel, post_processor: null, decoder: byteLevel,
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges },
  };
}

/** SentencePiece-style BPE as Llama-2 / TinyLlama ship it: ▁ for spaces, byte fallback <0xNN>, "a b" merges, a BOS template. */
export function sentencePieceFixture(): Record<string, unknown> {
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  let n = 3;
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = n++;
  for (const c of '▁abcdefghijklmnopqrstuvwxyzHTOW,.!é東') vocab[c] = n++;
  const merges = ['▁ t', 'h e', '▁t he', '▁ a', 'i s', '▁ is', 'e r', 'o r', 'l d', '▁ w', '▁w or', '▁wor ld'];
  for (const m of merges) { const [a, b] = m.split(' ') as [string, string]; if (!((a + b) in vocab)) vocab[a + b] = n++; }
  return {
    version: '1.0', truncation: null, padding: null, added_tokens: [special(0, '<unk>'), special(1, '<s>'), special(2, '</s>')],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '<s>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] },
    model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab, merges },
  };
}

/** ASCII, accents, CJK, emoji (with ZWJ and flags), whitespace runs, a literal special token. */
export const MULTILINGUAL = 'Hello, wörld! The café is naïve — “quotes” … 東京大学で学ぶ。한국어 中文标点。 👩‍👩‍👧 🇯🇵 😀🚀\n\ttabs  and   spaces\r\nend';
