"""Training runs for tests/test_distributed.py, run under ``mpiexec -n N`` and in one process.

``python tests/mpi_cases.py OUT`` (under mpiexec) runs every case of :data:`CASES` with the
communicator of :func:`xpnn.distributed.init` and writes what each rank ended with to
``OUT/rank<r>.pkl``. The test imports the same functions and runs them without a communicator
as the reference. ``python tests/mpi_cases.py OUT --fail=WHERE`` makes rank 1 fail (``input``:
a NaN in its X; ``rows``: a row fewer; ``callback``: an exception in its second epoch;
``script``: an uncaught exception outside fit) while rank 0 trains on or waits.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import sys

import numpy as np

import xpnn


def data(n=101, features=8, classes=3, seed=1):
    """A small classification problem (101 rows: batches of 20 leave a last batch of one row,
    so with 2 or 3 ranks some ranks have no rows in it)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features))
    w = rng.normal(size=(features, classes))
    y = np.argmax(X @ w + 0.5 * rng.normal(size=(n, classes)), axis=1)
    return X, y


def classifier(dtype, dropout=0.0, fast=True, seed=0, lr=0.01):
    layers = [xpnn.Dense(8, 16), xpnn.ReLU()]
    if dropout:
        layers.append(xpnn.Dropout(dropout))
    layers += [xpnn.Dense(16, 12), xpnn.Tanh(), xpnn.Dense(12, 3), xpnn.Softmax()]
    model = xpnn.Sequential(*layers, dtype=dtype, seed=seed)
    model.fastpath = fast
    model.compile(loss="crossentropy", optimizer=xpnn.Adam(lr), metrics=["accuracy"])
    return model


def _train(comm, dtype, fast, dropout=0.0, epochs=3, **kw):
    X, y = data()
    Xv, yv = data(n=37, seed=2)
    model = classifier(dtype, dropout, fast)
    hist = model.fit(X, y, epochs=epochs, batch_size=20, validation_data=(Xv, yv), verbose=0,
                     comm=comm, **kw)
    return {"weights": model.get_weights(), "history": hist.history,
            "rng": model.rng.bit_generator.state["state"], "iterations":
            model.optimizer.iterations}


def _train_data(comm, how):
    """Other ways of passing the data: sample weights, host data streamed batch by batch,
    a list of batches, a validation split."""
    X, y = data()
    model = classifier("float64")
    kw = {}
    if how == "weighted":
        kw["sample_weight"] = np.random.default_rng(3).uniform(0.2, 2.0, len(X))
    elif how in ("streamed", "streamed_batch_shuffle"):   # float32 host data, float64 model:
        model.resident_budget = 0                              # read per batch
        X = X.astype(np.float32)
        if how == "streamed_batch_shuffle":     # each rank reads a slice of a block of rows
            kw["shuffle"] = "batch"
    elif how == "split":
        kw["validation_split"] = 0.25
    if how == "batches":
        hist = model.fit([(X[i:i + 20], y[i:i + 20]) for i in range(0, len(X), 20)],
                         epochs=3, verbose=0, comm=comm)
    else:
        hist = model.fit(X, y, epochs=3, batch_size=20, verbose=0, comm=comm, **kw)
    return {"weights": model.get_weights(), "history": hist.history,
            "rng": model.rng.bit_generator.state["state"],
            "iterations": model.optimizer.iterations}


def tabular(comm):
    """Columns of periodic embeddings, raw features and categorical embeddings, LayerNorm and a
    TabM-style ensemble of 3 members with Dropout after the EnsembleView (each sample's mask
    covers its 3 rows)."""
    def with_codes(X):                # two category columns, some codes unseen (>= 4)
        return np.c_[X[:, :6], np.floor(np.abs(X[:, 6:]) * 2)]

    X, y = data()
    Xv, yv = data(n=37, seed=2)
    k = 3
    model = xpnn.Sequential(
        xpnn.Columns([(4, xpnn.PeriodicEmbedding(4, 4, 3, 0.3, "pbld")), (2, None),
                      (2, xpnn.Embedding([4, 4], 2))]),
        xpnn.EnsembleView(k), xpnn.BatchEnsembleDense(18, 16, k, r_init="random-signs"),
        xpnn.LayerNorm(16), xpnn.ReLU(), xpnn.Dropout(0.2), xpnn.EnsembleDense(16, 3, k),
        xpnn.Softmax(), xpnn.EnsembleMean(k), dtype="float64", seed=0)
    model.compile(loss="crossentropy", optimizer=xpnn.Adam(0.01), metrics=["accuracy"])
    hist = model.fit(with_codes(X), y, epochs=3, batch_size=20, verbose=0, comm=comm,
                     validation_data=(with_codes(Xv), yv))
    return {"weights": model.get_weights(), "history": hist.history,
            "rng": model.rng.bit_generator.state["state"],
            "iterations": model.optimizer.iterations}


def early_stopping(comm):
    X, y = data()
    Xv, yv = data(n=37, seed=2)
    model = classifier("float64", lr=0.2)
    stop = xpnn.EarlyStopping(monitor="val_loss", patience=1)
    hist = model.fit(X, y, epochs=40, batch_size=20, validation_data=(Xv, yv), verbose=0,
                     callbacks=[stop], comm=comm)
    return {"weights": model.get_weights(), "history": hist.history,
            "stopped_epoch": stop.stopped_epoch, "epochs": len(hist.epoch)}


def unseeded(comm):
    """``seed=None``: every rank starts from other random weights; rank 0's are broadcast."""
    X, y = data()
    model = classifier("float64", dropout=0.2, seed=None)
    model.fit(X, y, epochs=1, batch_size=16, verbose=0, comm=comm)
    return {"weights": model.get_weights()}


def diverges(comm):
    """A step whose loss is infinite: every rank raises at the same step, weights kept."""
    X, y = data()
    X = X.copy()
    X[45] = 1e200            # finite input; its squared error overflows in the third batch
    model = xpnn.Sequential(xpnn.Dense(8, 4), xpnn.ReLU(), xpnn.Dense(4, 1), dtype="float64",
                            seed=0)
    model.compile(loss="mse", optimizer=xpnn.Adam(0.01))
    y = y.astype(np.float64)
    try:
        model.fit(X, y, epochs=1, batch_size=20, shuffle=False, verbose=0, comm=comm)
    except xpnn.TrainingDivergedError as exc:
        return {"error": str(exc), "weights": model.get_weights(),
                "finite": all(np.all(np.isfinite(w)) for w in model.get_weights())}
    return {"error": None}


def save_and_load(comm, path=None):
    """``save`` and ModelCheckpoint write on rank 0 only; every rank then loads the file."""
    import xpnn.serialization as serialization

    folder = os.path.dirname(path) if path else os.environ.get("XPNN_TEST_OUT", ".")
    path = path or os.path.join(folder, "model.npz")
    writes = []
    real = serialization.save

    def counting(*args, **kwargs):
        writes.append(1)
        return real(*args, **kwargs)

    X, y = data()
    model = classifier("float64")
    serialization.save = counting
    try:
        model.fit(X, y, epochs=2, batch_size=20, verbose=0, comm=comm, callbacks=[
            xpnn.ModelCheckpoint(os.path.join(folder, "checkpoint-{epoch}.npz"))])
        model.save(path)
    finally:
        serialization.save = real
    exports, exported = [], None
    if importlib.util.find_spec("onnx") is not None:    # export writes on rank 0 only too
        from xpnn import export as export_module

        real_export = export_module.export_onnx

        def counting_export(*args, **kwargs):
            exports.append(1)
            return real_export(*args, **kwargs)

        export_module.export_onnx = counting_export
        try:
            exported = model.export(os.path.join(folder, "model.onnx"))
        finally:
            export_module.export_onnx = real_export
    loaded = xpnn.load(path)            # every rank, after save returned on every rank
    return {"writes": len(writes), "exports": len(exports), "exported": exported, "same": all(
        np.array_equal(a, b) for a, b in zip(loaded.get_weights(), model.get_weights(),
                                             strict=True))}


def resume_mid_epoch(comm, folder=None):
    """A backup written mid-epoch (every 4 batches; the epochs have 6) and a second ``fit``
    that resumes from it: the weights and the logged loss and accuracy of an uninterrupted run.
    Under N ranks the backup holds the metric sums of every rank's rows."""
    import shutil
    import tempfile

    folder = folder or os.environ.get("XPNN_TEST_OUT") or tempfile.mkdtemp()
    backups, crashed = os.path.join(folder, "backups"), os.path.join(folder, "crashed")
    root = comm is None or comm.rank == 0

    class CopyBackupsAtBatch8(xpnn.Callback):      # the folder a crash there would leave
        seen = 0

        def on_train_batch_end(self, batch, logs=None):
            self.seen += 1
            if self.seen == 8 and root:
                shutil.copytree(backups, crashed)

    X, y = data()
    full = classifier("float64")
    h_full = full.fit(X, y, epochs=3, batch_size=20, verbose=0, comm=comm, callbacks=[
        xpnn.BackupAndRestore(backups, save_freq=4), CopyBackupsAtBatch8()])
    resumed = classifier("float64", seed=1)
    restore = xpnn.BackupAndRestore(crashed, save_freq=4)
    h_resumed = resumed.fit(X, y, epochs=3, batch_size=20, verbose=0, comm=comm,
                            callbacks=[restore])
    return {"full": full.get_weights(), "resumed": resumed.get_weights(),
            "history_full": h_full.history, "history_resumed": h_resumed.history,
            "restored": restore.restored_from is not None}


CASES = {
    "fast64": lambda comm: _train(comm, "float64", True),
    "generic64": lambda comm: _train(comm, "float64", False),
    "fast32": lambda comm: _train(comm, "float32", True),
    "generic32": lambda comm: _train(comm, "float32", False),
    "fast64_dropout": lambda comm: _train(comm, "float64", True, dropout=0.3),
    "generic64_dropout": lambda comm: _train(comm, "float64", False, dropout=0.3),
    "weighted": lambda comm: _train_data(comm, "weighted"),
    "streamed": lambda comm: _train_data(comm, "streamed"),
    "streamed_batch_shuffle": lambda comm: _train_data(comm, "streamed_batch_shuffle"),
    "batches": lambda comm: _train_data(comm, "batches"),
    "split": lambda comm: _train_data(comm, "split"),
    "tabular": tabular,
    "early_stopping": early_stopping,
    "unseeded": unseeded,
    "diverges": diverges,
    "save_and_load": save_and_load,
    "resume_mid_epoch": resume_mid_epoch,
}


def fail(comm, where):
    if where == "script":       # outside fit: init()'s excepthook aborts the job
        if comm.rank == 1:
            raise RuntimeError("script failed on rank 1")
        comm.barrier()
    if where == "exit" and comm.rank == 1:     # leaves quietly: the others must not wait
        sys.exit()
    X, y = data()
    if where == "input" and comm.rank == 1:
        X = X.copy()
        X[3, 2] = np.nan
    if where == "rows" and comm.rank == 1:
        X, y = X[:-1], y[:-1]

    class FailOnRank1(xpnn.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if where == "callback" and comm.rank == 1 and epoch == 1:
                raise RuntimeError("callback failed on rank 1")

    model = classifier("float64")
    model.fit(X, y, epochs=1000, batch_size=20, verbose=0, callbacks=[FailOnRank1()],
              comm=comm)
    print(f"rank {comm.rank}: training ended without an error", flush=True)


def main(argv):
    out = argv[1]
    comm = xpnn.distributed.init()
    os.environ["XPNN_TEST_OUT"] = out
    for arg in argv[2:]:
        if arg.startswith("--fail="):
            fail(comm, arg.split("=", 1)[1])
            return
    results = {"size": comm.size, "rank": comm.rank, "threads": comm.threads}
    for name, case in CASES.items():
        results[name] = case(comm)
    with open(os.path.join(out, f"rank{comm.rank}.pkl"), "wb") as f:
        pickle.dump(results, f)


if __name__ == "__main__":
    main(sys.argv)
