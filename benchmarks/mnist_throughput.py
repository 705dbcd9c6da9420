"""Training throughput of an MLP on MNIST: xpnn vs PyTorch eager vs scikit-learn.

Every measurement runs in a fresh process; implementations are interleaved (A B C A B C ...) for
``--rounds`` rounds and only same-round ratios are reported, because timings on a shared machine
drift by large factors between processes.

Network: float32, Dense layers with ReLU between them, softmax cross-entropy (mean),
Adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8), He-normal init, zero biases, reshuffled every
epoch, all training samples, no validation, no output while timing.

Configurations: S = 784-128-64-10 batch 128, M = 784-256-128-10 batch 128,
L = 784-1024-1024-10 batch 512, and ``sweep`` = M at batch sizes ``--sweep-batches``.

Implementations (``--impls``): ``xpnn-numpy`` (fast path; with Numba's fused kernels when
Numba is installed), ``xpnn-numpy-nonumba`` (fast path, NumPy passes only: ``XPNN_NUMBA=0``),
``xpnn-numpy-generic`` (fast paths off), ``xpnn-torch`` / ``xpnn-torch-cuda`` (xpnn's own
backprop on torch tensors, CPU / CUDA: the generic path, there is no torch fast path),
``xpnn-cupy``, ``torch`` (CPU, threads = cores), ``torch-cuda``, ``jax`` / ``jax-cuda`` (one
jit-compiled step: the same network and Adam, float32 matmuls at full precision, data resident
on the device, one gather per epoch; skipped with the reason when JAX is not installed),
``sklearn`` (MLPClassifier on float32) and the GEMM-only floors ``gemm-numpy`` / ``gemm-cupy``
(every matmul of one training step timed alone at its real shape and layout, times the number
of steps).

BLAS: the benchmark runs on the kernels OpenBLAS picks for the processor. When
``OPENBLAS_CORETYPE`` or ``OPENBLAS_L2_SIZE`` is set, the script re-executes itself without them
(``--keep-blas-env`` keeps them), and every result file records the variables removed and, per
worker process, the kernel set threadpoolctl reports (``architecture``, ``internal_api``,
``version``, ``num_threads``).

Per epoch the worker records the wall time and the CPU load of *other* processes (from
/proc/stat minus its own CPU time); epochs with more than ``--max-load`` of that load are dropped
(when none are left, all are used and the row is flagged). Reported: samples/s (median over the
kept epochs after one warm-up), the median over rounds of the same-round ratio to the reference
(``torch`` or ``torch-cuda``) and to JAX (``jax`` or ``jax-cuda``), GFLOP/s and the fraction of
the GEMM-only floor, measured two ways: in the worker's own process right after each epoch
(:class:`InProcessFloor`, CPU implementations; the median over epochs of floor / epoch time,
then the median over rounds), and by the separate ``gemm-*`` process of the same round (best
of 5 repeats per matmul).

Examples
--------
    XPNN_DATA=../shared/data python benchmarks/mnist_throughput.py --configs S,M,L \\
        --rounds 4 --epochs 3 --impls xpnn-numpy,torch,sklearn,gemm-numpy --out runs/cpu
    python benchmarks/mnist_throughput.py --smoke --out runs/smoke     # CI: tiny synthetic data

Results go to ``OUT/NAME.json`` and ``OUT/NAME.md`` (``--out``, ``--name``), rewritten after
every measurement so that a run stopped by a time limit keeps what it measured.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _blas_env import blas_info, clean_environ, describe, removed, run_on_default_kernels

try:
    import xpnn  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = {
    "S": ((784, 128, 64, 10), 128),
    "M": ((784, 256, 128, 10), 128),
    "L": ((784, 1024, 1024, 10), 512),
}
SWEEP_BATCHES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
CPU_IMPLS = ("xpnn-numpy", "xpnn-torch", "torch", "jax", "sklearn", "gemm-numpy")
GPU_IMPLS = ("xpnn-cupy", "xpnn-torch-cuda", "torch-cuda", "jax-cuda", "gemm-cupy")
REFERENCE = {"xpnn-numpy": "torch", "xpnn-numpy-nonumba": "torch", "xpnn-numpy-generic": "torch",
             "xpnn-torch": "torch", "sklearn": "torch", "jax": "torch", "xpnn-cupy": "torch-cuda",
             "xpnn-torch-cuda": "torch-cuda", "jax-cuda": "torch-cuda"}
#: The second peer each implementation is paired with (JAX on the same device).
PEER = {"xpnn-numpy": "jax", "xpnn-numpy-nonumba": "jax", "xpnn-numpy-generic": "jax",
        "xpnn-torch": "jax", "torch": "jax", "sklearn": "jax", "xpnn-cupy": "jax-cuda",
        "xpnn-torch-cuda": "jax-cuda", "torch-cuda": "jax-cuda"}
FLOOR = {"xpnn-numpy": "gemm-numpy", "xpnn-numpy-nonumba": "gemm-numpy",
         "xpnn-numpy-generic": "gemm-numpy", "xpnn-torch": "gemm-numpy", "torch": "gemm-numpy",
         "sklearn": "gemm-numpy", "jax": "gemm-numpy", "xpnn-cupy": "gemm-cupy",
         "xpnn-torch-cuda": "gemm-cupy", "torch-cuda": "gemm-cupy", "jax-cuda": "gemm-cupy"}
#: CPU implementations that also time the GEMM-only floor in their own process, between epochs.
CPU_FLOORED = ("xpnn-numpy", "xpnn-numpy-nonumba", "xpnn-numpy-generic", "xpnn-torch", "torch",
               "jax", "sklearn")
LR, BETAS, EPS = 1e-3, (0.9, 0.999), 1e-8


# ---------------------------------------------------------------------------------------- data
def _read_idx(path):
    """Minimal IDX reader (used only when xpnn.datasets is unavailable)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_train(dataset, data_home):
    """(X uint8 (n, 784), y int64) of the training split."""
    try:
        from xpnn.datasets import load_mnist
    except ImportError:
        load_mnist = None
    if load_mnist is not None:
        (X, y), _ = load_mnist(dataset, data_home=data_home, download=False)
        return np.ascontiguousarray(X.reshape(len(X), -1), dtype=np.uint8), y.astype(np.int64)
    folder = Path(data_home) / ("mnist" if dataset == "mnist" else "fashion-mnist")
    X = _read_idx(folder / "train-images-idx3-ubyte.gz")
    y = _read_idx(folder / "train-labels-idx1-ubyte.gz")
    return X.reshape(len(X), -1), y.astype(np.int64)


def synthetic(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 784), dtype=np.uint8), rng.integers(0, 10, n)


# ---------------------------------------------------------------------------------------- load
class LoadMeter:
    """CPU time used by other processes during an interval, as a fraction of all cores."""

    def __init__(self):
        self.ncpu = os.cpu_count() or 1
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def _busy(self):
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except OSError:
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return (sum(fields[:8]) - idle) / self.tick

    def start(self):
        self.t0, self.cpu0, self.busy0 = time.perf_counter(), time.process_time(), self._busy()

    def stop(self):
        wall = time.perf_counter() - self.t0
        own = time.process_time() - self.cpu0
        busy = self._busy()
        if busy is None or self.busy0 is None:
            return wall, float("nan")
        return wall, max(0.0, (busy - self.busy0 - own) / (self.ncpu * wall))


# ---------------------------------------------------------------------------------------- workers
def _with_floor(timing, floor):
    """``(wall, load)`` of an epoch, plus the in-process floor measured right after it."""
    return (*timing, floor.measure() if floor is not None else None)


def _he_init(sizes, seed):
    rng = np.random.default_rng(seed)
    return [(rng.normal(0.0, math.sqrt(2.0 / a), (a, b)).astype(np.float32),
             np.zeros(b, np.float32)) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]


def xpnn_model(sizes, backend="numpy", seed=0):
    """The benchmark's network in xpnn: Dense + ReLU layers of ``sizes``, Softmax, compiled
    with categorical cross-entropy and Adam (LR, BETAS, EPS), float32."""
    import xpnn

    layers = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [xpnn.Dense(a, b, init="he"), xpnn.ReLU()]
    layers[-1] = xpnn.Softmax()
    model = xpnn.Sequential(*layers, backend=backend, dtype="float32", seed=seed)
    model.compile(loss="categorical_crossentropy",
                  optimizer=xpnn.Adam(LR, BETAS[0], BETAS[1], EPS))
    return model


def run_xpnn(backend, X, y, sizes, batch, epochs, seed, meter, fast=True, floor=None):
    model = xpnn_model(sizes, backend, seed)
    model.fastpath = fast
    be = model.backend
    Xd, yd = be.asarray(X, dtype="float32"), be.asarray(y, dtype="int64")
    times, chosen = [], set()

    class Timer(xpnn.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            threads = getattr(xpnn, "threads", None)        # BLAS threads fit chose
            chosen.add(None if threads is None else threads.budget())
            meter.start()

        def on_epoch_end(self, epoch, logs=None):  # logs["loss"] was read: device synced
            times.append(_with_floor(meter.stop(), floor))

    model.fit(Xd, yd, epochs=epochs + 1, batch_size=batch, shuffle=True, verbose=0,
              callbacks=[Timer()])
    info = {"fast_path": getattr(model, "_fastpath_trainer", None) is not None,
            "fit_blas_threads": sorted(chosen, key=str)}
    if backend == "numpy" and info["fast_path"]:
        info["kernels"] = model._fastpath_trainer.kernels
        info["update_threads"] = model._fastpath_trainer.threads
    return times, info


def run_torch(device, X, y, sizes, batch, epochs, seed, meter, floor=None):
    import torch

    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    else:
        torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(seed)
    mods = []
    for W, b in _he_init(sizes, seed):
        lin = torch.nn.Linear(*W.shape)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W.T.copy()))
            lin.bias.copy_(torch.from_numpy(b))
        mods += [lin, torch.nn.ReLU()]
    net = torch.nn.Sequential(*mods[:-1]).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=LR, betas=BETAS, eps=EPS)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xd = torch.as_tensor(X, device=device)
    yd = torch.as_tensor(y, device=device)
    n = Xd.shape[0]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    times = []
    for _ in range(epochs + 1):
        meter.start()
        perm = torch.randperm(n, generator=gen).to(device)
        Xs, ys = Xd[perm], yd[perm]                       # one gather per epoch
        total = torch.zeros((), device=device)
        for s in range(0, n, batch):
            xb, yb = Xs[s:s + batch], ys[s:s + batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xb), yb)
            loss.backward()
            opt.step()
            total += loss.detach() * xb.shape[0]
        float(total)                                      # one sync per epoch
        times.append(_with_floor(meter.stop(), floor))
    return times, {"threads": torch.get_num_threads()}


def run_jax(platform_name, X, y, sizes, batch, epochs, seed, meter, floor=None):
    """The same training in JAX: one jit-compiled step (forward, backward, Adam as in
    torch.optim.Adam, the batch sliced from the epoch's shuffled copy inside the step), the
    loss summed on the device and read once per epoch."""
    os.environ["JAX_PLATFORMS"] = platform_name                 # "cpu" or "cuda"
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import warnings

    import jax
    import jax.numpy as jnp

    jax.config.update("jax_default_matmul_precision", "highest")   # float32, no TF32
    warnings.filterwarnings("ignore", message=".*donat")           # buffer donation on CPU
    device = jax.devices()[0]
    params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in _he_init(sizes, seed)]
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    b1, b2 = BETAS

    def loss_fn(params, xb, yb):
        a = xb
        for i, (W, b) in enumerate(params):
            a = a @ W + b
            if i < len(params) - 1:
                a = jax.nn.relu(a)
        logp = jax.nn.log_softmax(a, axis=1)
        return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))

    def step(state, Xs, ys, start, size):
        params, m, v, t, total = state
        xb = jax.lax.dynamic_slice_in_dim(Xs, start, size)
        yb = jax.lax.dynamic_slice_in_dim(ys, start, size)
        loss, g = jax.value_and_grad(loss_fn)(params, xb, yb)
        t = t + 1.0
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1.0 - b1) * g, m, g)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1.0 - b2) * g * g, v, g)
        step_size, bc2 = LR / (1.0 - b1 ** t), jnp.sqrt(1.0 - b2 ** t)
        params = jax.tree_util.tree_map(
            lambda p, m, v: p - step_size * m / (jnp.sqrt(v) / bc2 + EPS), params, m, v)
        return (params, m, v, t, total + loss * size)

    step = jax.jit(step, static_argnums=4, donate_argnums=0)
    Xd, yd = jax.device_put(X, device), jax.device_put(y.astype(np.int32), device)
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    # committed to the device like the step's outputs, so the first epoch compiles for good
    state = jax.device_put((params, zeros, jax.tree_util.tree_map(jnp.zeros_like, params),
                            jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)), device)
    times = []
    for _ in range(epochs + 1):
        meter.start()
        perm = jax.device_put(rng.permutation(n).astype(np.int32), device)
        Xs, ys = Xd[perm], yd[perm]                       # one gather per epoch
        state = (*state[:4], jax.device_put(jnp.zeros((), jnp.float32), device))
        for s in range(0, n, batch):
            state = step(state, Xs, ys, s, min(batch, n - s))
        float(state[4])                                   # one sync per epoch
        times.append(_with_floor(meter.stop(), floor))
    return times, {"jax": jax.__version__, "device": str(device),
                   "matmul_precision": "highest"}


def run_sklearn(X, y, sizes, batch, epochs, seed, meter, floor=None):
    import warnings

    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=sizes[1:-1], activation="relu", solver="adam",
                        alpha=0.0, batch_size=batch, learning_rate_init=LR, beta_1=BETAS[0],
                        beta_2=BETAS[1], epsilon=EPS, shuffle=True, random_state=seed)
    classes = np.arange(sizes[-1])
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(epochs + 1):
            meter.start()
            clf.partial_fit(X, y, classes=classes)
            times.append(_with_floor(meter.stop(), floor))
    return times, {"dtype": str(clf.coefs_[0].dtype), "init": "glorot (sklearn's own)"}


def _gemm_shapes(sizes, batch):
    """(name, A shape, B shape, transpose A, transpose B) of every matmul in one step."""
    shapes = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        shapes.append((f"fwd{i}", (batch, a), (a, b), False, False))      # x W
        shapes.append((f"dW{i}", (batch, a), (batch, b), True, False))     # xᵀ δ
        if i > 0:
            shapes.append((f"dx{i}", (batch, b), (a, b), False, True))     # δ Wᵀ
    return shapes


class InProcessFloor:
    """The GEMM-only floor measured inside a CPU worker, right after each of its epochs.

    A floor timed in another process is not paired with the training it is compared with:
    on a shared machine a whole process can run at half speed. Here every matmul of one
    training step (real shapes and layouts, random data, NumPy's BLAS) runs back to back
    between two epochs, repeatedly for about ``seconds`` (at least 5 loops after one warm-up
    loop); the median loop times the number of steps is that epoch's floor. In the xpnn
    workers it runs inside ``fit`` (from the epoch-end callback), so on the BLAS threads ``fit``
    chose (:mod:`xpnn.threads`, recorded as ``fit_blas_threads``). In the torch
    worker the same NumPy GEMMs share the process with torch's idle OpenMP threads, which can
    only make its floor slower and its ratio higher.
    """

    def __init__(self, sizes, batch, steps, seconds=0.3):
        rng = np.random.default_rng(1)
        self.ops = []
        for _, sa, sb, ta, tb in _gemm_shapes(sizes, batch):
            A = rng.random(sa, dtype=np.float32)
            B = rng.random(sb, dtype=np.float32)
            A_, B_ = (A.T if ta else A), (B.T if tb else B)
            self.ops.append((A_, B_, np.empty((A_.shape[0], B_.shape[1]), np.float32)))
        self.steps, self.seconds = steps, seconds

    def measure(self):
        """Seconds the matmuls of one epoch take alone (median over the loops)."""
        loops, end, first = [], time.perf_counter() + self.seconds, True
        while len(loops) < 5 or (time.perf_counter() < end and len(loops) < 400):
            t0 = time.perf_counter()
            for A, B, out in self.ops:
                np.matmul(A, B, out=out)
            if not first:                                  # the first loop warms up
                loops.append(time.perf_counter() - t0)
            first = False
        return statistics.median(loops) * self.steps


def run_gemm(lib, n, sizes, batch, epochs, meter):
    """GEMM-only floor: each matmul of a step timed alone (best of 5 repeats of a loop) x
    steps; the best, because a floor should not include other processes' interference."""
    if lib == "cupy":
        import cupy as xp

        def sync():
            xp.cuda.Device().synchronize()
    else:
        xp = np

        def sync():
            pass
    rng = np.random.default_rng(0)
    steps = n / batch
    per_step, flops_step, detail = 0.0, 0, {}
    meter.start()
    for name, sa, sb, ta, tb in _gemm_shapes(sizes, batch):
        A = xp.asarray(rng.random(sa, dtype=np.float32))
        B = xp.asarray(rng.random(sb, dtype=np.float32))
        A_, B_ = (A.T if ta else A), (B.T if tb else B)
        out = xp.empty((A_.shape[0], B_.shape[1]), dtype=xp.float32)
        reps = max(5, min(200, int(2e9 / (2 * A_.shape[0] * A_.shape[1] * B_.shape[1]))))
        samples = []
        for _ in range(5):
            xp.matmul(A_, B_, out=out)
            sync()
            t0 = time.perf_counter()
            for _ in range(reps):
                xp.matmul(A_, B_, out=out)
            sync()
            samples.append((time.perf_counter() - t0) / reps)
        t = min(samples)
        detail[name] = t
        per_step += t
        flops_step += 2 * A_.shape[0] * A_.shape[1] * B_.shape[1]
    epoch = per_step * steps
    load = meter.stop()[1]
    return [(epoch, load, None)] * (epochs + 1), {"per_step_s": per_step, "gemms": detail,
                                           "flops_per_step": flops_step}


def worker(args):
    sizes, batch = tuple(int(v) for v in args.sizes.split("-")), args.batch
    X8, y = np.load(args.data_file + ".X.npy"), np.load(args.data_file + ".y.npy")
    X = X8.astype(np.float32) / np.float32(255.0)
    meter = LoadMeter()
    impl = args.impl
    floor = (InProcessFloor(sizes, batch, -(-len(X) // batch)) if impl in CPU_FLOORED
             else None)
    if impl == "xpnn-numpy-nonumba":
        os.environ["XPNN_NUMBA"] = "0"          # read when the fast trainer is built
    if impl in ("xpnn-numpy", "xpnn-numpy-nonumba", "xpnn-numpy-generic"):
        times, info = run_xpnn("numpy", X, y, sizes, batch, args.epochs, args.seed, meter,
                               fast=impl != "xpnn-numpy-generic", floor=floor)
    elif impl == "xpnn-cupy":
        times, info = run_xpnn("cupy", X, y, sizes, batch, args.epochs, args.seed, meter)
    elif impl in ("xpnn-torch", "xpnn-torch-cuda"):
        backend = "torch" if impl == "xpnn-torch" else "torch:cuda"
        times, info = run_xpnn(backend, X, y, sizes, batch, args.epochs, args.seed, meter,
                               floor=floor)
    elif impl in ("torch", "torch-cuda"):
        times, info = run_torch("cpu" if impl == "torch" else "cuda", X, y, sizes, batch,
                                args.epochs, args.seed, meter, floor=floor)
    elif impl in ("jax", "jax-cuda"):
        times, info = run_jax("cpu" if impl == "jax" else "cuda", X, y, sizes, batch,
                              args.epochs, args.seed, meter, floor=floor)
    elif impl == "sklearn":
        times, info = run_sklearn(X, y, sizes, batch, args.epochs, args.seed, meter,
                                  floor=floor)
    elif impl in ("gemm-numpy", "gemm-cupy"):
        times, info = run_gemm(impl.split("-")[1], len(X), sizes, batch, args.epochs, meter)
    else:
        raise SystemExit(f"unknown implementation {impl!r}")
    info["blas"] = blas_info()                    # the kernels this process actually ran
    info["blas_env"] = {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")}
    print("RESULT " + json.dumps({"times": times[1:], "warmup": times[0], "info": info}))


# ---------------------------------------------------------------------------------------- driver
def _has_module(name):
    """Whether ``name`` can be imported (looked up without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:                          # a parent package is missing
        return False


def _available(impl):
    if impl in ("jax", "jax-cuda"):
        # Only looked up, not imported: JAX would take the GPU's memory in this process.
        if not (_has_module("jax") and _has_module("jaxlib")):
            return False, "jax not installed (pip install jax jaxlib)"
        if impl == "jax-cuda" and not any(_has_module(m) for m in (
                "jax_cuda13_plugin", "jax_cuda12_plugin", "jax_plugins.xla_cuda13",
                "jax_plugins.xla_cuda12")):
            return False, "jax has no CUDA plugin (pip install jax[cuda13])"
        return True, ""
    mods = {"torch": "torch", "torch-cuda": "torch", "xpnn-torch": "torch",
            "xpnn-torch-cuda": "torch", "sklearn": "sklearn", "xpnn-cupy": "cupy",
            "gemm-cupy": "cupy"}
    if impl not in mods:
        return True, ""
    try:
        mod = __import__(mods[impl])
    except ImportError as exc:
        return False, f"{mods[impl]} not installed ({exc})"
    try:
        if impl in ("torch-cuda", "xpnn-torch-cuda") and not mod.cuda.is_available():
            return False, "torch has no CUDA device"
        if mods[impl] == "cupy" and mod.cuda.runtime.getDeviceCount() < 1:
            return False, "no CUDA device"
    except Exception as exc:  # driver missing...
        return False, f"no CUDA device ({exc})"
    return True, ""


def machine_info():
    info = {"platform": platform.platform(), "python": sys.version.split()[0],
            "cpus": os.cpu_count(), "cpu_model": platform.processor()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {"numpy": np.__version__}
    for name in ("xpnn", "numba", "torch", "sklearn", "cupy", "threadpoolctl"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:
            pass
    info["versions"] = versions
    if _has_module("jax"):                                   # version only: no import of jax
        from importlib.metadata import PackageNotFoundError, version

        try:
            versions["jax"] = version("jax")
        except PackageNotFoundError:
            pass
    info["blas"] = blas_info()
    info["blas_env_removed"] = removed()
    # Settings that change speed; XPNN_DATA is only where the data lie (a machine's path).
    info["env"] = {k: v for k, v in os.environ.items()
                   if k.startswith(("OPENBLAS", "OMP_", "MKL_", "CUPY_", "XPNN_", "JAX_"))
                   and k != "XPNN_DATA"}
    try:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    except Exception:
        pass
    return info


#: Whether worker processes start without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (see the module
#: docstring); ``--keep-blas-env`` turns it off.
CLEAN_BLAS_ENV = True


def run_one(impl, sizes, batch, data_file, epochs, seed, timeout):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--impl", impl,
           "--sizes", "-".join(map(str, sizes)), "--batch", str(batch), "--data-file",
           data_file, "--epochs", str(epochs), "--seed", str(seed)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=clean_environ() if CLEAN_BLAS_ENV else None)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout}s"}
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (proc.stderr or proc.stdout)[-2000:]}


def summarize(result, n, sizes, batch, max_load):
    """samples/s (median of kept epochs), kept/total epochs, mean other-process load."""
    epochs = [(e[0], e[1], e[2] if len(e) > 2 else None) for e in result["times"]]
    kept = [e for e in epochs if not e[1] > max_load]
    flagged = not kept
    use = kept or epochs
    t = statistics.median(e[0] for e in use)
    loads = [load for _, load, _ in epochs if load == load]
    floors = [f / wall for wall, _, f in use if f]
    return {"sps": n / t, "epoch_s": t, "kept": len(kept), "epochs": len(epochs),
            "noisy": flagged, "load": statistics.mean(loads) if loads else None,
            "floor_inproc": statistics.median(floors) if floors else None}


def flops_per_sample(sizes):
    """Matmul FLOPs per sample of one training step (forward, dW, and dx except the first)."""
    total = 0
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        total += 2 * a * b * (3 if i > 0 else 2)
    return total


#: Every implementation the workers know.
IMPLS = ("xpnn-numpy", "xpnn-numpy-nonumba", "xpnn-numpy-generic", "xpnn-torch",
         "xpnn-torch-cuda", "xpnn-cupy", "torch", "torch-cuda", "jax", "jax-cuda", "sklearn",
         "gemm-numpy", "gemm-cupy")


def check_args(args):
    """Raise SystemExit naming the first unknown implementation, configuration or batch size,
    or missing data file; return a one-line plan of the run otherwise."""
    for option in ("impls", "sweep_impls"):
        for impl in filter(None, (getattr(args, option) or "").split(",")):
            if impl not in IMPLS:
                raise SystemExit(f"--{option.replace('_', '-')}: unknown implementation "
                                 f"{impl!r}; known: {', '.join(IMPLS)}")
    configs = [c for c in args.configs.split(",") if c]
    for cfg in configs:
        if cfg not in CONFIGS and cfg != "sweep":
            raise SystemExit(f"--configs: unknown configuration {cfg!r}; known: "
                             f"{', '.join(CONFIGS)}, sweep")
    try:
        batches = [int(b) for b in args.sweep_batches.split(",") if b]
    except ValueError:
        raise SystemExit(f"--sweep-batches: integers expected, got {args.sweep_batches!r}"
                         ) from None
    if not (args.smoke or args.synthetic):
        home = args.data_home or os.environ.get("XPNN_DATA")
        folder = Path(home or ".") / ("mnist" if args.dataset == "mnist" else "fashion-mnist")
        missing = [f for f in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
                   if not (folder / f).is_file()]
        if not home or missing:
            raise SystemExit(f"no {args.dataset} training data in {folder} (give --data-home "
                             "or set XPNN_DATA, or use --synthetic N)")
    return (f"configs {','.join(configs)}; impls {args.impls}; sweep impls "
            f"{args.sweep_impls or args.impls} at batch {batches}; rounds {args.rounds}, "
            f"epochs {args.epochs}; out {args.out}/{args.name}.json")


def driver(args):
    check_args(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    impls = [i for i in args.impls.split(",") if i]
    # The sweep has its own list (default: --impls without sklearn); both are checked here.
    sweep_impls = [i for i in (args.sweep_impls or args.impls).split(",")
                   if i and (args.sweep_impls or i != "sklearn")]
    available, skipped = [], {}
    for impl in dict.fromkeys(impls + sweep_impls):
        ok, why = _available(impl)
        (available.append(impl) if ok else skipped.__setitem__(impl, why))
    for impl, why in skipped.items():
        print(f"skipping {impl}: {why}", flush=True)

    if args.smoke or args.synthetic:
        X, y = synthetic(args.synthetic or 1024)
        source = f"synthetic ({len(X)} random samples)"
    else:
        data_home = args.data_home or os.environ.get("XPNN_DATA")
        if not data_home:
            raise SystemExit("give --data-home or set XPNN_DATA (the folder holding mnist/)")
        X, y = load_train(args.dataset, data_home)
        source = f"{args.dataset} train ({len(X)} samples)"
        if args.limit and args.limit < len(X):
            X, y = X[:args.limit], y[:args.limit]
            source = f"{args.dataset} train, first {len(X)} samples"
    tmp = tempfile.mkdtemp(prefix="xpnn-bench-")
    data_file = os.path.join(tmp, "data")
    np.save(data_file + ".X.npy", X)
    np.save(data_file + ".y.npy", y)
    n = len(X)

    jobs = []   # (table, label, sizes, batch, rounds, epochs)
    for cfg in [c for c in args.configs.split(",") if c]:
        if cfg == "sweep":
            for b in [int(v) for v in args.sweep_batches.split(",")]:
                jobs.append(("sweep", f"M b{b}", CONFIGS["M"][0], b, args.sweep_rounds,
                             args.sweep_epochs))
        else:
            sizes, batch = CONFIGS[cfg]
            jobs.append(("configs", cfg, sizes, batch, args.rounds, args.epochs))

    t_start = time.perf_counter()
    records = []

    def write(final=False):
        report = {"machine": machine_info(), "data": source, "args": vars(args),
                  "skipped": skipped, "records": records, "complete": final,
                  "summary": build_summary(records, n, args.max_load)}
        md = markdown(report, args)
        (out / f"{args.name}.json").write_text(json.dumps(report, indent=1, default=str))
        (out / f"{args.name}.md").write_text(md)
        return report, md

    # Configuration by configuration (all rounds of S, then of M...), or with --rounds-first
    # round by round (S M L, S M L...), so that a run cut short has every configuration.
    if args.rounds_first:
        order = [(r, job) for r in range(max((j[4] for j in jobs), default=0))
                 for job in jobs if r < job[4]]
    else:
        order = [(r, job) for job in jobs for r in range(job[4])]
    stopped = set()
    for r, (table, label, sizes, batch, _, epochs) in order:
        if label in stopped:
            continue
        if time.perf_counter() - t_start > args.time_budget and r >= 1:
            print(f"time budget reached: {label} stops after {r} rounds", flush=True)
            stopped.add(label)
            continue
        for impl in available:
            if impl not in (sweep_impls if table == "sweep" else impls):
                continue
            res = run_one(impl, sizes, batch, data_file, epochs, args.seed, args.timeout)
            rec = {"table": table, "config": label, "sizes": sizes, "batch": batch,
                   "round": r, "impl": impl, **res}
            if "error" not in res:
                rec.update(summarize(res, n, sizes, batch, args.max_load))
                print(f"{label:8s} round {r} {impl:20s} {rec['sps']:10.0f} samples/s "
                      f"(other load {rec['load'] or 0:.0%}, kept {rec['kept']}/"
                      f"{rec['epochs']})", flush=True)
            else:
                print(f"{label:8s} round {r} {impl:20s} ERROR {res['error'][-300:]}",
                      flush=True)
            records.append(rec)
            write()                             # partial results survive a time-out
    report, md = write(final=True)
    print(md)
    return report


def build_summary(records, n, max_load):
    """Per (config, impl): median samples/s, median same-round ratio to the reference and the
    floor, GFLOP/s."""
    by = {}
    for rec in records:
        if "sps" in rec:
            by.setdefault((rec["table"], rec["config"]), {}).setdefault(
                rec["impl"], {})[rec["round"]] = rec
    summary = []
    for (table, config), impls in by.items():
        for impl, rounds in impls.items():
            if impl.startswith("gemm"):
                continue
            any_rec = next(iter(rounds.values()))
            sizes, batch = any_rec["sizes"], any_rec["batch"]
            row = {"table": table, "config": config, "impl": impl, "batch": batch,
                   "sps": statistics.median(r["sps"] for r in rounds.values()),
                   "rounds": len(rounds),
                   "noisy_rounds": sum(r["noisy"] for r in rounds.values()),
                   "kept_epochs": sum(r["kept"] for r in rounds.values()),
                   "epochs": sum(r["epochs"] for r in rounds.values())}
            row["gflops"] = row["sps"] * flops_per_sample(sizes) / 1e9
            for key, other in (("vs_ref", REFERENCE.get(impl)), ("vs_peer", PEER.get(impl)),
                               ("vs_floor", FLOOR.get(impl))):
                ratios = [rec["sps"] / impls[other][r]["sps"] for r, rec in rounds.items()
                          if other in impls and r in impls[other]]
                row[key] = statistics.median(ratios) if ratios else None
                row[key + "_rounds"] = ratios
                row[key + "_name"] = other
            inproc = [r["floor_inproc"] for r in rounds.values() if r.get("floor_inproc")]
            row["vs_floor_inproc"] = statistics.median(inproc) if inproc else None
            row["vs_floor_inproc_rounds"] = inproc
            if FLOOR.get(impl) in impls:
                fl = statistics.median(r["sps"] for r in impls[FLOOR[impl]].values())
                row["floor_gflops"] = fl * flops_per_sample(sizes) / 1e9
            summary.append(row)
    return summary


def _fmt(v, pct=False):
    if v is None:
        return "–"
    return f"{v:.0%}" if pct else f"{v:.2f}x"


def markdown(report, args):
    m = report["machine"]
    worker_blas = {}                            # impl -> the kernels its workers reported
    for rec in report["records"]:
        if "info" in rec:
            worker_blas.setdefault(rec["impl"], describe(rec["info"].get("blas")))
    removed_env = m.get("blas_env_removed")
    lines = [
        f"Machine: {m.get('cpu_model')}, {m.get('cpus')} CPUs"
        + (f", GPU {m['gpu']}" if m.get("gpu") else "") + f"; {m['platform']}",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"BLAS (driver process): {describe(m.get('blas'))}; "
        + (f"removed from the environment: {removed_env}" if removed_env
           else "no OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE in the environment"
           if not m["env"].get("OPENBLAS_CORETYPE") and not m["env"].get("OPENBLAS_L2_SIZE")
           else "environment kept (--keep-blas-env): "
           + ", ".join(f"{k}={v}" for k, v in m["env"].items() if k.startswith("OPENBLAS"))),
        *(f"BLAS in the {impl} workers: {b}" for impl, b in sorted(set(worker_blas.items()))
          if b != describe(m.get("blas"))),
        f"Data: {report['data']}; rounds {args.rounds} (sweep {args.sweep_rounds}), timed "
        f"epochs per process {args.epochs} (sweep {args.sweep_epochs}) after 1 warm-up; epochs "
        f"with other-process CPU load > {args.max_load:.0%} dropped.",
        "",
    ]
    if report["skipped"]:
        lines += ["Skipped: " + "; ".join(f"{k} ({v})" for k, v in report["skipped"].items()),
                  ""]
    for table in ("configs", "sweep"):
        rows = [r for r in report["summary"] if r["table"] == table]
        if not rows:
            continue
        lines += ["| config | batch | implementation | samples/s | vs reference (paired median) "
                  "| vs JAX (paired median) | GFLOP/s | of GEMM-only floor (own process) "
                  "| of GEMM-only floor (separate process) | kept epochs |",
                  "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in rows:
            ref = f"{_fmt(r['vs_ref'])} vs {r['vs_ref_name']}" if r["vs_ref"] else "–"
            peer = f"{_fmt(r['vs_peer'])} vs {r['vs_peer_name']}" if r.get("vs_peer") else "–"
            floor = _fmt(r["vs_floor"], pct=True)
            if r.get("floor_gflops"):
                floor += f" ({r['floor_gflops']:.0f} GFLOP/s)"
            lines.append(f"| {r['config']} | {r['batch']} | {r['impl']} | {r['sps']:,.0f} | "
                         f"{ref} | {peer} | {r['gflops']:.1f} | "
                         f"{_fmt(r.get('vs_floor_inproc'), pct=True)} | {floor} | "
                         f"{r['kept_epochs']}/{r['epochs']}"
                         + (" (noisy)" if r["noisy_rounds"] else "") + " |")
        lines.append("")
    sweep = [r for r in report["summary"] if r["table"] == "sweep"]
    cupy = {r["batch"]: r["sps"] for r in sweep if r["impl"] == "xpnn-cupy"}
    npy = {r["batch"]: r["sps"] for r in sweep if r["impl"] == "xpnn-numpy"}
    common = sorted(set(cupy) & set(npy))
    if common:
        over = next((b for b in common if cupy[b] > npy[b]), None)
        lines.append(f"xpnn[cupy] overtakes xpnn[numpy] at batch size: {over} "
                     "(numpy figures from this machine's CPU)")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="S,M,L,sweep")
    p.add_argument("--impls", default=",".join(CPU_IMPLS))
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per process")
    p.add_argument("--sweep-impls", default=None,
                   help="implementations of the batch-size sweep (default: --impls without "
                        "sklearn)")
    p.add_argument("--sweep-batches", default=",".join(map(str, SWEEP_BATCHES)))
    p.add_argument("--sweep-rounds", type=int, default=2)
    p.add_argument("--sweep-epochs", type=int, default=2)
    p.add_argument("--dataset", default="mnist", choices=("mnist", "fashion"))
    p.add_argument("--data-home", default=None, help="folder with mnist/ (default $XPNN_DATA)")
    p.add_argument("--synthetic", type=int, default=0, help="random data of this many samples")
    p.add_argument("--limit", type=int, default=0, help="use the first N training samples")
    p.add_argument("--smoke", action="store_true", help="tiny synthetic run (CI)")
    p.add_argument("--max-load", type=float, default=0.05)
    p.add_argument("--time-budget", type=float, default=1e9, help="seconds; later rounds skipped")
    p.add_argument("--rounds-first", action="store_true",
                   help="run round 1 of every configuration before round 2 of any")
    p.add_argument("--timeout", type=float, default=900, help="seconds per process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/mnist_throughput")
    p.add_argument("--name", default="results", help="results go to OUT/NAME.json and .md")
    p.add_argument("--keep-blas-env", action="store_true",
                   help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (default: run without them)")
    # internal: one measurement in this process
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", help=argparse.SUPPRESS)
    p.add_argument("--sizes", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--data-file", help=argparse.SUPPRESS)
    p.add_argument("--check-args", action="store_true",
                   help="check the arguments (and that the data files exist), run nothing")
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.check_args:
        print("arguments ok:", check_args(args))
        return 0
    global CLEAN_BLAS_ENV
    CLEAN_BLAS_ENV = not args.keep_blas_env
    if argv is None:                     # run as a script: re-executed without the overrides
        run_on_default_kernels(__file__, sys.argv[1:], keep=args.keep_blas_env)
    if args.smoke:
        args.configs, args.rounds, args.epochs = "S", 1, 1
        args.sweep_rounds, args.synthetic = 0, args.synthetic or 512
        if args.impls == ",".join(CPU_IMPLS):
            args.impls = "xpnn-numpy,xpnn-numpy-generic,gemm-numpy"
    driver(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
