"""LeNet-5, the small network DIGITS trained on MNIST, defined here."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shoal.networks.export import ExportableAdaptiveAvgPool2d

__all__ = ["LeNet"]


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
