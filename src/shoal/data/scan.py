"""Find the images of a dataset and split them — before any pixel is decoded.

A source is either a folder with one sub-folder per class (images may sit in nested
sub-folders; they belong to their top-level class folder) or a list file of
``path label`` lines. Hidden files and folders (names starting with ``.``) are ignored;
symbolic links are followed, but a link back to a folder already read (a loop) is
reported and not followed again, so scanning always ends.

The split is stratified and seeded: per class, validation gets
``floor(n × val_pct / 100)`` images, test ``floor(n × test_pct / 100)`` of the others, and
training the rest; each class draws from its own stream (seeded by the seed and the
class name), so adding a class does not change the split of the others.

Examples:
    >>> from shoal.data.scan import split_counts
    >>> split_counts(65, 25.0, 0.0)  # dolphins: (train, val, test)
    (49, 16, 0)
"""

from __future__ import annotations

import math
import os
import stat
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from shoal.errors import DatasetError

T = TypeVar("T")
SPLITS: tuple[str, ...] = ("train", "val", "test")
_IGNORED_FOLDERS = {"__MACOSX", "@eaDir"}  # archive and NAS junk, never classes
_LOOP = "symbolic link loop: it points to a folder that is already part of the dataset, so it is not read twice"


@dataclass(frozen=True)
class Skipped:
    """A file (or class folder) that is not in the dataset, and why."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass(frozen=True)
class Scan:
    """The candidate images of a source, by class, before decoding.

    Attributes:
        root: the folder or list file that was scanned.
        kind: ``"folder"`` or ``"list"``.
        files: class name → image paths, classes sorted by name, paths in a stable order.
        skipped: entries that are not candidates (broken links, loops, unreadable folders,
            files outside class folders, missing list entries), with reasons.
    """

    root: Path
    kind: str
    files: dict[str, tuple[Path, ...]]
    skipped: tuple[Skipped, ...] = field(default=())

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.files)


# -- folders ------------------------------------------------------------------------------------
def scan(source: str | os.PathLike[str], *, base: str | os.PathLike[str] | None = None,
         within: Sequence[str | os.PathLike[str]] | None = None) -> Scan:
    """Scan a folder-per-class tree, or a list file if ``source`` is a file.

    Args:
        source: a folder with one sub-folder per class, or a text file of ``path label`` lines.
        base: for a list file, the folder its relative paths start from (default: the list
            file's own folder).
        within: folders the images must lie in once symbolic links are resolved (the web
            app's allowed roots); an image outside them is skipped, with the reason. ``None``
            (the CLI and Python) reads wherever the links lead.

    Returns:
        The candidates by class (see :class:`Scan`).

    Raises:
        DatasetError: ``source`` does not exist, or a list file cannot be read.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise DatasetError(
            f"'{source}' does not exist: give a folder with one sub-folder of images per class, "
            "or a list file of 'path label' lines"
        )
    if path.is_file():
        return scan_list(path, base=base, within=within)
    return scan_folder(path, within=within)


def scan_folder(folder: str | os.PathLike[str], *, within: Sequence[str | os.PathLike[str]] | None = None) -> Scan:
    """Scan a folder whose sub-folders are the classes (see :func:`scan`).

    Raises:
        DatasetError: the folder does not exist or cannot be listed.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DatasetError(f"'{folder}' is not a folder: give a folder with one sub-folder of images per class")
    skipped: list[Skipped] = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise DatasetError(f"'{folder}' cannot be listed ({exc.strerror or exc}): check its permissions") from None
    visited: set[tuple[int, int]] = {_key(os.stat(root))}
    class_folders: list[tuple[str, Path]] = []
    for entry in entries:
        if _hidden(entry.name):
            continue
        target = _stat(entry.path)
        if target is None:
            skipped.append(Skipped(entry.path, "broken symbolic link"))
        elif stat.S_ISDIR(target.st_mode):
            if entry.name in _IGNORED_FOLDERS:
                continue
            if "\n" in entry.name or "\r" in entry.name:
                skipped.append(Skipped(entry.path, "class folder name contains a line break: rename the folder"))
            elif _key(target) in visited:
                skipped.append(Skipped(entry.path, _LOOP))
            else:
                visited.add(_key(target))  # all class folders first: a link into one is never read twice
                class_folders.append((entry.name, Path(entry.path)))
        elif stat.S_ISREG(target.st_mode):
            skipped.append(Skipped(entry.path, "not inside a class folder: move it into the sub-folder named after its class"))
    files = {name: tuple(walk(path, visited=visited, skipped=skipped, within=within)) for name, path in class_folders}
    return Scan(root=root, kind="folder", files=dict(sorted(files.items(), key=lambda kv: _class_key(kv[0]))), skipped=tuple(skipped))


def walk(top: Path, *, visited: set[tuple[int, int]] | None = None, skipped: list[Skipped] | None = None,
         within: Sequence[str | os.PathLike[str]] | None = None) -> list[Path]:
    """Every regular file under ``top``, sorted by relative path: the one link-safe folder walk.

    Hidden entries are left out; symbolic links are followed, but never twice into one folder
    (``visited`` holds the folders already walked; a link loop ends that branch).

    Args:
        top: an existing folder.
        visited: folders (device, inode) not to enter again; default: ``top`` itself.
        skipped: where to record what was left out and why (default: dropped).
        within: only files inside these folders, links resolved (a server's roots).
    """
    visited = {_key(os.stat(top))} if visited is None else visited
    skipped = [] if skipped is None else skipped
    roots = _roots(within)
    found: list[Path] = []
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            skipped.append(Skipped(str(folder), f"folder cannot be read ({exc.strerror or exc})"))
            continue
        subfolders: list[Path] = []
        for entry in entries:
            if _hidden(entry.name):
                continue
            target = _stat(entry.path)
            if target is None:
                skipped.append(Skipped(entry.path, "broken symbolic link"))
            elif stat.S_ISDIR(target.st_mode):
                if entry.name in _IGNORED_FOLDERS:
                    continue
                if _key(target) in visited:
                    skipped.append(Skipped(entry.path, _LOOP))
                    continue
                visited.add(_key(target))
                subfolders.append(Path(entry.path))
            elif not stat.S_ISREG(target.st_mode):
                skipped.append(Skipped(entry.path, "not a regular file (a device, pipe or socket)"))
            elif "\n" in entry.name or "\r" in entry.name:
                skipped.append(Skipped(entry.path, "file name contains a line break: rename the file"))
            elif roots is not None and _outside(entry.path, roots):
                skipped.append(Skipped(entry.path, OUTSIDE_ROOTS))
            else:
                found.append(Path(entry.path))
        stack.extend(reversed(subfolders))
    return sorted(found, key=lambda p: p.relative_to(top).as_posix())


OUTSIDE_ROOTS = "a symbolic link to a file outside the folders this server may read: copy the image in instead"


def _roots(within: Sequence[str | os.PathLike[str]] | None) -> tuple[str, ...] | None:
    return None if within is None else tuple(os.path.realpath(os.fspath(r)) for r in within)


def _outside(path: str, roots: tuple[str, ...]) -> bool:
    """Whether ``path``, links resolved, lies outside every folder of ``roots`` (already resolved)."""
    real = os.path.realpath(path)
    return not any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)  # follows symbolic links
    except OSError:
        return None


def _key(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _class_key(name: str) -> tuple[int, str]:
    """Sort class names by name (as text); names that are all digits sort by number first."""
    return (0, f"{int(name):020d}") if name.isdigit() else (1, name)


# -- list files ---------------------------------------------------------------------------------
MAX_LIST_BYTES = 64 * 1024 * 1024
"""Largest list file read (64 MiB: about half a million ``path label`` lines)."""


def read_list_file(path: Path, *, shown: str, limit: int | None = None) -> bytes:
    """The bytes of a list file, read only if it is a regular file of at most ``limit`` bytes.

    A pipe, a device (``/dev/zero``) or a folder is refused before anything is read (a pipe
    is opened without waiting for a writer), and so is a file larger than ``limit`` (default
    :data:`MAX_LIST_BYTES`); the read
    stops at ``limit`` even if the file grows meanwhile.

    Raises:
        DatasetError: the file does not exist, is not a regular file, or is too large.
        OSError: it cannot be read.
    """
    limit = MAX_LIST_BYTES if limit is None else limit
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise DatasetError(f"list file '{shown}' does not exist: give a text file of 'path label' lines") from None
    info = os.fstat(fd)  # before fdopen, which refuses a folder with an OSError of its own
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise DatasetError(f"list file '{shown}' is not a regular file (a folder, device or pipe): give a text "
                           "file of 'path label' lines")
    with os.fdopen(fd, "rb") as stream:
        too_large = DatasetError(f"list file '{shown}' is larger than {limit // (1024 * 1024)} MiB: split it, or "
                                 "arrange the images in one sub-folder per class instead")
        if info.st_size > limit:
            raise too_large
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise too_large
    return data


def scan_list(list_file: str | os.PathLike[str], *, base: str | os.PathLike[str] | None = None,
              within: Sequence[str | os.PathLike[str]] | None = None) -> Scan:
    """Read a list file of ``path label`` lines (see :func:`scan`).

    Blank lines and lines starting with ``#`` are ignored; the label is the last word of
    the line, so paths may contain spaces. Relative paths start from ``base`` (default:
    the list file's folder). With ``within``, images outside those folders (links resolved)
    are skipped.

    Raises:
        DatasetError: the file cannot be read as text, is not a regular file, is larger than
            :data:`MAX_LIST_BYTES`, or has no ``path label`` lines.
    """
    path, text = _list_text(list_file, expected="'path label' lines", alternative="or a folder with one sub-folder per class")
    root = Path(base).expanduser() if base is not None else path.parent
    roots = _roots(within)
    by_class: dict[str, list[Path]] = {}
    skipped: list[Skipped] = []
    for number, line in _list_lines(text):
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            skipped.append(Skipped(f"{path}:{number}", f"line {number} is {line!r}, expected 'path label'"))
            continue
        name, label = parts
        image = _listed(name, root)
        refused = _refusal(image, roots, number, path.name)
        if refused is not None:
            skipped.append(refused)
        else:
            by_class.setdefault(label, []).append(image)
    if not by_class and not skipped:
        raise DatasetError(f"list file '{list_file}' has no 'path label' lines: write one image path and its class per line")
    files = {label: tuple(by_class[label]) for label in sorted(by_class, key=_class_key)}
    return Scan(root=path, kind="list", files=files, skipped=tuple(skipped))


@dataclass(frozen=True)
class ListedImage:
    """One line of an image list: the image's path and, when the line gives one, its class."""

    path: Path
    label: str | None
    line: int


@dataclass(frozen=True)
class ImageList:
    """The images of a list file to classify, in the file's order, and the lines left out (with reasons)."""

    source: Path
    images: tuple[ListedImage, ...]
    skipped: tuple[Skipped, ...] = field(default=())


def read_image_list(list_file: str | os.PathLike[str], *, base: str | os.PathLike[str] | None = None,
                    within: Sequence[str | os.PathLike[str]] | None = None, limit: int | None = None) -> ImageList:
    """Read a list of images to classify: one ``path`` or ``path label`` per line (DIGITS' "classify many").

    A line that names an existing file as a whole is a path without a label (so paths may
    contain spaces); otherwise its last word is the label, as in :func:`scan_list` (a
    DIGITS ``val.txt`` of ``path index`` lines works: the caller maps indices to classes).
    Blank lines and ``#`` comments are ignored, relative paths start from ``base`` (default:
    the list file's folder), and with ``within`` images outside those folders (links
    resolved) are skipped with the reason, as in a dataset build.

    Raises:
        DatasetError: the file cannot be read as UTF-8 text, is not a regular file, is larger
            than :data:`MAX_LIST_BYTES`, has no image lines, or lists more than ``limit`` images.
    """
    path, text = _list_text(list_file, expected="image paths, one per line", alternative="or upload the images")
    root = Path(base).expanduser() if base is not None else path.parent
    roots = _roots(within)
    images: list[ListedImage] = []
    skipped: list[Skipped] = []
    for number, line in _list_lines(text):
        whole = _listed(line, root)
        parts = line.rsplit(None, 1)
        if _stat(str(whole)) is not None or len(parts) == 1:
            image, label = whole, None
        else:
            image, label = _listed(parts[0], root), parts[1]
        refused = _refusal(image, roots, number, path.name)
        if refused is not None:
            skipped.append(refused)
        else:
            images.append(ListedImage(image, label, number))
        if limit is not None and len(images) + len(skipped) > limit:
            raise DatasetError(f"list file '{list_file}' lists more than {limit:,} images: classify at most "
                               f"{limit:,} at a time (split the list), or build a dataset of them and evaluate on it")
    if not images and not skipped:
        raise DatasetError(f"list file '{list_file}' lists no images: write one image path per line "
                           "(optionally followed by its class)")
    return ImageList(source=path, images=tuple(images), skipped=tuple(skipped))


def _list_text(list_file: str | os.PathLike[str], *, expected: str, alternative: str) -> tuple[Path, str]:
    """The list file's path and text, read through :func:`read_list_file` (bounded, regular files only)."""
    path = Path(list_file).expanduser()
    try:
        return path, read_list_file(path, shown=str(list_file)).decode("utf-8-sig")
    except (UnicodeDecodeError, OSError) as exc:
        raise DatasetError(
            f"list file '{list_file}' cannot be read as UTF-8 text ({exc}): give a text file of {expected}, {alternative}"
        ) from None


def _list_lines(text: str) -> list[tuple[int, str]]:
    """The list's lines that say something, numbered from 1: no blanks, no ``#`` comments."""
    stripped = ((number, raw.strip()) for number, raw in enumerate(text.splitlines(), start=1))
    return [(number, line) for number, line in stripped if line and not line.startswith("#")]


def _listed(name: str, root: Path) -> Path:
    image = Path(name).expanduser()
    return image if image.is_absolute() else root / image


def _refusal(image: Path, roots: tuple[str, ...] | None, number: int, list_name: str) -> Skipped | None:
    """Why a listed image cannot be read (missing, not a file, outside ``roots``), or ``None`` when it can."""
    target = _stat(str(image))
    if target is None:
        return Skipped(str(image), f"file not found (line {number} of {list_name})")
    if not stat.S_ISREG(target.st_mode):
        return Skipped(str(image), f"not a regular file (line {number} of {list_name})")
    if roots is not None and _outside(str(image), roots):
        linked = not _outside(os.path.dirname(os.path.abspath(image)), roots)  # the entry is inside, its target not
        reason = OUTSIDE_ROOTS if linked else "outside the folders this server may read: copy the image into one"
        return Skipped(str(image), f"{reason} (line {number} of {list_name})")
    return None


# -- splitting ----------------------------------------------------------------------------------
def split_counts(n: int, val_pct: float, test_pct: float) -> tuple[int, int, int]:
    """How many of ``n`` images of one class go to (train, val, test).

    Validation gets ``floor(n × val_pct / 100)``, test ``floor(n × test_pct / 100)``, and
    training the rest.
    """
    n_val = math.floor(n * val_pct / 100.0 + 1e-9)
    n_test = min(n - n_val, math.floor(n * test_pct / 100.0 + 1e-9))
    return n - n_val - n_test, n_val, n_test


def class_rng(seed: int, name: str) -> np.random.Generator:
    """The random stream of one class: seeded by the dataset seed and the class name."""
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def shuffled(items: Sequence[T], seed: int, name: str) -> list[T]:
    """``items`` in the seeded random order of class ``name`` (the order splits cut from)."""
    order = class_rng(seed, name).permutation(len(items))
    return [items[i] for i in order]


def split(items: Sequence[T], val_pct: float, test_pct: float) -> dict[str, list[T]]:
    """Cut one class's (already shuffled) items into splits: val first, then test, then train.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``.
    """
    n_train, n_val, n_test = split_counts(len(items), val_pct, test_pct)
    return {
        "train": list(items[n_val + n_test :]),
        "val": list(items[:n_val]),
        "test": list(items[n_val : n_val + n_test]),
    }
