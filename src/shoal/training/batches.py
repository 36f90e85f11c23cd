"""Mini-batches from a stored split: uint8 pixels straight from the memory-mapped arrays.

No image is decoded while training. Augmentation (random crop, flip, colour jitter) runs on
uint8 tensors, driven by the run's own ``torch.Generator`` so a resumed run draws the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from shoal.preprocess import centre_crop


class _Batches:
    """Batches of ``(inputs, labels)``: shuffled each pass when training, in order otherwise."""

    def __init__(self, labels: torch.Tensor, *, batch_size: int, train: bool,
                 generator: torch.Generator | None) -> None:
        self.labels, self.batch_size, self.train, self.generator = labels, batch_size, train, generator

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.train else torch.arange(n)
        for start in range(0, n, self.batch_size):
            index = order[start : start + self.batch_size]
            yield self._inputs(index), self.labels[index]

    def _inputs(self, index: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class PixelBatches(_Batches):
    """Shuffled, augmented batches of float pixels 0..255 (``N×C×H×W``) and their labels.

    Args:
        images: ``N×H×W×C`` uint8 array (memory-mapped is fine).
        labels: ``N`` int64 class indices.
        batch_size: images per batch.
        crop: network input ``(h, w)``: random crops when training, the centre otherwise; None = whole image.
        train: shuffle and augment (True) or keep order and only centre-crop (False).
        flip: mirror half the images at random (train only).
        color_jitter: brightness/contrast/saturation jitter strength (train only).
        generator: the run's random source.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, batch_size: int, crop: tuple[int, int] | None,
                 train: bool, flip: bool = False, color_jitter: float = 0.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(torch.from_numpy(np.asarray(labels, dtype=np.int64)), batch_size=batch_size, train=train,
                         generator=generator)
        self.images, self.crop, self.flip = images, crop, flip
        self.jitter: Callable[[torch.Tensor], torch.Tensor] | None = None
        if train and color_jitter > 0:
            from torchvision.transforms import v2

            self.jitter = v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter)

    def _inputs(self, index: torch.Tensor) -> torch.Tensor:
        # Sorted reads are sequential on the memory map; the batch keeps the shuffled order.
        rows = np.sort(index.numpy())
        pixels = torch.from_numpy(np.ascontiguousarray(self.images[rows])).permute(0, 3, 1, 2)
        pixels = pixels[torch.from_numpy(np.searchsorted(rows, index.numpy()))]
        return self._augment(pixels).float()

    def _augment(self, pixels: torch.Tensor) -> torch.Tensor:
        if not self.train:
            return centre_crop(pixels, self.crop) if self.crop else pixels
        if self.crop:
            h, w = self.crop
            tops = torch.randint(0, pixels.shape[2] - h + 1, (len(pixels),), generator=self.generator)
            lefts = torch.randint(0, pixels.shape[3] - w + 1, (len(pixels),), generator=self.generator)
            pixels = torch.stack([p[:, t : t + h, l : l + w] for p, t, l in zip(pixels, tops.tolist(), lefts.tolist())])
        if self.flip:
            mirror = torch.rand(len(pixels), generator=self.generator) < 0.5
            pixels = torch.where(mirror[:, None, None, None], pixels.flip(3), pixels)
        if self.jitter is not None and pixels.shape[1] == 3:
            # torchvision draws jitter parameters from the global RNG; fork it from ours.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator)))
                pixels = torch.stack([self.jitter(p) for p in pixels])
        return pixels


class FeatureBatches(_Batches):
    """Shuffled batches of cached backbone features (frozen-backbone fine-tuning)."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, *, batch_size: int, train: bool,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(labels, batch_size=batch_size, train=train, generator=generator)
        self.features = features

    def _inputs(self, index: torch.Tensor) -> torch.Tensor:
        return self.features[index]
