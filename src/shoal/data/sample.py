"""The built-in sample: scikit-learn's handwritten digits as a folder of PNGs, then a dataset.

scikit-learn ships 1,797 real 8×8 grayscale digits (10 classes) inside its wheel, so the
sample works offline on a fresh machine with none of the user's data. They are written
as a folder-per-class tree (``$SHOAL_HOME/samples/digits/<0..9>/*.png``) and built like
any user folder.

Examples:
    >>> from shoal.data.sample import build_sample                # doctest: +SKIP
    >>> build_sample().splits["train"]["0"]                       # doctest: +SKIP
    134
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from shoal.data.dataset import Dataset, Progress, create, load
from shoal.errors import DatasetError
from shoal.store import Store

SAMPLE_NAME = "digits"
"""The name of the sample dataset in the store."""

SAMPLE_SIZE = (32, 32)
"""Stored size of the sample (small enough to train in seconds, colour-capable networks accept it)."""

DIGITS_COUNT = 1797
_MARKER = ".complete"


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 images scaled 0..255 and their labels.

    The data file is read straight from the installed scikit-learn (without importing it,
    which takes a second); if its layout changed, ``sklearn.datasets.load_digits`` is used.

    Returns:
        ``(images, labels)``: uint8 ``1797 × 8 × 8`` (pixel values 0..16 scaled to 0..255)
        and int64 ``1797`` labels 0..9.

    Raises:
        DatasetError: scikit-learn is not installed.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            "the built-in sample needs scikit-learn (it ships the digits images): "
            "install it with 'pip install scikit-learn'"
        )
    data_file = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if data_file.is_file():
        table = np.loadtxt(data_file, delimiter=",")
        values, labels = table[:, :-1].reshape(-1, 8, 8), table[:, -1]
    else:  # pragma: no cover - depends on the scikit-learn release
        from sklearn.datasets import load_digits

        bunch = load_digits()
        values, labels = bunch.images, bunch.target
    images = np.rint(np.clip(values, 0, 16) * (255.0 / 16.0)).astype(np.uint8)
    return images, labels.astype(np.int64)


def sample_folder(store: Store | None = None) -> Path:
    """Where the sample's PNG tree lives: ``<store>/samples/digits``."""
    store = Store() if store is None else store
    return store.home / "samples" / SAMPLE_NAME


def ensure_sample(store: Store | None = None) -> Path:
    """Write the digits as ``<store>/samples/digits/<label>/digit_NNNN.png`` unless already there.

    Idempotent: a complete tree (marked by a ``.complete`` file) is reused; a partial one
    is replaced. The tree is written next to its place and renamed into it at the end.

    Args:
        store: the store whose folder receives the tree; defaults to ``Store()``.

    Returns:
        The folder, ready to pass to :func:`shoal.datasets.create`.

    Raises:
        DatasetError: scikit-learn is not installed.
    """
    from PIL import Image

    folder = sample_folder(store)
    if (folder / _MARKER).is_file():
        return folder
    images, labels = load_digits_arrays()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{SAMPLE_NAME}-", dir=folder.parent))
    try:
        for label in np.unique(labels):
            (tmp / str(int(label))).mkdir()
        for index, (pixels, label) in enumerate(zip(images, labels)):
            Image.fromarray(pixels, mode="L").save(tmp / str(int(label)) / f"digit_{index:04d}.png")
        (tmp / _MARKER).write_text(f"{len(images)}\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def build_sample(
    name: str = SAMPLE_NAME,
    *,
    store: Store | None = None,
    progress: Progress | None = None,
    rebuild: bool = False,
    **options: Any,
) -> Dataset:
    """Build the digits sample as a dataset (or return it if it is already stored).

    Args:
        name: the dataset's name in the store.
        store: the store; defaults to ``Store()``.
        progress: called as ``progress(done, total)`` while images are decoded.
        rebuild: delete a stored dataset of that name first and build it again.
        **options: :class:`~shoal.data.config.DataConfig` options; the size defaults to
            ``SAMPLE_SIZE`` (32×32) and the images are stored in colour (RGB).

    Returns:
        The stored sample dataset.

    Raises:
        DatasetError: scikit-learn is not installed.
        ConfigError: an option is not valid.
    """
    store = Store() if store is None else store
    if store.exists("dataset", name):
        if not rebuild:
            return load(name, store=store)
        store.delete("dataset", name)
    folder = ensure_sample(store)
    options.setdefault("size", SAMPLE_SIZE)
    return create(folder, name, store=store, progress=progress, **options)
