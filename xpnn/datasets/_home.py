"""Data home resolution, one-time downloads and SHA-256 checks.

Nothing here imports the rest of :mod:`xpnn`; only the standard library is used.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import urllib.request
import warnings
import zlib
from pathlib import Path

__all__ = [
    "ChecksumError",
    "ChecksumWarning",
    "DatasetNotFoundError",
    "fetch_file",
    "get_data_home",
    "sha256_of_file",
]

logger = logging.getLogger("xpnn.datasets")

#: Environment variable that overrides the default data home.
DATA_HOME_ENV = "XPNN_DATA"

_CHUNK = 1 << 20
_DOWNLOAD_TIMEOUT_S = 60.0


class DatasetNotFoundError(FileNotFoundError):
    """A dataset file is missing and could not (or may not) be downloaded.

    The message names the expected file, the folder to put it in, and how to point
    :mod:`xpnn.datasets` at another data home (``data_home=`` or ``XPNN_DATA``).
    """


class ChecksumError(ValueError):
    """A downloaded file does not have the expected SHA-256 (nothing was stored)."""


class ChecksumWarning(UserWarning):
    """A local data file differs from the known reference file."""


def get_data_home(data_home: str | os.PathLike[str] | None = None) -> Path:
    """Return the folder where :mod:`xpnn.datasets` looks for (and stores) data.

    The folder is chosen in this order:

    1. the ``data_home`` argument, when given;
    2. the ``XPNN_DATA`` environment variable, when set and not empty;
    3. a per-user cache folder: ``$XDG_CACHE_HOME/xpnn`` when ``XDG_CACHE_HOME`` is an
       absolute path, else ``~/.cache/xpnn`` on Linux and other Unix systems,
       ``~/Library/Caches/xpnn`` on macOS and ``%LOCALAPPDATA%\\xpnn`` on Windows.

    Parameters
    ----------
    data_home : str or os.PathLike, optional
        Explicit data folder. ``~`` is expanded and relative paths are taken relative
        to the current working directory.

    Returns
    -------
    pathlib.Path
        Absolute path of the data home. It is not created here; downloads create it
        when they need it.

    Examples
    --------
    >>> get_data_home("~/my-data").name
    'my-data'
    """
    if data_home is not None:
        base = Path(data_home)
    elif os.environ.get(DATA_HOME_ENV):
        base = Path(os.environ[DATA_HOME_ENV])
    else:
        base = _user_cache_dir() / "xpnn"
    # abspath normalises ".." without resolving symlinks.
    return Path(os.path.abspath(base.expanduser()))


def _user_cache_dir() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG spec says to ignore relative paths
        return Path(xdg)
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        return Path(local) if local else Path.home() / "AppData" / "Local"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    return Path.home() / ".cache"


def sha256_of_file(path: str | os.PathLike[str], *, decompress: bool = False) -> str:
    """Return the hex SHA-256 of a file, optionally of its gzip-decompressed content.

    Parameters
    ----------
    path : str or os.PathLike
        File to hash.
    decompress : bool, default False
        If True and the file starts with the gzip magic bytes, hash the decompressed
        stream instead of the stored bytes. (Re-gzipped copies of the same data then
        hash alike.)

    Returns
    -------
    str
        64 lowercase hex digits.

    Raises
    ------
    gzip.BadGzipFile, EOFError, zlib.error
        When ``decompress`` is True and the gzip stream is corrupt or truncated.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as raw:
        is_gzip = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw) if decompress and is_gzip else raw
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, dest: Path) -> None:
    """Copy ``url`` into ``dest`` (tests replace this function; it is the only network use)."""
    request = urllib.request.Request(url, headers={"User-Agent": "xpnn-datasets"})
    with urllib.request.urlopen(request, timeout=_DOWNLOAD_TIMEOUT_S) as response:
        with open(dest, "wb") as out:
            shutil.copyfileobj(response, out, _CHUNK)


def _where_hint(path: Path) -> str:
    return (
        f"To fix: put the file at {path} (folder {path.parent}), or point data_home= or the "
        f"{DATA_HOME_ENV} environment variable at a data folder that contains "
        f"{path.parent.name}/{path.name}."
    )


def fetch_file(
    url: str,
    path: str | os.PathLike[str],
    sha256: str,
    *,
    download: bool = True,
    decompressed: bool = True,
) -> Path:
    """Return ``path``, downloading it once from ``url`` when it is missing.

    The download goes to a temporary file in the target folder; it is checked against
    ``sha256`` and only then renamed into place (atomically), so an interrupted or
    corrupt download never leaves a file at ``path``. An existing file is returned
    as is.

    Parameters
    ----------
    url : str
        Source URL.
    path : str or os.PathLike
        Where the file is expected / will be stored.
    sha256 : str
        Expected hex SHA-256.
    download : bool, default True
        If False, never touch the network: a missing file raises at once.
    decompressed : bool, default True
        Whether ``sha256`` is of the gzip-decompressed content (see
        :func:`sha256_of_file`), which does not depend on how the file was compressed.

    Returns
    -------
    pathlib.Path
        The path of the (now) existing file.

    Raises
    ------
    DatasetNotFoundError
        The file is missing and ``download`` is False, or the download failed
        (no network, HTTP error, unwritable folder).
    ChecksumError
        The downloaded content does not match ``sha256``; nothing is stored.
    """
    path = Path(path)
    if path.is_file():
        return path
    if not download:
        raise DatasetNotFoundError(
            f"Dataset file {path.name} not found at {path} and download=False. " + _where_hint(path)
        )
    tmp: Path | None = None
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(
                dir=path.parent, prefix=f".{path.name}.", suffix=".part"
            )
            os.close(fd)
            tmp = Path(tmp_name)
            logger.info("downloading %s to %s", url, path)
            _download(url, tmp)
        except OSError as exc:  # URLError, HTTPError, timeouts, permissions
            raise DatasetNotFoundError(
                f"Dataset file {path.name} not found at {path}, and downloading it from "
                f"{url} failed ({type(exc).__name__}: {exc}). " + _where_hint(path)
            ) from exc
        try:
            actual = sha256_of_file(tmp, decompress=decompressed)
        except (OSError, EOFError, zlib.error) as exc:
            raise ChecksumError(
                f"The file downloaded from {url} is not a valid gzip stream ({exc}); "
                f"it was discarded and nothing was stored at {path}."
            ) from exc
        if actual != sha256.lower():
            kind = "decompressed content" if decompressed else "file"
            raise ChecksumError(
                f"SHA-256 mismatch for {url}: {kind} hashes to {actual}, expected "
                f"{sha256.lower()}. The download was discarded and nothing was stored at "
                f"{path}. Try again later. " + _where_hint(path)
            )
        os.replace(tmp, path)
        tmp = None
        return path
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def warn_if_checksum_differs(path: Path, sha256: str, *, reference: str) -> None:
    """Warn with :class:`ChecksumWarning` when ``path`` is not the known reference file."""
    actual = sha256_of_file(path)
    if actual != sha256:
        warnings.warn(
            f"{path} has SHA-256 {actual}, but the reference file ({reference}) has "
            f"{sha256}. It may be a modified copy, so results can differ from published "
            f"ones. Replace it with the original to silence this warning.",
            ChecksumWarning,
            stacklevel=3,
        )
