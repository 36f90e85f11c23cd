"""Layers, as DIGITS showed them: one image through the network, every layer's statistics and activations."""

from __future__ import annotations

from typing import Any

from shoal.data.imageops import png_uri
from shoal.server.config import Settings
from shoal.server.services.caches import Classifiers
from shoal.server.services.predict import torch_view
from shoal.store import Store


def layers_view(classifiers: Classifiers, store: Store, settings: Settings, name: str, *, data: bytes | None,
                filename: str | None, url: str | None) -> dict[str, Any]:
    """What ``shoal classify --layers`` writes, as JSON: per layer its output shape, mean, std,
    histogram, parameters and an image of its activations, the first convolution's filters, the top classes.

    Images are ``data:`` URIs (``image`` per layer, ``first_conv_weights``), ``null`` where a
    layer's output is not a spatial map. Runs the torch network (:meth:`Classifier.layers`).
    """
    report = torch_view(classifiers, store, settings, name, data=data, filename=filename, url=url,
                        what="the layers", view=lambda classifier, image: classifier.layers(image))
    out = report.to_dict()
    out["source"] = url or filename or "upload"
    out["first_conv_weights"] = png_uri(report.first_conv_weights) if report.first_conv_weights else None
    for row, layer in zip(out["layers"], report.layers):
        row["image"] = png_uri(layer.image) if layer.image else None
    return out
