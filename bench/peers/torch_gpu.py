#!/usr/bin/env python3
"""
The cuBLAS references for hiermem_cuda_bench (cuda/bench/bench_main.cu), run by bench/gpu.sh on the
GPU machine: the same shapes, timed the same way (CUDA events, warm-up, samples of back-to-back calls
of >= ~2 ms each, median / min / max per call), written as JSON (--json).

  copy_d2d    a device-to-device copy of the gather's bytes (dst.copy_(src))
  gemm        torch.matmul at the bench's three transformer shapes: fp32 inputs with TF32 allowed, and
              bf16 inputs (bf16 output, what torch users get); a 16-row float64 check shows which
              precision cuBLAS really used
  ffn_memory  the FFN memory units written the unfused PyTorch way: the batch's paths gathered from a
              device bank with index_select + cat, then per memory layer one bmm for gate and up
              (merged, 2R rows), SiLU * up, and one baddbmm for down (y += ...); in bf16 (bank, x in
              bf16) and in fp32 with TF32. Also one layer forward with the weights already fetched, and
              one layer forward + backward through autograd.

Keep the constants below in sync with bench_main.cu.
"""
import argparse
import json
import math
import os
import sys
import traceback

import torch
import torch.nn.functional as F

# ---- shapes (mirror cuda/bench/bench_main.cu) -------------------------------------------------------
C, LM, T = 768, 12, 1024
LEVEL_ROWS = [256, 64, 16]      # the paper's 160M: r = [256, 64, 16], k = 16
LEVEL_NODES = [16, 256, 1024]   # k^l, the last level capped (4096) to keep the bank at ~4 GB
R = sum(LEVEL_ROWS)
SLOTS = 16                      # 16 sequences of T tokens, one slot each
SLOT_FLOATS = LM * 3 * R * C
DEV = 'cuda'  # (a CPU smoke test of this script may set it to 'cpu' along with smaller shapes)
GEMM_SHAPES = [  # name, trans_a, trans_b, M, N, K (A stored (K,M) if trans_a; B stored (N,K) if trans_b)
    ('qkv_fwd', False, True, 8192, 2304, 768),
    ('cls_fwd', False, True, 8192, 32768, 768),
    ('w1_wgrad', True, False, 2048, 768, 8192),
]


def stats(v):
    v = sorted(v)
    n = len(v)
    if n == 0:
        return {'median_ms': None, 'min_ms': None, 'max_ms': None, 'samples': 0}
    med = v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])
    return {'median_ms': med, 'min_ms': v[0], 'max_ms': v[-1], 'samples': n}


def time_calls(fn, warm=3, samples=10, target_ms=2.0):
    """Per-call ms of fn: warm-up calls, then `samples` samples of `inner` back-to-back calls between two
    events, inner calibrated from one timed call so that a sample lasts about target_ms (1..1000)."""
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    a.record()
    fn()
    b.record()
    b.synchronize()
    ms = a.elapsed_time(b)
    inner = int(min(1000, max(1, math.ceil(target_ms / max(ms, 1e-3)))))
    out = []
    for _ in range(samples):
        a.record()
        for _ in range(inner):
            fn()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b) / inner)
    return stats(out)


class Report:
    def __init__(self, path):
        self.path = path
        self.data = {}
        self.errors = []

    def set(self, key, value):
        self.data[key] = value
        self.write()

    def error(self, section, exc):
        msg = f'{section}: {type(exc).__name__}: {exc}'
        print('  ERROR ' + msg, flush=True)
        traceback.print_exc()
        self.errors.append(msg)
        self.write()

    def write(self):
        if not self.path:
            return
        tmp = self.path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump({**self.data, 'errors': self.errors}, f, indent=1)
        os.replace(tmp, self.path)


def set_tf32(on):
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on
    torch.set_float32_matmul_precision('high' if on else 'highest')


def section_copy(rep, samples):
    nbytes = SLOTS * SLOT_FLOATS * 4
    src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8, device=DEV)
    dst = torch.empty_like(src)
    st = time_calls(lambda: dst.copy_(src), samples=samples)
    gbps = 2 * nbytes / (st['median_ms'] * 1e-3) / 1e9
    print(f'copy   torch D2D {nbytes / 1e6:.1f} MB: {st["median_ms"]:.3f} ms, {gbps:.0f} GB/s (read+write)', flush=True)
    rep.set('copy_d2d', {'bytes': nbytes, 'time': st, 'gbps': gbps, 'gbps_counts': 'bytes read + bytes written'})


def section_gemm(rep, samples):
    rows = []
    g = torch.Generator(device=DEV).manual_seed(1)
    for name, ta, tb, M, N, K in GEMM_SHAPES:
        A = torch.randn((K, M) if ta else (M, K), device=DEV, generator=g)
        B = torch.randn((N, K) if tb else (K, N), device=DEV, generator=g)
        for mode in ('tf32', 'bf16'):
            try:
                set_tf32(mode == 'tf32')
                a = A if mode == 'tf32' else A.to(torch.bfloat16)
                b = B if mode == 'tf32' else B.to(torch.bfloat16)
                opa = a.t() if ta else a
                opb = b.t() if tb else b
                out = torch.empty((M, N), device=DEV, dtype=a.dtype)
                st = time_calls(lambda: torch.matmul(opa, opb, out=out), samples=samples)
                # 16 rows against float64 of the same (rounded) inputs' fp32 originals
                idx = torch.randperm(M, device=DEV, generator=g)[:16]
                opa64 = (A.t() if ta else A).double()[idx]
                ref = opa64 @ (B.t() if tb else B).double()
                got = out[idx].double()
                rel = ((got - ref).norm() / ref.norm()).item()
                tflops = 2.0 * M * N * K / (st['median_ms'] * 1e-3) / 1e12
                print(f'gemm   {name:<9} {mode} {"T" if ta else "N"}{"T" if tb else "N"} M={M} N={N} K={K}: '
                      f'{st["median_ms"]:.3f} ms, {tflops:.1f} TFLOP/s, sampled rel err {rel:.2e}', flush=True)
                rows.append({'name': name, 'mode': mode, 'trans_a': ta, 'trans_b': tb, 'M': M, 'N': N, 'K': K,
                             'time': st, 'tflops': tflops, 'sample_rel_err': rel,
                             'out_dtype': str(out.dtype).replace('torch.', '')})
            except Exception as e:  # noqa: BLE001 — report and go on
                rep.error(f'gemm {name} {mode}', e)
            rep.set('gemm', rows)
        del A, B
    set_tf32(False)


def section_ffn(rep, samples):
    g = torch.Generator(device=DEV).manual_seed(2)
    S, N = SLOTS, SLOTS * T
    bank32 = [torch.randn((LEVEL_NODES[l], LM, 3, LEVEL_ROWS[l], C), device=DEV, generator=g) * 0.02
              for l in range(len(LEVEL_ROWS))]
    paths = torch.stack([torch.randint(0, LEVEL_NODES[l], (S,), device=DEV, generator=g)
                         for l in range(len(LEVEL_ROWS))], dim=1)  # (S, levels)
    x32 = torch.randn((S, T, C), device=DEV, generator=g)
    dy32 = torch.randn((S, T, C), device=DEV, generator=g)
    out = {'slots': S, 'T': T, 'C': C, 'R': R, 'Lm': LM}

    def gather(bank):
        # (S, Lm, 3, R, C): each level's blocks by index_select, concatenated along the unit rows
        return torch.cat([bank[l].index_select(0, paths[:, l]) for l in range(len(bank))], dim=3)

    def units(x, W):
        # W (S, 3, R, C) of one memory layer: gate and up in one bmm (2R contiguous rows per slot)
        gu = torch.bmm(x, W[:, :2].reshape(S, 2 * R, C).transpose(1, 2))  # (S, T, 2R)
        return F.silu(gu[..., :R]) * gu[..., R:]                          # (S, T, R)

    for mode in ('bf16', 'tf32'):
        try:
            set_tf32(mode == 'tf32')
            dt = torch.bfloat16 if mode == 'bf16' else torch.float32
            bank = [b.to(dt) for b in bank32] if mode == 'bf16' else bank32
            x = x32.to(dt)
            dy = dy32.to(dt)
            y = torch.zeros((S, T, C), device=DEV, dtype=dt)

            def fwd_all():
                fetched = gather(bank)
                for j in range(LM):
                    W = fetched[:, j]
                    y.baddbmm_(units(x, W), W[:, 2])

            fetched = gather(bank)
            W0 = fetched[:, 0]

            def fwd_one():
                y.baddbmm_(units(x, W0), W0[:, 2])

            xl = x.clone().requires_grad_(True)
            Wl = W0.clone().requires_grad_(True)

            def fwd_bwd_one():
                yo = torch.bmm(units(xl, Wl), Wl[:, 2])
                yo.backward(dy)  # xl.grad, Wl.grad += ..., as the CUDA kernel's dx, dlayer_w +=

            with torch.no_grad():
                s_all = time_calls(fwd_all, warm=2, samples=samples)
                s_one = time_calls(fwd_one, warm=2, samples=samples)
            s_fb = time_calls(fwd_bwd_one, warm=2, samples=samples)
            fl = 2.0 * 3 * N * C * R
            print(f'ffn    torch {mode} gather + {LM} layers fwd: {s_all["median_ms"]:.3f} ms; one layer fwd '
                  f'{s_one["median_ms"]:.3f} ms ({fl / (s_one["median_ms"] * 1e-3) / 1e12:.1f} TFLOP/s); one layer '
                  f'fwd+bwd {s_fb["median_ms"]:.3f} ms', flush=True)
            if not torch.isfinite(y.float()).all():
                raise RuntimeError('y has non-finite values')
            out[mode] = {'gather_fwd_all_layers': s_all, 'fwd_one_layer': s_one, 'fwd_bwd_one_layer': s_fb}
            del bank, fetched, W0, xl, Wl, y
        except Exception as e:  # noqa: BLE001
            rep.error(f'ffn {mode}', e)
        rep.set('ffn_memory', out)
    set_tf32(False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    ap.add_argument('--json', default='')
    ap.add_argument('--samples', type=int, default=10)
    ap.add_argument('--quick', action='store_true', help='3 samples per measurement')
    ap.add_argument('--only', default='copy,gemm,ffn')
    args = ap.parse_args()
    samples = 3 if args.quick else max(1, args.samples)
    rep = Report(args.json)
    if not torch.cuda.is_available():
        print('torch_gpu.py: SKIP, no CUDA device')
        rep.set('device', {'error': 'no CUDA device'})
        return 77
    p = torch.cuda.get_device_properties(0)
    print(f'torch_gpu.py: torch {torch.__version__} (CUDA {torch.version.cuda}), {p.name}, {p.multi_processor_count} SMs',
          flush=True)
    rep.set('device', {'name': p.name, 'sms': p.multi_processor_count, 'memory_bytes': p.total_memory,
                       'torch': torch.__version__, 'cuda': torch.version.cuda})
    sections = {'copy': section_copy, 'gemm': section_gemm, 'ffn': section_ffn}
    for name in args.only.split(','):
        if name not in sections:
            continue
        try:
            sections[name](rep, samples)
        except Exception as e:  # noqa: BLE001
            rep.error(name, e)
        torch.cuda.empty_cache()
    rep.write()
    return 1 if rep.errors else 0


if __name__ == '__main__':
    sys.exit(main())
