#!/usr/bin/python3
"""
A plain PyTorch implementation of hiermem's anchor transformer (and anchor + FFN memories), the
peer that bench/peer-check.ts and bench/peer-train.ts compare hiermem against.

The math is the one in cpp/anchor_model.cc:
  pre-norm RMSNorm (gain only, eps from the config); fused wqkv stored as [Wq; Wk; Wv] rows;
  QK-norm: RMSNorm over the FULL q and k vectors (width H*hd) before rotary; rotate-half RoPE with
  base from the config (1e5), angles computed in float64 and rounded to float32, positions
  restarting at each packed document; causal attention (per-document mask) with scale 1/sqrt(hd);
  SwiGLU w3(silu(w1 x) * w2 x); tied embeddings; mean cross-entropy over targets >= 0.
FFN memories (cpp/kernels/ffn_memory.cc): a fetched slot is (Lm, 3, R, C) = per memory layer
Wg, Wu, Wd rows; y += (silu(x Wg^T) * (x Wu^T)) Wd, with x the FFN's (normed) input. Written the
natural PyTorch way: each sequence gathers its slot's rows (fetched[seq_slot]) and the units run
as batched matmuls (torch.bmm); the gradient of `fetched` comes from autograd.

Run as a server (`torch_model.py --serve`): one JSON request per stdin line, one JSON reply per
stdout line (see handle()). Files are exchanged as safetensors (F32 / I32), parsed here with
json + numpy; no third-party package beyond torch and numpy.

Threads: the caller starts this with LD_LIBRARY_PATH pointing at the OpenMP OpenBLAS
(libopenblas0-openmp) and asks for a thread count per request ("threads"): torch.set_num_threads.
"""
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

# ---- safetensors (subset: F32 / I32 / I64, little-endian) ------------------------------------

_NP = {'F32': '<f4', 'I32': '<i4', 'I64': '<i8', 'F64': '<f8'}


def read_safetensors(path):
    with open(path, 'rb') as f:
        data = f.read()
    n = struct.unpack('<Q', data[:8])[0]
    header = json.loads(data[8:8 + n].decode('utf-8'))
    meta = header.pop('__metadata__', {}) or {}
    base = 8 + n
    out = {}
    for name, t in header.items():
        dt = _NP.get(t['dtype'])
        if dt is None:
            raise ValueError(f'{path}: tensor {name} has unsupported dtype {t["dtype"]}')
        b, e = t['data_offsets']
        count = (e - b) // np.dtype(dt).itemsize
        arr = np.frombuffer(data, dtype=dt, count=count, offset=base + b).reshape(t['shape'])
        out[name] = torch.from_numpy(arr.astype(arr.dtype.newbyteorder('='), copy=True))
    return out, meta


def write_safetensors(path, tensors, metadata=None):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        a = t.detach().contiguous().cpu()
        if a.dtype == torch.float32:
            dt, npdt = 'F32', '<f4'
        elif a.dtype == torch.int32:
            dt, npdt = 'I32', '<i4'
        else:
            raise ValueError(f'cannot write dtype {a.dtype}')
        b = a.numpy().astype(npdt, copy=False).tobytes()
        header[name] = {'dtype': dt, 'shape': list(a.shape), 'data_offsets': [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header['__metadata__'] = {k: str(v) for k, v in metadata.items()}
    h = json.dumps(header).encode('utf-8')
    h += b' ' * ((8 - len(h) % 8) % 8)
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


# ---- the model ---------------------------------------------------------------------------------

def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


class TorchAnchor:
    """The anchor with its parameters as leaf tensors (name -> tensor, hiermem's names and shapes)."""

    def __init__(self, cfg, tensors, layer_to_mem=None, R=0):
        self.cfg = cfg
        self.V, self.C, self.L = cfg['vocabSize'], cfg['dModel'], cfg['nLayers']
        self.H, self.hd, self.Fh, self.T = cfg['nHeads'], cfg['headDim'], cfg['ffnHidden'], cfg['seqLen']
        self.D = self.H * self.hd
        self.eps = float(cfg['normEps'])
        self.base = float(cfg['ropeBase'])
        self.scale = 1.0 / math.sqrt(self.hd)
        self.p = {n: t.clone().requires_grad_(True) for n, t in tensors.items()}
        self.names = list(tensors.keys())
        self.layer_to_mem = list(layer_to_mem) if layer_to_mem is not None else [-1] * self.L
        self.R = R
        half = self.hd // 2
        self.inv_freq = torch.tensor([self.base ** (-2.0 * i / self.hd) for i in range(half)], dtype=torch.float64)
        self._rope_cache = {}
        self._mask_cache = {}

    def parameters(self):
        return [self.p[n] for n in self.names]

    def decay_split(self):
        decay = [self.p[n] for n in self.names if not n.endswith('norm.weight')]
        no_decay = [self.p[n] for n in self.names if n.endswith('norm.weight')]
        return decay, no_decay

    # rotary tables for positions (B', T) -> cos, sin (B', T, 1, half) float32
    def rope_tables(self, pos):
        ang = pos.to(torch.float64)[..., None] * self.inv_freq
        return torch.cos(ang).to(torch.float32)[:, :, None, :], torch.sin(ang).to(torch.float32)[:, :, None, :]

    def plain_tables(self, t0, T):
        key = (t0, T)
        if key not in self._rope_cache:
            self._rope_cache[key] = self.rope_tables(torch.arange(t0, t0 + T)[None, :])
        return self._rope_cache[key]

    def causal_mask(self, T):
        if T not in self._mask_cache:
            self._mask_cache[T] = torch.ones(T, T, dtype=torch.bool).triu(1)  # True = masked
        return self._mask_cache[T]

    @staticmethod
    def rope(x, cos, sin):
        half = x.shape[-1] // 2
        a, b = x[..., :half], x[..., half:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)

    def memory_ffn(self, h, mem, j):
        """h (B, T, C); mem = (W, sel): W (B', Lm, 3, R, C) rows gathered per sequence, sel the
        sequences that have memory (None = all). Returns the memory units' output (B', T, C)."""
        W, sel = mem
        x = h if sel is None else h.index_select(0, sel)
        Wl = W[:, j]
        g = torch.bmm(x, Wl[:, 0].transpose(1, 2))
        u = torch.bmm(x, Wl[:, 1].transpose(1, 2))
        return torch.bmm(F.silu(g) * u, Wl[:, 2])

    def hidden(self, tokens, doc_start=None, mem=None, cache=None, t0=0):
        """Final normed hidden states (B, T, C). cache: list of preallocated (K, V) per layer,
        (B, H, Tmax, hd), filled at [t0, t0 + T) (inference only)."""
        p, B, T = self.p, tokens.shape[0], tokens.shape[1]
        C, D, H, hd, eps = self.C, self.D, self.H, self.hd, self.eps
        x = F.embedding(tokens, p['tok_embeddings.weight'])
        if doc_start is not None:
            pos = torch.arange(T)[None, :] - doc_start
            cos, sin = self.rope_tables(pos)
            j = torch.arange(T)
            # masked: key j > query i, or key j before the query's document start
            mask = ((j[None, None, :] > j[None, :, None]) | (j[None, None, :] < doc_start[:, :, None]))[:, None]
        else:
            cos, sin = self.plain_tables(t0, T)
            mask = self.causal_mask(T) if (cache is None or T > 1) else None
            if mask is not None and cache is not None and t0 > 0:
                raise ValueError('chunked prefill with a cache is not supported')
        Wmem = None
        if mem is not None:
            fetched, seq_slot = mem
            if bool((seq_slot >= 0).all()):
                Wmem = (fetched[seq_slot], None)
            else:
                sel = (seq_slot >= 0).nonzero().flatten()
                Wmem = (fetched[seq_slot[sel]], sel) if sel.numel() else None
        for l in range(self.L):
            pre = f'layers.{l}.'
            h = rmsnorm(x, p[pre + 'attn_norm.weight'], eps)
            q, k, v = F.linear(h, p[pre + 'attn.wqkv']).split(D, dim=-1)
            q = rmsnorm(q, p[pre + 'attn.q_norm.weight'], eps).view(B, T, H, hd)
            k = rmsnorm(k, p[pre + 'attn.k_norm.weight'], eps).view(B, T, H, hd)
            q = self.rope(q, cos, sin).transpose(1, 2)
            k = self.rope(k, cos, sin).transpose(1, 2)
            v = v.view(B, T, H, hd).transpose(1, 2)
            if cache is not None:
                K, Vc = cache[l]
                K[:, :, t0:t0 + T] = k
                Vc[:, :, t0:t0 + T] = v
                k, v = K[:, :, :t0 + T], Vc[:, :, :t0 + T]
            att = (q @ k.transpose(-2, -1)) * self.scale
            if mask is not None:
                att = att.masked_fill(mask, float('-inf'))
            att = F.softmax(att, dim=-1)
            o = (att @ v).transpose(1, 2).reshape(B, T, D)
            x = x + F.linear(o, p[pre + 'attn.wo'])
            h = rmsnorm(x, p[pre + 'ffn_norm.weight'], eps)
            y = F.linear(F.silu(F.linear(h, p[pre + 'ffn.w1'])) * F.linear(h, p[pre + 'ffn.w2']), p[pre + 'ffn.w3'])
            jm = self.layer_to_mem[l]
            if jm >= 0 and Wmem is not None:
                m = self.memory_ffn(h, Wmem, jm)
                y = y + m if Wmem[1] is None else y.index_add(0, Wmem[1], m)
            x = x + y
        return rmsnorm(x, p['final_norm.weight'], eps)

    def loss(self, tokens, targets, doc_start=None, mem=None):
        x = self.hidden(tokens, doc_start, mem)
        logits = F.linear(x, self.p['tok_embeddings.weight'])
        return F.cross_entropy(logits.view(-1, self.V), targets.view(-1).long(), ignore_index=-1)

    def last_logits(self, tokens, mem=None, cache=None, t0=0):
        x = self.hidden(tokens, None, mem, cache, t0)
        return F.linear(x[:, -1], self.p['tok_embeddings.weight'])


# ---- training (AdamW like hiermem's: decoupled decay on matrices, joint clipping) ---------------

class Trainer:
    def __init__(self, model, batches, hp, mem_spec=None):
        self.model, self.batches, self.hp = model, batches, hp
        decay, no_decay = model.decay_split()
        self.params = model.parameters()
        self.opt = torch.optim.AdamW(
            [{'params': decay, 'weight_decay': hp['weightDecay']}, {'params': no_decay, 'weight_decay': 0.0}],
            lr=hp['lr'], betas=(hp['beta1'], hp['beta2']), eps=hp['eps'], foreach=hp.get('foreach', None))
        self.k = 0
        self.bank = None
        if mem_spec is not None:
            # The bank: one tensor per level, (k^(l+1), Lm, 3, r_l, C), AdamW state beside it and a
            # step count per block (row-sparse "lazy" AdamW, as hiermem does).
            g = torch.Generator().manual_seed(int(mem_spec.get('seed', 1)))
            k, Lm, C = mem_spec['k'], mem_spec['memoryLayers'], model.C
            self.bank = []
            for l, r in enumerate(mem_spec['levels']):
                n = k ** (l + 1)
                w = torch.zeros(n, Lm, 3, r, C)
                w[:, :, :2] = torch.randn(n, Lm, 2, r, C, generator=g) / math.sqrt(C)
                self.bank.append({'w': w, 'm': torch.zeros_like(w), 'v': torch.zeros_like(w),
                                  'steps': torch.zeros(n, dtype=torch.int64), 'r': r})
            self.mem_lr, self.mem_wd = mem_spec['lr'], mem_spec['weightDecay']

    def step(self):
        b = self.batches[self.k % len(self.batches)]
        self.k += 1
        self.opt.zero_grad(set_to_none=True)
        if self.bank is None:
            loss = self.model.loss(b['tokens'], b['targets'])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, self.hp['clipNorm'])
            self.opt.step()
            return loss.item()
        paths = b['slot_paths']  # (S, p)
        parts = [lv['w'][paths[:, l]] for l, lv in enumerate(self.bank) if lv['r'] > 0]
        fetched = torch.cat(parts, dim=3).requires_grad_(True)
        loss = self.model.loss(b['tokens'], b['targets'], None, (fetched, b['seq_slot']))
        loss.backward()
        dF = fetched.grad
        blocks, off = [], 0
        for l, lv in enumerate(self.bank):
            r = lv['r']
            if r == 0:
                continue
            u, inv = torch.unique(paths[:, l], return_inverse=True)
            g = torch.zeros((u.numel(),) + tuple(lv['w'].shape[1:])).index_add_(0, inv, dF[:, :, :, off:off + r])
            blocks.append((lv, u, g))
            off += r
        grads = [p.grad for p in self.params] + [g for _, _, g in blocks]
        total = torch.norm(torch.stack([torch.norm(g) for g in grads]))
        coef = torch.clamp(self.hp['clipNorm'] / (total + 1e-6), max=1.0)
        for g in grads:
            g.mul_(coef)
        self.opt.step()
        b1, b2, eps, lr, wd = self.hp['beta1'], self.hp['beta2'], self.hp['eps'], self.mem_lr, self.mem_wd
        for lv, u, g in blocks:
            s = lv['steps'][u] + 1
            lv['steps'][u] = s
            w, m, v = lv['w'][u], lv['m'][u], lv['v'][u]
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            shape = (-1,) + (1,) * (w.dim() - 1)
            bc1 = (1 - b1 ** s.double()).float().view(shape)
            bc2 = (1 - b2 ** s.double()).float().view(shape)
            w.sub_(lr * ((m / bc1) / ((v / bc2).sqrt() + eps) + wd * w))
            lv['w'][u], lv['m'][u], lv['v'][u] = w, m, v
        return loss.item()


# ---- server ------------------------------------------------------------------------------------

STATE = {}
GEMM = {}  # the operands of the current gemm_setup (bench/gemm.ts)


def _long(t):
    return t.to(torch.int64)


def load_batch(path):
    t, _ = read_safetensors(path)
    out = {'tokens': _long(t['tokens']), 'targets': _long(t['targets'])}
    if 'doc_start' in t:
        out['doc_start'] = _long(t['doc_start'])
    if 'fetched' in t:
        out['fetched'] = t['fetched']
        out['seq_slot'] = _long(t['seq_slot'])
    return out


def load_batches(path):
    t, meta = read_safetensors(path)
    out = []
    for i in range(int(meta['count'])):
        b = {'tokens': _long(t[f'{i}.tokens']), 'targets': _long(t[f'{i}.targets'])}
        if f'{i}.slot_paths' in t:
            b['slot_paths'] = _long(t[f'{i}.slot_paths'])
            b['seq_slot'] = _long(t[f'{i}.seq_slot'])
        out.append(b)
    return out


def blas_info():
    try:
        with open('/proc/self/maps') as f:
            libs = sorted({line.split()[-1] for line in f if 'blas' in line.lower() and '/' in line})
        return libs
    except OSError:
        return []


def handle(req):
    cmd = req['cmd']
    if 'threads' in req:
        torch.set_num_threads(int(req['threads']))
    if cmd == 'hello':
        return {'torch': torch.__version__, 'threads': torch.get_num_threads(), 'numpy': np.__version__,
                'blas': blas_info(), 'python': sys.version.split()[0],
                'openmp': torch.backends.openmp.is_available(), 'mkldnn': torch.backends.mkldnn.is_available()}
    if cmd == 'load':
        tensors, meta = read_safetensors(req['ckpt'])
        cfg = json.loads(meta['model_config'])
        mem = req.get('memory')
        names = [n for n in tensors if not n.startswith('optimizer.')]
        model = TorchAnchor(cfg, {n: tensors[n] for n in names},
                            mem['layerToMemory'] if mem else None, mem['R'] if mem else 0)
        STATE.clear()
        STATE['model'] = model
        return {'params': sum(t.numel() for t in model.parameters())}
    if cmd == 'gemm_setup':
        # one product C (M,N) = op(A) op(B) for bench/gemm.ts, the operands stored as hiermem's gemm
        # reads them (A (K,M) when transA, B (N,K) when transB) and handed to torch.mm as .t() views,
        # so torch sees the same transposition; C is preallocated (out=), as hiermem writes into its C
        ta, tb = bool(req['transA']), bool(req['transB'])
        M, N, K = int(req['M']), int(req['N']), int(req['K'])
        g = torch.Generator().manual_seed(int(req.get('seed', 7)))
        a = torch.rand((K, M) if ta else (M, K), generator=g) - 0.5
        b = torch.rand((N, K) if tb else (K, N), generator=g) - 0.5
        A = a.t() if ta else a
        B = b.t() if tb else b
        C = torch.empty(M, N)
        torch.mm(A, B, out=C)
        GEMM.clear()
        GEMM.update(A=A, B=B, C=C)
        return {'aStride': list(A.stride()), 'bStride': list(B.stride())}
    if cmd == 'gemm':
        A, B, C = GEMM['A'], GEMM['B'], GEMM['C']
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(int(req['reps'])):
            torch.mm(A, B, out=C)
        return {'ms': (time.perf_counter() - t0) * 1e3, 'cpuMs': (time.process_time() - c0) * 1e3}
    model = STATE['model']
    if cmd == 'grads':
        # loss and gradients of one batch; optionally one optimizer step afterwards (anchor only)
        b = load_batch(req['batch'])
        for t in model.parameters():
            t.grad = None
        mem = None
        fetched = None
        if 'fetched' in b:
            fetched = b['fetched'].clone().requires_grad_(True)
            mem = (fetched, b['seq_slot'])
        loss = model.loss(b['tokens'], b['targets'], b.get('doc_start'), mem)
        loss.backward()
        out = {f'grad.{n}': model.p[n].grad.clone() for n in model.names}
        if fetched is not None:
            out['grad.memory.fetched'] = fetched.grad
        if req.get('step'):
            hp = req['step']
            tr = Trainer(model, [], hp)
            torch.nn.utils.clip_grad_norm_(tr.params, hp['clipNorm'])
            tr.opt.step()
            out.update({f'param.{n}': model.p[n] for n in model.names})
        write_safetensors(req['out'], out, {'loss': repr(loss.item())})
        return {'loss': loss.item()}
    if cmd == 'train_setup':
        batches = load_batches(req['batches'])
        STATE['trainer'] = Trainer(model, batches, req['hp'], req.get('memory'))
        return {'batches': len(batches)}
    if cmd == 'train':
        tr = STATE['trainer']
        c0, t0 = time.process_time(), time.perf_counter()
        loss = float('nan')
        for _ in range(int(req['steps'])):
            loss = tr.step()
        ms = (time.perf_counter() - t0) * 1e3
        return {'ms': ms, 'cpuMs': (time.process_time() - c0) * 1e3, 'loss': loss}
    if cmd == 'infer_setup':
        STATE['prompt'] = torch.tensor(req['prompt'], dtype=torch.int64)[None, :]
        STATE['mem'] = None
        if req.get('fetched'):
            t, _ = read_safetensors(req['fetched'])
            STATE['mem'] = (t['fetched'], torch.zeros(1, dtype=torch.int64))
        with torch.inference_mode():
            logits = model.last_logits(STATE['prompt'], STATE['mem'])
        return {'logits': logits[0].tolist()}
    if cmd == 'prefill':
        # forward of the whole prompt (batch 1), logits of its last position
        c0, t0 = time.process_time(), time.perf_counter()
        with torch.inference_mode():
            for _ in range(int(req['reps'])):
                logits = model.last_logits(STATE['prompt'], STATE['mem'])
                logits.argmax()
        return {'ms': (time.perf_counter() - t0) * 1e3, 'cpuMs': (time.process_time() - c0) * 1e3}
    if cmd == 'generate':
        # greedy: `new` tokens after the prompt. The timed part is the `new` forward passes that
        # each feed one generated token (the prompt's own forward is done before the clock starts).
        # cache=True: K/V of earlier positions kept (preallocated); cache=False: the whole context
        # is re-run for every token (hiermem's algorithm before its KV cache; the -nocache row).
        n_new, use_cache = int(req['new']), bool(req['cache'])
        prompt, mem = STATE['prompt'], STATE['mem']
        P = prompt.shape[1]
        out = []
        with torch.inference_mode():
            cache = None
            if use_cache:
                cache = [(torch.empty(1, model.H, P + n_new, model.hd), torch.empty(1, model.H, P + n_new, model.hd))
                         for _ in range(model.L)]
            tok = int(model.last_logits(prompt, mem, cache, 0).argmax())
            ctx = prompt
            c0, t0 = time.process_time(), time.perf_counter()
            for i in range(n_new):
                out.append(tok)
                if use_cache:
                    logits = model.last_logits(torch.tensor([[tok]]), mem, cache, P + i)
                else:
                    ctx = torch.cat([ctx, torch.tensor([[tok]])], dim=1)[:, -model.T:]
                    logits = model.last_logits(ctx, mem)
                tok = int(logits.argmax())
            ms = (time.perf_counter() - t0) * 1e3
        return {'ms': ms, 'cpuMs': (time.process_time() - c0) * 1e3, 'tokens': out}
    if cmd == 'cache_check':
        # logits with and without the KV cache agree (max abs difference over `new` greedy steps)
        n_new = int(req['new'])
        prompt, mem = STATE['prompt'], STATE['mem']
        P = prompt.shape[1]
        worst = 0.0
        with torch.inference_mode():
            cache = [(torch.empty(1, model.H, P + n_new, model.hd), torch.empty(1, model.H, P + n_new, model.hd))
                     for _ in range(model.L)]
            lc = model.last_logits(prompt, mem, cache, 0)
            ctx = prompt
            for i in range(n_new):
                tok = int(lc.argmax())
                ctx = torch.cat([ctx, torch.tensor([[tok]])], dim=1)
                lc = model.last_logits(torch.tensor([[tok]]), mem, cache, P + i)
                lf = model.last_logits(ctx, mem)
                worst = max(worst, float((lc - lf).abs().max() / lf.abs().max()))
        return {'maxRelDiff': worst}
    raise ValueError(f'unknown command {cmd}')


def serve():
    torch.manual_seed(0)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            reply = {'ok': True, **handle(req)}
        except Exception as e:  # reported to the caller, the server keeps running
            reply = {'ok': False, 'error': f'{type(e).__name__}: {e}'}
        sys.stdout.write(json.dumps(reply) + '\n')
        sys.stdout.flush()


if __name__ == '__main__':
    if '--serve' in sys.argv:
        serve()
    else:
        print(json.dumps({'torch': torch.__version__, 'threads': torch.get_num_threads()}))
