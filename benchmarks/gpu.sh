#!/usr/bin/env bash
# One prepared GPU check: the cupy test suite, the MNIST example and the throughput benchmark
# (xpnn[cupy] vs PyTorch eager CUDA), all results written to $OUT (default ./runs/gpu).
#
# Run from the repository root on a machine with a CUDA GPU:
#     OUT=/some/folder bash benchmarks/gpu.sh
# Wheels in .whl/ (cupy, ...) are installed into .site/ without network access. Without a GPU
# (or without cupy) every step degrades to a skip note and the script still exits 0.
# Whole run: under 9 minutes (each step has its own time limit).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/.site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export CUPY_TF32=0          # equivalence tests compare float32 matmuls to 1e-5
PY=${PYTHON:-python}
log() { echo "[gpu.sh $(date +%H:%M:%S)] $*" | tee -a "$OUT/gpu.log"; }

log "start in $PWD, OUT=$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    log "installing wheels from .whl/ into .site/"
    $PY -m pip install --quiet --no-index --no-deps --target .site .whl/*.whl \
        >>"$OUT/gpu.log" 2>&1 || log "pip install failed (see gpu.log)"
fi
{ nvidia-smi 2>&1 || echo "nvidia-smi not available"; } >"$OUT/nvidia-smi.txt"
$PY - >"$OUT/env.txt" 2>&1 <<'EOF'
import platform, sys
print(sys.version, platform.platform())
for name in ("numpy", "cupy", "torch", "sklearn", "xpnn"):
    try:
        mod = __import__(name)
        print(name, mod.__version__)
    except Exception as exc:
        print(name, "unavailable:", exc)
try:
    import cupy
    print("cuda devices:", cupy.cuda.runtime.getDeviceCount())
    print("device 0:", cupy.cuda.runtime.getDeviceProperties(0)["name"])
except Exception as exc:
    print("cupy device: none:", exc)
EOF
cat "$OUT/env.txt" | tee -a "$OUT/gpu.log"

HAVE_CUPY=$($PY -c "import cupy; print(int(cupy.cuda.runtime.getDeviceCount() > 0))" 2>/dev/null || echo 0)

# 1. tests: cupy and numpy backends (200 s at most)
log "pytest (XPNN_TEST_BACKENDS=cupy,numpy)"
XPNN_TEST_BACKENDS=cupy,numpy timeout 200 $PY -m pytest tests -q --no-header -p no:cacheprovider \
    >"$OUT/tests.txt" 2>&1
log "pytest exit code $? (tail below)"
tail -n 15 "$OUT/tests.txt" | tee -a "$OUT/gpu.log"

# 2. the MNIST example on the GPU, if the example exists (60 s at most)
if [ -f examples/mnist.py ]; then
    if [ "$HAVE_CUPY" = "1" ]; then
        log "examples/mnist.py --backend cupy"
        XPNN_DATA=${XPNN_DATA:-../shared/data} timeout 60 $PY examples/mnist.py --backend cupy \
            >"$OUT/example_mnist.txt" 2>&1
        log "example exit code $?"
    else
        log "no usable cupy: skipping examples/mnist.py --backend cupy"
    fi
fi

# 3. the benchmark: xpnn[cupy] vs torch CUDA (+ GEMM floor), S/M/L and the batch sweep,
#    plus xpnn[numpy] in the sweep to find where the GPU overtakes the CPU (240 s at most; results are written after every step)
if [ "$HAVE_CUPY" = "1" ]; then
    log "benchmark (cupy vs torch-cuda)"
    XPNN_DATA=${XPNN_DATA:-../shared/data} timeout 240 $PY benchmarks/mnist_throughput.py \
        --configs S,M,L,sweep --impls xpnn-cupy,xpnn-torch-cuda,torch-cuda,gemm-cupy \
        --sweep-impls xpnn-cupy,xpnn-numpy,torch-cuda --rounds 4 --epochs 2 \
        --sweep-rounds 1 --sweep-epochs 1 --sweep-batches 32,128,512,2048,4096 \
        --time-budget 150 --timeout 90 \
        --out "$OUT/bench" >"$OUT/bench.txt" 2>&1
    log "benchmark exit code $?"
    tail -n 40 "$OUT/bench.txt" | tee -a "$OUT/gpu.log"
else
    log "no usable cupy: benchmark dry run on the CPU (tiny synthetic data)"
    timeout 120 $PY benchmarks/mnist_throughput.py --synthetic 2048 --configs S \
        --impls xpnn-cupy,xpnn-torch-cuda,torch-cuda,gemm-cupy,xpnn-numpy,xpnn-torch --rounds 1 --epochs 1 \
        --out "$OUT/bench" >"$OUT/bench.txt" 2>&1
    log "benchmark dry run exit code $?"
    tail -n 12 "$OUT/bench.txt" | tee -a "$OUT/gpu.log"
fi
log "done"
exit 0
