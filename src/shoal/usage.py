"""What the store takes on disk, and freeing the parts a user can do without. Torch-free.

The store (``$SHOAL_HOME``) holds, by kind:

- ``datasets``: the stored datasets (``datasets/<name>/``);
- ``models``: each model's folder less the two parts below: weights, resume point, bundle, metrics;
- ``snapshots``: the every-Nth-epoch weights of each model (``models/<name>/snapshots/``); freeing
  them means those epochs can no longer be exported;
- ``downloads``: the web app's ``.shoal`` files of each model, made again on the next download;
- ``caches``: prepared backbones for fine-tuning (``cache/``), prepared again on the next training;
- ``samples``: the built-in sample's PNG folder (``samples/``), written again by ``shoal dataset sample``;
- ``other``: the index, uploads and builds under way.

Example:
    >>> from shoal.store import Store
    >>> import tempfile
    >>> usage(Store(tempfile.mkdtemp())).total
    0
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from shoal.errors import TrainingError
from shoal.models import ModelFolder, statuses
from shoal.store import Store

__all__ = ["KINDS", "Part", "StoreUsage", "clear_cache", "clear_downloads", "clear_snapshots", "usage"]

KINDS = ("datasets", "models", "snapshots", "downloads", "caches", "samples", "other")
"""The kinds of disk use :func:`usage` reports, in the order it reports them."""

CACHE = "cache"  # $SHOAL_HOME/cache: what training prepares once and can prepare again (backbones)
SAMPLES = "samples"  # $SHOAL_HOME/samples: the built-in sample's PNGs


@dataclass(frozen=True)
class Part:
    """One thing in the store that takes disk space.

    Attributes:
        kind: one of :data:`KINDS`.
        name: the dataset, model or cache entry it belongs to ('' for the whole kind).
        path: where it is.
        bytes: its size on disk (the files' sizes added up).
        files: how many files it has.
    """

    kind: str
    name: str
    path: Path
    bytes: int
    files: int


@dataclass(frozen=True)
class StoreUsage:
    """The disk use of a store, part by part."""

    home: Path
    parts: tuple[Part, ...]

    def of(self, kind: str) -> tuple[Part, ...]:
        """The parts of one kind."""
        return tuple(p for p in self.parts if p.kind == kind)

    def bytes(self, kind: str) -> int:
        """The bytes of one kind."""
        return sum(p.bytes for p in self.of(kind))

    @property
    def total(self) -> int:
        """The bytes of the whole store."""
        return sum(p.bytes for p in self.parts)

    def to_dict(self) -> dict[str, object]:
        return {
            "home": str(self.home),
            "total_bytes": self.total,
            "kinds": {kind: self.bytes(kind) for kind in KINDS},
            "parts": [{"kind": p.kind, "name": p.name, "path": str(p.path), "bytes": p.bytes, "files": p.files}
                      for p in self.parts],
        }


def _size(paths: Iterable[Path]) -> tuple[int, int]:
    """(bytes, files) of the files under ``paths`` (folders walked, links not followed)."""
    total = count = 0
    for path in paths:
        candidates = [path] if path.is_file() else path.rglob("*") if path.is_dir() else []
        for file in candidates:
            try:
                if file.is_file() and not file.is_symlink():
                    total += file.stat().st_size
                    count += 1
            except OSError:  # removed meanwhile
                continue
    return total, count


def usage(store: Store | None = None) -> StoreUsage:
    """Measure what the store takes on disk, by kind (:data:`KINDS`) and by dataset, model or cache entry.

    Args:
        store: the store; default ``SHOAL_HOME``.
    """
    store = store or Store()
    home = store.home
    parts: list[Part] = []
    seen: set[Path] = set()

    def add(kind: str, name: str, path: Path, contents: Iterable[Path] | None = None) -> None:
        size, files = _size([path] if contents is None else contents)
        if files:
            parts.append(Part(kind, name, path, size, files))

    for folder in sorted((home / "datasets").glob("*/")):
        add("datasets", folder.name, folder)
        seen.add(folder)
    for path in sorted((home / "models").glob("*/")):
        folder = ModelFolder(path)
        separate = {folder.path / folder.SNAPSHOTS, folder.downloads_path}
        add("models", path.name, path, [p for p in path.iterdir() if p not in separate])
        add("snapshots", path.name, folder.path / folder.SNAPSHOTS)
        add("downloads", path.name, folder.downloads_path)
    for entry in sorted((home / CACHE).glob("*/*/")):
        add("caches", f"{entry.parent.name}/{entry.name}", entry)
    add("samples", "", home / SAMPLES)
    named = {home / "datasets", home / "models", home / CACHE, home / SAMPLES}
    if home.is_dir():
        others = [p for p in home.iterdir() if p not in named]
        cache_files = [p for p in (home / CACHE).glob("*") if p.is_file()] + [
            p for p in (home / CACHE).glob("*/*") if p.is_file()]
        add("other", "", home, others + cache_files)
    return StoreUsage(home, tuple(parts))


def _refuse_while_training(what: str, store: Store, names: Iterable[str] | None = None) -> None:
    wanted = None if names is None else set(names)
    busy = [s.name for s in statuses(store=store) if s.busy and (wanted is None or s.name in wanted)]
    if busy:
        raise TrainingError(f"cannot free {what} while {', '.join(repr(n) for n in busy)} "
                            f"{'is' if len(busy) == 1 else 'are'} training; wait for it to end, or abort it")


def _remove(paths: Iterable[Path]) -> int:
    freed = 0
    for path in paths:
        freed += _size([path])[0]
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return freed


def clear_cache(store: Store | None = None) -> int:
    """Delete the cache (prepared backbones); the next fine-tuning prepares what it needs again.

    Returns:
        The bytes freed.

    Raises:
        TrainingError: a training is running (it may be using the cache).
    """
    store = store or Store()
    _refuse_while_training("the cache", store)
    folder = store.home / CACHE
    return _remove(list(folder.iterdir()) if folder.is_dir() else [])


def clear_snapshots(names: Iterable[str] | None = None, *, store: Store | None = None) -> int:
    """Delete the kept snapshots of some models, or of every model (``names=None``).

    The best epoch's weights, the resume point and the bundle stay; the snapshots' epochs can no
    longer be exported.

    Returns:
        The bytes freed.

    Raises:
        NotFoundError: a named model does not exist. TrainingError: one of them is training.
    """
    store = store or Store()
    chosen = [e.name for e in store.list("model")] if names is None else list(dict.fromkeys(names))
    folders = [ModelFolder.of(name, store=store) for name in chosen]  # NotFoundError for a wrong name
    _refuse_while_training("snapshots", store, None if names is None else chosen)
    return _remove(f.path / f.SNAPSHOTS for f in folders if (f.path / f.SNAPSHOTS).exists())


def clear_downloads(store: Store | None = None) -> int:
    """Delete the web app's kept ``.shoal`` downloads; the next download makes its file again.

    Returns:
        The bytes freed.
    """
    store = store or Store()
    return _remove(ModelFolder(e.path).downloads_path for e in store.list("model")
                   if ModelFolder(e.path).downloads_path.exists())

