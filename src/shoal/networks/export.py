"""Making a network exportable to ONNX at any input size.

ONNX has no adaptive pooling, and PyTorch's exporter only handles adaptive pools whose
output size divides the input. :class:`ExportableAdaptiveAvgPool2d` computes the same
pooling in a form that always exports; :func:`exportable_pools` swaps it in before export.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ExportableAdaptiveAvgPool2d", "exportable_pools"]


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


def exportable_pools(model: nn.Module) -> None:
    """Swap adaptive average pools for an equivalent the ONNX exporter takes at any input size.

    (AlexNet's 6×6 pool on a 64-pixel input, say.) They hold no weights, so nothing else changes;
    the exporter's comparison with ONNX Runtime afterwards checks the outputs still agree.

    Args:
        model: the network, changed in place.
    """
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is nn.AdaptiveAvgPool2d:
                size = child.output_size if isinstance(child.output_size, tuple) else (child.output_size,) * 2
                setattr(parent, child_name, ExportableAdaptiveAvgPool2d(size))
