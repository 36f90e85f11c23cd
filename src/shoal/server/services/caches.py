"""Caches kept on ``app.state`` between requests: loaded classifiers and the network list."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from shoal.errors import BundleError


class Classifiers:
    """Loaded classifiers, kept between requests (loading a bundle takes far longer than a prediction).

    Keyed by bundle path, runtime and the manifest's modification time, so a re-exported
    bundle is loaded afresh; the least recently used is dropped past ``size``. ``trust_code``
    (the server's ``--allow-code``) lets heat-maps rebuild a network defined by a ``.py`` file.
    """

    def __init__(self, size: int = 6, *, trust_code: bool = False) -> None:
        self.size = size
        self.trust_code = trust_code
        self._items: OrderedDict[tuple[str, str, float, bool], Any] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str, float, bool], threading.Lock] = {}
        self.torch_lock = threading.Lock()

    def get(self, bundle: Path, runtime: str = "onnx", *, bulk: bool = False) -> Any:
        """The loaded classifier of a bundle.

        Single images (``bulk=False``) get a one-thread engine: the server runs requests side by
        side, so parallelism comes from the requests, and one engine per request keeps the cores
        from being oversubscribed (measured: more requests/s and a lower p99 under load).
        Many images at once (``bulk=True``: classify-many, evaluation) get all cores.
        """
        from shoal.bundle import MANIFEST
        from shoal.inference import load

        manifest = bundle / MANIFEST if bundle.is_dir() else bundle
        try:
            key = (str(bundle), runtime, manifest.stat().st_mtime, bulk)
        except OSError:
            raise BundleError(f"the bundle {str(bundle)!r} is missing; train or export the model again") from None
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one load per bundle, even when many requests arrive at once
            with self._lock:
                if key in self._items:
                    return self._items[key]
            classifier = load(bundle, runtime=runtime, threads=None if bulk else 1, trust_code=self.trust_code)
            with self._lock:
                self._items[key] = classifier
                self._loading.pop(key, None)
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
            return classifier

    def forget(self, bundle_prefix: Path) -> None:
        with self._lock:
            for key in [k for k in self._items if k[0].startswith(str(bundle_prefix))]:
                del self._items[key]


class NetworkCatalog:
    """The pretrained-network list (``shoal.networks.list_networks``), read once: it imports torch."""

    def __init__(self) -> None:
        self._specs: list[dict[str, Any]] | None = None
        self._lock = threading.Lock()

    def specs(self) -> list[dict[str, Any]]:
        with self._lock:
            if self._specs is None:
                try:
                    from shoal.networks import list_networks
                except ImportError:  # the web app without shoal[train]: it can still classify with bundles
                    self._specs = []
                    return self._specs
                self._specs = [{
                    "name": s.name, "description": s.description, "family": s.family,
                    "input_size": list(s.input_size), "pretrained": s.pretrained,
                    "pretrained_offline": s.pretrained_offline,
                } for s in list_networks()]
            return self._specs

    def names(self) -> list[str]:
        return [s["name"] for s in self.specs()]
