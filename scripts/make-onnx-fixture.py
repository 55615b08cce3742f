#!/usr/bin/env python3
"""Builds test/fixtures/tiny-encoder/: a tiny random BERT-like encoder exported to ONNX, its WordPiece
vocab.txt, and expected.json with the token ids and the mean-pooled, L2-normalised embeddings of three
fixed sentences computed in PyTorch. test/onnx-embedder.test.ts checks lib/retrieval against them.

The files are committed; CI does not need PyTorch. To regenerate (Debian: apt-get install -y
--no-install-recommends python3-torch; torch 1.13 exports without the `onnx` package):

    /usr/bin/python3 scripts/make-onnx-fixture.py [outDir]

The tokenizer below is a second, independent implementation of BERT's uncased WordPiece (the one in
lib/retrieval/wordpiece.ts is the first), so the test also cross-checks tokenization.
"""
import json
import math
import os
import sys
import unicodedata

import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), '..', 'test', 'fixtures', 'tiny-encoder')
MAX_LENGTH = 256  # sentence-transformers' default truncation for all-MiniLM-L6-v2

# ~100 word pieces: specials, punctuation, whole words, and continuations ("##") so that the sentences
# below exercise greedy longest-match splitting, accents, case, punctuation and [UNK].
VOCAB = (
    ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
    + list('.,!?:;\'"()-')
    + ['the', 'a', 'an', 'of', 'is', 'are', 'was', 'and', 'in', 'to', 'for', 'with',
       'atomic', 'number', 'weight', 'symbol', 'element', 'metal', 'gas',
       'os', '##mium', 'iri', '##dium', 'plat', '##in', '##um', 'hydrogen', 'helium',
       'hello', 'world', 'un', '##believ', '##able', 'token', '##ization', '##ize', '##s',
       'z', '##e', '##b', '##ra', 'quiz', 'cafe', 'naive', 'resume',
       '7', '##6', '1', '2', '3', '4', '5', '6', '8', '9', '0', '##0', '##1', '##2',
       'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'k', 'l', 'm', 'n', 'o', 'p', 'r', 's', 't', 'u', 'w', 'y',
       '##a', '##c', '##d', '##i', '##l', '##n', '##o', '##r', '##t', '##y']
)
SENTENCES = [
    'The atomic number of Osmium is 76.',
    'Héllo, WORLD! Unbelievable tokenization: a naïve café résumé.',
    "A zebra's quiz (xylophones?) -- Iridium & platinum\tare metals.",
]


def is_whitespace(ch):
    return ch in ' \t\n\r' or unicodedata.category(ch) == 'Zs'


def is_control(ch):
    return ch not in '\t\n\r' and unicodedata.category(ch).startswith('C')


def is_punctuation(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith('P')


def basic_tokens(text):
    clean = ''.join(' ' if is_whitespace(c) else c for c in text if not (ord(c) in (0, 0xFFFD) or is_control(c)))
    out = []
    for word in clean.split():
        word = ''.join(c for c in unicodedata.normalize('NFD', word.lower()) if unicodedata.category(c) != 'Mn')
        cur = ''
        for c in word:
            if is_punctuation(c):
                if cur:
                    out.append(cur)
                out.append(c)
                cur = ''
            else:
                cur += c
        if cur:
            out.append(cur)
    return out


def word_pieces(word, ids):
    if len(word) > 100:
        return [ids['[UNK]']]
    pieces, start = [], 0
    while start < len(word):
        end, found = len(word), None
        while start < end:
            sub = ('##' if start > 0 else '') + word[start:end]
            if sub in ids:
                found = ids[sub]
                break
            end -= 1
        if found is None:
            return [ids['[UNK]']]
        pieces.append(found)
        start = end
    return pieces


def encode(text, ids):
    body = [p for w in basic_tokens(text) for p in word_pieces(w, ids)][: MAX_LENGTH - 2]
    return [ids['[CLS]']] + body + [ids['[SEP]']]


class TinyEncoder(nn.Module):
    """Embeddings (token + position + type) -> LayerNorm -> one post-norm transformer layer."""

    def __init__(self, vocab, d=32, heads=4, ff=64, max_pos=MAX_LENGTH):
        super().__init__()
        self.heads = heads
        self.dh = d // heads
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(max_pos, d)
        self.typ = nn.Embedding(2, d)
        self.ln0 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ln1 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, ff)
        self.ff2 = nn.Linear(ff, d)
        self.ln2 = nn.LayerNorm(d)

    def forward(self, input_ids, attention_mask, token_type_ids):
        b, t = input_ids.shape
        positions = torch.cumsum(torch.ones_like(input_ids), dim=1) - 1  # exports cleanly with dynamic T
        x = self.ln0(self.tok(input_ids) + self.pos(positions) + self.typ(token_type_ids))
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        dh = self.dh
        split = lambda z: z.reshape(b, t, self.heads, dh).transpose(1, 2)
        q, k, v = split(q), split(k), split(v)
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
        scores = scores + (1.0 - attention_mask[:, None, None, :].to(scores.dtype)) * -1e4
        a = torch.softmax(scores, dim=-1) @ v
        x = self.ln1(x + self.out(a.transpose(1, 2).reshape(b, t, -1)))
        return self.ln2(x + self.ff2(F.gelu(self.ff1(x))))


def main():
    torch.manual_seed(20251127)
    os.makedirs(OUT, exist_ok=True)
    ids = {tok: i for i, tok in enumerate(VOCAB)}
    assert len(ids) == len(VOCAB), 'duplicate vocab entry'
    with open(os.path.join(OUT, 'vocab.txt'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(VOCAB) + '\n')

    model = TinyEncoder(len(VOCAB)).eval()
    with torch.no_grad():  # random LayerNorm affine too, so a wrong gain/bias would show
        for ln in (model.ln0, model.ln1, model.ln2):
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.normal_(0, 0.1)

    encoded = [encode(s, ids) for s in SENTENCES]
    t = max(len(e) for e in encoded)
    input_ids = torch.tensor([e + [ids['[PAD]']] * (t - len(e)) for e in encoded], dtype=torch.int64)
    mask = torch.tensor([[1] * len(e) + [0] * (t - len(e)) for e in encoded], dtype=torch.int64)
    types = torch.zeros_like(input_ids)
    with torch.no_grad():
        hidden = model(input_ids, mask, types)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        emb = F.normalize(pooled, p=2, dim=1)

    torch.onnx.export(
        model,
        (input_ids, mask, types),
        os.path.join(OUT, 'model.onnx'),
        input_names=['input_ids', 'attention_mask', 'token_type_ids'],
        output_names=['last_hidden_state'],
        dynamic_axes={
            'input_ids': {0: 'batch', 1: 'sequence'},
            'attention_mask': {0: 'batch', 1: 'sequence'},
            'token_type_ids': {0: 'batch', 1: 'sequence'},
            'last_hidden_state': {0: 'batch', 1: 'sequence'},
        },
        opset_version=14,
        do_constant_folding=True,
    )
    with open(os.path.join(OUT, 'expected.json'), 'w', encoding='utf-8') as f:
        json.dump({
            'generator': 'scripts/make-onnx-fixture.py',
            'torch': torch.__version__,
            'maxLength': MAX_LENGTH,
            'dim': emb.shape[1],
            'sentences': SENTENCES,
            'ids': encoded,
            'embeddings': [[round(float(v), 7) for v in row] for row in emb],
        }, f, indent=1, ensure_ascii=False)
        f.write('\n')
    print('wrote', OUT, {n: os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT)})


if __name__ == '__main__':
    main()
