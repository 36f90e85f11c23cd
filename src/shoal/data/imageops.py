"""Decode any image file safely and bring it to a dataset's size — NumPy and Pillow only.

:func:`prepare` is the one function that turns a source image into the pixels a network
sees: dataset building calls it for every file and inference calls it for every image to
classify, so both see exactly the same pixels. It is built from two steps that can be
used alone:

* :func:`open_image` decodes a path, bytes, file object, PIL image or NumPy array into a
  PIL image of mode ``RGB`` or ``L``: EXIF orientation applied, CMYK / 16-bit / float /
  palette / alpha images converted correctly (alpha composited on white, 16-bit scaled
  down rather than clipped), the first frame of an animation, and decompression bombs,
  truncated, empty and non-image files refused with an :class:`ImageError` whose
  ``reason`` says why in a few words.
* :func:`resize` applies one of DIGITS' resize modes: ``squash``, ``crop``, ``fill`` or
  ``half``.

Examples:
    >>> import numpy as np
    >>> from shoal.data.imageops import prepare
    >>> pixels = prepare(np.zeros((300, 400, 3), np.uint8), (256, 256), "crop", 3)
    >>> pixels.shape, pixels.dtype
    ((256, 256, 3), dtype('uint8'))
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import re
import stat
import warnings
import zlib
from collections.abc import Iterator
from typing import IO, Literal, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from shoal.config import whole_number
from shoal.errors import ConfigError, InputError

ResizeMode = Literal["squash", "crop", "fill", "half"]
RESIZE_MODES: tuple[str, ...] = ("squash", "crop", "fill", "half")
"""DIGITS' resize modes, in the order its documentation lists them."""

CHANNELS: tuple[int, ...] = (3, 1)
"""Supported channel counts: 3 (RGB) or 1 (grayscale, mode ``L``)."""

MAX_PIXELS = 89_478_485
"""Largest image (width × height) decoded; bigger ones are refused as possible
decompression bombs. Pillow's own default: about 16 k × 5.4 k, or 9.4 k × 9.4 k."""

DRAFT_GAP = 2.0
"""JPEGs are decoded at a reduced scale (DCT scaling) only while the decoded image stays
at least this many times the target size on both sides, as Pillow's ``thumbnail`` does, so
the final resize still has enough pixels to filter from."""

RESAMPLE = Image.Resampling.BILINEAR
"""Interpolation of every resize (DIGITS' default ``bilinear``; Pillow antialiases it when
shrinking)."""

ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes], Image.Image, np.ndarray]

_ORIENTATION_TAG = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90° (width and height swap)
_WHITE = 255


class ImageError(InputError):
    """An image cannot be decoded or used.

    Attributes:
        source: the file (or ``<bytes>``, ``<array>``...) that failed.
        reason: a few words saying why, e.g. ``"empty file (0 bytes)"``; dataset building
            reports it next to the path of every skipped file.
    """

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"cannot read image {source}: {reason}")
        self.source = source
        self.reason = reason

    def __reduce__(self) -> tuple[type[ImageError], tuple[str, str]]:
        return (type(self), (self.source, self.reason))


# -- argument checks (shared with DataConfig) ---------------------------------------------------
def check_resize_mode(mode: str) -> str:
    """Return ``mode`` if it is a resize mode (``half_crop``, DIGITS' name, means ``half``).

    Raises:
        ConfigError: naming the value and the modes there are.
    """
    if isinstance(mode, str):
        low = mode.strip().lower()
        if low == "half_crop":
            return "half"
        if low in RESIZE_MODES:
            return low
    raise ConfigError(
        f"resize_mode must be one of {', '.join(RESIZE_MODES)}, got {mode!r} "
        "(squash stretches, crop cuts the long side, fill pads with noise, half does half of each)",
        options=("resize_mode",),
    )


def check_channels(channels: int) -> int:
    """Return ``channels`` if it is 3 (RGB) or 1 (grayscale).

    Raises:
        ConfigError: for anything else.
    """
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or int(channels) not in CHANNELS:
        raise ConfigError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}", options=("channels",))
    return int(channels)


def check_size(size: int | str | tuple[int, int] | list[int]) -> tuple[int, int]:
    """Return ``size`` as ``(width, height)``.

    Args:
        size: one number for a square (``256`` or ``"256"``), ``"WxH"`` (``"320x240"``), or a
            ``(width, height)`` pair. Each side must be from 1 to 4096 pixels.

    Returns:
        ``(width, height)`` as ints.

    Raises:
        ConfigError: naming the value and the accepted forms.
    """
    pair: tuple[object, ...] = ()
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        pair = (int(size), int(size))
    elif isinstance(size, str):
        parts = size.strip().lower().replace("×", "x").split("x")
        sides = [whole_number(p) for p in parts]
        if len(sides) in (1, 2) and None not in sides:
            pair = tuple(sides) * (2 if len(sides) == 1 else 1)
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        pair = tuple(size)
    ok = len(pair) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 1 <= int(v) <= 4096 for v in pair
    )
    if not ok:
        raise ConfigError(
            f"size must be one number or WxH, each side from 1 to 4096 pixels (for example 256 or '320x240'), got {size!r}",
            options=("size",),
        )
    return int(pair[0]), int(pair[1])  # type: ignore[arg-type]


# -- decoding -----------------------------------------------------------------------------------
def open_image(
    source: ImageSource,
    *,
    channels: int | None = None,
    draft_size: tuple[int, int] | None = None,
    max_pixels: int = MAX_PIXELS,
) -> Image.Image:
    """Decode an image safely into a PIL image of mode ``RGB`` or ``L``.

    Args:
        source: a file path, the file's bytes, a binary file object, a PIL image, or a
            uint8/uint16 NumPy array (H×W, H×W×1, H×W×3 RGB or H×W×4 RGBA).
        channels: 3 to always return ``RGB``, 1 to always return ``L``; ``None`` keeps
            grayscale images grayscale and makes everything else ``RGB``.
        draft_size: the ``(width, height)`` the image will be resized to; JPEGs much larger
            than that are decoded at 1/2, 1/4 or 1/8 scale (never below ``DRAFT_GAP`` times
            this size), which is several times faster.
        max_pixels: refuse images whose header claims more pixels than this.

    Returns:
        A loaded PIL image, upright (EXIF orientation applied), mode ``RGB`` or ``L``. Alpha
        is composited on white; 16-bit and float images are scaled to 0..255; animations give
        their first frame.

    Raises:
        ImageError: the file is empty, missing, not an image, truncated or corrupt, claims
            more than ``max_pixels`` pixels, or has a pixel mode that cannot be converted;
            ``reason`` says which.
        ConfigError: ``channels`` is not 1, 3 or ``None``.
    """
    if channels is not None:
        channels = check_channels(channels)
    if isinstance(source, Image.Image):
        return _finish(source, "<PIL image>", channels, max_pixels, owned=False)
    if isinstance(source, np.ndarray):
        return _finish(_from_array(source), "<array>", channels, max_pixels, owned=True)
    with _opened(source) as (fp, label):
        img = _identify(fp, label, max_pixels)
        if draft_size is not None:
            _draft(img, draft_size, channels)
        return _finish(img, label, channels, max_pixels, owned=True)


def png_uri(png: bytes) -> str:
    """PNG bytes as a ``data:`` URI, to embed an image in an HTML page or a JSON answer."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _finish(img: Image.Image, label: str, channels: int | None, max_pixels: int, *, owned: bool) -> Image.Image:
    """Decode (while the file is open), turn upright, and convert to ``RGB``/``L``."""
    try:
        _check_pixels(img, label, max_pixels)
        img.load()
        out = _exif_transpose(img, in_place=owned)  # a caller's image is never changed
        out = _to_rgb_or_l(out, label)
    except ImageError:
        raise
    except Exception as exc:  # any decoder failure: the file is what is wrong, say how
        raise ImageError(label, _reason(exc)) from exc
    if channels == 3 and out.mode != "RGB":
        out = out.convert("RGB")
    elif channels == 1 and out.mode != "L":
        out = out.convert("L")
    if out is img and not owned:  # never hand back (and later let callers mutate) the caller's object
        out = out.copy()
    return out


@contextlib.contextmanager
def _opened(source: str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]) -> Iterator[tuple[IO[bytes], str]]:
    """A binary file object for a path, bytes or file object, and how to name it in errors.

    A path is opened (not read whole: a large non-image costs only its header) and closed
    when the block ends; by then the image is decoded.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise ImageError("<bytes>", "empty file (0 bytes)")
        yield io.BytesIO(bytes(source)), "<bytes>"
    elif isinstance(source, (str, os.PathLike)):
        label = os.fspath(source)
        try:
            info = os.stat(label)
            if stat.S_ISDIR(info.st_mode):
                raise ImageError(label, "is a folder, not an image file")
            if not stat.S_ISREG(info.st_mode):
                raise ImageError(label, "not a regular file (a device, pipe or socket)")
            if info.st_size == 0:
                raise ImageError(label, "empty file (0 bytes)")
            fp = open(label, "rb")  # noqa: SIM115 - closed below, after decoding
        except FileNotFoundError:
            raise ImageError(label, "file not found (or a broken symbolic link)") from None
        except PermissionError:
            raise ImageError(label, "permission denied: the file cannot be read") from None
        except OSError as exc:
            raise ImageError(label, f"cannot be read ({exc.strerror or exc})") from None
        with fp:
            yield fp, label
    elif hasattr(source, "read"):
        label = str(getattr(source, "name", "<file object>"))
        seekable = getattr(source, "seekable", None)
        yield (source if callable(seekable) and seekable() else io.BytesIO(source.read())), label
    else:
        raise ImageError(
            repr(type(source).__name__),
            "not an image source: give a path, bytes, a binary file object, a PIL image or a NumPy array",
        )


def _identify(fp: IO[bytes], label: str, max_pixels: int) -> Image.Image:
    """Read the header (format, size, mode); classify the failures."""
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit; the check after opening gives the clear error.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(fp)
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        claim = f"{int(found.group(1)) / 1e6:.0f} megapixels" if found else "too many pixels"
        raise ImageError(
            label,
            f"refused as a possible decompression bomb: its header claims {claim}, "
            f"more than the limit of {max_pixels / 1e6:.0f} megapixels",
        ) from None
    except UnidentifiedImageError:
        raise ImageError(label, "not an image: its content is in no image format Pillow can read") from None
    except Exception as exc:
        raise ImageError(label, _reason(exc)) from None


def _check_pixels(img: Image.Image, label: str, max_pixels: int) -> None:
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageError(label, f"image has no pixels ({w}×{h})")
    if w * h > max_pixels:
        raise ImageError(
            label,
            f"refused as a possible decompression bomb: its header claims {w}×{h} pixels "
            f"({w * h / 1e6:.0f} megapixels), more than the limit of {max_pixels / 1e6:.0f} megapixels",
        )


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, MemoryError):
        return "too large to decode in the memory available"
    if "truncated" in text.lower():
        return f"truncated image data ({text})"
    return f"corrupt image data ({type(exc).__name__}: {text})"


def _draft(img: Image.Image, size: tuple[int, int], channels: int | None) -> None:
    """Ask a JPEG decoder for a reduced scale (and grayscale directly when wanted)."""
    if img.format != "JPEG":
        return
    w, h = size
    try:
        orientation = img.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # a damaged EXIF block must not stop the decode
        orientation = 1
    if orientation in _SWAPS_AXES:
        w, h = h, w
    want = (max(1, int(w * DRAFT_GAP)), max(1, int(h * DRAFT_GAP)))
    mode = "L" if channels == 1 and img.mode == "RGB" else None
    if want[0] * 2 <= img.size[0] and want[1] * 2 <= img.size[1]:
        img.draft(mode, want)
    elif mode is not None:
        img.draft(mode, None)


def _exif_transpose(img: Image.Image, *, in_place: bool) -> Image.Image:
    """Rotate/flip by the EXIF orientation; a damaged EXIF block is ignored."""
    try:
        orientation = img.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:
        return img
    if orientation in (None, 1):
        return img
    try:
        if in_place:
            ImageOps.exif_transpose(img, in_place=True)
            return img
        out = ImageOps.exif_transpose(img)
        return out if out is not None else img
    except Exception:
        return img


def _to_rgb_or_l(img: Image.Image, label: str) -> Image.Image:
    """Convert any Pillow mode to ``RGB`` or ``L`` without losing the picture."""
    mode = img.mode
    if mode in ("RGB", "L"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode == "P":
        if "transparency" in img.info:
            return _on_white(img.convert("RGBA"))
        return img.convert("RGB")
    if mode in ("RGBA", "RGBa", "PA", "LA", "La"):
        return _on_white(img)
    if mode in ("CMYK", "YCbCr", "HSV", "RGBX"):
        return img.convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(img)), mode="L")
    try:
        return img.convert("RGB")
    except Exception:
        raise ImageError(label, f"unsupported pixel mode {mode!r}: convert it to RGB first") from None


def _on_white(img: Image.Image) -> Image.Image:
    """Composite an image with alpha on a white background."""
    if img.mode in ("LA", "La"):
        if img.mode == "La":
            img = img.convert("LA")
        background = Image.new("L", img.size, _WHITE)
        background.paste(img.getchannel("L"), mask=img.getchannel("A"))
        return background
    if img.mode != "RGBA":
        img = img.convert("RGBA")
    background = Image.new("RGB", img.size, (_WHITE, _WHITE, _WHITE))
    background.paste(img.convert("RGB"), mask=img.getchannel("A"))
    return background


def _scale_to_uint8(a: np.ndarray) -> np.ndarray:
    """Scale 16-bit, 32-bit integer or float pixels to uint8 0..255 (never clip)."""
    if a.dtype.kind == "u" and a.dtype.itemsize == 2:
        return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if a.dtype.kind == "f":
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if lo >= 0.0 and hi <= 1.0:
            return np.rint(a * 255.0).astype(np.uint8)
        if lo >= 0.0 and hi <= 255.0:
            return np.rint(a).astype(np.uint8)
        return _stretch(a, lo, hi)
    a64 = a.astype(np.int64)
    lo, hi = (int(a64.min()), int(a64.max())) if a64.size else (0, 0)
    if lo >= 0 and hi <= 255:
        return a64.astype(np.uint8)
    if lo >= 0 and hi <= 65535:
        return ((a64 * 255 + 32767) // 65535).astype(np.uint8)
    return _stretch(a64.astype(np.float64), float(lo), float(hi))


def _stretch(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.rint((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _from_array(a: np.ndarray) -> Image.Image:
    """A PIL image from a uint8/uint16 array (H×W, H×W×1, H×W×3 RGB, H×W×4 RGBA)."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or a.size == 0:
        raise ImageError("<array>", f"array of shape {a.shape} is not an image: give H×W, H×W×1, H×W×3 (RGB) or H×W×4 (RGBA)")
    if a.dtype == np.uint16 or (a.dtype.kind in "iu" and a.dtype != np.uint8) or a.dtype.kind == "f":
        if a.dtype.kind == "f":
            raise ImageError("<array>", f"float array (dtype {a.dtype}) is ambiguous: give uint8 pixels 0..255")
        a = _scale_to_uint8(a)
    if a.dtype != np.uint8:
        raise ImageError("<array>", f"array dtype {a.dtype} is not supported: give uint8 pixels 0..255")
    a = np.ascontiguousarray(a)
    if a.ndim == 2:
        return Image.fromarray(a, mode="L")
    return Image.fromarray(a, mode="RGB" if a.shape[2] == 3 else "RGBA")


# -- resizing -----------------------------------------------------------------------------------
def resize(
    img: Image.Image,
    size: tuple[int, int],
    mode: str = "squash",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Resize an image to ``size`` the way DIGITS does.

    Args:
        img: a PIL image of mode ``RGB`` or ``L`` (from :func:`open_image`).
        size: ``(width, height)`` of the result.
        mode: ``squash`` stretches to the size; ``crop`` resizes so the short side fits and
            cuts the long side equally at both ends (keeping the centre); ``fill`` resizes so
            the long side fits and fills the borders of the short side with random noise;
            ``half`` resizes to the average of the two scale ratios, then crops the side that
            is too long and noise-fills the side that is too short.
        rng: where the noise of ``fill``/``half`` comes from. ``None`` seeds it from the
            resized pixels themselves, so the same image always gets the same noise (a
            dataset and inference see identical pixels) while different images get
            different noise.

    Returns:
        uint8 array of shape ``(height, width, channels)`` (channels 3 for RGB, 1 for L).

    Raises:
        ConfigError: ``mode`` or ``size`` is not valid.
    """
    mode = check_resize_mode(mode)
    width, height = check_size(size)
    src_w, src_h = img.size
    channels = 1 if img.mode == "L" else 3
    if mode == "squash" or (src_w, src_h) == (width, height):
        return _as_hwc(img.resize((width, height), RESAMPLE) if img.size != (width, height) else img, channels)

    width_ratio = src_w / width
    height_ratio = src_h / height
    if mode == "crop":
        if width_ratio > height_ratio:
            resize_w, resize_h = max(width, round(src_w / height_ratio)), height
        else:
            resize_w, resize_h = width, max(height, round(src_h / width_ratio))
        arr = _as_hwc(img.resize((resize_w, resize_h), RESAMPLE), channels)
        return _centre_crop(arr, width, height)

    if mode == "fill":
        if width_ratio > height_ratio:
            resize_w, resize_h = width, max(1, round(src_h / width_ratio))
            if (height - resize_h) % 2 == 1:
                resize_h += 1
        else:
            resize_w, resize_h = max(1, round(src_w / height_ratio)), height
            if (width - resize_w) % 2 == 1:
                resize_w += 1
    else:  # half
        ratio = (width_ratio + height_ratio) / 2.0
        resize_w, resize_h = max(1, round(src_w / ratio)), max(1, round(src_h / ratio))
        if width_ratio > height_ratio and (height - resize_h) % 2 == 1:
            resize_h += 1
        elif width_ratio < height_ratio and (width - resize_w) % 2 == 1:
            resize_w += 1
    arr = _as_hwc(img.resize((resize_w, resize_h), RESAMPLE), channels)
    if rng is None:
        rng = np.random.default_rng(zlib.crc32(arr))
    arr = _centre_crop(arr, min(width, resize_w), min(height, resize_h))
    return _noise_pad(arr, width, height, rng)


def _as_hwc(img: Image.Image, channels: int) -> np.ndarray:
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if channels == 1 else arr


def _centre_crop(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = arr.shape[:2]
    top = int(round((h - height) / 2.0))
    left = int(round((w - width) / 2.0))
    return arr[top : top + height, left : left + width]


def _noise_pad(arr: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Centre ``arr`` in a ``height × width`` canvas whose border is uniform random noise."""
    h, w, c = arr.shape
    if (h, w) == (height, width):
        return np.ascontiguousarray(arr)
    out = rng.integers(0, 256, size=(height, width, c), dtype=np.uint8)
    top = (height - h) // 2
    left = (width - w) // 2
    out[top : top + h, left : left + w] = arr
    return out


# -- the shared preprocessing step -------------------------------------------------------------
def prepare(
    source: ImageSource,
    size: int | str | tuple[int, int],
    resize_mode: str = "squash",
    channels: int = 3,
    *,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Decode and resize one image to a dataset's pixels; the step inference repeats.

    Args:
        source: anything :func:`open_image` accepts.
        size: the target ``(width, height)``, one number, or ``"WxH"``.
        resize_mode: ``squash`` (default), ``crop``, ``fill`` or ``half`` (see :func:`resize`).
        channels: 3 for RGB, 1 for grayscale.
        max_pixels: refuse images whose header claims more pixels than this.

    Returns:
        uint8 array ``(height, width, channels)``. The same source always gives the same
        pixels (the noise of ``fill``/``half`` is seeded from the image).

    Raises:
        ImageError: the source cannot be decoded (``reason`` says why).
        ConfigError: ``size``, ``resize_mode`` or ``channels`` is not valid.
    """
    wh = check_size(size)
    resize_mode = check_resize_mode(resize_mode)
    channels = check_channels(channels)
    img = open_image(source, channels=channels, draft_size=wh, max_pixels=max_pixels)
    return resize(img, wh, resize_mode)
