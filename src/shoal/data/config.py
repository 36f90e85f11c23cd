"""Every option of dataset building, in one frozen dataclass.

Examples:
    >>> from shoal.data.config import DataConfig
    >>> DataConfig(size="320x240", resize_mode="crop").size
    (320, 240)
    >>> DataConfig().replace(grayscale=True, val_pct=20).channels
    1
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from shoal.config import MAX_SEED, check_int, check_keys, replace
from shoal.data.imageops import check_channels, check_resize_mode, check_size
from shoal.errors import ConfigError

MAX_SPLIT_PCT = 90.0
"""Largest share (in %) of each class that validation and test may take together."""


@dataclass(frozen=True)
class DataConfig:
    """How a folder of images becomes a dataset.

    Values are checked (and ``size`` normalised to ``(width, height)``) when the config is
    made, so a config that exists is valid.
    """

    size: tuple[int, int] = (256, 256)  # stored size of the images: one number (square) or WxH
    resize_mode: str = "squash"  # squash | crop | fill | half (DIGITS' modes)
    channels: int = 3  # 3 = RGB, 1 = grayscale
    val_pct: float = 25.0  # % of each class held out for validation (floor per class)
    test_pct: float = 0.0  # % of each class held out for testing (floor per class)
    val_folder: str | None = None  # a separate folder (or list file) of validation images instead of a held-out share
    list_file: str | None = None  # a text file of "path label" lines instead of class folders
    seed: int = 0  # seed of the split and of the subset per class; the same seed gives the same split
    workers: int | None = None  # decoding processes; default one per CPU core
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
        set_(self, "seed", check_int("seed", self.seed, minimum=0, maximum=MAX_SEED))
        if self.workers is not None:
            set_(self, "workers", check_int("workers", self.workers, minimum=1, maximum=1024))
        set_(self, "min_per_class", check_int("min_per_class", self.min_per_class, minimum=1))
        if self.max_per_class is not None:
            set_(self, "max_per_class", check_int("max_per_class", self.max_per_class, minimum=1))
            if self.max_per_class < self.min_per_class:
                raise ConfigError(
                    f"max_per_class ({self.max_per_class}) must be at least min_per_class ({self.min_per_class}): "
                    "raise the maximum or lower the minimum",
                    options=("max_per_class", "min_per_class"),
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


def normalise_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options that were given (not ``None``), with ``grayscale=True/False`` as ``channels`` (1 or 3).

    Raises:
        ConfigError: for an unknown option (with close matches) or a grayscale that is not True or False.
    """
    check_keys(DataConfig, options, extra=("grayscale",))
    out = {k: v for k, v in options.items() if v is not None}
    grayscale = out.pop("grayscale", None)
    if grayscale is not None:
        if not isinstance(grayscale, (bool, np.bool_)):
            raise ConfigError(f"grayscale must be True or False, got {grayscale!r}", options=("grayscale",))
        if out.get("channels") is not None:
            raise ConfigError("give grayscale or channels, not both", options=("grayscale", "channels"))
        out["channels"] = 1 if grayscale else 3
    return out


def _check_pct(name: str, value: Any) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or not 0.0 <= float(value) <= MAX_SPLIT_PCT:
        shown = f"{value:g}" if isinstance(value, (float, np.floating)) and math.isfinite(value) else repr(value)
        raise ConfigError(f"{name} must be a number from 0 to {MAX_SPLIT_PCT:g}, got {shown}", options=(name,))
    return float(value)


def _check_split_total(val_pct: float, test_pct: float, has_val_folder: bool) -> None:
    held_out = (0.0 if has_val_folder else val_pct) + test_pct
    if held_out > MAX_SPLIT_PCT:
        raise ConfigError(
            f"val_pct + test_pct must be at most {MAX_SPLIT_PCT:g} so that images are left for training, "
            f"got {val_pct:g} + {test_pct:g} = {held_out:g}",
            options=("val_pct", "test_pct"),
        )


def _check_optional_path(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a path, got {value!r}", options=(name,))
    return value
