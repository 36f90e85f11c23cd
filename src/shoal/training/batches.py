"""Mini-batches from a stored split: uint8 pixels straight from the memory-mapped arrays.

No image is decoded while training. Augmentation (random crop, flip, colour jitter) runs on
uint8 tensors, driven by the run's own ``torch.Generator`` so a resumed run draws the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from shoal.preprocess import centre_crop


class _Batches:
    """Batches of ``(inputs, labels)``: shuffled each pass when training, in order otherwise.

    The order of a training pass is a function of ``seed`` and the pass's epoch (DistributedSampler's
    semantics: ``randperm(n)`` seeded with ``seed + epoch``), so a process of a data-parallel run
    takes its ``shard`` ``(rank, world)`` of the same permutation, every ``world``-th index from its
    rank, and the ``world`` shards of a batch together are the single process's batch. Training
    shards are padded from the start of the permutation to equal length (every rank takes the same
    number of steps); validation shards are not (every image counts once). Without
    :meth:`set_epoch` each pass takes the next epoch.
    """

    def __init__(self, labels: torch.Tensor, *, batch_size: int, train: bool, seed: int = 0,
                 shard: tuple[int, int] = (0, 1), prefetch: bool = False) -> None:
        self.labels, self.batch_size, self.train = labels, batch_size, train
        self.seed, (self.rank, self.world) = seed, shard
        self.epoch, self.prefetch = 0, prefetch

    def set_epoch(self, epoch: int) -> None:
        """Draw the order of the pass of ``epoch`` next (the same on every rank)."""
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        n = len(self.labels)
        if not self.train:
            return torch.arange(n)[self.rank :: self.world]
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        if self.world > 1:
            total = -(-n // self.world) * self.world
            order = torch.cat([order, order[: total - n]]) if total > n else order
            order = order[self.rank :: self.world]
        return order

    def __len__(self) -> int:
        n = len(self.labels)
        shard = -(-n // self.world) if self.train else len(range(self.rank, n, self.world))
        return -(-shard // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        self.epoch += 1
        chunks = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        if not self.prefetch:
            for index in chunks:
                yield self._inputs(index), self.labels[index]
            return
        # The next batch is read from the memory-mapped arrays and augmented in a background thread
        # while the GPU trains on this one. One thread, in order, draws from the generator exactly as
        # the plain loop does: runs stay reproducible. Not on the CPU, where the thread only takes
        # cores from the network (LeNet on 2 cores: 10,200 images/s plain, 5,000 with it; AlexNet: equal).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shoal-batches") as pool:
            pending = pool.submit(self._inputs, chunks[0]) if chunks else None
            for i, index in enumerate(chunks):
                inputs = pending.result()  # type: ignore[union-attr]
                if i + 1 < len(chunks):
                    pending = pool.submit(self._inputs, chunks[i + 1])
                yield inputs, self.labels[index]

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
        seed: the run's seed: the order of a pass is drawn from it and the epoch.
        shard: ``(rank, world)``: this process's share of every pass (data-parallel training).
        flip: mirror half the images at random (train only).
        color_jitter: brightness/contrast/saturation jitter strength (train only).
        generator: the run's random source for augmentation.
        prefetch: prepare the next batch in a background thread (worth it when a GPU trains).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, batch_size: int, crop: tuple[int, int] | None,
                 train: bool, flip: bool = False, color_jitter: float = 0.0,
                 generator: torch.Generator | None = None, seed: int = 0, shard: tuple[int, int] = (0, 1),
                 prefetch: bool = False) -> None:
        super().__init__(torch.from_numpy(np.asarray(labels, dtype=np.int64)), batch_size=batch_size, train=train,
                         seed=seed, shard=shard, prefetch=prefetch)
        self.images, self.crop, self.flip, self.generator = images, crop, flip, generator
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
            # torchvision draws jitter parameters from the global CPU RNG; fork it from ours. Seeding the
            # CPU generator alone: torch.manual_seed would also reseed the GPUs' (dropout's), from the prefetch thread.
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator)))
                pixels = torch.stack([self.jitter(p) for p in pixels])
        return pixels


class FeatureBatches(_Batches):
    """Shuffled batches of cached backbone features (frozen-backbone fine-tuning)."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, *, batch_size: int, train: bool,
                 seed: int = 0, shard: tuple[int, int] = (0, 1)) -> None:
        super().__init__(labels, batch_size=batch_size, train=train, seed=seed, shard=shard)
        self.features = features

    def _inputs(self, index: torch.Tensor) -> torch.Tensor:
        return self.features[index]
