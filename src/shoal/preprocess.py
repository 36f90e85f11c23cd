"""The last step between a stored (or freshly prepared) image and the network: crop and layout.

Torch-free and shared: training validates on exactly what inference feeds the model.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

A = TypeVar("A")


def centre_crop(images: A, size: tuple[int, int]) -> A:
    """Crop the centre ``(h, w)`` of a ``(..., H, W)`` NumPy array or torch tensor.

    A no-op when the size already matches.

    >>> centre_crop(np.zeros((3, 8, 10)), (4, 4)).shape
    (3, 4, 4)
    """
    h, w = size
    top, left = (images.shape[-2] - h) // 2, (images.shape[-1] - w) // 2  # type: ignore[attr-defined]
    return images[..., top : top + h, left : left + w]  # type: ignore[index]


def to_network_input(pixels: list[np.ndarray] | np.ndarray, crop: tuple[int, int] | None) -> np.ndarray:
    """Stack uint8 ``H×W×C`` images into float32 ``N×C×H×W`` pixels 0..255, centre-cropped.

    Args:
        pixels: one ``H×W×C`` array, an ``N×H×W×C`` batch, or a list of ``H×W×C`` arrays, all the
            same size (the dataset size).
        crop: the network input ``(h, w)``, or ``None`` when the model takes the whole image.
    """
    if isinstance(pixels, list):
        batch = np.stack(pixels)
    else:
        batch = pixels if pixels.ndim == 4 else pixels[None]
    batch = batch.transpose(0, 3, 1, 2)
    if crop is not None:
        batch = centre_crop(batch, crop)
    return np.ascontiguousarray(batch, dtype=np.float32)
