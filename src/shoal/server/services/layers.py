"""Layers, as DIGITS showed them: one image through the network, every layer's statistics and activations."""

from __future__ import annotations

from typing import Any

from shoal.data.imageops import png_uri
from shoal.errors import InputError
from shoal.server.config import Settings
from shoal.server.security import fetch_image, require_code_allowed
from shoal.server.services.caches import Classifiers
from shoal.server.services.downloads import bundle_path
from shoal.store import Store
from shoal.trust import is_network_file


def layers_view(classifiers: Classifiers, store: Store, settings: Settings, name: str, *, data: bytes | None,
                filename: str | None, url: str | None) -> dict[str, Any]:
    """What ``shoal classify --layers`` writes, as JSON: per layer its output shape, mean, std,
    histogram, parameters and an image of its activations, the first convolution's filters, the top classes.

    Images are ``data:`` URIs (``image`` per layer, ``first_conv_weights``), ``null`` where a
    layer's output is not a spatial map. Runs the torch network (:meth:`Classifier.layers`).
    """
    if bool(url) == (data is not None):
        raise InputError("send one image: either a file in the 'file' field or an address in the 'url' field")
    classifier = classifiers.get(bundle_path(store, name))
    if is_network_file(classifier.manifest.get("architecture")):
        require_code_allowed(settings, f"the layers of model {name!r} (its network is "
                                       f"{classifier.manifest['architecture']!r})")
    source = url or filename or "upload"
    with classifiers.torch_lock:  # the hooks go on the shared torch model: one image at a time
        try:
            report = classifier.layers(fetch_image(url, settings) if url else data)
        except InputError as exc:
            raise InputError(str(exc).replace("<bytes>", source, 1)) from None
    out = report.to_dict()
    out["source"] = source
    out["first_conv_weights"] = png_uri(report.first_conv_weights) if report.first_conv_weights else None
    for row, layer in zip(out["layers"], report.layers):
        row["image"] = png_uri(layer.image) if layer.image else None
    return out
