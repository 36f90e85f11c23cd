"""The trained model as one module: input normalisation built into the network.

The module takes float pixels 0..255 (NCHW), so the exported ONNX graph and every
runtime need only resize and crop; the mean image, per-pixel mean or the network's own
normalisation travels inside the weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shoal.networks.factory import create


class NormalizedNet(nn.Module):
    """``net((pixels - mean) * scale)``.

    Args:
        net: the network, taking normalised input.
        mean: ``(C, H, W)`` mean image or ``(C, 1, 1)`` per-channel mean, in pixel units.
        scale: ``(C, 1, 1)`` factor applied after subtracting the mean (1 / std).
    """

    def __init__(self, net: nn.Module, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean.detach().float().clone())
        self.register_buffer("scale", scale.detach().float().clone())

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """The network's input: ``(pixels - mean) * scale``."""
        return (pixels - self.mean) * self.scale

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(pixels))


class Probabilities(nn.Module):
    """Softmax over a :class:`NormalizedNet`'s logits: the deployed graph."""

    def __init__(self, model: NormalizedNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(pixels), dim=1)



def rebuild(architecture: str, num_classes: int, *, channels: int, mean_shape: Sequence[int]) -> NormalizedNet:
    """Build an untrained :class:`NormalizedNet` of the shape a model card describes, to load weights into.

    Args:
        architecture: the network's name (the card's ``architecture``).
        num_classes: how many classes it outputs (the card's labels).
        channels: 3 (RGB) or 1 (grayscale).
        mean_shape: ``(C, H, W)`` or ``(C, 1, 1)``: the shape of the mean buffer.

    Returns:
        The network, with zero normalisation buffers that its weights file fills in.

    Raises:
        NetworkError: the architecture is unknown here.
    """
    net = create(architecture, num_classes, pretrained=None, channels=channels)
    return NormalizedNet(net, torch.zeros(tuple(mean_shape)), torch.zeros(channels, 1, 1))
