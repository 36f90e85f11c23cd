"""Every option of dataset building, in one frozen dataclass.

Examples:
    >>> from shoal.data.config import DataConfig
    >>> DataConfig(size="320x240", resize_mode="crop").size
    (320, 240)
    >>> DataConfig().replace(grayscale=True, val_pct=20).channels
    1
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from shoal.config import check_int
from shoal.data.imageops import check_channels, check_resize_mode, check_size
from shoal.errors import ConfigError

MAX_SPLIT_PCT = 90.0
"""Largest share (in %) of each class that validation and test may take together."""

_ALIASES = {"grayscale": "channels", "val": "val_pct", "test": "test_pct", "resize": "resize_mode", "list": "list_file"}


@dataclass(frozen=True)
class DataConfig:
    """How a folder of images becomes a dataset.

    Values are checked (and ``size`` normalised to ``(width, height)``) when the config is
    made, so a config that exists is valid.
    """

    size: tuple[int, int] = (256, 256)  # (width, height) of the stored images; accepts 256 or "WxH"
    resize_mode: str = "squash"  # squash | crop | fill | half (DIGITS' modes)
    channels: int = 3  # 3 = RGB, 1 = grayscale
    val_pct: float = 25.0  # % of each class held out for validation (floor per class)
    test_pct: float = 0.0  # % of each class held out for testing (floor per class)
    val_folder: str | None = None  # a separate folder (or list file) of validation images; val_pct is then unused
    list_file: str | None = None  # a text file of "path label" lines instead of class folders
    seed: int = 0  # seed of the split (and of the max_per_class selection)
    workers: int | None = None  # decoding processes; None = one per CPU core
    min_per_class: int = 2  # classes with fewer usable images are left out (and reported)
    max_per_class: int | None = None  # read at most this many images per class (a seeded random subset)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "size", check_size(self.size))
        set_(self, "resize_mode", check_resize_mode(self.resize_mode))
        set_(self, "channels", check_channels(self.channels))
        set_(self, "val_pct", _check_pct("val_pct", self.val_pct))
        set_(self, "test_pct", _check_pct("test_pct", self.test_pct))
        _check_split_total(self.val_pct, self.test_pct, self.val_folder is not None)
        set_(self, "val_folder", _check_optional_path("val_folder", self.val_folder))
        set_(self, "list_file", _check_optional_path("list_file", self.list_file))
        set_(self, "seed", check_int("seed", self.seed, minimum=0))
        if self.workers is not None:
            set_(self, "workers", check_int("workers", self.workers, minimum=1))
        set_(self, "min_per_class", check_int("min_per_class", self.min_per_class, minimum=1))
        if self.max_per_class is not None:
            set_(self, "max_per_class", check_int("max_per_class", self.max_per_class, minimum=1))
            if self.max_per_class < self.min_per_class:
                raise ConfigError(
                    f"max_per_class ({self.max_per_class}) must be at least min_per_class ({self.min_per_class}): "
                    "raise max_per_class or lower min_per_class"
                )

    @property
    def grayscale(self) -> bool:
        """Whether images are stored with one channel."""
        return self.channels == 1

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]

    def replace(self, **options: Any) -> DataConfig:
        """Return a copy with some options changed.

        Args:
            **options: field names (see the class), plus ``grayscale=True/False`` for
                ``channels``. A value of ``None`` means "not given" and changes nothing.

        Returns:
            The new, validated config.

        Raises:
            ConfigError: for an unknown option (with close matches) or a bad value.
        """
        return replace(self, **normalise_options(options))

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON-ready values (``size`` as ``[width, height]``)."""
        out = asdict(self)
        out["size"] = [self.size[0], self.size[1]]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataConfig:
        """Rebuild a config saved by :meth:`to_dict` (unknown keys are refused).

        Raises:
            ConfigError: for an unknown key or a bad value.
        """
        return cls(**normalise_options(dict(data)))


def normalise_options(options: dict[str, Any]) -> dict[str, Any]:
    """Map option names to :class:`DataConfig` fields, dropping ``None`` values.

    ``grayscale`` becomes ``channels``, and the CLI's short names (``val``, ``test``,
    ``resize``, ``list``) their fields. ``None`` means "not given", so it never overrides.

    Raises:
        ConfigError: for an unknown name, with the closest valid names.
    """
    names = [f.name for f in fields(DataConfig)]
    out: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        field = _ALIASES.get(key, key)
        if field not in names:
            close = difflib.get_close_matches(key, names + ["grayscale"], n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"{key!r} is not a dataset option{hint} (options: {', '.join(names)}, grayscale)")
        if key == "grayscale":
            if not isinstance(value, (bool, np.bool_)):
                raise ConfigError(f"grayscale must be True or False, got {value!r}")
            value = 1 if value else 3
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        out[field] = value
    return out


def _check_pct(name: str, value: Any) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or not 0.0 <= float(value) <= MAX_SPLIT_PCT:
        shown = f"{value:g}" if isinstance(value, (float, np.floating)) and math.isfinite(value) else repr(value)
        raise ConfigError(f"{name} must be a number from 0 to {MAX_SPLIT_PCT:g}, got {shown}")
    return float(value)


def _check_split_total(val_pct: float, test_pct: float, has_val_folder: bool) -> None:
    held_out = (0.0 if has_val_folder else val_pct) + test_pct
    if held_out > MAX_SPLIT_PCT:
        raise ConfigError(
            f"val_pct + test_pct must be at most {MAX_SPLIT_PCT:g} so that images are left for training, "
            f"got {val_pct:g} + {test_pct:g} = {held_out:g}"
        )


def _check_optional_path(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a path, got {value!r}")
    return value
