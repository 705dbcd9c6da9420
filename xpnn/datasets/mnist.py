"""MNIST and Fashion-MNIST: downloaded once, checked, parsed with our IDX reader."""

from __future__ import annotations

import os

import numpy as np

from ._home import fetch_file, get_data_home
from .idx import IDXFormatError, load_idx_images, load_idx_labels

__all__ = ["FASHION_MNIST_CLASSES", "load_mnist"]

#: Class names of Fashion-MNIST, indexed by label.
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# (key in the checksum tables, file name), in the order train images, labels, test ...
_FILES = (
    ("train-images", "train-images-idx3-ubyte.gz"),
    ("train-labels", "train-labels-idx1-ubyte.gz"),
    ("t10k-images", "t10k-images-idx3-ubyte.gz"),
    ("t10k-labels", "t10k-labels-idx1-ubyte.gz"),
)

# kind -> (subfolder of the data home, base URL, SHA-256 of each DECOMPRESSED file).
# Hashing the decompressed bytes makes the check independent of how a mirror gzipped them.
_SOURCES = {
    "mnist": (
        "mnist",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        {
            "train-images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    ),
    "fashion": (
        "fashion-mnist",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {
            "train-images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
    ),
}
_ALIASES = {"mnist": "mnist", "fashion": "fashion", "fashion-mnist": "fashion"}


def load_mnist(
    kind: str = "mnist",
    data_home: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    flatten: bool = True,
):
    """Load MNIST digits or Fashion-MNIST, downloading the files once if needed.

    The four IDX files ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
    ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz`` are looked up in
    ``<data home>/mnist/`` or ``<data home>/fashion-mnist/``. Missing files are
    downloaded from https://ossci-datasets.s3.amazonaws.com/mnist/ (MNIST) or
    http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ (Fashion-MNIST), checked
    against the SHA-256 of their decompressed content and stored atomically.

    Parameters
    ----------
    kind : {"mnist", "fashion"}, default "mnist"
        Which dataset; ``"fashion-mnist"`` is accepted as an alias of ``"fashion"``.
    data_home : str or os.PathLike, optional
        Data folder; defaults to :func:`get_data_home` (``XPNN_DATA`` or the user cache).
    download : bool, default True
        If False, never use the network and raise when a file is missing.
    flatten : bool, default True
        Return images as rows of 784 pixels; if False keep them as 28 x 28.

    Returns
    -------
    (X_train, y_train) : tuple of numpy.ndarray
        ``X_train`` uint8 of shape ``(60000, 784)`` (or ``(60000, 28, 28)``), pixel values
        0..255 with 0 the background; ``y_train`` int64 of shape ``(60000,)``, labels 0..9.
    (X_test, y_test) : tuple of numpy.ndarray
        Same for the test set, ``(10000, 784)`` and ``(10000,)``.

    Raises
    ------
    DatasetNotFoundError
        A file is missing and cannot be downloaded (offline, or ``download=False``). The
        message names the file and the folder to put it in.
    ChecksumError
        A downloaded file is corrupt; nothing is stored.
    IDXFormatError
        A local file is not a valid IDX file, or images and labels do not match in count.

    Notes
    -----
    Images stay uint8 to save memory (47 MB instead of 376 MB as float64 for the
    training set); scale them yourself, e.g. ``X_train.astype(np.float32) / 255``.
    Fashion-MNIST class names are in :data:`FASHION_MNIST_CLASSES`.

    Examples
    --------
    >>> (X_train, y_train), (X_test, y_test) = load_mnist()  # doctest: +SKIP
    >>> X_train.shape, X_train.dtype, y_train.shape  # doctest: +SKIP
    ((60000, 784), dtype('uint8'), (60000,))
    """
    key = _ALIASES.get(str(kind).lower())
    if key is None:
        raise ValueError(f"kind must be 'mnist' or 'fashion', got {kind!r}")
    subfolder, base_url, sums = _SOURCES[key]
    folder = get_data_home(data_home) / subfolder
    # Fetch all four first, so a missing file is reported before any parsing work.
    paths = [
        fetch_file(base_url + name, folder / name, sums[key], download=download)
        for key, name in _FILES
    ]
    train = _images_and_labels(paths[0], paths[1], flatten)
    test = _images_and_labels(paths[2], paths[3], flatten)
    return train, test


def _images_and_labels(images_path, labels_path, flatten):
    images = load_idx_images(images_path)
    labels = load_idx_labels(labels_path).astype(np.int64)
    if len(images) != len(labels):
        raise IDXFormatError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} "
            "labels; the files do not belong together"
        )
    if flatten:
        images = images.reshape(len(images), -1)
    return images, labels
