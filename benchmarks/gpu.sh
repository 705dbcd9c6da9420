#!/usr/bin/env bash
# The prepared GPU check: throughput of xpnn[cupy] against PyTorch and JAX on CUDA, the
# GPU-marked tests, the batch size at which the GPU overtakes the CPU, and the MNIST example.
#
# 1. Where ../shared is at hand, stage what the GPU machine needs inside the repository (both
#    folders are git-ignored; together about 11 MB):
#        bash benchmarks/gpu.sh stage      # MNIST -> .data/mnist, array-API wheels -> .whl
# 2. On the GPU machine, with the folders carried (device tool: carry [".data", ".whl"]):
#        OUT=/some/folder bash benchmarks/gpu.sh
#
# Steps, most valuable first, each under its own time limit and all of them under GPU_BUDGET
# seconds (default 400): setup and versions; the benchmark on S/M/L; the GPU-marked tests; the
# batch-size sweep; the MNIST example; streaming from a memmap. Every step writes its results
# as it goes, so a step stopped by its limit keeps what it measured. Files under $OUT (8, at
# most one folder down):
#     gpu.log                          the script's log: versions, nvidia-smi, step exits,
#                                      tails of the results, the example's output
#     tests.txt                        pytest -m gpu (XPNN_TEST_BACKENDS=cupy)
#     bench/log.txt                    the benchmark's progress lines and errors
#     bench/configs.json, configs.md   S/M/L: xpnn-cupy vs torch-cuda, jax-cuda, GEMM floor
#     bench/sweep.json, sweep.md       M at batch 32..4096: xpnn-cupy, xpnn-numpy, torch-cuda
#     stream/results.json              streamed from a uint8 memmap vs resident on the GPU
#
# Without a usable CUDA device (or with GPU_DRY=1) the same steps run as a quick dry run on
# the CPU: the GPU steps' own arguments are checked (names, data files), then each step runs
# with them plus small overrides: tiny data, the CUDA implementations skipped with their
# reasons, the example on numpy. Data: $XPNN_DATA, else .data (staged), else ../shared/data,
# else synthetic data (no example then). The script always exits 0; step exit codes are in
# gpu.log. Worst case, every step stopped at its limit or the budget: about 7 minutes.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ "${1:-}" = "stage" ]; then
    src=${SHARED:-../shared}
    if [ -d "$src/data/mnist" ]; then
        mkdir -p .data/mnist
        cp "$src"/data/mnist/*-ubyte.gz .data/mnist/
        echo "staged MNIST into .data/mnist"
    else
        echo "no $src/data/mnist: nothing staged (the benchmark will use synthetic data)"
    fi
    if ls "$src"/wheels/array_api_*.whl >/dev/null 2>&1; then
        mkdir -p .whl
        cp "$src"/wheels/array_api_*.whl .whl/
        echo "staged $(ls .whl | wc -l) wheel(s) into .whl"
    fi
    du -sh .data .whl 2>/dev/null
    echo 'carry: [".data", ".whl"]  (64 MiB at most in all)'
    exit 0
fi

OUT=${OUT:-runs/gpu}
mkdir -p "$OUT/bench"
LOG="$OUT/gpu.log"
BLOG="$OUT/bench/log.txt"
BUDGET=${GPU_BUDGET:-400}
START=$SECONDS
export PYTHONPATH="$PWD/.site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export CUPY_TF32=0          # equivalence tests compare float32 matmuls to 1e-5
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # JAX must leave the GPU's memory to the others

exec 3>&1                   # the script's own output, whatever a step redirects
log() {
    local line="[gpu.sh $(date +%H:%M:%S) +$((SECONDS - START))s] $*"
    echo "$line" >>"$LOG"
    echo "$line" >&3
}
show() { [ -f "$1" ] && tail -n "$2" "$1" | tee -a "$LOG" >&3; }

# step NAME SECONDS CMD...: run CMD under the smaller of SECONDS and what is left of the budget
step() {
    local name=$1 want=$2 left rc
    shift 2
    left=$((BUDGET - (SECONDS - START)))
    if [ "$left" -lt 10 ]; then
        log "step $name skipped: the budget of ${BUDGET}s is spent"
        return
    fi
    [ "$want" -gt "$left" ] && want=$left
    log "step $name (at most ${want}s)"
    timeout -k 5 "$want" "$@"
    rc=$?
    [ "$rc" = 124 ] || [ "$rc" = 137 ] && log "step $name stopped at its limit of ${want}s"
    log "step $name exit code $rc"
}

log "start in $PWD, OUT=$OUT, python: $(command -v "$PY"), budget ${BUDGET}s"
if ls .whl/*.whl >/dev/null 2>&1; then
    log "installing wheels from .whl/ into .site/"
    step wheels 30 "$PY" -m pip install --quiet --no-index --no-deps --no-compile \
        --no-cache-dir --upgrade --target .site .whl/*.whl >>"$LOG" 2>&1
fi

# Data: what the caller set, else the staged copy, else the shared folder beside the checkout.
if [ -z "${XPNN_DATA:-}" ]; then
    for d in "$PWD/.data" "$PWD/../shared/data"; do
        if [ -f "$d/mnist/train-images-idx3-ubyte.gz" ]; then XPNN_DATA=$d; break; fi
    done
fi
if [ -n "${XPNN_DATA:-}" ] && [ -f "$XPNN_DATA/mnist/train-images-idx3-ubyte.gz" ]; then
    export XPNN_DATA
    DATA_ARGS=(--data-home "$XPNN_DATA")
    log "MNIST from $XPNN_DATA"
else
    unset XPNN_DATA
    DATA_ARGS=(--synthetic 60000)
    log "no MNIST found (stage it with: bash benchmarks/gpu.sh stage): synthetic data"
fi

{ timeout 20 nvidia-smi 2>&1 || echo "nvidia-smi not available"; } >>"$LOG"
step versions 20 "$PY" - >>"$LOG" 2>&1 <<'EOF'
import platform, sys
from importlib import metadata
print(sys.version, platform.platform())
for name in ("numpy", "array-api-compat", "array-api-strict", "cupy-cuda13x", "cupy-cuda12x",
             "torch", "jax", "jaxlib", "scikit-learn", "threadpoolctl"):
    try:
        print(name, metadata.version(name))
    except metadata.PackageNotFoundError:
        print(name, "not installed")
try:
    import cupy
    rt = cupy.cuda.runtime
    print("cupy", cupy.__version__, "CUDA runtime", rt.runtimeGetVersion(), "driver",
          rt.driverGetVersion(), "devices", rt.getDeviceCount())
    print("device 0:", rt.getDeviceProperties(0)["name"])
except Exception as exc:
    print("cupy device: none:", exc)
try:
    import torch
    print("torch CUDA", torch.version.cuda, "available", torch.cuda.is_available())
except Exception as exc:
    print("torch:", exc)
EOF
GPU=$("$PY" -c "import cupy; print(int(cupy.cuda.runtime.getDeviceCount() > 0))" 2>/dev/null)
if [ "${GPU_DRY:-0}" = "1" ] || [ "$GPU" != "1" ]; then
    DRY=1
    log "no usable CUDA device (or GPU_DRY=1): dry run of every step on the CPU"
else
    DRY=0
fi

# What each step runs on the GPU. The dry run passes the same arguments followed by its small
# overrides (the last value of an option wins), and first checks the GPU arguments alone.
CONFIGS=(--configs S,M,L --impls xpnn-cupy,torch-cuda,jax-cuda,gemm-cupy --rounds 3 --epochs 3
         --rounds-first --time-budget 90 --timeout 60 --out "$OUT/bench" --name configs)
SWEEP=(--configs sweep --impls xpnn-cupy --sweep-impls xpnn-cupy,xpnn-numpy,torch-cuda
       --sweep-batches 32,128,512,2048,4096 --sweep-rounds 1 --sweep-epochs 1 --timeout 30
       --out "$OUT/bench" --name sweep)
EXAMPLE_OUT=$(mktemp -d "${TMPDIR:-/tmp}/xpnn-gpu-example.XXXXXX")
EXAMPLE=(--backend cupy --epochs 5 --quiet --data-home "${XPNN_DATA:-.data}" --out "$EXAMPLE_OUT")
if [ "$DRY" = 1 ]; then
    SIZE=(--limit 1024); [ "${DATA_ARGS[0]}" = --synthetic ] && SIZE=(--synthetic 1024)
    DRY_CONFIGS=("${SIZE[@]}" --configs S --rounds 1 --epochs 1
                 --impls xpnn-cupy,torch-cuda,jax-cuda,gemm-cupy,xpnn-numpy)
    DRY_SWEEP=("${SIZE[@]}" --sweep-batches 256 --timeout 60)
    DRY_EXAMPLE=(--backend numpy --epochs 1 --limit 256 --val-size 50 --hidden 32)
    for args in CONFIGS SWEEP; do
        declare -n gpu_args=$args
        step "check-$args-args" 30 "$PY" benchmarks/mnist_throughput.py --check-args \
            "${DATA_ARGS[@]}" "${gpu_args[@]}" >>"$BLOG" 2>&1
    done
    step check-EXAMPLE-args 30 "$PY" -c 'import sys; sys.path.insert(0, "examples")
import mnist; mnist.parse_args(sys.argv[1:]); print("example arguments ok")' \
        "${EXAMPLE[@]}" >>"$LOG" 2>&1
else
    DRY_CONFIGS=() DRY_SWEEP=() DRY_EXAMPLE=()
fi

# 1. the benchmark on S/M/L: the numbers this run is for
step bench-configs 140 "$PY" benchmarks/mnist_throughput.py "${DATA_ARGS[@]}" "${CONFIGS[@]}" \
    ${DRY_CONFIGS[@]+"${DRY_CONFIGS[@]}"} >>"$BLOG" 2>&1
show "$OUT/bench/configs.md" 12

# 2. the GPU-marked tests (the rest runs in CI)
step tests 100 env XPNN_TEST_BACKENDS=cupy "$PY" -m pytest tests -m gpu -q --no-header \
    -p no:cacheprovider >"$OUT/tests.txt" 2>&1
show "$OUT/tests.txt" 5

# 3. the batch-size sweep: where xpnn[cupy] overtakes xpnn[numpy] (on this machine's CPU)
step bench-sweep 70 "$PY" benchmarks/mnist_throughput.py "${DATA_ARGS[@]}" "${SWEEP[@]}" \
    ${DRY_SWEEP[@]+"${DRY_SWEEP[@]}"} >>"$BLOG" 2>&1
show "$OUT/bench/sweep.md" 10

# 4. the MNIST example (needs the real data)
if [ -z "${XPNN_DATA:-}" ]; then
    log "step example skipped: no MNIST data"
else
    step example 40 "$PY" examples/mnist.py "${EXAMPLE[@]}" \
        ${DRY_EXAMPLE[@]+"${DRY_EXAMPLE[@]}"} >>"$LOG" 2>&1
fi
rm -rf "$EXAMPLE_OUT"

# 5. streaming: a uint8 memmap read batch by batch and staged to the GPU through pinned memory,
#    paired with the same data resident on the GPU (network M, batch 128)
STREAM=(--backend cupy --copies 4 --rounds 3 --timeout 50 --out "$OUT/stream")
DRY_STREAM=()
[ "$DRY" = 1 ] && DRY_STREAM=(--backend numpy --synthetic 600 --copies 2 --rounds 1)
step stream 60 "$PY" benchmarks/streaming_throughput.py "${DATA_ARGS[@]}" "${STREAM[@]}" \
    ${DRY_STREAM[@]+"${DRY_STREAM[@]}"} >>"$LOG" 2>&1
"$PY" -c 'import json, sys; d = json.load(open(sys.argv[1]))
print("stream:", d["backend"], "median streamed/resident", round(d["median_ratio"], 3),
      "samples/s", d["median_samples_per_s"], "peak RSS MiB", d["peak_rss_mib"])' \
    "$OUT/stream/results.json" 2>/dev/null | tee -a "$LOG" >&3
log "done in $((SECONDS - START))s"
exit 0
