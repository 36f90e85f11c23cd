"""Where a fine-tuning starts: a weights file, a bundle, or a model in the store (torch-free).

``shoal train --weights X`` and the web app's "previous model" both come here. ``X`` is, in
this order:

1. a weights file (``.safetensors``, ``.pth``, ``.pt``): the network is the one ``--network``
   names;
2. a bundle (a folder with ``shoal.json``, or a ``.shoal`` file): its architecture and its
   weights — for an imported Caffe model the ``layers:`` network, so a DIGITS model goes on
   learning without redrawing it;
3. the name of a model in the store (trained or imported): its architecture and the weights of
   its best epoch (or of a kept snapshot).

The new head is sized to the dataset when the network is built (the old head's weights are
dropped when the class count differs: :func:`shoal.networks.weights.load_into`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from shoal.bundle import MANIFEST, SUFFIX, WEIGHTS_FILE, open_bundle
from shoal.errors import ConfigError, TrainingError
from shoal.store import Store

__all__ = ["StartPoint", "model_start", "network_label", "resolve_start", "start_point"]

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")  # as shoal.networks.weights, which imports torch
LAYERS_PREFIX = "layers:"  # as shoal.networks.layers, which imports torch
CACHE = "weights"  # $SHOAL_HOME/cache/weights: the weights of .shoal files trained from


@dataclass(frozen=True)
class StartPoint:
    """What a training starts from.

    Attributes:
        weights: the weights file the network is loaded from.
        network: the architecture those weights belong to; ``None`` for a bare weights file.
        source: how to name it in messages (``model 'x'``, ``bundle '...'``, ``file '...'``).
    """

    weights: Path
    network: str | None
    source: str

    def network_for(self, network: str | None) -> str | None:
        """The network a training from here builds, when ``network`` was asked for (None or ``auto``: this one's).

        Raises:
            ConfigError: ``network`` is another network than the one these weights belong to.
        """
        if self.network is None or network in (None, "auto", self.network):
            return self.network or network
        raise ConfigError(f"the start ({self.source}) has the network {network_label(self.network)!r}; its weights "
                          f"do not fit {network_label(network)!r} — drop --network (the start's own network is "
                          "used), or start from weights of that network", options=("network",))


def network_label(network: str) -> str:
    """A short name for a network: an imported ``layers:`` network by its own name, others as they are.

    >>> network_label('layers:{"name": "LeNet", "layers": []}')
    'LeNet (imported)'
    >>> network_label("lenet")
    'lenet'
    """
    if not network.startswith(LAYERS_PREFIX):
        return network
    try:
        name = json.loads(network[len(LAYERS_PREFIX):]).get("name")
    except (ValueError, AttributeError):
        name = None
    return f"{name or 'network'} (imported)"


def start_point(source: str | os.PathLike[str], *, epoch: str | int = "best", store: Store | None = None) -> StartPoint:
    """Resolve a weights file, a bundle, or a model's name into the weights and architecture to start from.

    Args:
        source: a weights file, a bundle folder or ``.shoal`` file, or a model in the store.
        epoch: for a model, ``"best"`` (its best epoch; an imported or fitted model's only one) or
            the epoch of a kept snapshot.
        store: where models live; default ``SHOAL_HOME``.

    Returns:
        The :class:`StartPoint`.

    Raises:
        ConfigError: ``source`` is none of these, or the model kept no such epoch.
        BundleError: the bundle is incomplete.
        TrainingError: the model has no weights yet.
    """
    store = store or Store()
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_file() and path.suffix.lower() in WEIGHT_SUFFIXES:
        return StartPoint(path, None, f"file '{path}'")
    if (path.is_dir() and (path / MANIFEST).is_file()) or (path.is_file() and path.suffix == SUFFIX):
        return _bundle(path, store)
    if store.exists("model", text):
        return model_start(text, epoch, store=store)
    raise ConfigError(f"--weights {text!r} is neither a weights file ({', '.join(WEIGHT_SUFFIXES)}), a bundle (a "
                      "folder with shoal.json, or a .shoal file), nor a model in the store (see 'shoal model list')",
                      options=("pretrained",))


def resolve_start(network: str | None, source: str | os.PathLike[str], *, epoch: str | int = "best",
                  store: Store | None = None) -> tuple[str | None, str]:
    """The ``(network, weights file)`` a training from ``source`` uses.

    A bare weights file keeps ``network`` as given; a bundle or a model gives its own network
    (``network`` may be None, ``auto`` or that same network).

    Raises:
        ConfigError: a network was named that is not the one the start's weights belong to; and
            what :func:`start_point` raises.
    """
    start = start_point(source, epoch=epoch, store=store)
    if start.network is None:
        return network, str(start.weights)
    return start.network_for(network), str(start.weights)


def _bundle(path: Path, store: Store) -> StartPoint:
    bundle = open_bundle(path)
    if path.is_dir():
        return StartPoint(path / WEIGHTS_FILE, bundle.card.architecture, f"bundle '{path}'")
    # A .shoal file: its weights are kept in the cache, named by their digest (the same file, the same path).
    data = bundle.read(WEIGHTS_FILE)
    target = store.home / "cache" / CACHE / f"{hashlib.sha256(data).hexdigest()[:16]}.safetensors"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return StartPoint(target, bundle.card.architecture, f"bundle '{path}'")


def model_start(name: str, epoch: str | int = "best", *, store: Store | None = None) -> StartPoint:
    """The start of a training from the model ``name`` (trained or imported): its network, and the
    weights of its best epoch (an imported or fitted model's only ones) or of the kept snapshot ``epoch``.

    Raises:
        NotFoundError: no such model.
        ConfigError: it kept no snapshot of ``epoch``.
        TrainingError: it has no weights yet.
    """
    from shoal.models import ModelFolder

    store = store or Store()

    folder = ModelFolder.of(name, store=store)
    card = folder.read_card()
    config = folder.read_config()
    network = card.architecture if card is not None else config.get("network")
    if not isinstance(network, str) or not network:
        raise TrainingError(f"model {name!r} has no model card yet, so its network is not known; wait for its "
                            "training to start, or give a weights file")
    one_result = config.get("head") == "fit" or bool(config.get("imported"))
    if str(epoch) in ("best", ""):
        # The best epoch's weights; a fitted head's or an imported model's are in its bundle (one result).
        path = folder.bundle_path / WEIGHTS_FILE if one_result or not folder.best_path.exists() else folder.best_path
    else:
        snapshots = folder.snapshots()
        number = int(epoch) if str(epoch).isascii() and str(epoch).isdigit() else None
        if one_result:
            kind = "was imported" if config.get("imported") else "has a fitted head"
            raise ConfigError(f"model {name!r} {kind}: one result, no epochs; start from it without an epoch "
                              "('best')", options=("pretrained",))
        if number is None or number not in snapshots:
            kept = ", ".join(str(e) for e in snapshots) or "none"
            raise ConfigError(f"model {name!r} has no snapshot of epoch {epoch!r} (kept: {kept}; or 'best')",
                              options=("pretrained",))
        path = snapshots[number]
    if not path.exists():
        raise TrainingError(f"model {name!r} has no trained weights yet; wait for its first validation")
    return StartPoint(path, network, f"model '{name}'")

