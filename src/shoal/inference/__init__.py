"""Using a trained model: ``shoal.load(path).predict(images)``.

Torch-free by default: loading a bundle and classifying with ONNX Runtime needs only
NumPy, Pillow and onnxruntime. ``runtime="torch"`` rebuilds the network in PyTorch (for
GPUs and heat-maps) and needs the ``train`` extra.

Examples:
    >>> import shoal  # doctest: +SKIP
    >>> model = shoal.load("dolphins.shoal")  # doctest: +SKIP
    >>> result = model.predict("dolphin1.jpg")  # doctest: +SKIP
    >>> result.label, round(result.probability, 4)  # doctest: +SKIP
    ('dolphin', 0.9997)
    >>> [r.to_dict() for r in model.predict(["a.jpg", "b.png"], top=1)]  # doctest: +SKIP
    [{'source': 'a.jpg', 'predictions': [{'label': 'dolphin', 'probability': 0.99}]}, ...]
"""

from shoal.inference.classifier import DEFAULT_BATCH_SIZE, Classifier, Heatmap, InputSpec, Result, load, resolve
from shoal.inference.runtimes import RUNTIMES
from shoal.inference.sources import MAX_DOWNLOAD_BYTES, download
from shoal.inference.video import VideoError

__all__ = ["DEFAULT_BATCH_SIZE", "MAX_DOWNLOAD_BYTES", "RUNTIMES", "Classifier", "Heatmap", "InputSpec", "Result", "VideoError",
           "download", "load", "resolve"]
