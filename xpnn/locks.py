"""A lock file that keeps two processes out of one folder (:class:`~xpnn.BackupAndRestore`).

The lock is a file holding ``"<pid> <host>"`` created with ``O_EXCL``. A lock left by a
process that no longer runs on this machine (killed, crashed) is stale and taken over; a lock of
this very process (a ``fit`` that raised before releasing it) is taken back.
"""

from __future__ import annotations

import os
import socket


class FolderInUseError(RuntimeError):
    """Another running process holds the folder's lock."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # it runs, as another user
        return True
    return True


def _owner(path):
    """``(pid, host)`` written in the lock file ``path``, or None if unreadable or malformed."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            pid, host = f.read(512).split(" ", 1)
        return int(pid), host.strip()
    except (OSError, ValueError):
        return None


def acquire(path, owner: str) -> None:
    """Create the lock file ``path`` for this process. Raises :class:`FolderInUseError` naming
    the process that holds it when that process still runs (``owner`` names the caller in the
    message)."""
    me = f"{os.getpid()} {socket.gethostname()}"
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            held = _owner(path)
            if held is not None and held[0] != os.getpid() and (
                    held[1] != socket.gethostname() or _alive(held[0])):
                where = "" if held[1] == socket.gethostname() else f" on {held[1]}"
                raise FolderInUseError(
                    f"{owner}: {os.path.dirname(path) or '.'} is in use by process {held[0]}"
                    f"{where} (lock file {path}): give each training run its own folder, or "
                    "delete the lock file if that process is not training") from None
            try:                     # stale (or ours, or unreadable): take it over
                os.unlink(path)
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        return
    raise FolderInUseError(f"{owner}: could not take the lock file {path}")


def release(path) -> None:
    """Remove the lock file ``path`` if this process holds it."""
    held = _owner(path)
    if held is not None and held[0] == os.getpid():
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


__all__ = ["FolderInUseError", "acquire", "release"]
