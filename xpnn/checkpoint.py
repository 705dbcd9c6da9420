"""Checkpoint callbacks: :class:`ModelCheckpoint` (model files during training) and
:class:`BackupAndRestore` (survive a crash and continue exactly where training stood).

Both write complete model files (:func:`xpnn.serialization.save`: weights, optimizer state,
random generator, epochs trained), atomically: a crash at any moment leaves the previous file
intact under its name, never a torn one.
"""

from __future__ import annotations

import numbers
import os
import re
import warnings

from . import locks, serialization
from .callbacks import Callback


def _writes_files(callback) -> bool:
    """False on the ranks other than 0 of a data-parallel ``fit``: only rank 0 writes."""
    run = callback.run
    return run is None or run.writes_files


def _check_mode(mode, monitor, owner):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{owner}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        mode = "max" if monitor.split("val_")[-1] in ("accuracy", "acc", "r2") else "min"
    return mode


#: Values standing in for the logs when a filepath template is checked: as long as their
#: kind gets (the longest float repr, a five-digit epoch), for the length checks.
_SAMPLE_EPOCH, _SAMPLE_VALUE = 99999, -1.2345678901234567e-300
#: Widest field a filepath template may ask for (``{epoch:1000000000}`` would build a GB).
_MAX_FIELD = 1000


def check_filepath(template, keys, validation=True, owner="ModelCheckpoint") -> str:
    """Check a :class:`ModelCheckpoint` ``filepath`` template before training: its fields
    (``epoch`` and the logged ``keys``, ``val_*`` ones only with ``validation``) and format
    specs, no NUL byte, a file name that fits the file system's limit (with the temporary
    file's additions), and a folder that exists or can be created: the first existing
    ancestor is a writable folder. Returns a sample path; raises ValueError otherwise."""
    import string

    where = f"{owner}: filepath {template!r}"
    if "\0" in template:
        raise ValueError(f"{where} contains a NUL byte")
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    for _, _, spec, _ in fields:
        if spec and any(int(d) > _MAX_FIELD for d in re.findall(r"[0-9]+", spec)):
            raise ValueError(f"{where}: the format spec {spec!r} asks for more than "
                             f"{_MAX_FIELD} characters")
    logged = list(keys) + ([f"val_{k}" for k in keys] if validation else [])
    sample = dict.fromkeys(logged, _SAMPLE_VALUE)
    try:
        path = serialization.npz_path(template.format(epoch=_SAMPLE_EPOCH, **sample))
    except (KeyError, IndexError) as exc:
        missing = exc.args[0] if exc.args else exc
        hint = (": there is no validation data (pass validation_data or validation_split)"
                if isinstance(missing, str) and missing.startswith("val_") and not validation
                and missing[4:] in keys else "")
        raise ValueError(f"{where} refers to {missing!r}, which fit does not log{hint}; "
                         f"available: epoch, {', '.join(logged)}") from None
    except (ValueError, TypeError, AttributeError, MemoryError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    folder, name = os.path.split(os.path.abspath(path))
    ancestor = folder
    while not os.path.lexists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise ValueError(f"{where}: cannot create the folder {folder}: {ancestor} is not a "
                         "folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"{where}: cannot write into {ancestor} (permission denied)")
    try:
        limit = os.pathconf(ancestor, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    # atomic_write's temporary file: "." + name + ".XXXXXXXX.tmp"
    if len(name.encode("utf-8", "surrogateescape")) + 14 > limit:
        raise ValueError(f"{where}: a file name it gives ({name[:40]}..., "
                         f"{len(name.encode('utf-8', 'surrogateescape'))} bytes) is too long "
                         f"for the file system ({limit} bytes at most, including the "
                         "temporary file's 14 more)")
    return path


class ModelCheckpoint(Callback):
    """Save the model at the end of every epoch (or only when ``monitor`` improved).

    Parameters
    ----------
    filepath : str or path-like
        Where to write; may contain ``{epoch}`` (1-based, as Keras) and any key of the epoch
        logs with a format spec, e.g. ``"ckpt-{epoch:02d}-{val_loss:.3f}.npz"``. ``.npz`` is
        appended when missing; a missing folder is created. Without placeholders the same
        file is overwritten.
    monitor : str
        The logged value judged by ``save_best_only``.
    save_best_only : bool
        Write only when ``monitor`` is better than at every earlier save.
    mode : {"auto", "min", "max"}
        Whether lower or higher is better; ``"auto"``: higher for accuracy and r2.

    Attributes
    ----------
    best : float
        Best monitored value saved so far (``save_best_only``).
    last_saved : str or None
        Path of the most recent file written.
    """

    def __init__(self, filepath, monitor: str = "val_loss", save_best_only: bool = False,
                 mode: str = "auto"):
        if not isinstance(monitor, str):
            raise ValueError(f"ModelCheckpoint: monitor must be a string, got {monitor!r}")
        if not isinstance(save_best_only, bool):
            raise ValueError(f"ModelCheckpoint: save_best_only must be a bool, got "
                             f"{save_best_only!r}")
        self.filepath = os.fspath(filepath)
        self.save_best_only = save_best_only
        # ``monitor`` is what fit checks against the logs before training; it matters only
        # when saving the best model.
        self.monitor = monitor if save_best_only else None
        self.monitored = monitor
        self.mode = _check_mode(mode, monitor, "ModelCheckpoint")
        self.best = float("inf") if self.mode == "min" else float("-inf")
        self.last_saved = None

    def on_train_begin(self, logs=None):
        """Check the template and its folder before the first epoch trains.

        Parameters
        ----------
        logs : dict or None
            Unused.

        Raises
        ------
        ValueError
            For a field ``fit`` will not log, a bad format, a name too long, or a folder that
            cannot be written.
        """
        keys = ["loss", *(m.name for m in self.model.metrics)]
        params = getattr(self, "params", None) or {}
        validation = params.get("validation", True)
        check_filepath(self.filepath, keys, validation)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = logs.get(self.monitored)
            if value is None:
                raise ValueError(f"ModelCheckpoint: monitor {self.monitored!r} is not among "
                                 f"the logged values {sorted(logs)}")
            better = value < self.best if self.mode == "min" else value > self.best
            if not better:
                return
            self.best = float(value)
        try:
            path = self.filepath.format(epoch=epoch + 1, **logs)
        except KeyError as exc:
            raise ValueError(f"ModelCheckpoint: filepath {self.filepath!r} refers to {exc}, "
                             f"which is not among the logged values {sorted(logs)}") from None
        except (ValueError, TypeError, AttributeError, IndexError, MemoryError) as exc:
            raise ValueError(f"ModelCheckpoint: filepath {self.filepath!r}: {exc}") from None
        if not _writes_files(self):
            self.last_saved = serialization.npz_path(path)
            return
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        self.last_saved = serialization.save(self.model, path)

    def get_state(self):
        return {"best": self.best}

    def set_state(self, state):
        self.best = float(state["best"])


class BackupAndRestore(Callback):
    """Back up the complete training state during ``fit`` and, when ``fit`` starts again after
    an interruption, continue from the last backup as if nothing had happened.

    Every epoch (``save_freq="epoch"``) or every ``save_freq`` batches, ``fit`` writes the
    weights, the optimizer's state and learning rate, the random generator, the position in
    the epoch, the History so far and the state of every callback that has one
    (``get_state``: EarlyStopping, LearningRateScheduler, ModelCheckpoint...) into
    ``backup_dir``. When ``fit`` starts and a backup is there, all of it is restored and
    training resumes at the epoch and batch reached: a run killed at any moment (SIGKILL
    included) and started again with the same command ends with exactly the weights of an
    uninterrupted run (same seed and data). Two generations are kept; a damaged newest backup
    is reported by a warning and the previous one used (as is a newest entry that is not a
    regular file: a FIFO, a folder, a dangling link). When ``fit`` finishes, the backup is
    deleted unless ``delete_checkpoint=False``. In a data-parallel ``fit`` only rank 0 writes
    and deletes; every rank restores from the same files.

    A resumed ``fit`` prints (unless ``verbose=0``) ``restored from epoch N, batch B`` and sets
    ``restored_from``. A backup is resumed only by the run that made it: a backup of
    another architecture, or of a training on another number of rows or with another
    ``batch_size``, raises ValueError naming the folder, before anything changes. While
    ``fit`` runs, the lock file ``backup_dir/.lock`` (holding the process id) keeps a second
    process out: its ``fit`` raises ``xpnn.locks.FolderInUseError`` (a RuntimeError) naming
    the process that holds the folder; the lock of a process that no longer runs is taken
    over.

    Parameters
    ----------
    backup_dir : str or path-like
        Folder for the backups (created when missing). Use one folder per training run.
    save_freq : "epoch" or int
        Back up after every epoch, or after every ``save_freq`` batches (counted across
        epochs).
    delete_checkpoint : bool
        Remove the backups when ``fit`` ends normally.

    Attributes
    ----------
    restored_from : str or None
        The backup file the current ``fit`` resumed from.
    restored_at : tuple or None
        ``(epoch, batch)`` it resumed at: 0-based epoch, batches of it already done.
    """

    PATTERN = re.compile(r"backup-([0-9]{6,})\.npz")

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint: bool = True):
        if not (isinstance(save_freq, str) and save_freq == "epoch"):
            if not isinstance(save_freq, numbers.Integral) or isinstance(save_freq, bool) \
                    or save_freq < 1:
                raise ValueError(f"BackupAndRestore: save_freq must be 'epoch' or an int >= 1, "
                                 f"got {save_freq!r}")
            save_freq = int(save_freq)
        if not isinstance(delete_checkpoint, bool):
            raise ValueError(f"BackupAndRestore: delete_checkpoint must be a bool, got "
                             f"{delete_checkpoint!r}")
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq = save_freq
        self.delete_checkpoint = delete_checkpoint
        self.restored_from = self.restored_at = None
        self._batches_seen = 0
        self._generation = 0
        self._deferred = []
        self._epoch_done = False

    # ------------------------------------------------------------------ files
    def _generations(self):
        """``[(number, path)]`` of the backups in the folder, newest first."""
        found = []
        for name in os.listdir(self.backup_dir):
            m = self.PATTERN.fullmatch(name)
            if m:
                found.append((int(m.group(1)), os.path.join(self.backup_dir, name)))
        return sorted(found, reverse=True)

    def _save(self, position):
        """Write backup ``position`` (every rank calls this at the same step and computes the
        position together; rank 0 alone writes)."""
        number = self._generation + 1
        self._generation = number
        if not _writes_files(self):     # data-parallel: rank 0 writes for all
            return
        path = os.path.join(self.backup_dir, f"backup-{number:06d}.npz")
        serialization.save(self.model, path, callbacks=self.run.callbacks, position=position)
        for n, old in self._generations():
            if n < number - 1:
                _remove(old)

    # ------------------------------------------------------------------ restoring
    @property
    def _lock(self):
        return os.path.join(self.backup_dir, ".lock")

    def on_train_begin(self, logs=None):
        self._batches_seen, self._deferred, self._epoch_done = 0, [], False
        self.restored_from = self.restored_at = None
        os.makedirs(self.backup_dir, exist_ok=True)
        if _writes_files(self):
            locks.acquire(self._lock, "BackupAndRestore")
        for name in os.listdir(self.backup_dir):          # temporary files of a killed write
            if name.startswith(".backup-") and name.endswith(".tmp") and \
                    _writes_files(self):
                os.unlink(os.path.join(self.backup_dir, name))
        generations = self._generations()
        self._generation = generations[0][0] if generations else 0
        payload = None
        for i, (_, path) in enumerate(generations):
            try:
                payload = serialization.read(path)
            except (ValueError, OSError) as exc:     # damaged, or not a regular file
                if i + 1 == len(generations):
                    raise ValueError(f"BackupAndRestore: no intact backup in "
                                     f"{self.backup_dir}: {exc}") from None
                warnings.warn(f"BackupAndRestore: {exc}; using the previous backup "
                              f"{generations[i + 1][1]}", RuntimeWarning, stacklevel=2)
                continue
            break
        if payload is None:
            return
        model = self.model
        try:
            serialization.check_fits(model, payload)
        except ValueError as exc:
            raise ValueError(f"BackupAndRestore: {exc}. {self._other_run()}") from None
        self._check_same_run(payload)
        serialization.restore_into(model, payload)
        self._restore_callbacks(payload)
        self.restored_from = payload.path
        position = payload.training["position"]
        self.run.resume_from(position)
        if position is not None:
            self.restored_at = (int(position.epoch), int(position.batch))
            if getattr(self, "params", {}).get("verbose") and _writes_files(self):
                print(f"BackupAndRestore: restored from epoch {self.restored_at[0] + 1}, "
                      f"batch {self.restored_at[1]} ({payload.path})", flush=True)

    def _other_run(self):
        return (f"The folder {self.backup_dir} holds the backup of another training run: "
                "delete it to start afresh, or pass another backup_dir")

    def _facts(self):
        """What a backup may only be resumed with: the training rows and the batch size."""
        params = getattr(self, "params", None) or {}
        return {"rows": params.get("rows"), "batch_size": params.get("batch_size")}

    def _check_same_run(self, payload):
        """Raise ValueError when the backup was made training on other data (another number
        of rows or another batch size): its position would point into another epoch."""
        saved = next((state for name, state in payload.training["callbacks"]
                      if name == type(self).__name__), {})
        now = self._facts()
        for key, what in (("rows", "training rows"), ("batch_size", "batch_size")):
            if key in saved and saved[key] != now[key]:
                raise ValueError(
                    f"BackupAndRestore: the backup {payload.path} was made with {saved[key]} "
                    f"{what}, this fit has {now[key]}; resume it with the same data and "
                    f"batch_size. {self._other_run()}")

    def _restore_callbacks(self, payload):
        """Give every callback its saved state: now to those whose ``on_train_begin`` already
        ran (they come before this one), at this callback's next hook to the others."""
        saved = {}
        for name, state in payload.training["callbacks"]:
            saved.setdefault(name, []).append(state)
        seen = {}
        after = False
        for cb in self.run.callbacks:
            name = type(cb).__name__
            k = seen.get(name, 0)
            seen[name] = k + 1
            if cb is self:
                after = True
                if k < len(saved.get(name, ())):
                    self._set_own_state(saved[name][k])
                continue
            if k >= len(saved.get(name, ())):
                continue
            if after:
                self._deferred.append((cb, saved[name][k]))
            else:
                self._apply(cb, saved[name][k])

    def _apply(self, cb, state):
        try:
            cb.set_state(state)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"BackupAndRestore: the {type(cb).__name__} state in "
                             f"{self.restored_from or self.backup_dir} does not fit: {exc}"
                             ) from None

    def _flush_deferred(self):
        for cb, state in self._deferred:
            self._apply(cb, state)
        self._deferred = []

    def get_state(self):
        return {"batches_seen": self._batches_seen, **self._facts()}

    def _set_own_state(self, state):
        self._batches_seen = int(state["batches_seen"])

    # ------------------------------------------------------------------ backing up
    def on_epoch_begin(self, epoch, logs=None):
        self._flush_deferred()
        if self.save_freq == "epoch" and self._epoch_done:
            # Every callback has seen the previous epoch's end: back up its complete state.
            self._save(self.run.capture_position())
        self._epoch_done = False

    def on_train_batch_begin(self, batch, logs=None):
        self._flush_deferred()

    def on_train_batch_end(self, batch, logs=None):
        self._batches_seen += 1
        if self.save_freq != "epoch" and self._batches_seen % self.save_freq == 0:
            self._save(self.run.capture_position())

    def on_epoch_end(self, epoch, logs=None):
        self._flush_deferred()
        self._epoch_done = True

    def on_train_end(self, logs=None):
        self._flush_deferred()
        if not self.delete_checkpoint:
            if self._epoch_done or self.save_freq != "epoch":
                self._save(self.run.capture_position())    # every rank: see _save
            if _writes_files(self):
                locks.release(self._lock)
            return
        if not _writes_files(self):
            return
        for _, path in self._generations():
            _remove(path)
        locks.release(self._lock)
        try:
            os.rmdir(self.backup_dir)
        except OSError:
            pass                # not empty: other files live there


def _remove(path):
    """Delete an old backup; an entry that is not a file (a folder under a backup's name) is
    left alone."""
    try:
        os.unlink(path)
    except (IsADirectoryError, PermissionError, FileNotFoundError):
        pass
