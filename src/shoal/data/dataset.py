"""Build, load, list and delete stored datasets.

A stored dataset (``$SHOAL_HOME/datasets/<name>/``, see ``docs/ARCHITECTURE.md``) holds
the resized uint8 pixels of every split as a ``.npy`` file that training memory-maps, so
no image is decoded twice. :func:`create` scans the source, splits it (stratified and
seeded), decodes the images in parallel processes straight into preallocated
memory-mapped arrays (:mod:`shoal.data.decode`), computes the mean training image, and
commits the folder to the store only when everything is written. The contact sheet
(``explore``) is :mod:`shoal.data.contact_sheet`.

Examples:
    >>> from shoal import datasets                                     # doctest: +SKIP
    >>> ds = datasets.create("photos/", "pets", size=128)              # doctest: +SKIP
    >>> ds.splits["train"], ds.images("train").shape                   # doctest: +SKIP
    ({'cat': 49, 'dog': 43}, (92, 128, 128, 3))
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from shoal import __version__
from shoal.config import from_dict, to_dict
from shoal.data.config import DataConfig
from shoal.data.decode import allocate, decode
from shoal.data.scan import SPLITS, Scan, Skipped, scan, scan_list, shuffled, split
from shoal.errors import AlreadyExistsError, ConfigError, DatasetError, NoSpaceError
from shoal.store import Store, check_name

FORMAT = 1
"""Version of the stored-dataset layout; :func:`load` refuses others."""

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` while images are decoded."""

_MEAN_CHUNK = 256


# -- the stored dataset -------------------------------------------------------------------------
@dataclass(frozen=True)
class Dataset:
    """A stored dataset: its classes, splits, pixels and report.

    Attributes:
        name: the name in the store.
        path: the dataset's folder.
        classes: class names, sorted; labels are indices into this.
        size: ``(width, height)`` of every stored image.
        channels: 3 (RGB) or 1 (grayscale).
        resize_mode: how images were brought to ``size`` (``squash``, ``crop``, ``fill``, ``half``).
        splits: ``{split: {class: count}}`` for ``train``, ``val`` and ``test``.
        skipped: every file (or class) left out, with the reason.
        config: the options it was built with.
        source: the folder or list file it was built from.
        created: when it was built (ISO 8601, UTC).
        shoal_version: the shoal version that built it.
    """

    name: str
    path: Path
    classes: tuple[str, ...]
    size: tuple[int, int]
    channels: int
    resize_mode: str
    splits: dict[str, dict[str, int]]
    skipped: tuple[Skipped, ...] = ()
    config: DataConfig = field(default_factory=DataConfig)
    source: str = ""
    created: str = ""
    shoal_version: str = __version__

    # -- sizes ------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def count(self, split: str | None = None) -> int:
        """Number of images in ``split``, or in all splits when ``None``."""
        if split is None:
            return sum(self.count(s) for s in SPLITS)
        return sum(self.splits[_check_split(split)].values())

    # -- arrays -----------------------------------------------------------------------------------
    def images(self, split: str = "train") -> np.ndarray:
        """The split's pixels, memory-mapped read-only: uint8 ``N × H × W × C``.

        Raises:
            ConfigError: ``split`` is not ``train``, ``val`` or ``test``.
            DatasetError: the file is missing, cut short or of another shape than ``dataset.json`` says.
        """
        path = self.path / f"{_check_split(split)}_images.npy"
        pixels = self._read(path, lambda: np.load(path, mmap_mode="r"))
        width, height = self.size
        want = (self.count(split), height, width, self.channels)
        if pixels.shape != want or pixels.dtype != np.uint8:
            raise self._damaged(path, f"it holds {pixels.dtype} {tuple(pixels.shape)}, dataset.json says uint8 {want}")
        return pixels

    def labels(self, split: str = "train") -> np.ndarray:
        """The split's labels: int64 ``N``, indices into :attr:`classes`.

        Raises:
            DatasetError: the file is missing or damaged.
        """
        path = self.path / f"{_check_split(split)}_labels.npy"
        labels = self._read(path, lambda: np.load(path))
        if labels.shape != (self.count(split),) or labels.dtype.kind not in "iu" or (
            len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < self.num_classes
        ):
            raise self._damaged(path, f"it holds {labels.dtype} {tuple(labels.shape)}, not {self.count(split)} "
                                      f"class indices below {self.num_classes}")
        return labels

    def sources(self, split: str = "train") -> list[str]:
        """The source path of every image of the split, in the same order as :meth:`images`."""
        path = self.path / f"{_check_split(split)}_sources.txt"
        return self._read(path, lambda: path.read_text(encoding="utf-8", errors="replace")).splitlines()

    def _read(self, path: Path, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except (OSError, ValueError, EOFError) as exc:  # missing, cut short, not an array
            raise self._damaged(path, str(exc) or type(exc).__name__) from None

    def _damaged(self, path: Path, why: str) -> DatasetError:
        return DatasetError(
            f"dataset {self.name!r} is damaged ({path.name} cannot be used: {why}); "
            f"delete it with 'shoal dataset delete {self.name}' and build it again"
        )

    def image(self, split: str, index: int) -> Image.Image:
        """One stored image as a PIL image (for thumbnails and contact sheets).

        Raises:
            ConfigError: ``split`` is unknown or ``index`` is outside it.
        """
        pixels = self.images(split)
        if not 0 <= index < len(pixels):
            raise ConfigError(f"index must be from 0 to {len(pixels) - 1} for split {split!r}, got {index}")
        return _to_pil(np.asarray(pixels[index]))

    def mean_image(self) -> np.ndarray:
        """The mean training image: float32 ``H × W × C`` in pixel units 0..255."""
        path = self.mean_array_path
        mean = self._read(path, lambda: np.load(path))
        width, height = self.size
        if mean.shape != (height, width, self.channels) or mean.dtype.kind != "f":
            raise self._damaged(path, f"it holds {mean.dtype} {tuple(mean.shape)}, not float32 "
                                      f"{(height, width, self.channels)}")
        return mean

    def mean_pixel(self) -> np.ndarray:
        """The mean training pixel: float32, one value per channel (for "pixel" mean subtraction)."""
        return self.mean_image().reshape(-1, self.channels).mean(axis=0, dtype=np.float64).astype(np.float32)

    @property
    def mean_image_path(self) -> Path:
        """The mean training image as a PNG (to look at)."""
        return self.path / "mean.png"

    @property
    def mean_array_path(self) -> Path:
        """The mean training image as float32 ``.npy`` (to compute with)."""
        return self.path / "mean.npy"

    # -- reports ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything about the dataset as JSON-ready values (``shoal dataset show --json``)."""
        return {
            "name": self.name,
            "path": str(self.path),
            "classes": list(self.classes),
            "num_classes": self.num_classes,
            "size": [self.size[0], self.size[1]],
            "channels": self.channels,
            "resize_mode": self.resize_mode,
            "splits": {s: dict(self.splits[s]) for s in SPLITS},
            "counts": {s: self.count(s) for s in SPLITS},
            "total": self.count(),
            "skipped": [s.to_dict() for s in self.skipped],
            "mean_image": str(self.mean_image_path),
            "mean_array": str(self.mean_array_path),
            "files": {
                s: {
                    "images": str(self.path / f"{s}_images.npy"),
                    "labels": str(self.path / f"{s}_labels.npy"),
                    "sources": str(self.path / f"{s}_sources.txt"),
                }
                for s in SPLITS
            },
            "source": self.source,
            "config": to_dict(self.config),
            "created": self.created,
            "shoal_version": self.shoal_version,
        }

    def summary(self) -> str:
        """A short plain-text report: classes × splits counts, skipped files, where it is stored."""
        shown = [s for s in SPLITS if s != "test" or self.count("test")]
        width = max([len("class")] + [len(c) for c in self.classes])
        lines = [
            f"dataset {self.name!r}: {self.num_classes} classes, {self.count()} images, "
            f"{self.size[0]}x{self.size[1]} {'RGB' if self.channels == 3 else 'grayscale'}, {self.resize_mode}",
            "  ".join([f"{'class':<{width}}"] + [f"{s:>6}" for s in shown]),
        ]
        for c in self.classes:
            lines.append("  ".join([f"{c:<{width}}"] + [f"{self.splits[s].get(c, 0):>6}" for s in shown]))
        lines.append("  ".join([f"{'total':<{width}}"] + [f"{self.count(s):>6}" for s in shown]))
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)}:")
            lines.extend(f"  {s.path}: {s.reason}" for s in self.skipped)
        lines.append(f"stored in {self.path}")
        return "\n".join(lines)

    @classmethod
    def from_folder(cls, path: Path, name: str | None = None) -> Dataset:
        """Read a stored dataset's ``dataset.json``.

        Raises:
            DatasetError: the file is missing, damaged or of another format version.
        """
        meta_path = path / "dataset.json"
        shown = name or path.name
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DatasetError(
                f"dataset {shown!r} is damaged ({meta_path} cannot be read: {exc}); "
                f"delete it with 'shoal dataset delete {shown}' and build it again"
            ) from None
        if not isinstance(meta, dict):
            raise DatasetError(
                f"dataset {shown!r} is damaged ({meta_path} holds {type(meta).__name__}, not a JSON object); "
                f"delete it with 'shoal dataset delete {shown}' and build it again"
            )
        if meta.get("format") != FORMAT:
            raise DatasetError(
                f"dataset {shown!r} has format {meta.get('format')!r} but this shoal (version {__version__}) reads "
                f"format {FORMAT}; rebuild it with 'shoal dataset create'"
            )
        try:
            stored = meta.get("config", {})
            if not isinstance(stored, dict):
                raise ConfigError(f"its 'config' in {meta_path} is {type(stored).__name__}, not an object; "
                                  f"delete it with 'shoal dataset delete {shown}' and build it again")
            config = from_dict(DataConfig, stored, written_by=meta.get("shoal_version"))
        except ConfigError as exc:
            raise DatasetError(f"dataset {shown!r} cannot be used: {exc}") from None
        try:
            return cls(
                name=name or meta["name"],
                path=path,
                classes=tuple(meta["classes"]),
                size=(int(meta["size"][0]), int(meta["size"][1])),
                channels=int(meta["channels"]),
                resize_mode=meta["resize_mode"],
                splits={s: {str(c): int(n) for c, n in dict(meta["splits"].get(s, {})).items()} for s in SPLITS},
                skipped=tuple(Skipped(d["path"], d["reason"]) for d in meta.get("skipped", [])),
                config=config,
                source=meta.get("source", ""),
                created=meta.get("created", ""),
                shoal_version=meta.get("shoal_version", ""),
            )
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise DatasetError(
                f"dataset {shown!r} is damaged ({meta_path} lacks or mangles {exc}); "
                f"delete it with 'shoal dataset delete {shown}' and build it again"
            ) from None


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


def _to_pil(pixels: np.ndarray) -> Image.Image:
    """An H×W×C uint8 array (C = 1 or 3) as a PIL image."""
    if pixels.shape[2] == 1:
        return Image.fromarray(np.ascontiguousarray(pixels[:, :, 0]), mode="L")
    return Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")


# -- building -----------------------------------------------------------------------------------
@dataclass
class _Item:
    """One candidate image: where it comes from and where its pixels go."""

    path: Path
    cls: str
    rank: int  # position in its class's seeded order (validation-folder files come last)
    split: str  # the split it was given before decoding
    slot: int  # its row in that split's array
    from_val_folder: bool = False
    reason: str | None = None  # why it could not be used, once decoded


def create(
    source: str | os.PathLike[str] | None,
    name: str,
    config: DataConfig | None = None,
    *,
    store: Store | None = None,
    progress: Progress | None = None,
    within: Sequence[str | os.PathLike[str]] | None = None,
    **options: Any,
) -> Dataset:
    """Build a dataset from a folder of class sub-folders (or a list file) and store it.

    Args:
        source: a folder with one sub-folder of images per class (images may be nested in
            sub-folders of it), or a text file of ``path label`` lines. With ``list_file``
            given, ``source`` may be ``None`` (the list's relative paths start from its own
            folder) or the folder they start from.
        name: the dataset's name in the store (letters, digits, ``.``, ``_``, ``-``).
        config: the options; defaults to :class:`DataConfig`'s.
        store: where to keep it; defaults to ``Store()`` (``$SHOAL_HOME`` or ``~/.shoal``).
        progress: called as ``progress(done, total)`` while images are decoded.
        within: folders every image must lie in once symbolic links are resolved (the web
            app passes its allowed roots); images outside are skipped. ``None``: anywhere.
        **options: any :class:`DataConfig` field, overriding ``config``: ``size``,
            ``resize_mode``, ``channels`` (or ``grayscale=True``), ``val_pct``, ``test_pct``,
            ``val_folder``, ``list_file``, ``seed``, ``workers``, ``min_per_class``,
            ``max_per_class``. ``None`` values are ignored.

    Returns:
        The stored :class:`Dataset`. Files that could not be used are in ``skipped``, each
        with its reason; they never stop the build.

    Raises:
        ConfigError: an option is unknown or out of range, or the name is not allowed.
        AlreadyExistsError: a dataset of that name exists.
        DatasetError: the source does not exist, or has fewer than 2 classes with enough
            usable images (the message says what to add).
    """
    cfg = (config or DataConfig()).replace(**options)
    store = Store() if store is None else store
    check_name(name, "dataset")
    if store.exists("dataset", name):
        raise AlreadyExistsError(
            f"a dataset named {name!r} already exists in {store.home}: choose another name, "
            f"or delete it first with 'shoal dataset delete {name}'"
        )
    cfg, main, val_scan, shown = _scan_sources(source, cfg, within)
    left_out: list[tuple[str, str]] = []
    kept = _enough_candidates(main, val_scan, cfg, left_out)
    _refuse_too_few(main, shown, kept, left_out)
    items = _assign(main, val_scan, kept, cfg)

    # The name is reserved (a unique row) before any file is written; the build folder is
    # the store's staging folder, committed only when complete and removed otherwise.
    summary: dict[str, Any] = {}
    with store.staging("dataset", name, summary=summary) as build:
        need = _bytes_needed(items, cfg)
        _check_space(build, need, name)
        try:
            summary.update(_build(build, name, cfg, items, main, val_scan, kept, left_out, shown, progress))
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise _no_space(build, need, name) from None
            raise
    return load(name, store=store)


def _build(build: Path, name: str, cfg: DataConfig, items: list[_Item], main: Scan, val_scan: Scan | None,
           kept: list[str], left_out: list[tuple[str, str]], shown: str, progress: Progress | None) -> dict[str, Any]:
    """Decode, split, and write every file of the dataset into ``build``; return its index summary."""
    decode(items, build, cfg, progress)
    final, classes = _reassign(items, kept, cfg, left_out)
    unreadable = sum(1 for it in items if it.reason is not None)
    _refuse_too_few(main, shown, classes, left_out, unreadable=unreadable)
    _rearrange(items, final, build, cfg)
    _write_labels_and_sources(final, classes, build)
    _write_mean(build, cfg)
    skipped = [Skipped(_class_path(main, c), f"class {c!r} left out: {why}") for c, why in left_out]
    skipped += [*main.skipped, *(val_scan.skipped if val_scan is not None else ())]
    skipped += [Skipped(str(it.path), it.reason) for it in items if it.reason is not None]
    tallies = {s: Counter(it.cls for it in final[s]) for s in SPLITS}
    splits = {s: {c: tallies[s][c] for c in classes} for s in SPLITS}
    return write_meta(build, {
        "format": FORMAT,
        "name": name,
        "classes": list(classes),
        "size": list(cfg.size),
        "channels": cfg.channels,
        "resize_mode": cfg.resize_mode,
        "splits": splits,
        "skipped": [s.to_dict() for s in skipped],
        "config": to_dict(cfg),
        "source": str(main.root.absolute()),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "shoal_version": __version__,
    })


def write_meta(build: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``dataset.json`` into ``build``; return the store index's summary, taken from the same values."""
    (build / "dataset.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return {**{key: meta[key] for key in ("classes", "size", "channels", "resize_mode", "source")},
            "counts": {s: sum(meta["splits"][s].values()) for s in SPLITS}, "skipped": len(meta["skipped"])}


# -- disk space ---------------------------------------------------------------------------------
def _bytes_needed(items: Sequence[_Item], cfg: DataConfig) -> int:
    """What the stored dataset takes at most: pixels, labels, source paths, the mean image."""
    width, height = cfg.size
    pixels = len(items) * width * height * cfg.channels
    labels = len(items) * 8
    sources = sum(len(os.path.abspath(it.path).encode()) + 1 for it in items)
    mean = width * height * cfg.channels * (4 + 1)  # mean.npy (float32) and, at most, mean.png
    return pixels + labels + sources + mean + 64 * 1024  # headers, dataset.json


def _free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def _check_space(folder: Path, need: int, name: str) -> None:
    """Refuse a build that cannot fit on the store's disk, before anything is written.

    Raises:
        NoSpaceError: naming the folder, what is needed and what is free.
    """
    free = _free_bytes(folder)
    if need > free:
        raise _no_space(folder, need, name, free)


def _no_space(folder: Path, need: int, name: str, free: int | None = None) -> NoSpaceError:
    home = folder.parent.parent  # <home>/tmp/<build>
    has = f", {_mb(free)} MB free" if free is not None else ""
    return NoSpaceError(
        f"no space left on {home}: {_mb(need)} MB needed to build dataset {name!r}{has}; free some space, "
        "use a smaller size or max_per_class, or set SHOAL_HOME to a store on a larger disk (nothing was kept)"
    )


def _mb(n: int) -> int:
    return max(1, math.ceil(n / 1e6))


def _scan_sources(source: str | os.PathLike[str] | None, cfg: DataConfig,
                  within: Sequence[str | os.PathLike[str]] | None = None) -> tuple[DataConfig, Scan, Scan | None, str]:
    """Scan the source (and validation folder); return them, the config with absolute paths,
    and how messages name the source."""
    if cfg.list_file is not None:
        main = scan_list(cfg.list_file, base=source, within=within)
        shown = f"list file '{cfg.list_file}'"
        cfg = cfg.replace(list_file=os.path.abspath(os.path.expanduser(cfg.list_file)))
    elif source is None:
        raise ConfigError("no source given: pass a folder with one sub-folder of images per class, or list_file='list.txt'")
    else:
        main = scan(source, within=within)
        text = os.fspath(source)
        shown = f"list file '{text}'" if main.kind == "list" else f"'{text if text.endswith(('/', os.sep)) else text + '/'}'"
    val_scan = None
    if cfg.val_folder is not None:
        val_scan = scan(cfg.val_folder, within=within)
        cfg = cfg.replace(val_folder=os.path.abspath(os.path.expanduser(cfg.val_folder)))
    return cfg, main, val_scan, shown


def _class_path(main: Scan, cls: str) -> str:
    return str(main.root / cls) if main.kind == "folder" else f"{main.root} (label {cls})"


def _enough_candidates(main: Scan, val_scan: Scan | None, cfg: DataConfig, left_out: list[tuple[str, str]]) -> list[str]:
    """Classes with at least ``min_per_class`` files; the others go to ``left_out``."""
    if val_scan is not None:
        unknown = [c for c in val_scan.classes if c not in main.files]
        if unknown:
            raise DatasetError(
                f"the validation folder '{cfg.val_folder}' has class {', '.join(repr(c) for c in unknown)}, which the "
                f"training source does not have (its classes: {', '.join(repr(c) for c in main.classes) or 'none'}): "
                "use the same class folder names in both"
            )
    kept: list[str] = []
    for cls, files in main.files.items():
        n = len(files) + (len(val_scan.files.get(cls, ())) if val_scan is not None else 0)
        if n == 0:
            left_out.append((cls, "no image files" if main.kind == "folder" else "no readable files"))
        elif n < cfg.min_per_class:
            left_out.append((cls, f"{_plural(n, 'image file')}, fewer than min_per_class ({cfg.min_per_class})"))
        else:
            kept.append(cls)
    return kept


def _refuse_too_few(
    main: Scan, shown: str, kept: Sequence[str], left_out: Sequence[tuple[str, str]], *, unreadable: int = 0
) -> None:
    """Refuse a dataset with fewer than 2 usable classes; say what to do.

    Raises:
        DatasetError: always, when ``kept`` has fewer than 2 classes.
    """
    if len(kept) >= 2:
        return
    found = main.classes
    noun, fix = (
        ("label", "give the lines at least 2 different labels")
        if main.kind == "list"
        else ("class folder", "add one subfolder per label")
    )
    if len(found) < 2:
        listed = f" ({', '.join(repr(c) for c in found)})" if found else ""
        raise DatasetError(f"{shown} has {_plural(len(found), noun)}{listed}; need at least 2 — {fix}")
    usable = f" ({', '.join(repr(c) for c in kept)})" if kept else ""
    reasons = "; ".join(f"{c!r}: {why}" for c, why in left_out)
    bad = f"; {_plural(unreadable, 'file')} could not be read" if unreadable else ""
    raise DatasetError(
        f"{shown} has {_plural(len(kept), 'usable class', 'usable classes')}{usable}; need at least 2 — "
        f"left out {reasons}{bad}. Add images to those classes, or lower min_per_class"
    )


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _assign(main: Scan, val_scan: Scan | None, kept: Sequence[str], cfg: DataConfig) -> list[_Item]:
    """Shuffle each class (seeded), cap it, split it, and give every file a row in its split.

    Rows run class by class, each class in its seeded order, so that when every file
    decodes the arrays need no rearranging.
    """
    val_pct = 0.0 if val_scan is not None else cfg.val_pct
    per_split: dict[str, list[tuple[str, Path, int, bool]]] = {s: [] for s in SPLITS}
    for cls in kept:
        ordered = shuffled(main.files[cls], cfg.seed, cls)
        if cfg.max_per_class is not None:
            ordered = ordered[: cfg.max_per_class]
        ranked = [(p, r) for r, p in enumerate(ordered)]
        for s, part in split(ranked, val_pct, cfg.test_pct).items():
            per_split[s].extend((cls, p, r, False) for p, r in part)
        if val_scan is not None:
            extra = val_scan.files.get(cls, ())
            per_split["val"].extend((cls, p, len(ordered) + r, True) for r, p in enumerate(extra))
    items: list[_Item] = []
    for s in SPLITS:
        for slot, (cls, path, rank, from_val) in enumerate(per_split[s]):
            items.append(_Item(path=path, cls=cls, rank=rank, split=s, slot=slot, from_val_folder=from_val))
    return items


def _reassign(
    items: Sequence[_Item], kept: Sequence[str], cfg: DataConfig, left_out: list[tuple[str, str]]
) -> tuple[dict[str, list[_Item]], tuple[str, ...]]:
    """Where each usable image ends up once the unreadable ones are known.

    Each class is split again on its usable images, in the same seeded order (so the
    counts are ``floor(n × pct / 100)`` of what could be read); a class left with fewer
    than ``min_per_class`` usable images is left out and reported.

    Returns:
        ``{split: items in row order}`` and the final class names.
    """
    val_pct = 0.0 if cfg.val_folder is not None else cfg.val_pct
    by_class: dict[str, list[_Item]] = {c: [] for c in kept}
    for it in items:
        by_class[it.cls].append(it)
    final: dict[str, list[_Item]] = {s: [] for s in SPLITS}
    classes: list[str] = []
    for cls in kept:
        usable = sorted((it for it in by_class[cls] if it.reason is None), key=lambda it: it.rank)
        if len(usable) < cfg.min_per_class:
            failed = len(by_class[cls]) - len(usable)
            left_out.append(
                (cls, f"{_plural(len(usable), 'usable image')} ({failed} could not be read), "
                 f"fewer than min_per_class ({cfg.min_per_class})")
            )
            continue
        classes.append(cls)
        cut = split([it for it in usable if not it.from_val_folder], val_pct, cfg.test_pct)
        final["train"].extend(cut["train"])
        final["val"].extend(cut["val"] + [it for it in usable if it.from_val_folder])
        final["test"].extend(cut["test"])
    return final, tuple(classes)


# -- writing ------------------------------------------------------------------------------------
def _rearrange(items: Sequence[_Item], final: dict[str, list[_Item]], build: Path, cfg: DataConfig) -> None:
    """Move rows so each split's array holds exactly its final items (only after failures)."""
    rows = {s: sum(1 for it in items if it.split == s) for s in SPLITS}
    in_place = all(
        len(final[s]) == rows[s] and all(it.split == s and it.slot == i for i, it in enumerate(final[s])) for s in SPLITS
    )
    if in_place:
        return
    width, height = cfg.size
    old = {s: np.load(build / f"{s}_images.npy", mmap_mode="r") for s in SPLITS}
    for s in SPLITS:
        allocate(build / f"{s}_images.new.npy", (len(final[s]), height, width, cfg.channels))
        new = np.load(build / f"{s}_images.new.npy", mmap_mode="r+")
        for i, it in enumerate(final[s]):
            new[i] = old[it.split][it.slot]
        del new
    del old
    for s in SPLITS:
        os.replace(build / f"{s}_images.new.npy", build / f"{s}_images.npy")


def _write_labels_and_sources(final: dict[str, list[_Item]], classes: Sequence[str], build: Path) -> None:
    index = {c: i for i, c in enumerate(classes)}
    for s in SPLITS:
        np.save(build / f"{s}_labels.npy", np.array([index[it.cls] for it in final[s]], dtype=np.int64))
        text = "".join(os.path.abspath(it.path) + "\n" for it in final[s])
        (build / f"{s}_sources.txt").write_text(text, encoding="utf-8")


def _write_mean(build: Path, cfg: DataConfig) -> np.ndarray:
    """Write the mean training image as ``mean.npy`` (float32) and ``mean.png``; return it."""
    train = np.load(build / "train_images.npy", mmap_mode="r")
    total = np.zeros(train.shape[1:], np.uint64)
    for start in range(0, len(train), _MEAN_CHUNK):
        total += train[start : start + _MEAN_CHUNK].sum(axis=0, dtype=np.uint32)
    mean = (total / max(1, len(train))).astype(np.float32)
    del train
    np.save(build / "mean.npy", mean)
    _to_pil(np.clip(np.rint(mean), 0, 255).astype(np.uint8)).save(build / "mean.png", compress_level=1)
    return mean


# -- the store ----------------------------------------------------------------------------------
def load(name: str, *, store: Store | None = None) -> Dataset:
    """Open a stored dataset by name.

    Raises:
        NotFoundError: no dataset of that name (the message lists those that exist).
        DatasetError: its files are damaged or from an incompatible version.
    """
    store = Store() if store is None else store
    entry = store.get("dataset", name)
    return Dataset.from_folder(entry.path, name)


def list_datasets(*, store: Store | None = None) -> list[Dataset]:
    """Every stored dataset, oldest first (a damaged one is skipped with a warning naming the fix)."""
    store = Store() if store is None else store
    found: list[Dataset] = []
    for entry in store.list("dataset"):
        try:
            found.append(Dataset.from_folder(entry.path, entry.name))
        except DatasetError as exc:
            warnings.warn(str(exc), stacklevel=2)
    return found


def delete(name: str, *, store: Store | None = None) -> None:
    """Remove a stored dataset and its files.

    Raises:
        NotFoundError: no dataset of that name.
        TrainingError: it is being built, or a model is training on it (in the web app or another shell).
    """
    from shoal import models  # torch-free: the one owner of a model's status (job, entry and process merged)
    from shoal.errors import TrainingError

    store = Store() if store is None else store
    store.get("dataset", name)  # a clear error when it does not exist
    if store.list_jobs(status=("queued", "running"), kind="dataset", target=name):
        raise TrainingError(f"dataset {name!r} is being built; abort its job first, then delete it")
    users = models.training_on(name, store=store)
    if users:
        raise TrainingError(f"dataset {name!r} is in use: model {', '.join(repr(u) for u in users)} is training on it; "
                            "abort that training first (the web app's Abort button, or Ctrl-C where it runs), "
                            "then delete the dataset")
    store.delete("dataset", name)
