#!/usr/bin/env python3
"""Builds test/fixtures/llama/: tiny random Llama-family models in the Hugging Face layout, each with
the reference outputs of a plain-PyTorch forward written from the Hugging Face Llama / Qwen2
equations (no `transformers` needed), and a byte-level BPE tokenizer.json with reference ids.

Each variant folder holds what a model folder on the Hub holds (config.json, model.safetensors or
model.safetensors.index.json + shards, tokenizer.json, tokenizer_config.json) and reference.safetensors:
  tokens  I32 (T)       a sequence encoded by the tokenizer
  logits  F32 (T, V)    next-token logits at every position, computed in float64
  nll     F64 (T-1)     negative log-likelihood of tokens[1:]
  prompt  I32 (P)       greedy prompt; greedy I32 (G): its greedy continuation (float64 argmax)
The smallest top-1/top-2 logit gap along the greedy path is asserted > MIN_MARGIN, so a float32
forward must pick the same tokens.

tokenizer-reference.json: texts (multilingual), their ids from the independent byte-level BPE encoder
below (GPT-2's pre-tokenizer regex and merge-by-rank), and the vocabulary size.

The files are committed; CI needs no PyTorch. To regenerate (Debian: apt-get install -y
--no-install-recommends python3-torch):

    /usr/bin/python3 scripts/make-llama-fixture.py [outDir]
    /usr/bin/python3 scripts/make-llama-fixture.py --smollm2-shape OUT   # a random model of SmolLM2-135M's shape (bench only)
    /usr/bin/python3 scripts/make-llama-fixture.py --shape OUT '{"hidden_size": 256, ...}' [seed [embed_std]]   # any shape, float32 (bench only)
    /usr/bin/python3 scripts/make-llama-fixture.py --logits DIR 1,2,3 [3,29]   # the reference forward of any such folder
        # (JSON on stdout); with a path, plus its blocks from an exported memory bank (hiermem export hf)

Output is byte-for-byte reproducible (single thread, fixed seeds); test/hf-import.test.ts reruns the
script where PyTorch is importable and compares.
"""
import json
import math
import os
import struct
import sys
import unicodedata

import torch

torch.set_num_threads(1)

HERE = os.path.dirname(os.path.abspath(__file__))
MIN_MARGIN = 1e-3
SEQ = 12
PROMPT = 4
GREEDY = 10

# ---------------------------------------------------------------------------------------------
# Byte-level BPE (GPT-2 style), written from the algorithm, independent of any tokenizer library.

def bytes_to_unicode():
    bs = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + list(range(ord('®'), ord('ÿ') + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


BYTE_CHAR = bytes_to_unicode()
CHAR_BYTE = {c: b for b, c in BYTE_CHAR.items()}
CONTRACTIONS = ['s', 't', 're', 've', 'm', 'll', 'd']


def is_letter(c):
    return unicodedata.category(c).startswith('L')


def is_number(c):
    return unicodedata.category(c).startswith('N')


def is_space(c):
    return c.isspace()


def pretokenize(text):
    """GPT-2's regex  's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+  by hand."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == "'":
            m = next((s for s in CONTRACTIONS if text.startswith(s, i + 1)), None)
            if m is not None:
                out.append(text[i:i + 1 + len(m)])
                i += 1 + len(m)
                continue
        j = i + 1 if c == ' ' and i + 1 < n else i
        d = text[j]
        for cls in (is_letter, is_number, lambda ch: not (is_space(ch) or is_letter(ch) or is_number(ch))):
            if cls(d):
                k = j
                while k < n and cls(text[k]):
                    k += 1
                out.append(text[i:k])
                i = k
                break
        else:
            # whitespace: \s+(?!\S) keeps the last space for the next word unless the run ends the text
            k = i
            while k < n and is_space(text[k]):
                k += 1
            if k < n and k - i > 1:
                k -= 1
            out.append(text[i:k])
            i = k
    return out


def word_symbols(word):
    return [BYTE_CHAR[b] for b in word.encode('utf-8')]


def train_merges(texts, n_merges):
    counts = {}
    for t in texts:
        for w in pretokenize(t):
            key = tuple(word_symbols(w))
            counts[key] = counts.get(key, 0) + 1
    words = {k: list(k) for k in counts}
    merges = []
    for _ in range(n_merges):
        pairs = {}
        for k, syms in words.items():
            for a, b in zip(syms, syms[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + counts[k]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for k, syms in words.items():
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and (syms[i], syms[i + 1]) == best:
                    out.append(syms[i] + syms[i + 1])
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            words[k] = out
    return merges


def bpe_encode(text, vocab, ranks):
    ids = []
    for w in pretokenize(text):
        syms = word_symbols(w)
        while len(syms) > 1:
            cand = [(ranks.get((a, b), math.inf), i) for i, (a, b) in enumerate(zip(syms, syms[1:]))]
            r, i = min(cand)
            if r == math.inf:
                break
            syms = syms[:i] + [syms[i] + syms[i + 1]] + syms[i + 2:]
        ids.extend(vocab[s] for s in syms)
    return ids


def bpe_decode(ids, inv):
    return bytes(CHAR_BYTE[c] for i in ids for c in inv[i]).decode('utf-8', errors='replace')


TRAIN_TEXTS = [
    'The atomic number of Osmium is 76. The capital of Peru is Lima.',
    'Hello, world! It\'s the tokenizer we\'ll test: the theory of the thing.',
    'Привет, мир! Грюсе из Кёльна.',
    'Grüße aus Köln — naïve café, résumé.',
    '東京は日本の首都です。',
]
TEST_TEXTS = [
    'Hello, world! The capital of Peru is Lima.',
    'Grüße aus Köln: naïve café, résumé — 123 4567 it\'s we\'ll.',
    'Привет, мир! Καλημέρα κόσμε. 東京は日本の首都です。',
    'مرحبا بالعالم · नमस्ते दुनिया 🙂🚀\n\ttabs  and   spaces \n\n',
]
N_MERGES = 43  # 256 bytes + 43 merges + <|endoftext|> = 300 ids
EOT = '<|endoftext|>'


def make_tokenizer():
    merges = train_merges(TRAIN_TEXTS, N_MERGES)
    vocab = {BYTE_CHAR[b]: b for b in range(256)}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    eot_id = len(vocab)
    tj = {
        'version': '1.0',
        'truncation': None,
        'padding': None,
        'added_tokens': [{'id': eot_id, 'content': EOT, 'single_word': False, 'lstrip': False, 'rstrip': False,
                          'normalized': False, 'special': True}],
        'normalizer': None,
        'pre_tokenizer': {'type': 'ByteLevel', 'add_prefix_space': False, 'trim_offsets': True, 'use_regex': True},
        'post_processor': {'type': 'ByteLevel', 'add_prefix_space': True, 'trim_offsets': False, 'use_regex': True},
        'decoder': {'type': 'ByteLevel', 'add_prefix_space': True, 'trim_offsets': True, 'use_regex': True},
        'model': {'type': 'BPE', 'dropout': None, 'unk_token': None, 'continuing_subword_prefix': None,
                  'end_of_word_suffix': None, 'fuse_unk': False, 'byte_fallback': False, 'ignore_merges': False,
                  'vocab': vocab, 'merges': [f'{a} {b}' for a, b in merges]},
    }
    ranks = {m: i for i, m in enumerate(merges)}
    inv = {i: s for s, i in vocab.items()}
    ids = [bpe_encode(t, vocab, ranks) for t in TEST_TEXTS]
    for t, x in zip(TEST_TEXTS, ids):
        assert bpe_decode(x, inv) == t, t
    ref = {'vocabSize': eot_id + 1, 'eotId': eot_id, 'texts': TEST_TEXTS, 'ids': ids,
           'note': 'ids from the byte-level BPE encoder in scripts/make-llama-fixture.py (GPT-2 regex, merge by rank)'}
    config = {'bos_token': EOT, 'eos_token': EOT, 'unk_token': EOT, 'model_max_length': 8192,
              'tokenizer_class': 'GPT2Tokenizer', 'clean_up_tokenization_spaces': False}
    return tj, ref, config, (vocab, ranks)


# ---------------------------------------------------------------------------------------------
# safetensors, written by hand (the format: u64 header length, JSON header, raw little-endian data)

DT = {torch.float32: 'F32', torch.bfloat16: 'BF16', torch.float16: 'F16', torch.int32: 'I32', torch.float64: 'F64'}


def tensor_bytes(t):
    t = t.contiguous()
    if t.dtype in (torch.bfloat16, torch.float16):
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def write_safetensors(path, tensors, metadata=None):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name]
        b = tensor_bytes(t)
        header[name] = {'dtype': DT[t.dtype], 'shape': list(t.shape), 'data_offsets': [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata is not None:
        header['__metadata__'] = metadata
    h = json.dumps(header, separators=(',', ':')).encode('utf-8')
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    return off


# ---------------------------------------------------------------------------------------------
# Random weights with Hugging Face's names and shapes, and the reference forward

def make_weights(cfg, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    C, F, V, L = cfg['hidden_size'], cfg['intermediate_size'], cfg['vocab_size'], cfg['num_hidden_layers']
    H, Hkv = cfg['num_attention_heads'], cfg['num_key_value_heads']
    hd = cfg.get('head_dim', C // H)
    bias = cfg['model_type'] == 'qwen2'

    def lin(o, i):
        return torch.randn(o, i, generator=g) / math.sqrt(i)

    def gain(n):
        return 1 + 0.2 * torch.randn(n, generator=g)

    w = {'model.embed_tokens.weight': torch.randn(V, C, generator=g)}
    for l in range(L):
        p = f'model.layers.{l}.'
        w[p + 'input_layernorm.weight'] = gain(C)
        w[p + 'self_attn.q_proj.weight'] = lin(H * hd, C)
        w[p + 'self_attn.k_proj.weight'] = lin(Hkv * hd, C)
        w[p + 'self_attn.v_proj.weight'] = lin(Hkv * hd, C)
        if bias:
            w[p + 'self_attn.q_proj.bias'] = 0.3 * torch.randn(H * hd, generator=g)
            w[p + 'self_attn.k_proj.bias'] = 0.3 * torch.randn(Hkv * hd, generator=g)
            w[p + 'self_attn.v_proj.bias'] = 0.3 * torch.randn(Hkv * hd, generator=g)
        w[p + 'self_attn.o_proj.weight'] = lin(C, H * hd)
        w[p + 'post_attention_layernorm.weight'] = gain(C)
        w[p + 'mlp.gate_proj.weight'] = lin(F, C)
        w[p + 'mlp.up_proj.weight'] = lin(F, C)
        w[p + 'mlp.down_proj.weight'] = lin(C, F)
    w['model.norm.weight'] = gain(C)
    if not cfg['tie_word_embeddings']:
        w['lm_head.weight'] = lin(V, C)
    return {k: v.to(dtype) for k, v in w.items()}


def inv_freq(cfg, hd):
    base = float(cfg['rope_theta'])
    inv = 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    rs = cfg.get('rope_scaling')
    if rs is None:
        return inv
    # transformers' _compute_llama3_parameters
    factor, lo, hi, old = rs['factor'], rs['low_freq_factor'], rs['high_freq_factor'], rs['original_max_position_embeddings']
    lo_wavelen, hi_wavelen = old / lo, old / hi
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > lo_wavelen, inv / factor, inv)
    smooth = (old / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < hi_wavelen) & ~(wavelen > lo_wavelen)
    return torch.where(medium, smoothed, scaled)


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward(cfg, w, ids, mem=None):
    """Logits (T, V) in float64 of one sequence: LlamaForCausalLM / Qwen2ForCausalLM, eager attention.
    mem: {layer: (gate, up, down)}, each (R, C): extra SwiGLU units of a fetched memory path."""
    w = {k: v.to(torch.float64) for k, v in w.items()}
    C, L = cfg['hidden_size'], cfg['num_hidden_layers']
    H, Hkv = cfg['num_attention_heads'], cfg['num_key_value_heads']
    hd = cfg.get('head_dim', C // H)
    eps = cfg['rms_norm_eps']
    T = len(ids)
    x = w['model.embed_tokens.weight'][torch.tensor(ids)]
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq(cfg, hd)[None, :]
    emb = torch.cat((ang, ang), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    mask = torch.full((T, T), -math.inf, dtype=torch.float64).triu(1)
    for l in range(L):
        p = f'model.layers.{l}.self_attn.'
        h = rms_norm(x, w[f'model.layers.{l}.input_layernorm.weight'], eps)

        def proj(name):
            y = h @ w[p + name + '.weight'].T
            return y + w[p + name + '.bias'] if p + name + '.bias' in w else y

        q = proj('q_proj').view(T, H, hd).transpose(0, 1)
        k = proj('k_proj').view(T, Hkv, hd).transpose(0, 1)
        v = proj('v_proj').view(T, Hkv, hd).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // Hkv, dim=0)
        v = v.repeat_interleave(H // Hkv, dim=0)
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd) + mask, dim=-1)
        o = (att @ v).transpose(0, 1).reshape(T, H * hd)
        x = x + o @ w[p + 'o_proj.weight'].T
        m = f'model.layers.{l}.mlp.'
        h = rms_norm(x, w[f'model.layers.{l}.post_attention_layernorm.weight'], eps)
        x = x + (torch.nn.functional.silu(h @ w[m + 'gate_proj.weight'].T) * (h @ w[m + 'up_proj.weight'].T)) @ w[m + 'down_proj.weight'].T
        if mem is not None and l in mem:
            g, u, dn = (t.to(torch.float64) for t in mem[l])
            x = x + (torch.nn.functional.silu(h @ g.T) * (h @ u.T)) @ dn
    x = rms_norm(x, w['model.norm.weight'], eps)
    head = w['model.embed_tokens.weight'] if cfg['tie_word_embeddings'] else w['lm_head.weight']
    return x @ head.T


def greedy(cfg, w, prompt, n):
    ids, margin = list(prompt), math.inf
    for _ in range(n):
        logits = forward(cfg, w, ids)[-1]
        top = torch.topk(logits, 2).values
        margin = min(margin, float(top[0] - top[1]))
        ids.append(int(torch.argmax(logits)))
    return ids[len(prompt):], margin


# ---------------------------------------------------------------------------------------------
# Variants

def llama_config(**kw):
    cfg = {
        'architectures': ['LlamaForCausalLM'], 'model_type': 'llama', 'attention_bias': False, 'attention_dropout': 0.0,
        'bos_token_id': 299, 'eos_token_id': 299, 'hidden_act': 'silu', 'hidden_size': 32, 'initializer_range': 0.02,
        'intermediate_size': 64, 'max_position_embeddings': 128, 'mlp_bias': False, 'num_attention_heads': 4,
        'num_hidden_layers': 2, 'num_key_value_heads': 2, 'pretraining_tp': 1, 'rms_norm_eps': 1e-5, 'rope_scaling': None,
        'rope_theta': 10000.0, 'tie_word_embeddings': True, 'torch_dtype': 'float32', 'transformers_version': '4.46.0',
        'use_cache': True, 'vocab_size': 300,
    }
    cfg.update(kw)
    return cfg


def qwen2_config(**kw):
    cfg = {
        'architectures': ['Qwen2ForCausalLM'], 'model_type': 'qwen2', 'attention_dropout': 0.0, 'bos_token_id': 299,
        'eos_token_id': 299, 'hidden_act': 'silu', 'hidden_size': 32, 'initializer_range': 0.02, 'intermediate_size': 64,
        'max_position_embeddings': 128, 'max_window_layers': 2, 'num_attention_heads': 4, 'num_hidden_layers': 2,
        'num_key_value_heads': 1, 'rms_norm_eps': 1e-6, 'rope_scaling': None, 'rope_theta': 1000000.0, 'sliding_window': 128,
        'tie_word_embeddings': True, 'torch_dtype': 'float32', 'transformers_version': '4.46.0', 'use_cache': True,
        'use_sliding_window': False, 'vocab_size': 304,
    }
    cfg.update(kw)
    return cfg


VARIANTS = [
    # name, config, seed, dtype, shards
    ('gqa', llama_config(vocab_size=304), 11, torch.float32, 1),
    ('untied', llama_config(num_attention_heads=2, num_key_value_heads=2, head_dim=16, intermediate_size=48,
                            tie_word_embeddings=False, rope_theta=500000.0, rms_norm_eps=1e-6), 22, torch.float32, 1),
    ('qwen2', qwen2_config(), 13, torch.float32, 1),
    ('sharded', llama_config(num_key_value_heads=1, tie_word_embeddings=False, torch_dtype='float16'), 14, torch.float16, 2),
    ('bf16', llama_config(torch_dtype='bfloat16'), 15, torch.bfloat16, 1),
    ('llama3-rope', llama_config(head_dim=16, num_attention_heads=2, num_key_value_heads=1, rope_theta=500000.0,
                                 rope_scaling={'factor': 8.0, 'low_freq_factor': 1.0, 'high_freq_factor': 4.0,
                                               'original_max_position_embeddings': 64, 'rope_type': 'llama3'}), 16, torch.float32, 1),
]


def write_model(out, cfg, w, shards):
    if shards == 1:
        write_safetensors(os.path.join(out, 'model.safetensors'), w, {'format': 'pt'})
        return
    names = sorted(w)
    per = math.ceil(len(names) / shards)
    weight_map, total = {}, 0
    for s in range(shards):
        fname = f'model-{s + 1:05d}-of-{shards:05d}.safetensors'
        part = {n: w[n] for n in names[s * per:(s + 1) * per]}
        total += write_safetensors(os.path.join(out, fname), part, {'format': 'pt'})
        for n in part:
            weight_map[n] = fname
    with open(os.path.join(out, 'model.safetensors.index.json'), 'w') as f:
        json.dump({'metadata': {'total_size': total}, 'weight_map': weight_map}, f, indent=2, sort_keys=True)
        f.write('\n')


def write_json(path, obj):
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write('\n')


def build_fixtures(out):
    os.makedirs(out, exist_ok=True)
    tj, ref, tcfg, (vocab, ranks) = make_tokenizer()
    with open(os.path.join(out, 'tokenizer-reference.json'), 'w', encoding='utf-8') as f:
        # one line per text's ids: readable, and small
        f.write('{\n' + ',\n'.join(f'  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}' for k, v in ref.items()) + '\n}\n')
    seq = bpe_encode(TEST_TEXTS[0] + ' ' + TEST_TEXTS[2], vocab, ranks)[:SEQ]
    assert len(seq) == SEQ
    for name, cfg, seed, dtype, shards in VARIANTS:
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        w = make_weights(cfg, seed, dtype)
        write_json(os.path.join(d, 'config.json'), cfg)
        write_model(d, cfg, w, shards)
        write_json(os.path.join(d, 'tokenizer.json'), tj)
        write_json(os.path.join(d, 'tokenizer_config.json'), tcfg)
        logits = forward(cfg, w, seq)
        nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(seq[1:]), reduction='none')
        cont, margin = greedy(cfg, w, seq[:PROMPT], GREEDY)
        assert margin > MIN_MARGIN, f'{name}: greedy margin {margin} too small for a float32 comparison'
        write_safetensors(os.path.join(d, 'reference.safetensors'), {
            'tokens': torch.tensor(seq, dtype=torch.int32),
            'logits': logits.to(torch.float32),
            'nll': nll,
            'prompt': torch.tensor(seq[:PROMPT], dtype=torch.int32),
            'greedy': torch.tensor(cont, dtype=torch.int32),
        }, {'greedy_min_margin': f'{margin:.6g}'})
        print(f'{name}: {sum(v.numel() for v in w.values())} params, greedy margin {margin:.4g}', file=sys.stderr)


def build_smollm2_shape(out):
    """SmolLM2-135M's shape with random bf16 weights (~270 MB): for measuring speed, never committed."""
    cfg = llama_config(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                       num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192, rope_theta=100000.0,
                       torch_dtype='bfloat16', bos_token_id=0, eos_token_id=0)
    os.makedirs(out, exist_ok=True)
    w = make_weights(cfg, 1, torch.bfloat16)
    write_json(os.path.join(out, 'config.json'), cfg)
    write_model(out, cfg, w, 1)
    tj, _, tcfg, _ = make_tokenizer()
    write_json(os.path.join(out, 'tokenizer.json'), tj)
    write_json(os.path.join(out, 'tokenizer_config.json'), tcfg)
    print(f'smollm2-shape: {sum(v.numel() for v in w.values())} params', file=sys.stderr)


def build_shape(out, overrides, seed=1, embed_std=1.0):
    """A random float32 Llama model of any shape (config.json fields as a JSON object): for the bench, never committed.
    embed_std scales the token embedding (a trained model's is small: logits of a tied head stay O(1))."""
    cfg = llama_config(**overrides)
    os.makedirs(out, exist_ok=True)
    w = make_weights(cfg, seed, torch.float32)
    w['model.embed_tokens.weight'] *= embed_std
    write_json(os.path.join(out, 'config.json'), cfg)
    write_model(out, cfg, w, 1)
    tj, _, tcfg, _ = make_tokenizer()
    write_json(os.path.join(out, 'tokenizer.json'), tj)
    write_json(os.path.join(out, 'tokenizer_config.json'), tcfg)
    print(f'shape: {sum(v.numel() for v in w.values())} params', file=sys.stderr)


def read_safetensors(path):
    """A safetensors file read by hand: name -> float tensor (F32, BF16, F16)."""
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, h in header.items():
        if name == '__metadata__':
            continue
        b, e = h['data_offsets']
        raw = bytearray(data[b:e])
        if h['dtype'] == 'F32':
            t = torch.frombuffer(raw, dtype=torch.float32)
        elif h['dtype'] in ('BF16', 'F16'):
            t = torch.frombuffer(raw, dtype=torch.bfloat16 if h['dtype'] == 'BF16' else torch.float16)
        elif h['dtype'] == 'I32':
            t = torch.frombuffer(raw, dtype=torch.int32)
        else:
            raise ValueError(f'{path}: {name} is {h["dtype"]}')
        out[name] = t.reshape(h['shape'])
    return out


def folder_memory(d, path):
    """The blocks of `path` from an exported memory bank, as the folder's README.md says: {layer: (gate, up, down)}."""
    with open(os.path.join(d, 'memory_config.json')) as f:
        mc = json.load(f)
    bank = read_safetensors(os.path.join(d, mc['bank']))
    W = torch.cat([bank[f'memory.level{l + 1}.weight'][n] for l, n in enumerate(path)], dim=2)
    return {layer: (W[j, 0], W[j, 1], W[j, 2]) for j, layer in enumerate(mc['layers'])}


def folder_logits(d, ids, path=None):
    """Logits of `ids` from a model folder (config.json + model.safetensors or its index), as transformers would load it;
    with `path`, plus that path's memory blocks from the exported bank."""
    with open(os.path.join(d, 'config.json')) as f:
        cfg = json.load(f)
    cfg.setdefault('num_key_value_heads', cfg['num_attention_heads'])
    cfg.setdefault('tie_word_embeddings', False)
    idx = os.path.join(d, 'model.safetensors.index.json')
    if os.path.exists(idx):
        with open(idx) as f:
            shards = sorted(set(json.load(f)['weight_map'].values()))
        w = {k: v for s in shards for k, v in read_safetensors(os.path.join(d, s)).items()}
    else:
        w = read_safetensors(os.path.join(d, 'model.safetensors'))
    return forward(cfg, w, ids, folder_memory(d, path) if path else None)


if __name__ == '__main__':
    args = sys.argv[1:]
    if args[:1] == ['--logits']:
        path = [int(x) for x in args[3].split(',')] if len(args) > 3 else None
        print(json.dumps(folder_logits(args[1], [int(x) for x in args[2].split(',')], path).tolist()))
    elif args[:1] == ['--smollm2-shape']:
        build_smollm2_shape(args[1])
    elif args[:1] == ['--shape']:
        build_shape(args[1], json.loads(args[2]), int(args[3]) if len(args) > 3 else 1, float(args[4]) if len(args) > 4 else 1.0)
    else:
        build_fixtures(args[0] if args else os.path.join(HERE, '..', 'test', 'fixtures', 'llama'))
