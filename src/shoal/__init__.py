"""shoal: turn a folder of labelled images into a working image classifier.

The package imports nothing heavy: ``import shoal`` and ``shoal.load(...)`` use
NumPy, Pillow and ONNX Runtime only, never torch.
"""

from __future__ import annotations

__version__ = "0.1.0"
