"""Progress display for ``fit``, ``evaluate`` and ``predict``: tqdm bars on a terminal, plain
lines elsewhere.

``fit(verbose=1)`` adds a :class:`ProgressBar`: one bar per epoch on stderr, counting batches,
with the rate and the running mean of the training loss, completed by the epoch's metrics,
which, once the epoch is over, becomes its summary line::

    Epoch 3/20: 45/45 [00:00, 812.40batch/s, loss=0.1893, accuracy=0.9521, val_loss=0.2114]

When stderr is not a terminal (a log file, a CI job, a pipe) there is no bar, and the callback
prints one line per epoch on stdout, what ``verbose=2`` always prints::

    Epoch 3/20 - 0.06s - loss: 0.1893 - accuracy: 0.9521 - val_loss: 0.2114

The bar reads the batch losses without stalling a GPU: on a host backend every batch's loss is
already on the host; on a GPU the losses are summed on the device and read (one
synchronisation) every ``sync_every`` batches. tqdm is optional: without it there are only the
lines.
"""

from __future__ import annotations

import io
import os
import sys
import time
from numbers import Real

from .callbacks import Callback, OptimizerSchedule


def interactive(stream=None) -> bool:
    """Whether a live bar can be drawn: ``stream`` (default stderr) is a terminal, or the code
    runs in a Jupyter kernel."""
    stream = sys.stderr if stream is None else stream
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):     # no isatty, or a closed stream
        pass
    return "ipykernel" in sys.modules


def _bar_width(stream=None) -> dict:
    """tqdm's size arguments for ``stream``: follow the terminal's width, unless the terminal
    reports no size (a 0x0 pseudo-terminal, some CI runners), where tqdm would draw empty
    lines: then ``$COLUMNS`` (or 80) columns and ``$LINES`` (or 24) lines."""
    stream = sys.stderr if stream is None else stream
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        size = None                   # not a terminal (Jupyter...): tqdm decides
    if size is None or (size.columns > 0 and size.lines > 0):
        return {"dynamic_ncols": True}

    def env(name, default):
        value = os.environ.get(name, "")
        return int(value) if value.isdigit() and int(value) > 0 else default

    return {"ncols": size.columns or env("COLUMNS", 80), "nrows": size.lines or env("LINES", 24)}


def _tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


def _shown(logs) -> dict:
    return {k: f"{v:.4f}" for k, v in logs.items() if isinstance(v, Real)}


def _line(shown) -> str:
    return "".join(f" - {k}: {v}" for k, v in shown.items())


class ProgressBar(Callback):
    """A tqdm progress display for ``fit``.

    Parameters
    ----------
    per : {"batch", "epoch"}
        ``"batch"`` (what ``fit(verbose=1)`` uses): one bar per epoch that counts batches and
        shows the running loss, then the epoch's logged metrics; each finished epoch leaves its
        line (with ``leave=True``). ``"epoch"``: a single bar for the whole ``fit`` that counts
        epochs, with the latest epoch's metrics; for many short epochs.
    bar : bool or None
        ``None``: draw bars only when stderr is a terminal (or in Jupyter); ``False``: never.
    desc : str or None
        Label in front of the bar and the lines (``"Epoch i/n"`` per epoch by default).
    log_every : int
        Without a bar, print a plain line every ``log_every`` epochs (0: never).
    sync_every : int
        On a GPU backend, batches between two reads of the running loss.
    leave : bool
        Keep finished bars on the screen.
    file : stream or None
        Where bars are drawn (default ``sys.stderr``); lines go to stdout.
    """

    def __init__(self, per: str = "batch", bar: bool | None = None, desc: str | None = None,
                 log_every: int = 1, sync_every: int = 32, leave: bool = True, file=None):
        if per not in ("batch", "epoch"):
            raise ValueError(f"ProgressBar: per must be 'batch' or 'epoch', got {per!r}")
        for name, value, low in (("log_every", log_every, 0), ("sync_every", sync_every, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"ProgressBar: {name} must be an int >= {low}, got {value!r}")
        self.per = per
        self.bar = bar
        self.desc = desc
        self.log_every = log_every
        self.sync_every = sync_every
        self.leave = leave
        self.file = file
        self._tqdm = None
        self._bar = None

    # ------------------------------------------------------------------ fit events
    def on_train_begin(self, logs=None):
        """Read the number of epochs and steps from ``fit``'s parameters.

        Parameters
        ----------
        logs : dict or None
            Unused.
        """
        params = getattr(self, "params", None) or {}
        self.epochs = params.get("epochs")
        self.steps = params.get("steps")
        draw = interactive(self.file) if self.bar is None else bool(self.bar)
        self._tqdm = _tqdm() if draw else None
        self._bar = None
        if self._tqdm is not None and self.per == "epoch":
            self._bar = self._tqdm(total=self.epochs, desc=self.desc or "training",
                                   unit="epoch", leave=self.leave, file=self.file,
                                   **_bar_width(self.file))

    def on_epoch_begin(self, epoch, logs=None):
        """Open the epoch's bar (on a terminal).

        Parameters
        ----------
        epoch : int
            0-based epoch.
        logs : dict or None
            Unused.
        """
        self._t0 = time.perf_counter()
        self._rows, self._loss_sum, self._pending, self._shown_at = 0, 0.0, 0, -1e9
        self._gpu = bool(getattr(self.model.backend, "is_gpu", False))
        if self._tqdm is not None and self.per == "batch":
            self._bar = self._tqdm(total=self.steps, desc=self._epoch_label(epoch),
                                   unit="batch", leave=self.leave, file=self.file,
                                   **_bar_width(self.file))

    def on_train_batch_end(self, batch, logs=None):
        """Advance the bar by one batch and show the running loss.

        Parameters
        ----------
        batch : int
            0-based batch within the epoch.
        logs : dict or None
            The batch's logged values (``loss``...).
        """
        if self._bar is None or self.per != "batch":
            return
        logs = logs or {}
        loss = logs.get("loss")
        if loss is not None:
            # Host backends: float() is free. GPUs: sum on the device, read every sync_every.
            self._loss_sum = self._loss_sum + (loss if self._gpu else float(loss)) * logs["size"]
            self._rows += logs["size"]
            self._pending += 1
            now = time.perf_counter()
            # The postfix changes at most as often as tqdm redraws (mininterval).
            if (self._pending >= self.sync_every or not self._gpu) and \
                    now - self._shown_at >= self._bar.mininterval:
                self._bar.set_postfix(loss=f"{float(self._loss_sum) / self._rows:.4f}",
                                      refresh=False)
                self._pending, self._shown_at = 0, now
        self._bar.update(1)

    def on_epoch_end(self, epoch, logs=None):
        """Close the bar as the epoch's line, with its metrics (one plain line when not a
        terminal).

        Parameters
        ----------
        epoch : int
            0-based epoch.
        logs : dict or None
            The epoch's logged values.
        """
        shown = _shown(logs or {})
        if self._bar is not None and self.per == "batch":
            if self._bar.total is not None and self._bar.n < self._bar.total:
                self._bar.update(self._bar.total - self._bar.n)
            # The finished line: counts, time, rate and metrics, without the (full) bar
            # graphic, leaving the terminal's width to the metrics.
            self._bar.bar_format = "{desc}: {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]"
            self._bar.set_postfix(shown, refresh=False)
            self._bar.close()
            self._bar = None
        elif self._bar is not None:
            self._bar.set_postfix(shown, refresh=False)
            self._bar.update(1)
        elif self.log_every and (epoch + 1) % self.log_every == 0:
            seconds = time.perf_counter() - self._t0
            print(f"{self._epoch_label(epoch)} - {seconds:.2f}s{_line(shown)}", flush=True)

    def on_train_end(self, logs=None):
        """Close a bar left open (a ``fit`` that stopped inside an epoch).

        Parameters
        ----------
        logs : dict or None
            Unused.
        """
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _epoch_label(self, epoch):
        of = f"/{self.epochs}" if self.epochs is not None else ""
        label = f"Epoch {epoch + 1}{of}"
        return f"{self.desc}: {label.lower()}" if self.desc else label


class StepProgress:
    """Progress over the batches of one ``evaluate`` or ``predict`` call.

    ``verbose=1``: a bar when stderr is a terminal, else one line at the end; ``verbose=2``: the
    line only, e.g. ``evaluate: 4/4 - 0.01s - loss: 0.1234 - accuracy: 0.9600``.
    """

    def __init__(self, verbose: int, steps: int | None, desc: str):
        self.steps, self.desc, self.done = steps, desc, 0
        self.t0 = time.perf_counter()
        tqdm = _tqdm() if verbose == 1 and interactive() else None
        self.bar = None if tqdm is None else tqdm(total=steps, desc=desc, unit="batch",
                                                  leave=True, **_bar_width())

    def update(self):
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)

    def close(self, logs=None):
        shown = _shown(logs or {})
        if self.bar is not None:
            self.bar.set_postfix(shown, refresh=False)
            self.bar.close()
            return
        seconds = time.perf_counter() - self.t0
        print(f"{self.desc}: {self.done}/{self.done} - {seconds:.2f}s{_line(shown)}",
              flush=True)


def source_steps(source, batch_size: int) -> int | None:
    """Batches in one pass over an :mod:`xpnn.data` batch source (None when unknown: a
    re-iterable without a length)."""
    n = getattr(source, "n", None)
    if n is not None:
        return max(-(-n // batch_size), 1)
    steps = getattr(source, "steps", None)
    if steps is None:
        try:
            steps = len(source.data)
        except (AttributeError, TypeError):
            return None
    return steps


def check_verbose(verbose, owner: str) -> int:
    """``verbose`` as 0, 1 or 2 (``True``/``"auto"``: 1), or a ValueError naming ``owner``."""
    if isinstance(verbose, bool):
        verbose = int(verbose)
    if verbose not in (0, 1, 2, "auto"):
        raise ValueError(f"{owner}: verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
    return 1 if verbose == "auto" else verbose


def step_progress(verbose, steps: int | None, desc: str) -> StepProgress | None:
    """A :class:`StepProgress` for ``verbose`` (None for 0), checking the value."""
    verbose = check_verbose(verbose, desc)
    return StepProgress(verbose, steps, desc) if verbose else None


def fit_callbacks(model, callbacks, verbose, *, epochs: int, steps: int, rows=None,
                  batch_size=None, validation=False) -> list:
    """The callbacks ``fit`` runs besides its History, in order: the optimizer's schedule (if
    its ``lr`` is one), the user's ``callbacks``, then the progress display that ``verbose``
    asks for (0: none; 1 or "auto": a bar when stderr is a terminal, else a line per epoch; 2: a
    line per epoch), unless ``callbacks`` already has a :class:`~xpnn.ProgressBar`.

    Every callback gets ``params = {"epochs", "steps", "verbose", "rows", "batch_size",
    "validation"}`` (``rows``: the training rows, None for an iterable of batches;
    ``validation``: whether ``val_*`` values will be logged).
    """
    verbose = check_verbose(verbose, "fit")
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, Callback):
            raise TypeError(f"fit: callbacks[{i}] must be an xpnn.Callback, got "
                            f"{type(cb).__name__}")
    chosen = list(callbacks)
    if getattr(model.optimizer, "schedule", None) is not None:
        chosen.insert(0, OptimizerSchedule())
    if verbose and not any(isinstance(cb, ProgressBar) for cb in chosen):
        chosen.append(ProgressBar(bar=None if verbose == 1 else False))
    for cb in chosen:
        cb.params = {"epochs": epochs, "steps": steps, "verbose": verbose, "rows": rows,
                     "batch_size": batch_size, "validation": validation}
    return chosen


__all__ = ["ProgressBar", "StepProgress", "check_verbose", "fit_callbacks", "interactive",
           "source_steps", "step_progress"]
