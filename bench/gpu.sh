#!/usr/bin/env bash
# bench/gpu.sh — the one-command GPU check of issue #8, for the GPU test machine (one H100; nvcc, CMake,
# ninja and PyTorch with CUDA; no Node.js, no network). In 10 minutes at most:
#   1. configure + build hiermem_cuda, hiermem_cuda_harness, hiermem_cuda_bench with plain CMake
#      (no cmake-js; the CPU twins need no BLAS: cpp/kernels/gemm.cc is our own GEMM),
#      while bench/peers/torch_gpu.py measures the cuBLAS references on the idle GPU (torch needs no build)
#   2. the harness (every CUDA kernel against its CPU twin), then compute-sanitizer memcheck on a few
#      small tests if time allows
#   3. hiermem_cuda_bench (gather, GEMM, fused FFN memory, training step, host-tier overlap, and the
#      step `train --backend cuda` runs with the bank in host memory: cuda/bench/pipeline.cu)
#   4. a table of ours vs reference vs target, printed LAST.
# Every stage runs under `timeout` against one time budget; a failing stage is reported and the script
# goes on to the table. Logs go to $OUT when set (at most 8 files come back from there), else to
# build-gpu/out. Exit status: the harness's (0 = all passed; 2 when it could not be built or run).
#
# Knobs (environment): GPU_SH_BUDGET (s, default 560), GPU_SH_JOBS (default 16), GPU_SH_TORCH_PARALLEL
# (1 = torch during the build, default; 0 = after the bench), GPU_SH_SANITIZE (harness filters for
# compute-sanitizer, "" = skip), GPU_SH_BENCH_ARGS (extra hiermem_cuda_bench arguments),
# GPU_SH_TORCH_ARGS (extra torch_gpu.py arguments), GPU_SH_TABLE_ONLY=1 (no stages: re-print the table from
# what is already in the output folder).
#
# `bash bench/gpu.sh --nccl` (issue #14): instead of the above, the NCCL check for a machine with 2 GPUs or
# more, Node.js, Open MPI and libnccl.so.2: builds the addon (cmake-js) and runs test/dist-nccl-worker.ts
# on one rank per GPU (CUDA_VISIBLE_DEVICES = the local rank): NCCL bootstrapped over MPI, all-reduces of
# host buffers staged through each GPU compared with the rank-order reference; then the training step of
# `train --backend cuda --dist mpi` (test/dist-nccl-cuda-worker.ts: NCCL means the anchor's device
# gradients), one rank per GPU x batch 2 against one GPU x batch 2 x GPUs. Prints PASS or FAIL.
set -u
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
if [ "${1:-}" = "--nccl" ]; then
  NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
  ((NGPU >= 2)) || { echo "gpu.sh --nccl: needs 2 GPUs or more (nvidia-smi sees $NGPU)"; exit 2; }
  command -v mpirun >/dev/null && command -v node >/dev/null || { echo "gpu.sh --nccl: needs mpirun (openmpi-bin) and node"; exit 2; }
  NDIR=$(mktemp -d)
  { npx cmake-js build --out build-nccl --CDHIERMEM_CUDA=ON && npx tsc -p tsconfig.json; } >"$NDIR/build.log" 2>&1 || { tail -20 "$NDIR/build.log"; echo "gpu.sh --nccl: build FAILED"; exit 2; }
  HIERMEM_ADDON_PATH=$ROOT/build-nccl/Release/hiermem.node timeout 300 mpirun --allow-run-as-root -np "$NGPU" \
    sh -c 'CUDA_VISIBLE_DEVICES=$OMPI_COMM_WORLD_LOCAL_RANK exec node dist/test/dist-nccl-worker.js "$0" ${HIERMEM_NCCL_LIB:-libnccl.so.2}' "$NDIR" \
    || { echo "gpu.sh --nccl: FAIL (mpirun exit $?)"; exit 1; }
  node --input-type=module -e "
    import { readFileSync } from 'node:fs';
    import { orderedSum } from './dist/lib/dist/communicator.js';
    import { rankData, sha } from './dist/test/dist-mpi-worker.js';
    const n = $NGPU, rs = Array.from({ length: n }, (_, r) => JSON.parse(readFileSync('$NDIR/rank-' + r + '.json', 'utf8')));
    let ok = rs.every((r) => r.uniqueId === rs[0].uniqueId && !r.fake);
    for (const k of [1, 7, 1001, 65537]) {
      const parts = Array.from({ length: n }, (_, r) => rankData(r, k)), sum = orderedSum(parts);
      // NCCL sums in its own order: compare values within fp32 tolerance; every rank must hold the same bits
      ok &&= rs.every((r) => r['sum' + k] === rs[0]['sum' + k] && r['mean' + k] === rs[0]['mean' + k]);
      ok &&= rs[0]['head' + k].every((x, i) => Math.abs(x - sum[i]) <= 1e-5 * Math.max(1, Math.abs(sum[i])));
    }
    console.log('gpu.sh --nccl: NCCL ' + rs[0].version + ' on ' + n + ' GPUs: ' + (ok ? 'PASS' : 'FAIL') + ' (same id and bits on every rank; sums within 1e-5 of the reference)');
    process.exit(ok ? 0 : 1);" || exit 1
  mkdir -p "$NDIR/one" "$NDIR/all"
  HIERMEM_ADDON_PATH=$ROOT/build-nccl/Release/hiermem.node CUDA_VISIBLE_DEVICES=0 timeout 300 \
    node dist/test/dist-nccl-cuda-worker.js "$NDIR/one" $((2 * NGPU)) 4 2>"$NDIR/train.log" \
    || { tail -20 "$NDIR/train.log"; echo "gpu.sh --nccl: training on 1 GPU FAILED"; exit 1; }
  HIERMEM_ADDON_PATH=$ROOT/build-nccl/Release/hiermem.node timeout 300 mpirun --allow-run-as-root -np "$NGPU" \
    sh -c 'CUDA_VISIBLE_DEVICES=$OMPI_COMM_WORLD_LOCAL_RANK exec node dist/test/dist-nccl-cuda-worker.js "$0" 2 4 ${HIERMEM_NCCL_LIB:-libnccl.so.2}' "$NDIR/all" \
    || { echo "gpu.sh --nccl: data-parallel CUDA training FAIL (mpirun exit $?)"; exit 1; }
  node --input-type=module -e "
    import { assertSliceRunsMatch } from './dist/test/dist-checks.js';
    try {
      await assertSliceRunsMatch('$NDIR/one', '$NDIR/all', 4);
      console.log('gpu.sh --nccl: train --backend cuda --dist mpi step on $NGPU GPUs: PASS (ranks bit-identical; = 1 GPU x batch $((2 * NGPU)) within fp32 tolerance)');
    } catch (e) {
      console.log('gpu.sh --nccl: train --backend cuda --dist mpi step on $NGPU GPUs: FAIL: ' + e.message);
      process.exit(1);
    }"
  exit $?
fi
BUILD=$ROOT/build-gpu
OUTDIR=${OUT:-$BUILD/out}
BUDGET=${GPU_SH_BUDGET:-560}
JOBS=${GPU_SH_JOBS:-16}
TORCH_PARALLEL=${GPU_SH_TORCH_PARALLEL:-1}
SANITIZE=${GPU_SH_SANITIZE-memory_gather memory_scatter_add embedding_forward rmsnorm_forward swiglu}
mkdir -p "$BUILD" "$OUTDIR" || exit 2
# keep the build folder out of git without touching .gitignore (and kept between device calls)
[ -f "$BUILD/.gitignore" ] || echo '*' >"$BUILD/.gitignore"
# the 8 files of $OUTDIR
BUILD_LOG=$OUTDIR/build.log TORCH_LOG=$OUTDIR/torch.log TORCH_JSON=$OUTDIR/torch-gpu.json
HARNESS_LOG=$OUTDIR/harness.log SAN_LOG=$OUTDIR/sanitizer.log BENCH_LOG=$OUTDIR/bench.log
BENCH_JSON=$OUTDIR/gpu-bench.json SUMMARY=$OUTDIR/summary.txt
STAGES=$BUILD/stages.tsv  # name <TAB> status <TAB> seconds <TAB> note; read by the table (not in $OUT: 8 files)
T0=$SECONDS

log() { echo "[gpu.sh $((SECONDS - T0))s] $*"; }
remaining() { echo $((BUDGET - (SECONDS - T0))); }
# cap DEFAULT RESERVE: seconds a stage may take, leaving RESERVE for the stages after it (>= 5)
cap() {
  local c=$(($(remaining) - $2))
  ((c > $1)) && c=$1
  ((c < 5)) && c=5
  echo "$c"
}
stage() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >>"$STAGES"; log "$1: $2 ($3 s) ${4:-}"; }
# run_stage NAME LOGFILE CAP CMD...: runs CMD under timeout, output to LOGFILE; sets RC
run_stage() {
  local name=$1 logf=$2 limit=$3 t=$SECONDS
  shift 3
  log "$name: start (limit ${limit} s)"
  timeout --kill-after=10 "$limit" "$@" >>"$logf" 2>&1
  RC=$?
  local dt=$((SECONDS - t))
  if ((RC == 124 || RC == 137)); then
    stage "$name" "TIMEOUT" "$dt" "killed after ${limit} s; see $(basename "$logf")"
  elif ((RC == 0)); then
    stage "$name" "ok" "$dt"
  else
    stage "$name" "FAILED rc=$RC" "$dt" "see $(basename "$logf")"
  fi
}

HARNESS_RC=2
if [ "${GPU_SH_TABLE_ONLY:-0}" = 1 ]; then
  HARNESS_RC=0  # only re-print the table from what is in $OUTDIR (stages: the last run's $STAGES, if any)
  touch "$STAGES"
else
: >"$STAGES"
# ---- 0. environment ---------------------------------------------------------------------------------
{
  echo "== environment"
  date -u
  nvidia-smi -L 2>&1 || echo "nvidia-smi: not available"
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv 2>&1 || true
  nvcc --version 2>&1 | tail -2
  cmake --version 2>&1 | head -1
  ninja --version 2>&1 | sed 's/^/ninja /'
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -1
  command -v node >/dev/null && echo "node: $(node --version)" || echo "node: absent (fine: plain CMake builds the CUDA targets)"
  git -C "$ROOT" log --oneline -1 2>/dev/null
  git -C "$ROOT" status --short 2>/dev/null | head -40
} >"$BUILD_LOG" 2>&1

# ---- 1. torch references (in the background, on the idle GPU, while the CPUs build) -------------------
rm -f "$TORCH_JSON"
TORCH_PID=
TORCH_T=0
# shellcheck disable=SC2086
if [ "$TORCH_PARALLEL" = 1 ]; then
  log "torch: start in the background (limit 150 s)"
  TORCH_T=$SECONDS
  rm -f "$BUILD/torch.rc"
  (
    t=$SECONDS
    timeout --kill-after=10 150 python3 bench/peers/torch_gpu.py --json "$TORCH_JSON" ${GPU_SH_TORCH_ARGS:-} >"$TORCH_LOG" 2>&1
    echo "$? $((SECONDS - t))" >"$BUILD/torch.rc"
  ) &
  TORCH_PID=$!
fi

# ---- 2. build -------------------------------------------------------------------------------------------
rm -f "$BUILD/Release/hiermem_cuda_harness" "$BUILD/Release/hiermem_cuda_bench" "$BUILD/Release/hiermem_cuda.so"
echo "== configure" >>"$BUILD_LOG"
run_stage configure "$BUILD_LOG" "$(cap 90 300)" \
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90
if [ "$RC" = 0 ]; then
  echo "== build" >>"$BUILD_LOG"
  # -k 0: one broken target does not stop the others; nice: the torch timings in the background keep a core
  run_stage build "$BUILD_LOG" "$(cap 300 200)" \
    nice -n 10 cmake --build "$BUILD" -j "$JOBS" --target hiermem_cuda hiermem_cuda_harness hiermem_cuda_bench -- -k 0
fi
HARNESS=$BUILD/Release/hiermem_cuda_harness
BENCH=$BUILD/Release/hiermem_cuda_bench
[ -x "$HARNESS" ] || log "harness binary missing (see build.log)"
[ -x "$BENCH" ] || log "bench binary missing (see build.log)"

wait_torch() {
  [ -n "$TORCH_PID" ] || return 0
  log "torch: waiting for the background run"
  wait "$TORCH_PID"
  local rc=2 dt=$((SECONDS - TORCH_T))
  [ -s "$BUILD/torch.rc" ] && read -r rc dt <"$BUILD/torch.rc"
  TORCH_PID=
  if ((rc == 124 || rc == 137)); then stage torch "TIMEOUT" "$dt" "see torch.log"
  elif ((rc == 0)); then stage torch "ok" "$dt"
  else stage torch "FAILED rc=$rc" "$dt" "see torch.log"; fi
}
# the GPU is ours alone from here on
wait_torch

# ---- 3. harness + sanitizer -------------------------------------------------------------------------------
: >"$HARNESS_LOG"
if [ -x "$HARNESS" ]; then
  run_stage harness "$HARNESS_LOG" "$(cap 150 110)" "$HARNESS"
  HARNESS_RC=$RC
  ((HARNESS_RC == 124 || HARNESS_RC == 137)) && HARNESS_RC=1
  grep -E '^harness: ' "$HARNESS_LOG" | tail -1 | sed 's/^/    /'
else
  stage harness "NOT RUN" 0 "no binary (build failed)"
fi
: >"$SAN_LOG"
if [ -x "$HARNESS" ] && [ -n "$SANITIZE" ] && command -v compute-sanitizer >/dev/null && (($(remaining) > 170)); then
  # shellcheck disable=SC2086
  run_stage sanitizer "$SAN_LOG" "$(cap 60 110)" \
    compute-sanitizer --tool memcheck --error-exitcode 99 --print-limit 20 "$HARNESS" $SANITIZE
  grep -E 'ERROR SUMMARY|^harness: ' "$SAN_LOG" | tail -2 | sed 's/^/    /'
else
  stage sanitizer "skipped" 0 "$( [ -z "$SANITIZE" ] && echo "GPU_SH_SANITIZE empty" || echo "no harness, no compute-sanitizer or no time")"
fi

# ---- 4. bench -------------------------------------------------------------------------------------------
: >"$BENCH_LOG"
rm -f "$BENCH_JSON"
if [ -x "$BENCH" ]; then
  reserve=15
  [ "$TORCH_PARALLEL" = 1 ] || reserve=100
  # shellcheck disable=SC2086
  run_stage bench "$BENCH_LOG" "$(cap 240 $reserve)" "$BENCH" --json "$BENCH_JSON" ${GPU_SH_BENCH_ARGS:-}
else
  stage bench "NOT RUN" 0 "no binary (build failed)"
fi

# ---- 5. torch (if not run during the build) ------------------------------------------------------------------
if [ "$TORCH_PARALLEL" != 1 ]; then
  # shellcheck disable=SC2086
  run_stage torch "$TORCH_LOG" "$(cap 120 10)" python3 bench/peers/torch_gpu.py --json "$TORCH_JSON" ${GPU_SH_TORCH_ARGS:-}
fi

fi  # GPU_SH_TABLE_ONLY

# ---- 6. the table (last) ---------------------------------------------------------------------------------------
python3 - "$BENCH_JSON" "$TORCH_JSON" "$STAGES" "$HARNESS_LOG" >"$SUMMARY" 2>&1 <<'PY'
import json, sys

bench_path, torch_path, stages_path, harness_log = sys.argv[1:5]

def load(p):
    try:
        with open(p) as f:
            return json.load(f)
    except Exception as e:  # missing or cut short
        return {'_error': f'{type(e).__name__}: {e}'}

b, t = load(bench_path), load(torch_path)

def get(d, *keys):
    for k in keys:
        if isinstance(d, dict) and k in d:
            d = d[k]
        else:
            return None
    return d

def num(x):
    return isinstance(x, (int, float)) and x == x

def fmt(x, unit=''):
    if not num(x):
        return 'n/a'
    if abs(x) >= 1000:
        s = f'{x:,.0f}'
    elif abs(x) >= 100:
        s = f'{x:.0f}'
    elif abs(x) >= 10:
        s = f'{x:.1f}'
    else:
        s = f'{x:.3g}'
    return s + unit

rows = []  # (row, ours, reference, ratio, target, met)

def add(name, ours, ref, ratio, target, ok, ours_unit='', ref_unit='', note=''):
    met = '-' if target == '-' else 'n/a' if ok is None else ('yes' if ok else 'NO')
    rows.append((name, fmt(ours, ours_unit), fmt(ref, ref_unit) if num(ref) else (ref if isinstance(ref, str) else 'n/a'),
                 fmt(ratio) if num(ratio) else 'n/a', target, met + (f' {note}' if note else '')))

def ratio_of(a, c):
    return a / c if num(a) and num(c) and c > 0 else None

# gather vs a device-to-device copy of the same bytes (both counted read + write)
g, cp = get(b, 'gather', 'gbps'), get(b, 'copy_d2d', 'gbps')
r = ratio_of(g, cp)
add('gather GB/s vs cudaMemcpy D2D', g, cp, r, '>= 0.8', None if r is None else r >= 0.8)
tc = get(t, 'copy_d2d', 'gbps')
add('  (info) cudaMemcpy vs torch copy_', cp, tc, ratio_of(cp, tc), '-', None)

# GEMMs vs torch.matmul (cuBLAS)
tg = {(x.get('name'), x.get('mode')): x for x in (get(t, 'gemm') or []) if isinstance(x, dict)}
for x in (get(b, 'gemm') or []):
    key = (x.get('name'), x.get('mode'))
    ref = get(tg.get(key, {}), 'tflops')
    r = ratio_of(x.get('tflops'), ref)
    suspect = bool(x.get('suspect'))  # sampled error far above the mode's rounding: wrong, not fast
    add(f'gemm {key[1]} {key[0]} {x.get("M")}x{x.get("N")}x{x.get("K")} TFLOP/s', x.get('tflops'), ref, r, '>= 0.7',
        None if r is None else (r >= 0.7 and not suspect), note='(WRONG RESULTS)' if suspect else '')
if not get(b, 'gemm'):
    add('gemm (bench gave no GEMM rows)', None, None, None, '>= 0.7', None)

# fused FFN memory vs the unfused torch version (ratio = torch time / our time: > 1 means we are faster)
for mode in ('bf16', 'tf32'):
    for key, label, target in (('gather_fwd_all_layers', 'gather + 12 layers fwd', '> 1.0'),
                               ('fwd_bwd_one_layer', '1 layer fwd+bwd', '-')):
        ours = get(b, 'ffn_memory', mode, key, 'median_ms')
        ref = get(t, 'ffn_memory', mode, key, 'median_ms')
        r = ratio_of(ref, ours)
        add(f'ffn-memory {mode} {label} ms (speedup)', ours, ref, r, target,
            None if (r is None or target == '-') else r > 1.0)

# training step: tokens/s and MFU
for mode in ('bf16', 'tf32'):
    m = get(b, 'model', mode) or {}
    tps, mfu, peak = m.get('tokens_per_s'), m.get('mfu'), m.get('peak')
    add(f'step {mode} tokens/s (B={m.get("batch", "?")}, T=1024)', tps, None, None, '-', None)
    target = '>= 0.30' if mode == 'bf16' else '-'
    ok = None if not num(mfu) else mfu >= 0.30
    add(f'step {mode} MFU: model TFLOP/s vs dense peak', mfu * peak / 1e12 if num(mfu) and num(peak) else None,
        peak / 1e12 if num(peak) else None, mfu, target, ok)

# host tier overlap
ov = get(b, 'overlap') or {}
hid = ov.get('hidden_fraction')
add(f'H2D overlap: % of the copy hidden ({fmt(get(ov, "copy", "median_ms"))} ms copy)', 100 * hid if num(hid) else None,
    None, hid, '-', None, ours_unit='%')

# the step train --backend cuda runs (host bank): serial as the binding does it, and with the next
# batch's gather + upload overlapped
pl = get(b, 'pipeline') or {}
add(f'host-bank step tokens/s (B={pl.get("batch", "?")}, serial; {fmt(get(pl, "serial", "host_gather", "median_ms"))} ms gather,'
    f' {fmt(get(pl, "serial", "upload", "median_ms"))} ms upload)', pl.get('serial_tokens_per_s'), None, None, '-', None)
add('host-bank step tokens/s, next gather + upload overlapped', pl.get('overlapped_tokens_per_s'),
    pl.get('serial_tokens_per_s'), ratio_of(pl.get('overlapped_tokens_per_s'), pl.get('serial_tokens_per_s')), '-', None)

# ---- print: stages, notes, then the table
print('== stages')
try:
    for line in open(stages_path):
        p = line.rstrip('\n').split('\t')
        print(f'  {p[0]:<10} {p[1]:<14} {p[2]:>4} s  {p[3] if len(p) > 3 else ""}')
except OSError:
    pass
try:
    hl = [l.strip() for l in open(harness_log) if l.startswith(('FAIL', 'harness:'))]
    for l in hl[-12:]:
        print('  ' + l)
except OSError:
    pass
dev = get(b, 'device') or {}
print(f'== device: {dev.get("name", get(t, "device", "name") or "?")}; MFU peaks: {dev.get("peak_source", "n/a")}')
fl = get(b, 'model', 'flops_per_token')
if num(fl):
    print(f'   FLOPs/token {fl:.4g} = {get(b, "model", "flops_formula")}; {fmt(get(b, "model", "params"))} params')
errs = (b.get('errors') or []) + [f'torch: {e}' for e in (t.get('errors') or [])]
for k, d in (('bench', b), ('torch', t)):
    if '_error' in d:
        errs.append(f'{k} JSON: {d["_error"]}')
for e in errs[:10]:
    print(f'   error: {e}'[:200])
w = [max(len(r[i]) for r in rows + [('row', 'ours', 'reference', 'ratio', 'target', 'met')]) for i in range(6)]
hdr = ('row', 'ours', 'reference', 'ratio', 'target', 'met')
print('== results (ratio = ours / reference; for ffn-memory reference time / our time)')
print('  '.join(h.ljust(w[i]) if i == 0 else h.rjust(w[i]) for i, h in enumerate(hdr)))
for r in rows:
    print('  '.join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)))
met = sum(1 for r in rows if r[5].startswith('yes'))
graded = sum(1 for r in rows if r[5].startswith(('yes', 'NO')))
unmeasured = sum(1 for r in rows if r[5].startswith('n/a'))
print(f'targets met: {met} of {graded} measured ({unmeasured} not measured)')
PY
PY_RC=$?
if [ "$PY_RC" != 0 ]; then
  { echo "== stages"; cat "$STAGES"; echo "(table script failed, rc=$PY_RC)"; } >>"$SUMMARY"
fi
echo
if ((HARNESS_RC == 0)); then echo "gpu.sh: harness PASSED"; else echo "gpu.sh: harness FAILED or not run (rc=$HARNESS_RC)"; fi
echo "gpu.sh: $((SECONDS - T0)) s in all; logs in $OUTDIR"
cat "$SUMMARY"
exit "$HARNESS_RC"
