"""The model card of a run: what its network takes, from the config and the dataset (torch-free).

Both ways of training build their card here: the loop (:mod:`shoal.training.loop`) and the
fitted head (:mod:`shoal.training.fitted`), which must not import torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shoal.bundle.card import InputSpec, ModelCard, Normalization
from shoal.errors import TrainingError
from shoal.preprocess import centre_crop
from shoal.training.config import TrainConfig

# Auto-crop only trims a margin: a network whose native size is under 3/4 of the images
# (LeNet's 28 px on 64-px digits) takes the whole image instead of a small part of it.
CROP_MARGIN = 0.75


def model_card(config: TrainConfig, dataset: Any, *, native_size: tuple[int, int],
               normalization: tuple[tuple[float, ...], tuple[float, ...]]) -> tuple[ModelCard, np.ndarray, np.ndarray]:
    """The card of a run, and the mean and scale its network normalises with.

    Args:
        config: the resolved training configuration.
        dataset: the stored dataset it trains on.
        native_size: the network's own ``(height, width)``.
        normalization: the network's ``(mean, std)`` per channel, pixel units.

    Returns:
        ``(card, mean, scale)``: mean float32 ``(C, h, w)`` (mean image) or ``(C, 1, 1)``, scale
        float32 ``(C, 1, 1)``.

    Raises:
        TrainingError: the crop is larger than the dataset's images.
    """
    width, height = dataset.size
    if config.crop == 0:
        crop = None
    elif config.crop is not None:
        if config.crop > min(width, height):
            raise TrainingError(f"crop {config.crop} is larger than the dataset's images ({width}x{height}); "
                                f"use --crop {min(width, height)} or less, or rebuild the dataset larger")
        crop = (config.crop, config.crop)
    else:  # the network's native size when the images are a little larger (256 -> 224), as DIGITS' crop
        native_h, native_w = native_size
        margin = native_h < height <= native_h / CROP_MARGIN and native_w < width <= native_w / CROP_MARGIN
        crop = (native_h, native_w) if margin else None
    mean_mode = config.mean if config.mean != "auto" else ("network" if config.finetune else "image")
    channels = dataset.channels
    in_h, in_w = crop or (height, width)
    network_mean, network_std = normalization
    if mean_mode == "image":
        mean = centre_crop(np.asarray(dataset.mean_image(), np.float32).transpose(2, 0, 1), (in_h, in_w))
    elif mean_mode == "pixel":
        mean = np.asarray(dataset.mean_pixel(), np.float32).reshape(channels, 1, 1)
    elif mean_mode == "network":
        mean = np.asarray(network_mean, np.float32).reshape(channels, 1, 1)
    else:
        mean = np.zeros((channels, 1, 1), np.float32)
    mean = np.ascontiguousarray(mean)
    scale = (1.0 / np.asarray(network_std, np.float32)).reshape(channels, 1, 1)
    card = ModelCard(
        architecture=config.network,
        labels=tuple(dataset.classes),
        input=InputSpec(width=in_w, height=in_h, channels=channels, resize_mode=dataset.resize_mode,
                        dataset_width=width, dataset_height=height, crop=crop is not None),
        normalization=Normalization(mean=mean_mode, mean_shape=(mean.shape[0], mean.shape[1], mean.shape[2]),
                                    values=tuple(mean.flatten().tolist()) if mean_mode != "image" else None,
                                    scale=tuple(scale.flatten().tolist())),
    )
    return card, mean, scale
