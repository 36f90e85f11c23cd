"""Sweeps: one training configuration per combination of learning rates and batch sizes.

Torch-free, so the web app and the CLI check every configuration of a sweep before
anything is queued.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

from shoal.config import build
from shoal.errors import ConfigError
from shoal.store import check_name
from shoal.training.config import TrainConfig


def sweep(*, lr: float | Sequence[float] | None = None, batch_size: int | Sequence[int] | None = None,
          name: str | None = None, **options: Any) -> list[TrainConfig]:
    """Return one resolved :class:`TrainConfig` per (learning rate, batch size) pair, in order.

    Args:
        lr: one rate or several (``None``: the path's default).
        batch_size: one size or several (``None``: the default).
        name: the model's name; with several values each model is named
            ``<name>-lr<lr>`` and/or ``-bs<batch_size>`` (default base: ``<dataset>-<network>``).
        **options: every other :class:`TrainConfig` field (``dataset`` among them).

    Raises:
        ConfigError: a bad option or name (checked for every combination before any is
            returned), an empty list, or a value listed twice.

    >>> [c.name for c in sweep(dataset="pets", lr=[0.1, 0.01], batch_size=16)]
    ['pets-lenet-lr0.1', 'pets-lenet-lr0.01']
    """
    lrs, batch_sizes = _values("lr", lr), _values("batch_size", batch_size)
    if name:
        check_name(name, "model")
    configs = []
    for rate, size in itertools.product(lrs, batch_sizes):
        config = build(TrainConfig, None, lr=rate, batch_size=size, **options).resolved()
        final = name or config.name or ""
        if len(lrs) > 1:
            final += f"-lr{config.lr:g}"
        if len(batch_sizes) > 1:
            final += f"-bs{config.batch_size}"
        configs.append(dataclasses.replace(config, name=check_name(final, "model")))
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ConfigError("the sweep repeats a combination of learning rate and batch size; list each value once",
                          options=("lr", "batch_size"))
    return configs


def _values(option: str, value: Any) -> list[Any]:
    if value is None:
        return [None]
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ConfigError(f"a sweep needs at least one {option} value", options=(option,))
    return values
