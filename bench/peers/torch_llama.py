#!/usr/bin/python3
"""
The PyTorch peer of bench/hf.ts: a Hugging Face Llama model folder (config.json + model.safetensors,
float32) run in plain PyTorch, written from the Hugging Face LlamaForCausalLM equations (eager
attention; `transformers` is not needed): RMSNorm (float32 variance, gain after), q/k/v/o
projections without bias, rotate-half RoPE with inv_freq = theta^(-2i/hd) and cos/sin in float32,
grouped-query attention by repeating each key/value head nHeads/nKvHeads times (transformers'
repeat_kv), causal softmax attention with scale 1/sqrt(hd), SwiGLU MLP
down(silu(gate x) * up x), final RMSNorm, tied or separate lm_head.

Training: mean cross-entropy, autograd, clip_grad_norm_, torch.optim.AdamW (decay on matrices, not
on norm gains, as hiermem's AdamW). Generation: greedy with a KV cache (per layer, preallocated
(1, nKvHeads, P + new, hd) keys and values; the new position's k/v are written in place and the
cached heads repeated for attention, as transformers' cache + repeat_kv do).

Run as a server (`torch_llama.py --serve`): one JSON request per stdin line, one JSON reply per
stdout line (see handle()); "threads" in a request sets torch.set_num_threads.
"""
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_model import blas_info, read_safetensors  # noqa: E402  (same folder; safetensors reader)


def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class TorchLlama:
    def __init__(self, cfg, tensors):
        if cfg.get('rope_scaling') not in (None, {}):
            raise ValueError('rope_scaling is not implemented in this peer')
        if cfg.get('attention_bias') or cfg.get('mlp_bias'):
            raise ValueError('biases are not implemented in this peer')
        self.C, self.L = cfg['hidden_size'], cfg['num_hidden_layers']
        self.H = cfg['num_attention_heads']
        self.Hkv = cfg.get('num_key_value_heads', self.H)
        self.hd = cfg.get('head_dim', self.C // self.H)
        self.eps = float(cfg['rms_norm_eps'])
        self.tied = bool(cfg.get('tie_word_embeddings', False))
        self.V = cfg['vocab_size']
        self.p = {n: t.clone().requires_grad_(True) for n, t in tensors.items()}
        self.names = sorted(self.p)
        theta = float(cfg.get('rope_theta', 10000.0))
        self.inv_freq = 1.0 / (theta ** (torch.arange(0, self.hd, 2, dtype=torch.int64).float() / self.hd))
        self._tables = {}
        self._masks = {}

    def parameters(self):
        return [self.p[n] for n in self.names]

    def decay_split(self):
        no = [n for n in self.names if n.endswith('norm.weight')]
        return [self.p[n] for n in self.names if n not in no], [self.p[n] for n in no]

    def tables(self, t0, T):
        key = (t0, T)
        if key not in self._tables:
            pos = torch.arange(t0, t0 + T, dtype=torch.int64).float()
            freqs = torch.outer(pos, self.inv_freq)
            emb = torch.cat((freqs, freqs), dim=-1)
            self._tables[key] = (emb.cos(), emb.sin())
        return self._tables[key]

    def mask(self, T):
        if T not in self._masks:
            self._masks[T] = torch.ones(T, T, dtype=torch.bool).triu(1)
        return self._masks[T]

    def hidden(self, tokens, cache=None, t0=0):
        """Final normed hidden states (B, T, C). cache: per layer (K, V), (B, Hkv, Tmax, hd), filled at [t0, t0 + T)."""
        p, B, T = self.p, tokens.shape[0], tokens.shape[1]
        H, Hkv, hd, eps = self.H, self.Hkv, self.hd, self.eps
        rep = H // Hkv
        cos, sin = self.tables(t0, T)
        x = F.embedding(tokens, p['model.embed_tokens.weight'])
        mask = self.mask(T) if T > 1 else None
        if mask is not None and t0 > 0:
            raise ValueError('a multi-token chunk after position 0 is not supported')
        for l in range(self.L):
            a = f'model.layers.{l}.self_attn.'
            h = rms_norm(x, p[f'model.layers.{l}.input_layernorm.weight'], eps)
            q = F.linear(h, p[a + 'q_proj.weight']).view(B, T, H, hd).transpose(1, 2)
            k = F.linear(h, p[a + 'k_proj.weight']).view(B, T, Hkv, hd).transpose(1, 2)
            v = F.linear(h, p[a + 'v_proj.weight']).view(B, T, Hkv, hd).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            if cache is not None:
                K, Vc = cache[l]
                K[:, :, t0:t0 + T] = k
                Vc[:, :, t0:t0 + T] = v
                k, v = K[:, :, :t0 + T], Vc[:, :, :t0 + T]
            if rep > 1:
                k = k.repeat_interleave(rep, dim=1)
                v = v.repeat_interleave(rep, dim=1)
            att = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(hd)
            if mask is not None:
                att = att.masked_fill(mask, float('-inf'))
            att = F.softmax(att, dim=-1)
            o = torch.matmul(att, v).transpose(1, 2).reshape(B, T, H * hd)
            x = x + F.linear(o, p[a + 'o_proj.weight'])
            m = f'model.layers.{l}.mlp.'
            h = rms_norm(x, p[f'model.layers.{l}.post_attention_layernorm.weight'], eps)
            x = x + F.linear(F.silu(F.linear(h, p[m + 'gate_proj.weight'])) * F.linear(h, p[m + 'up_proj.weight']), p[m + 'down_proj.weight'])
        return rms_norm(x, p['model.norm.weight'], eps)

    def head(self):
        return self.p['model.embed_tokens.weight'] if self.tied else self.p['lm_head.weight']

    def loss(self, tokens, targets):
        logits = F.linear(self.hidden(tokens), self.head())
        return F.cross_entropy(logits.view(-1, self.V), targets.reshape(-1), ignore_index=-1)

    def last_logits(self, tokens, cache=None, t0=0):
        return F.linear(self.hidden(tokens, cache, t0)[:, -1], self.head())


STATE = {}


def load_folder(d):
    with open(os.path.join(d, 'config.json')) as f:
        cfg = json.load(f)
    tensors, _ = read_safetensors(os.path.join(d, 'model.safetensors'))
    if cfg.get('tie_word_embeddings', False):
        tensors.pop('lm_head.weight', None)
    return TorchLlama(cfg, tensors)


def handle(req):
    cmd = req['cmd']
    if 'threads' in req:
        torch.set_num_threads(int(req['threads']))
    if cmd == 'hello':
        return {'torch': torch.__version__, 'threads': torch.get_num_threads(), 'blas': blas_info(), 'python': sys.version.split()[0]}
    if cmd == 'load':
        STATE.clear()
        STATE['model'] = load_folder(req['dir'])
        return {'params': sum(t.numel() for t in STATE['model'].parameters())}
    model = STATE['model']
    if cmd == 'batches':
        t, meta = read_safetensors(req['file'])
        STATE['batches'] = [(t[f'{i}.tokens'].long(), t[f'{i}.targets'].long()) for i in range(int(meta['count']))]
        hp = req['hp']
        decay, no_decay = model.decay_split()
        STATE['opt'] = torch.optim.AdamW([{'params': decay, 'weight_decay': hp['weightDecay']}, {'params': no_decay, 'weight_decay': 0.0}],
                                         lr=hp['lr'], betas=(hp['beta1'], hp['beta2']), eps=hp['eps'])
        STATE['clip'] = hp['clipNorm']
        STATE['k'] = 0
        return {'count': len(STATE['batches'])}
    if cmd == 'loss':
        tokens, targets = STATE['batches'][int(req['index'])]
        with torch.no_grad():
            return {'loss': model.loss(tokens, targets).item()}
    if cmd == 'train':
        # zero_grad + forward + backward + clip + AdamW, cycling over the batches from the first
        opt, params = STATE['opt'], model.parameters()
        c0, t0 = time.process_time(), time.perf_counter()
        loss = float('nan')
        for _ in range(int(req['steps'])):
            tokens, targets = STATE['batches'][STATE['k'] % len(STATE['batches'])]
            STATE['k'] += 1
            opt.zero_grad(set_to_none=True)
            lt = model.loss(tokens, targets)
            lt.backward()
            torch.nn.utils.clip_grad_norm_(params, STATE['clip'])
            opt.step()
            loss = lt.item()
        return {'ms': (time.perf_counter() - t0) * 1e3, 'cpuMs': (time.process_time() - c0) * 1e3, 'loss': loss}
    if cmd == 'prompt':
        STATE['prompt'] = torch.tensor(req['prompt'], dtype=torch.int64)[None, :]
        with torch.inference_mode():
            return {'logits': model.last_logits(STATE['prompt'])[0].tolist()}
    if cmd == 'generate':
        # greedy, `new` tokens after the prompt; the prompt's forward (filling the cache) is done
        # before the clock starts, the timed part is the `new` single-token steps
        n_new, prompt = int(req['new']), STATE['prompt']
        P = prompt.shape[1]
        out = []
        with torch.inference_mode():
            cache = [(torch.empty(1, model.Hkv, P + n_new, model.hd), torch.empty(1, model.Hkv, P + n_new, model.hd)) for _ in range(model.L)]
            tok = int(model.last_logits(prompt, cache, 0).argmax())
            c0, t0 = time.process_time(), time.perf_counter()
            for i in range(n_new):
                out.append(tok)
                tok = int(model.last_logits(torch.tensor([[tok]]), cache, P + i).argmax())
            ms = (time.perf_counter() - t0) * 1e3
        return {'ms': ms, 'cpuMs': (time.process_time() - c0) * 1e3, 'tokens': out}
    raise ValueError(f'unknown command {cmd}')


def serve():
    torch.manual_seed(0)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            reply = {'ok': True, **handle(json.loads(line))}
        except Exception as e:  # reported to the caller; the server keeps running
            reply = {'ok': False, 'error': f'{type(e).__name__}: {e}'}
        sys.stdout.write(json.dumps(reply) + '\n')
        sys.stdout.flush()


if __name__ == '__main__':
    if '--serve' in sys.argv:
        serve()
    else:
        print(json.dumps({'torch': torch.__version__, 'threads': torch.get_num_threads()}))
