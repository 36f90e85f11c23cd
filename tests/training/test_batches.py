"""Batches prepared in a background thread (the GPU path) are the very batches of the plain loop."""

from __future__ import annotations

import numpy as np
import torch

from shoal.training.batches import PixelBatches


def _epochs(prefetch: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (37, 12, 12, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, 37)
    batches = PixelBatches(images, labels, batch_size=8, crop=(10, 10), train=True, flip=True, color_jitter=0.3,
                           generator=torch.Generator().manual_seed(5), seed=5, prefetch=prefetch)
    return [pair for _ in range(2) for pair in batches]


def test_prefetched_batches_equal_the_plain_ones():
    plain, prefetched = _epochs(False), _epochs(True)
    assert len(plain) == len(prefetched) == 10  # 5 batches of 37 images, two passes
    for (x, y), (px, py) in zip(plain, prefetched, strict=True):
        assert torch.equal(x, px) and torch.equal(y, py)


def test_stopping_early_leaves_no_thread_behind():
    import threading

    batches = PixelBatches(np.zeros((20, 8, 8, 3), np.uint8), np.zeros(20, int), batch_size=4, crop=None, train=True,
                           generator=torch.Generator().manual_seed(0), prefetch=True)
    iterator = iter(batches)
    next(iterator)
    iterator.close()  # the loop broke off (an abort, an early stop)
    assert not any(t.name.startswith("shoal-batches") for t in threading.enumerate())
