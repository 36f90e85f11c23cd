"""Versions of a stored dataset: relabel or exclude images without touching the source folder.

``edit("birds", relabel={...}, exclude=[...])`` stores ``birds@2`` (then ``@3``, ...): the same
pixels, the same split for every image that stays (rows are copied within their split, never
moved between splits), the new labels, and a ``version`` section in its ``dataset.json``
recording what changed from its parent:

    "version": {"base": "birds", "number": 2, "parent": "birds",
                "relabelled": [{"image": ..., "split": "train", "from": "cat", "to": "dog"}],
                "excluded":   [{"image": ..., "split": "train", "label": "cat"}]}

The base dataset is version 1. NumPy only, like the rest of :mod:`shoal.data`.

Example:
    >>> from shoal.data.versions import split_version
    >>> split_version("birds@3"), split_version("birds")
    (('birds', 3), ('birds', 1))
"""

from __future__ import annotations

import errno
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from shoal import __version__
from shoal.data.dataset import Dataset, _check_space, _no_space, _write_mean, load, write_meta
from shoal.data.decode import allocate
from shoal.data.scan import SPLITS
from shoal.errors import ConfigError, DatasetError
from shoal.store import Store

SEPARATOR = "@"
_VERSION_RE = re.compile(r"(.+)@([0-9]{1,6})\Z")
_CHUNK = 256


def split_version(name: str) -> tuple[str, int]:
    """``(base, number)`` of a dataset name: ``birds@3`` is version 3 of ``birds``, ``birds`` version 1."""
    match = _VERSION_RE.match(name)
    return (match.group(1), int(match.group(2))) if match else (name, 1)


def version_info(ds: Dataset) -> dict[str, Any]:
    """The ``version`` section of a dataset (for the base: number 1, no parent, no changes)."""
    try:
        meta = json.loads((ds.path / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    info = meta.get("version") if isinstance(meta, dict) else None
    if isinstance(info, dict):
        return info
    base, number = split_version(ds.name)
    return {"base": base, "number": number, "parent": None, "relabelled": [], "excluded": []}


def versions(name: str, *, store: Store | None = None) -> list[dict[str, Any]]:
    """Every version of ``name``'s dataset (the base and each ``base@N`` in the store), oldest first.

    Each is ``{"name", "number", "parent", "relabelled", "excluded", "counts"}`` (the changes are
    counts here; :func:`version_info` has the images).
    """
    store = Store() if store is None else store
    base, _ = split_version(name)
    found = []
    for entry in store.list("dataset"):
        entry_base, number = split_version(entry.name)
        if entry_base != base:
            continue
        try:
            ds = load(entry.name, store=store)
        except DatasetError:
            continue
        info = version_info(ds)
        found.append({"name": ds.name, "number": number, "parent": info.get("parent"),
                      "relabelled": len(info.get("relabelled", [])), "excluded": len(info.get("excluded", [])),
                      "counts": {s: ds.count(s) for s in SPLITS}})
    return sorted(found, key=lambda v: v["number"])


def changes_from_review(path: str | os.PathLike[str]) -> tuple[dict[str, str], list[str]]:
    """The relabellings and exclusions of a saved ``shoal review --json`` (each row's ``action``).

    Rows whose ``action`` is ``relabel`` go to their ``suggested`` label (edit it in the file to
    choose another), ``exclude`` rows are left out, ``keep`` rows stay as they are.

    Raises:
        ConfigError: the file cannot be read or is not a review.
    """
    file = Path(path).expanduser()
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        rows = data["suspects"]
        if not isinstance(rows, list):
            raise TypeError("suspects is not a list")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--from-review {str(file)!r} is not a saved review ({exc}); "
                          "write one with 'shoal review MODEL --json > review.json'") from None
    relabel: dict[str, str] = {}
    exclude: list[str] = []
    for i, row in enumerate(rows):
        action = row.get("action", "keep") if isinstance(row, dict) else None
        if action == "relabel":
            relabel[str(row["image"])] = str(row["suggested"])
        elif action == "exclude":
            exclude.append(str(row["image"]))
        elif action != "keep":
            raise ConfigError(f"row {i + 1} of {str(file)!r} has action {action!r}; use relabel, exclude or keep")
    return relabel, exclude


def edit(name: str, *, relabel: Mapping[str, str] | None = None, exclude: Iterable[str] = (),
         store: Store | None = None) -> Dataset:
    """Store the next version of a dataset with some images relabelled and some left out.

    Args:
        name: the dataset (any version) to start from; the new one is its parent's next free
            ``base@N``.
        relabel: image path → new class (one of the dataset's classes). Paths are as the dataset
            records them (``shoal review`` prints them), absolute or relative to its source folder.
        exclude: image paths to leave out.
        store: where the datasets are.

    Returns:
        The new :class:`Dataset`; every image that stays keeps its split.

    Raises:
        ConfigError: nothing to change, an unknown class, or an image both relabelled and excluded.
        DatasetError: a path that is not an image of the dataset, or a class left with no training image.
    """
    store = Store() if store is None else store
    ds = load(name, store=store)
    relabel = dict(relabel or {})
    exclude = list(exclude)
    if not relabel and not exclude:
        raise ConfigError("nothing to change: give --relabel PATH=CLASS, --exclude PATH or --from-review FILE")
    sources = {s: ds.sources(s) for s in SPLITS}  # each split's file read once
    where = _locator(ds, sources)
    moves: dict[tuple[str, int], int] = {}
    for path, cls in relabel.items():
        if cls not in ds.classes:
            raise ConfigError(f"--relabel {path}={cls}: {cls!r} is not a class of dataset {name!r} "
                              f"(its classes: {', '.join(ds.classes)})")
        moves[where(path)] = ds.classes.index(cls)
    dropped = {where(path) for path in exclude}
    both = dropped & set(moves)
    if both:
        split, row = sorted(both)[0]
        raise ConfigError(f"{sources[split][row]!r} is both relabelled and excluded; choose one")

    base, _ = split_version(name)
    # from the names alone: a version whose files are damaged still holds its number
    taken = [split_version(entry.name) for entry in store.list("dataset")]
    number = 1 + max([n for b, n in taken if b == base] + [1])
    new_name = f"{base}{SEPARATOR}{number}"
    labels = {s: ds.labels(s).copy() for s in SPLITS}
    relabelled, excluded = [], []
    for (split, row), to in sorted(moves.items()):
        if labels[split][row] != to:
            relabelled.append({"image": sources[split][row], "split": split,
                               "from": ds.classes[labels[split][row]], "to": ds.classes[to]})
            labels[split][row] = to
    for split, row in sorted(dropped):
        excluded.append({"image": sources[split][row], "split": split, "label": ds.classes[labels[split][row]]})
    keep = {s: np.array([r for r in range(ds.count(s)) if (s, r) not in dropped], np.int64) for s in SPLITS}
    left = Counter(labels["train"][keep["train"]].tolist())
    empty = [c for i, c in enumerate(ds.classes) if ds.splits["train"].get(c, 0) and not left[i]]
    if empty:
        raise DatasetError(f"the edit leaves class {empty[0]!r} with no training image; keep or relabel some of its images")

    kept_sources = {s: "".join(sources[s][r] + "\n" for r in keep[s].tolist()) for s in SPLITS}
    summary: dict[str, Any] = {}
    with store.staging("dataset", new_name, summary=summary) as build:
        need = _bytes_needed(ds, keep, kept_sources)
        _check_space(build, need, new_name)
        meta = json.loads((ds.path / "dataset.json").read_text(encoding="utf-8"))
        splits = {s: {c: int((labels[s][keep[s]] == i).sum()) for i, c in enumerate(ds.classes)} for s in SPLITS}
        meta.update({
            "name": new_name, "splits": splits,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "shoal_version": __version__,
            "version": {"base": base, "number": number, "parent": name,
                        "relabelled": relabelled, "excluded": excluded},
        })
        try:
            _copy(ds, keep, labels, kept_sources, build)
            summary.update({**write_meta(build, meta), "version_of": name})
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise _no_space(build, need, new_name) from None
            raise
    return load(new_name, store=store)


def changed_images(a: Dataset, b: Dataset) -> set[str]:
    """Source paths whose label differs between two datasets, or which only one of them has."""
    def labelled(ds: Dataset) -> dict[str, str]:
        return {p: ds.classes[y] for s in SPLITS for p, y in zip(ds.sources(s), ds.labels(s).tolist())}

    first, second = labelled(a), labelled(b)
    return {p for p in first.keys() | second.keys() if first.get(p) != second.get(p)}


def _bytes_needed(ds: Dataset, keep: Mapping[str, np.ndarray], kept_sources: Mapping[str, str]) -> int:
    """What the new version takes at most: pixels, labels, source paths, the mean image."""
    width, height = ds.size
    image = width * height * ds.channels
    rows = sum(len(r) for r in keep.values())
    text = sum(len(t.encode("utf-8")) for t in kept_sources.values())
    return rows * (image + 8) + text + image * (4 + 1) + 64 * 1024  # mean.npy (float32), mean.png; headers


def _copy(ds: Dataset, keep: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
          kept_sources: Mapping[str, str], build: Path) -> None:
    """Write the kept rows of each split into ``build`` (pixels, their disk blocks reserved first; labels;
    sources) and the mean image."""
    width, height = ds.size
    for s in SPLITS:
        rows = keep[s]
        allocate(build / f"{s}_images.npy", (len(rows), height, width, ds.channels))
        out = np.load(build / f"{s}_images.npy", mmap_mode="r+")
        source = ds.images(s)
        for start in range(0, len(rows), _CHUNK):
            out[start:start + _CHUNK] = source[rows[start:start + _CHUNK]]
        out.flush()
        del out, source
        np.save(build / f"{s}_labels.npy", labels[s][rows].astype(np.int64))
        (build / f"{s}_sources.txt").write_text(kept_sources[s], encoding="utf-8")
    _write_mean(build, ds.config)


def _locator(ds: Dataset, sources: Mapping[str, list[str]]):  # noqa: ANN202 - a closure: path -> (split, row)
    rows: dict[str, tuple[str, int]] = {}
    for s in SPLITS:
        for r, p in enumerate(sources[s]):
            rows[os.path.normpath(p)] = (s, r)

    def where(path: str) -> tuple[str, int]:
        given = os.path.expanduser(str(path))
        for candidate in (os.path.abspath(given), os.path.abspath(os.path.join(ds.source, given))):
            if os.path.normpath(candidate) in rows:
                return rows[os.path.normpath(candidate)]
        raise DatasetError(f"{path!r} is not an image of dataset {ds.name!r}: give its path as 'shoal review' "
                           f"lists it, absolute or relative to {ds.source}")

    return where
