"""Frame-by-frame classification of a video file or a camera, through OpenCV.

OpenCV is an optional extra (``pip install 'shoal[video]'``); it is imported only here,
and only when a video is classified.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shoal.config import check_int
from shoal.errors import ConfigError, InputError

if TYPE_CHECKING:
    from shoal.inference.classifier import Classifier, Result


class VideoError(InputError):
    """A video or camera cannot be opened or read, or OpenCV is not installed."""


def parse_source(value: str | int) -> str | int:
    """A camera index for an all-digit value (``"0"`` → ``0``), else the video file's path."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    return int(text) if text.isdigit() else text


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise VideoError("classifying video needs OpenCV, which is not installed: pip install 'shoal[video]' "
                         "(or pip install opencv-python-headless)") from None
    return cv2


def frames(source: str | int, *, every: int = 1) -> Iterator[tuple[int, float | None, np.ndarray]]:
    """Read every ``every``-th frame of a video file or camera.

    Args:
        source: a video file's path, or a camera index (``0`` is the first camera).
        every: keep frames 0, every, 2·every, ...

    Yields:
        ``(index, time_s, frame)``: the frame's index, its time in seconds (``None`` for a
        camera) and its uint8 ``H×W×3`` BGR pixels.

    Raises:
        VideoError: OpenCV is missing, or the source cannot be opened.
        ConfigError: ``every`` is not an int >= 1.
    """
    check_int("every", every, minimum=1)
    cv2 = _cv2()
    source = parse_source(source)
    if isinstance(source, str) and not Path(source).expanduser().is_file():
        raise VideoError(f"cannot open video {source}: no such file (give a video file, or a camera index such as 0)")
    capture = cv2.VideoCapture(str(Path(source).expanduser()) if isinstance(source, str) else source)
    try:
        if not capture.isOpened():
            what = f"camera {source}" if isinstance(source, int) else f"video {source}"
            raise VideoError(f"cannot open {what}: OpenCV cannot read it (not a video, an unsupported codec, "
                             "or no such camera)")
        fps = capture.get(cv2.CAP_PROP_FPS) if isinstance(source, str) else 0.0
        index = 0
        while True:
            if index % every == 0:
                ok, frame = capture.read()
                if not ok:
                    break
                yield index, (index / fps if fps and fps > 0 else None), frame
            elif not capture.grab():  # skipped frames are not decoded
                break
            index += 1
    finally:
        capture.release()


def classify_video(classifier: Classifier, source: str | int, *, every: int = 1, top: int | None = 5,
                   batch_size: int = 8) -> Iterator[Result]:
    """Classify the frames of a video file (in batches) or a camera (frame by frame).

    Args:
        classifier: the loaded model.
        source: a video file's path or a camera index.
        every: classify every N-th frame.
        top: classes per frame.
        batch_size: frames per run of the network for files; a camera runs one at a time.

    Yields:
        One :class:`~shoal.inference.classifier.Result` per classified frame, with ``frame``
        (and, for files, ``time_s``) set and ``source`` the file or ``camera N``.

    Raises:
        VideoError: the video cannot be opened (see :func:`frames`).
    """
    source = parse_source(source)
    name = f"camera {source}" if isinstance(source, int) else str(source)
    size = 1 if isinstance(source, int) else batch_size
    batch: list[tuple[int, float | None, np.ndarray]] = []
    for frame in frames(source, every=every):
        batch.append(frame)
        if len(batch) >= size:
            yield from _run(classifier, name, batch, top)
            batch = []
    if batch:
        yield from _run(classifier, name, batch, top)


def _run(classifier: Classifier, name: str, batch: list[tuple[int, float | None, np.ndarray]],
         top: int | None) -> Iterator[Result]:
    results = classifier.predict([frame for _, _, frame in batch], top, bgr=True, batch_size=len(batch))
    for (index, time_s, _), result in zip(batch, results):  # type: ignore[arg-type]
        yield dataclasses.replace(result, source=name, frame=index, time_s=time_s)
