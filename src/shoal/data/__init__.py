"""The dataset stage: a folder of labelled images becomes a stored, split, ready-to-train dataset.

NumPy and Pillow only — nothing here imports torch. The public names are also
available as :mod:`shoal.datasets`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shoal.data.config import DataConfig
    from shoal.data.contact_sheet import explore
    from shoal.data.dataset import Dataset, create, delete, list_datasets, load
    from shoal.data.imageops import ImageError, open_image, prepare, resize
    from shoal.data.sample import build_sample, ensure_sample
    from shoal.data.scan import Skipped

    list = list_datasets  # noqa: A001 - the public name is shoal.datasets.list

# Each public name and where it lives. They load on first use, so ``shoal.data.imageops``
# alone (all that inference needs) does not import the dataset store.
_PUBLIC: dict[str, tuple[str, str]] = {
    "DataConfig": ("config", "DataConfig"),
    "Dataset": ("dataset", "Dataset"),
    "ImageError": ("imageops", "ImageError"),
    "Skipped": ("scan", "Skipped"),
    "build_sample": ("sample", "build_sample"),
    "create": ("dataset", "create"),
    "delete": ("dataset", "delete"),
    "ensure_sample": ("sample", "ensure_sample"),
    "explore": ("contact_sheet", "explore"),
    "list": ("dataset", "list_datasets"),
    "list_datasets": ("dataset", "list_datasets"),
    "load": ("dataset", "load"),
    "open_image": ("imageops", "open_image"),
    "prepare": ("imageops", "prepare"),
    "resize": ("imageops", "resize"),
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _PUBLIC[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
