"""What can be classified, and how each kind of input becomes bytes or pixels to decode.

:func:`expand` turns whatever a caller hands to ``predict`` — a path, a folder, an
http(s) URL, bytes, a PIL image, a NumPy array, or a list of these — into a flat list of
:class:`Item` objects, each with a printable ``source`` and a ``payload`` that
:func:`shoal.data.imageops.prepare` accepts. Nothing is decoded or downloaded here;
:func:`fetch` does that per item, so a batch can load its images in parallel and one bad
item never stops the others.

Torch-free: NumPy, Pillow and the standard library only.
"""

from __future__ import annotations

import os
import stat
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from shoal.errors import InputError

MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
"""Largest image fetched from a URL (50 MiB); bigger downloads are stopped and refused."""

DOWNLOAD_TIMEOUT_S = 15.0
"""Seconds to wait for a URL to connect, and between two chunks of its data."""

IMAGE_SUFFIXES = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp",
    ".ppm", ".pgm", ".pbm", ".pnm", ".ico", ".tga", ".jp2", ".j2k", ".avif", ".heic",
})
"""File name endings (any case) taken as images when a folder is expanded."""

URL_SCHEMES = ("http://", "https://")

_CHUNK = 1 << 16


@dataclass(frozen=True)
class Item:
    """One image to classify, not yet read.

    Attributes:
        source: how results name it: the path or URL as given, or ``<array>``, ``<bytes>``...
        payload: what :func:`fetch` reads: a :class:`~pathlib.Path`, a URL string, bytes,
            a PIL image or a NumPy array (already in RGB order).
        error: set when the item is known to be unusable before reading (e.g. an unknown type).
    """

    source: str
    payload: Any
    error: str | None = None


def is_url(value: object) -> bool:
    """Whether ``value`` is a string starting with ``http://`` or ``https://`` (any case)."""
    return isinstance(value, str) and value[:8].lower().startswith(URL_SCHEMES)


def expand(inputs: Any, *, bgr: bool = False, strict: bool = True) -> tuple[list[Item], bool]:
    """Flatten what was given to ``predict`` into items.

    Args:
        inputs: a path (str or PathLike), a folder (its images, recursively, sorted), an
            http(s) URL, bytes, an open binary file, a PIL image, a NumPy array (``H×W`` gray, ``H×W×3`` RGB,
            ``H×W×4`` RGBA, or ``N×H×W×C`` for a batch), or a list/tuple of these.
        bgr: the arrays are in OpenCV's BGR(A) order; they are flipped to RGB(A) here.
        strict: raise for a single unusable input; ``False`` gives an error item instead.

    Returns:
        ``(items, single)``: the items in order, and whether the input was one image (not a
        list, folder or batch array), in which case ``predict`` returns one result.

    Raises:
        InputError: a single input that is not something an image can come from (a list
            with such an entry gets an error item instead).
    """
    if isinstance(inputs, (list, tuple)):
        items: list[Item] = []
        for index, entry in enumerate(inputs):
            items.extend(_expand_one(entry, bgr=bgr, index=index, strict=False))
        return items, False
    if isinstance(inputs, np.ndarray) and inputs.ndim == 4:
        return [_array_item(a, bgr=bgr, label=f"<array {i}>") for i, a in enumerate(inputs)], False
    if isinstance(inputs, (str, os.PathLike)) and not is_url(inputs) and Path(inputs).expanduser().is_dir():
        return _expand_one(inputs, bgr=bgr, index=None, strict=strict), False
    return _expand_one(inputs, bgr=bgr, index=None, strict=strict), True


def _expand_one(entry: Any, *, bgr: bool, index: int | None, strict: bool) -> list[Item]:
    suffix = "" if index is None else f" {index}"
    if isinstance(entry, str) and "://" in entry[:16] and not is_url(entry):
        return [_refuse(entry, f"only http:// and https:// URLs can be fetched, got {entry.split('://')[0]}://",
                        strict)]
    if is_url(entry):
        return [Item(entry, entry)]
    if isinstance(entry, (str, os.PathLike)):
        path = Path(entry).expanduser()
        if path.is_dir():
            found = list_images(path)
            if not found:
                return [_refuse(os.fspath(entry), "the folder has no image files (looked for names ending in "
                                ".jpg, .jpeg, .png, .bmp, .gif, .tif, .webp and other image types)", strict)]
            return [Item(str(p), p) for p in found]
        return [Item(os.fspath(entry), path)]
    if isinstance(entry, (bytes, bytearray, memoryview)):
        return [Item(f"<bytes{suffix}>", bytes(entry))]
    if isinstance(entry, np.ndarray):
        if entry.ndim == 4:
            return [_array_item(a, bgr=bgr, label=f"<array{suffix}:{i}>") for i, a in enumerate(entry)]
        return [_array_item(entry, bgr=bgr, label=f"<array{suffix}>")]
    if _is_pil(entry):
        return [Item(f"<PIL image{suffix}>", entry)]
    if callable(getattr(entry, "read", None)):  # an open binary file
        name = getattr(entry, "name", None)
        return [Item(str(name) if isinstance(name, str) else f"<file{suffix}>", entry)]
    return [_refuse(f"<{type(entry).__name__}{suffix}>",
                    f"cannot classify a {type(entry).__name__}: give a path, folder, http(s) URL, bytes, "
                    "binary file, PIL image or NumPy array (or a list of these)", strict)]


def _refuse(source: str, reason: str, strict: bool) -> Item:
    if strict:
        raise InputError(f"cannot read image {source}: {reason}")
    return Item(source, None, reason)


def _array_item(array: np.ndarray, *, bgr: bool, label: str) -> Item:
    if bgr and array.ndim == 3 and array.shape[2] in (3, 4):
        order = [2, 1, 0] if array.shape[2] == 3 else [2, 1, 0, 3]
        array = array[:, :, order]
    return Item(label, array)


def _is_pil(value: object) -> bool:
    return isinstance(value, Image.Image)


def list_images(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (by name ending), recursively, sorted by relative path.

    Hidden files and folders are left out; symbolic links are followed, but never twice into
    the same folder (a link loop ends the walk of that branch).

    Args:
        folder: an existing folder.

    Returns:
        The image paths, ``folder`` joined with their relative path.
    """
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            info = os.stat(current)
        except OSError:
            continue
        key = (info.st_dev, info.st_ino)
        if key in seen:
            continue
        seen.add(key)
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                mode = os.stat(entry.path).st_mode
            except OSError:
                continue
            if stat.S_ISDIR(mode):
                stack.append(Path(entry.path))
            elif stat.S_ISREG(mode) and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                found.append(Path(entry.path))
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def fetch(item: Item, *, max_bytes: int = MAX_DOWNLOAD_BYTES, timeout: float = DOWNLOAD_TIMEOUT_S) -> Any:
    """Return what :func:`~shoal.data.imageops.prepare` should decode for ``item``.

    URLs are downloaded (bytes are returned); everything else is passed through.

    Raises:
        InputError: the item was refused when expanded, or its URL cannot be fetched, is
            larger than ``max_bytes``, or is not an image (an HTML page, say).
    """
    if item.error is not None:
        raise InputError(f"cannot read image {item.source}: {item.error}")
    if isinstance(item.payload, str) and is_url(item.payload):
        return download(item.payload, max_bytes=max_bytes, timeout=timeout)
    return item.payload


def download(url: str, *, max_bytes: int = MAX_DOWNLOAD_BYTES, timeout: float = DOWNLOAD_TIMEOUT_S) -> bytes:
    """Download an image over http(s), refusing anything larger than ``max_bytes``.

    Args:
        url: an ``http://`` or ``https://`` URL.
        max_bytes: the most bytes read; the download stops there and is refused.
        timeout: seconds to wait for the connection and for each chunk.

    Returns:
        The body.

    Raises:
        InputError: another scheme, an HTTP error status, a network failure or timeout, a
            body over ``max_bytes``, or a ``Content-Type`` that says it is not an image.
    """
    if not is_url(url):
        raise InputError(f"cannot read image {url}: only http:// and https:// URLs can be fetched")
    request = urllib.request.Request(url, headers={"User-Agent": "shoal", "Accept": "image/*"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked above
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise InputError(f"cannot read image {url}: it is {int(length) / 2**20:.1f} MiB, more than the "
                                 f"limit of {max_bytes / 2**20:.0f} MiB; download it and pass the file instead")
            kind = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if kind.startswith("text/"):
                raise InputError(f"cannot read image {url}: the server sent {kind}, not an image "
                                 "(is it a web page? give the image's own address)")
            data = bytearray()
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                data += chunk
                if len(data) > max_bytes:
                    raise InputError(f"cannot read image {url}: it is larger than the limit of "
                                     f"{max_bytes / 2**20:.0f} MiB; download it and pass the file instead")
    except InputError:
        raise
    except urllib.error.HTTPError as exc:
        raise InputError(f"cannot read image {url}: the server answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise InputError(f"cannot read image {url}: {_network_reason(exc.reason)}") from None
    except (TimeoutError, OSError) as exc:
        raise InputError(f"cannot read image {url}: {_network_reason(exc)}") from None
    if not data:
        raise InputError(f"cannot read image {url}: the server sent an empty body")
    return bytes(data)


def _network_reason(reason: object) -> str:
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return "no answer in time (timed out); check the address and your connection"
    return f"cannot connect ({reason}); check the address and your connection"

