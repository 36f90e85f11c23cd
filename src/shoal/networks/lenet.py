"""LeNet-5, the small network DIGITS trained on MNIST, defined here."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ExportableAdaptiveAvgPool2d", "LeNet"]


class ExportableAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` that also exports to ONNX when the sizes do not divide.

    ONNX has no adaptive pooling, and PyTorch's exporter only handles output sizes that
    divide the input. Otherwise this pools with two averaging matrices (the same
    windows as PyTorch: ``floor(i·n/k)`` to ``ceil((i+1)·n/k)``), which export as MatMul.

    Args:
        output_size: ``(height, width)`` of the output.
    """

    def __init__(self, output_size: tuple[int, int]) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Average-pool the last two dimensions of ``x`` to :attr:`output_size`."""
        height, width = int(x.shape[-2]), int(x.shape[-1])
        out_h, out_w = self.output_size
        if height % out_h == 0 and width % out_w == 0:
            return F.adaptive_avg_pool2d(x, self.output_size)
        rows = _pooling_matrix(height, out_h, x)
        cols = _pooling_matrix(width, out_w, x)
        return rows @ x @ cols.T


def _pooling_matrix(size: int, out: int, like: torch.Tensor) -> torch.Tensor:
    """(out, size) matrix whose row i averages adaptive window i."""
    matrix = torch.zeros(out, size, dtype=like.dtype, device=like.device)
    for i in range(out):
        start, end = (i * size) // out, -(-((i + 1) * size) // out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


class LeNet(nn.Module):
    """LeNet-5 with ReLU and max pooling, as in DIGITS and Caffe's MNIST example.

    conv 5×5 (6) → ReLU → max-pool 2 → conv 5×5 (16) → ReLU → max-pool 2 → adaptive
    average pool to 5×5 → fc 120 → ReLU → fc 84 → ReLU → fc ``num_classes``. The first
    convolution pads by 2, so a 28×28 input gives the classic 5×5×16 map and the adaptive
    pool is then the identity; any input of at least 12×12 works, larger ones are pooled
    down to 5×5 (in a way that exports to ONNX at any size).

    Args:
        num_classes: Outputs of the classifier.
        in_chans: Input channels (1 for grayscale, 3 for RGB).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 6, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),  # not in place: Grad-CAM hooks this layer's output
            nn.MaxPool2d(2),
        )
        self.pool = ExportableAdaptiveAvgPool2d((5, 5))
        self.pre_logits = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(84, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The 84 features the classifier takes, shape (N, 84)."""
        x = self.pool(self.features(x))
        return self.pre_logits(torch.flatten(x, 1))

    def get_classifier(self) -> nn.Module:
        """The classifier layer (timm's convention)."""
        return self.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, shape (N, num_classes)."""
        return self.classifier(self.forward_features(x))
