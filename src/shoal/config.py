"""Helpers shared by every config dataclass: layering, typo help and value checks.

Configs are frozen dataclasses with typed defaults. They are built from defaults, then
a JSON file, then explicit options (``None`` means "not given", so an unset CLI option
never overrides a default); unknown keys fail with the closest valid names.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from shoal.errors import ConfigError

C = TypeVar("C")


def check_keys(cls: type, keys: Iterable[str]) -> None:
    """Raise :class:`ConfigError` naming each key that is not a field of ``cls``, with close matches."""
    names = [f.name for f in dataclasses.fields(cls)]
    for key in keys:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"{key!r} is not a {cls.__name__} option{hint} (valid: {', '.join(names)})")


def build(cls: type[C], file: str | os.PathLike[str] | None = None, /, **options: Any) -> C:
    """Return ``cls`` from its defaults, overridden by a JSON ``file``, then by ``options``.

    Options whose value is ``None`` are ignored, so unset command-line flags keep the
    defaults.

    Raises:
        ConfigError: for an unreadable file, an unknown key, or a bad value.
    """
    values: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = json.loads(Path(file).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read config file {str(file)!r}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(file)!r} must hold a JSON object, got {type(loaded).__name__}")
        values.update(loaded)
    values.update({k: v for k, v in options.items() if v is not None})
    check_keys(cls, values)
    return cls(**values)  # type: ignore[call-arg]


def to_dict(config: Any) -> dict[str, Any]:
    """Return a JSON-ready dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def from_dict(cls: type[C], values: Mapping[str, Any]) -> C:
    """Rebuild a config from :func:`to_dict` output, ignoring keys a newer version added."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in values.items() if k in names})  # type: ignore[call-arg]


def check_choice(name: str, value: Any, choices: Iterable[str]) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}{hint}")


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None,
              optional: bool = False) -> int | None:
    """Return ``value`` as an int if it is a whole number within ``[minimum, maximum]`` (or ``None`` when optional).

    Raises:
        ConfigError: naming the option, the bounds and the value.
    """
    if value is None and optional:
        return None
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        raise ConfigError(f"{name} must be {_bounds('an int', minimum, maximum)}, got {value!r}")
    return int(value)


def check_number(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
                 exclusive_minimum: bool = False, optional: bool = False) -> None:
    """Raise unless ``value`` is a real number within the bounds (or ``None`` when optional)."""
    if value is None and optional:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if ok and minimum is not None:
        ok = value > minimum if exclusive_minimum else value >= minimum
    ok = ok and (maximum is None or value <= maximum)
    if not ok:
        op = ">" if exclusive_minimum else ">="
        raise ConfigError(f"{name} must be {_bounds('a number', minimum, maximum, op)}, got {value!r}")


def _bounds(what: str, minimum: float | None, maximum: float | None, op: str = ">=") -> str:
    if minimum is not None and maximum is not None:
        return f"{what} from {minimum} to {maximum}" if op == ">=" else f"{what} {op} {minimum} and <= {maximum}"
    if minimum is not None:
        return f"{what} {op} {minimum}"
    if maximum is not None:
        return f"{what} <= {maximum}"
    return what
