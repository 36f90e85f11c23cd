"""Helpers shared by every config dataclass: layering, typo help, value checks and field docs.

Configs are frozen dataclasses with typed defaults and a one-line comment per field (the
comment is the option's help in the CLI, the web forms and the API schema). They are built
from defaults, then a JSON file, then explicit options; ``None`` means "not given", so an
unset CLI option never overrides a default.

One policy for keys: an unknown key in what a user gives (CLI, Python API, web API, a
``--config`` file) is refused with the closest valid names; an unknown key in a stored
file is refused too, naming the newer shoal that wrote it when that is the reason.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import json
import math
import os
import textwrap
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from shoal import __version__
from shoal.errors import ConfigError

C = TypeVar("C")

MAX_SEED = 2**32 - 1
"""Largest seed: what every random generator shoal feeds (NumPy, torch) takes."""

FREEZE_MODES = ("none", "backbone")
"""Named freeze settings; an int N freezes the first N stages."""


@lru_cache
def field_docs(cls: type) -> dict[str, str]:
    """The trailing ``# comment`` of each field of a config dataclass, read from its source.

    These comments are the one explanation of every option: the CLI's help, the web
    forms and the API schema all show them.
    """
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source available (a frozen app): no explanations
        return {}
    lines = source.splitlines()
    docs: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            line = lines[node.end_lineno - 1].encode()  # type: ignore[operator]
            rest = line[node.end_col_offset :].decode()  # offsets count UTF-8 bytes
            if "#" in rest:
                docs[node.target.id] = rest.split("#", 1)[1].strip()
    return docs


def shown_default(cls: type, name: str) -> str | None:
    """The default of option ``name`` as a person reads it (``256x256``, ``10, 20``, ``sgd``).

    An option whose default is ``None`` is chosen by the run: the class's ``RUN_DEFAULTS``
    say what it becomes (``"0.01, fine-tuning: 0.05"``); without one, ``None`` (the field's
    comment explains).
    """
    field = next(f for f in dataclasses.fields(cls) if f.name == name)  # type: ignore[arg-type]
    value = field.default if field.default is not dataclasses.MISSING else None
    if value is None:
        return getattr(cls, "RUN_DEFAULTS", {}).get(name)
    if isinstance(value, tuple):
        if len(value) == 2 and all(isinstance(v, int) for v in value):
            return f"{value[0]}x{value[1]}"
        return ", ".join(str(v) for v in value)
    return str(value)


def check_keys(cls: type, keys: Iterable[str], *, extra: Iterable[str] = ()) -> None:
    """Raise :class:`ConfigError` for the first key that is not a field of ``cls``, with close matches.

    Args:
        extra: other names the caller accepts (aliases), offered as matches too.
    """
    names = [f.name for f in dataclasses.fields(cls)] + list(extra)  # type: ignore[arg-type]
    for key in keys:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"{key!r} is not a {cls.__name__} option{hint} (options: {', '.join(names)})")


def _given(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options that were given (not ``None``), paths as strings."""
    return {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in options.items() if v is not None}


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
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read config file {str(file)!r}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(file)!r} must hold a JSON object, got {type(loaded).__name__}")
        values.update(loaded)
    values.update(_given(options))
    check_keys(cls, values)
    return cls(**values)  # type: ignore[call-arg]


def replace(config: C, /, **options: Any) -> C:
    """Return a copy of ``config`` with the given options changed (``None`` changes nothing).

    Raises:
        ConfigError: for an unknown key (with close matches) or a bad value.
    """
    values = _given(options)
    check_keys(type(config), values)
    return dataclasses.replace(config, **values)  # type: ignore[type-var]


def to_dict(config: Any) -> dict[str, Any]:
    """Return a JSON-ready dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def from_dict(cls: type[C], values: Mapping[str, Any], *, written_by: str | None = None) -> C:
    """Rebuild a stored config (:func:`to_dict` output).

    Args:
        written_by: the shoal version that wrote it, when the file records one.

    Raises:
        ConfigError: for a key this shoal does not know, naming the version that wrote
            it when that is newer (upgrade shoal to read it), or for a bad value.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"a stored {cls.__name__} must be a JSON object, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in values if k not in names]
    if unknown and written_by and _newer(written_by, __version__):
        raise ConfigError(
            f"this {cls.__name__} was written by shoal {written_by}, newer than this shoal ({__version__}), "
            f"and has options it does not know ({', '.join(map(repr, unknown))}): upgrade shoal "
            f"(pip install -U shoal) to read it"
        )
    check_keys(cls, values)
    return cls(**values)  # type: ignore[call-arg]


def _newer(version: str, than: str) -> bool:
    def key(v: str) -> tuple[int, ...]:
        parts = []
        for part in v.split("."):
            digits = "".join(c for c in part if c.isascii() and c.isdigit())
            parts.append(int(digits) if digits else 0)
        return tuple(parts)

    return key(version) > key(than)


def whole_number(text: str) -> int | None:
    """``text`` as an int when it is ASCII digits only (``"12"``), else ``None`` (``"²"``, ``"-1"``, ``"1.5"``)."""
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() else None


def check_choice(name: str, value: Any, choices: Iterable[str]) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}{hint}", options=(name,))


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
        raise ConfigError(f"{name} must be {_bounds('an int', minimum, maximum)}, got {value!r}", options=(name,))
    return int(value)


def check_number(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
                 exclusive_minimum: bool = False, optional: bool = False) -> float | None:
    """Return ``value`` as a float if it is a finite number within the bounds (or ``None`` when optional).

    Raises:
        ConfigError: naming the option, the bounds and the value (NaN and infinities included).
    """
    if value is None and optional:
        return None
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if exclusive_minimum else value >= minimum
    ok = ok and (maximum is None or value <= maximum)
    if not ok:
        op = ">" if exclusive_minimum else ">="
        raise ConfigError(f"{name} must be {_bounds('a number', minimum, maximum, op)}, got {value!r}",
                          options=(name,))
    return float(value)


def check_freeze(value: Any) -> str | int:
    """Normalise a freeze setting: ``'none'``, ``'backbone'``, or a stage count (also as text; 0 is ``'none'``).

    Raises:
        ConfigError: anything else; a misspelt mode's close match is named.
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0:
        return "none" if value == 0 else int(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in FREEZE_MODES:
            return text
        if whole_number(text) is not None:
            return check_freeze(whole_number(text))
    close = difflib.get_close_matches(str(value).lower(), FREEZE_MODES, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"freeze must be 'none', 'backbone' or an int >= 0 (how many leading stages to freeze), "
                      f"got {value!r}{hint}", options=("freeze",))


def _bounds(what: str, minimum: float | None, maximum: float | None, op: str = ">=") -> str:
    if minimum is not None and maximum is not None:
        return f"{what} from {minimum} to {maximum}" if op == ">=" else f"{what} {op} {minimum} and <= {maximum}"
    if minimum is not None:
        return f"{what} {op} {minimum}"
    if maximum is not None:
        return f"{what} <= {maximum}"
    return what
