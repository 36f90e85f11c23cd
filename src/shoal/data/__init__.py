"""The dataset stage: a folder of labelled images becomes a stored, split, ready-to-train dataset.

NumPy and Pillow only — nothing here imports torch. The public names are also
available as :mod:`shoal.datasets`.
"""

from __future__ import annotations

from shoal.data.config import DataConfig
from shoal.data.dataset import Dataset, create, delete, explore, list_datasets, load
from shoal.data.imageops import ImageError, open_image, prepare, resize
from shoal.data.sample import build_sample, ensure_sample
from shoal.data.scan import Skipped

list = list_datasets  # noqa: A001 - the public name is shoal.datasets.list

__all__ = [
    "DataConfig",
    "Dataset",
    "ImageError",
    "Skipped",
    "build_sample",
    "create",
    "delete",
    "ensure_sample",
    "explore",
    "list",
    "list_datasets",
    "load",
    "open_image",
    "prepare",
    "resize",
]
