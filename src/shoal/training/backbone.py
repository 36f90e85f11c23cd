"""Frozen backbones prepared once for fast fine-tuning: an ONNX graph of the features, cached.

Fine-tuning with a frozen backbone needs the backbone only to turn images into features.
The first time a network (with given weights, channels and input size) is used, it is built
in torch and its feature extractor exported to ONNX; afterwards ONNX Runtime computes the
features and torch is not imported at all. The cache lives in the store:

    $SHOAL_HOME/cache/backbones/<network>-<weights id>/
        backbone.json              the network's input size, normalisation, head parameter names
        c<C>.safetensors           the backbone's weights (the head left out), per input channels
        c<C>-<H>x<W>.onnx          normalised N×C×H×W → features N×D

The weights are kept so that a fitted head's model still has a complete ``model.safetensors``
(``runtime="torch"`` and Grad-CAM rebuild the network from it).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shoal import __version__
from shoal.bundle.compose import FEATURES  # the composed graph takes the backbone's output by this name
from shoal.errors import TrainingError
from shoal.preprocess import to_network_input
from shoal.store import Store

FORMAT = 1
OPSET = 17
INPUT = "x"
# Largest allowed |features_onnx - features_torch|, relative to the largest feature.
TOLERANCE = 1e-4
# (native (height, width), (mean, std) per channel) -> the (height, width) the model takes
SizeRule = Callable[[tuple[int, int], tuple[tuple[float, ...], tuple[float, ...]]], tuple[int, int]]


@dataclass(frozen=True)
class Backbone:
    """A prepared backbone in the cache.

    Attributes:
        folder: its cache folder.
        network: the registry name.
        input_size: the network's native ``(height, width)``.
        mean, std: its normalisation per channel in pixel units (for 3 channels; grayscale averages).
        feature_dim: D, the width of the features.
        head: the names of the head's parameters in the network's ``state_dict`` (``weight``, ``bias``).
    """

    folder: Path
    network: str
    input_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    feature_dim: int
    head: dict[str, str]

    def normalization(self, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)`` for ``channels`` input channels (grayscale: their averages)."""
        if channels == len(self.mean):
            return self.mean, self.std
        return (float(np.mean(self.mean)),), (float(np.mean(self.std)),)

    def graph_path(self, channels: int, height: int, width: int) -> Path:
        return self.folder / f"c{channels}-{height}x{width}.onnx"

    def weights_path(self, channels: int) -> Path:
        return self.folder / f"c{channels}.safetensors"


def cache_folder(network: str, pretrained: bool | str, *, store: Store) -> Path:
    """Where a network with these weights is cached: ``<network>-default`` or ``<network>-<file digest>``."""
    if pretrained is True:
        weights = "default"
    else:
        digest = hashlib.sha256()
        with open(pretrained, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        weights = digest.hexdigest()[:16]
    safe = network.replace(":", "_").replace("/", "_")
    if len(safe) > 64:  # a network stored as data (an imported model's layers:{json}) is named by its digest
        safe = f"layers-{hashlib.sha256(network.encode()).hexdigest()[:16]}"
    return store.home / "cache" / "backbones" / f"{safe}-{weights}"


def open_backbone(network: str, pretrained: bool | str, *, store: Store) -> Backbone | None:
    """The cached backbone, or ``None`` when it was never prepared (or by another format)."""
    folder = cache_folder(network, pretrained, store=store)
    try:
        meta = json.loads((folder / "backbone.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("format") != FORMAT:
        return None
    return Backbone(folder, meta["network"], tuple(meta["input_size"]), tuple(meta["mean"]), tuple(meta["std"]),
                    int(meta["feature_dim"]), dict(meta["head"]))


def prepare(network: str, pretrained: bool | str, *, channels: int,
            input_size: SizeRule, store: Store,
            on_prepare: Callable[[str], None] | None = None) -> tuple[Backbone, tuple[int, int]]:
    """The backbone's cache entry, with the graph for ``channels`` and the model's input size.

    Args:
        network: a registry name.
        pretrained: ``True`` (the network's default weights) or a weights file.
        channels: input channels.
        input_size: from the network's native ``(height, width)`` and its ``(mean, std)`` for
            ``channels``, the ``(height, width)`` the model takes (it depends on the dataset: see
            :func:`shoal.training.card.model_card`).
        store: whose cache to use.
        on_prepare: told what is being prepared when torch has to run (once per backbone and size).

    Returns:
        The backbone and the input size; the graph for them exists.

    Raises:
        NetworkError: the network or its weights cannot be loaded.
        TrainingError: the network's head is not a linear layer on features (use the training loop).
    """
    backbone = open_backbone(network, pretrained, store=store)
    if backbone is not None:
        size = input_size(backbone.input_size, backbone.normalization(channels))
        if backbone.weights_path(channels).exists() and backbone.graph_path(channels, *size).exists():
            return backbone, size
    if on_prepare is not None:
        on_prepare(f"preparing {network} for fast fine-tuning, once")
    folder = cache_folder(network, pretrained, store=store)
    size = _export(network, pretrained, channels, input_size, folder)
    backbone = open_backbone(network, pretrained, store=store)
    if backbone is None:
        raise TrainingError(f"the backbone cache in {folder} could not be read back; delete that folder and retry")
    return backbone, size


class FeatureGraph:
    """The cached backbone graph in ONNX Runtime, turning stored images into features.

    Args:
        backbone: the prepared backbone.
        channels: input channels.
        crop: the ``(h, w)`` centre crop the model takes, or ``None`` (the whole image).
        size: the ``(h, w)`` the graph takes.
        mean, scale: the model's normalisation (``(x - mean) * scale``), broadcastable to ``C×h×w``.
        batch_size: images per run of the graph.
        threads: ONNX Runtime's threads (``None``: one per core).
    """

    def __init__(self, backbone: Backbone, *, channels: int, crop: tuple[int, int] | None, size: tuple[int, int],
                 mean: np.ndarray, scale: np.ndarray, batch_size: int = 32, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(backbone.graph_path(channels, *size)), options,
                                            providers=["CPUExecutionProvider"])
        self.crop, self.batch_size, self.dim = crop, batch_size, backbone.feature_dim
        self.mean, self.scale = np.asarray(mean, np.float32), np.asarray(scale, np.float32)

    def __call__(self, images: np.ndarray, *, flip: bool = False,
                 on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Features of uint8 ``N×H×W×C`` images (mirrored first with ``flip``), float32 ``(N, D)``.

        ``on_batch`` is told how many images are done after each batch.
        """
        out = np.empty((len(images), self.dim), np.float32)
        for start in range(0, len(images), self.batch_size):
            x = to_network_input(np.asarray(images[start:start + self.batch_size]), self.crop)
            if flip:
                x = x[..., ::-1]
            out[start:start + len(x)] = self.session.run(None, {INPUT: np.ascontiguousarray((x - self.mean) * self.scale)})[0]
            if on_batch is not None:
                on_batch(start + len(x))
        return out


def load_weights(backbone: Backbone, channels: int) -> dict[str, np.ndarray]:
    """The backbone's weights (the head left out), keyed as in the network's ``state_dict``."""
    from safetensors.numpy import load_file

    return load_file(backbone.weights_path(channels))


def _export(network: str, pretrained: bool | str, channels: int, input_size: SizeRule,
            folder: Path) -> tuple[int, int]:
    """Build the network in torch; write its meta, its weights and the feature graph; return its size."""
    import torch
    from safetensors.torch import save_file

    from shoal import networks
    from shoal.networks.export import exportable_pools

    spec = networks.get_spec(network)
    net = networks.create(network, 2, pretrained=pretrained, channels=channels).eval()
    head = networks.classifier_head(net)
    if not isinstance(head, torch.nn.Linear):
        raise TrainingError(f"{network}'s head is a {type(head).__name__}, not a linear layer on features, so it "
                            "cannot be fitted; train it with the loop instead: --head sgd")
    head_name = next(name for name, module in net.named_modules() if module is head)
    extract = networks.feature_extractor(net)

    class Features(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return extract(x).flatten(1)

    features = Features().eval()
    height, width = input_size(spec.input_size, spec.normalization(channels))
    example = torch.rand(2, channels, height, width) * 2 - 1
    with torch.no_grad():
        want = features(example).numpy()
    mean, std = spec.normalization(3)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "shoal_version": __version__, "network": network, "input_size": list(spec.input_size),
            "mean": list(mean), "std": list(std), "feature_dim": int(want.shape[1]),
            "head": {"weight": f"{head_name}.weight", "bias": f"{head_name}.bias"}}
    state = {k: v.contiguous() for k, v in net.state_dict().items() if not k.startswith(f"{head_name}.")}
    _atomic(folder / f"c{channels}.safetensors", lambda tmp: save_file(state, tmp))
    exportable_pools(features)

    def write(tmp: str) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(features, (example,), tmp, opset_version=OPSET, input_names=[INPUT],
                              output_names=[FEATURES], dynamic_axes={INPUT: {0: "batch"}, FEATURES: {0: "batch"}},
                              dynamo=False)
        _check_graph(tmp, example.numpy(), want, network)

    _atomic(folder / f"c{channels}-{height}x{width}.onnx", write)
    _atomic(folder / "backbone.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
    return height, width


def _check_graph(path: str, example: np.ndarray, want: np.ndarray, network: str) -> None:
    import onnxruntime as ort

    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {INPUT: example})[0]
    diff = float(np.abs(got - want).max() / max(1.0, float(np.abs(want).max())))
    if diff > TOLERANCE:
        raise TrainingError(f"{network}'s exported feature graph differs from torch by {diff:.1e} (allowed "
                            f"{TOLERANCE:.0e}); train it with the loop instead (--head sgd) and please report this")


def _atomic(path: Path, write: Callable[[str], Any]) -> None:
    """Write through a temporary file in the same folder, then rename: a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
