"""shoal: turn a folder of labelled images into a working image classifier.

The package imports nothing heavy: ``import shoal`` and ``shoal.load(...)`` use
NumPy, Pillow and ONNX Runtime only, never torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from shoal.importers.caffe import import_caffe
    from shoal.inference import Classifier, load

__all__ = ["Classifier", "__version__", "import_caffe", "load"]

_LAZY = {"load": "shoal.inference", "Classifier": "shoal.inference", "import_caffe": "shoal.importers.caffe"}


def __getattr__(name: str) -> Any:
    # ``import shoal`` stays cheap: the inference stack loads on first use of shoal.load.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "datasets":  # shoal.datasets.create(...) after a plain ``import shoal``
        import importlib

        return importlib.import_module("shoal.datasets")
    raise AttributeError(f"module 'shoal' has no attribute {name!r}")
