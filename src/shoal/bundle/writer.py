"""Writing a bundle from a trained model's folder (needs torch; reading does not)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from shoal import networks
from shoal.bundle import LABELS_FILE, MANIFEST, ONNX_FILE, WEIGHTS_FILE, manifest, staged
from shoal.bundle.card import ModelCard
from shoal.bundle.compose import FEATURES, INPUT, PROBABILITIES, add_unfamiliar
from shoal.bundle.unfamiliar import MAX_BANK, Unfamiliar, fit_unfamiliar
from shoal.errors import BundleError, NetworkError, NotFoundError
from shoal.models import ModelFolder
from shoal.networks.export import exportable_pools
from shoal.networks.normalized import NormalizedNet, Probabilities, rebuild
from shoal.networks.weights import load_resume_point, load_weights, save_weights
from shoal.preprocess import to_network_input
from shoal.store import Store

OPSET = 17
ONNX_TOLERANCE = 1e-4  # largest allowed |p_onnx - p_torch| on the check images


def export_model(name: str, *, epoch: int | str = "best", store: Store | None = None,
                 out: str | Path | None = None, on_event: Callable[[dict[str, Any]], None] | None = None,
                 model: NormalizedNet | None = None, dataset: Any = None) -> Path:
    """Write the bundle of a trained model, for its best epoch, last epoch or a kept snapshot.

    Args:
        name: the model in the store.
        epoch: ``"best"`` (highest validation accuracy), ``"last"``, or an epoch with a snapshot.
        store: the store; default ``SHOAL_HOME``.
        out: a folder, or a path ending in ``.shoal`` for the single-file form;
            default ``<model folder>/bundle``.
        on_event: called with a ``prepare`` event (its ``message`` the stage) before each step.
        model: the network as the training loop built it (on the CPU, unwrapped); its weights are
            replaced by the epoch's. Default: rebuilt from the model card.
        dataset: the stored dataset it trained on, when the caller has it open. Default: loaded
            by the name in the model's config (random check images when it is gone).

    Returns:
        The bundle's path.

    Raises:
        NotFoundError: no such model. BundleError: no weights for that epoch, or the ONNX
        graph disagrees with torch.
    """
    store = store or Store()
    folder = ModelFolder.of(name, store=store)
    card = folder.read_card()
    if card is None:
        raise BundleError(f"model {name!r} has not started training yet; nothing to export")
    config = folder.read_config()
    emit = on_event or (lambda event: None)
    if model is None:
        emit({"type": "prepare", "message": f"rebuilding {card.architecture}"})
        model = rebuild(card.architecture, len(card.labels), channels=card.input.channels,
                        mean_shape=card.normalization.mean_shape)
    chosen = _load_epoch(folder, model, epoch)
    model.eval()
    history = folder.history()
    out = Path(out) if out is not None else folder.bundle_path

    if dataset is None:
        from shoal import datasets

        try:
            dataset = datasets.load(config["dataset"], store=store)
        except NotFoundError:
            dataset = None
    pixels = _check_images(dataset, card)
    emit({"type": "prepare", "message": "fitting the unfamiliar-image detector"})
    detector, unfamiliar = _fit_unfamiliar(model, config, card, dataset)
    with staged(out) as staging:
        save_weights(staging / WEIGHTS_FILE, model, epoch=chosen)
        emit({"type": "prepare", "message": "converting to ONNX"})
        outputs = _export_onnx(model, staging / ONNX_FILE, pixels[:1], detector)
        emit({"type": "prepare", "message": f"checking the ONNX graph against torch on {len(pixels)} images"})
        diff = _compare_onnx(model, staging / ONNX_FILE, pixels, detector)
        (staging / LABELS_FILE).write_text("\n".join(card.labels) + "\n", encoding="utf-8")
        (staging / MANIFEST).write_text(json.dumps(manifest(
            name, card, epoch=chosen, history=history, training=config, unfamiliar=unfamiliar,
            onnx={"opset": OPSET, "input": INPUT, "outputs": outputs,
                  "check": {"against": "torch", "images": len(pixels), "max_abs_diff": diff}},
            versions={"torch": torch.__version__}), indent=2), encoding="utf-8")
    return out


def _load_epoch(folder: ModelFolder, model: NormalizedNet, epoch: int | str) -> int:
    if epoch == "best":
        if not folder.best_path.exists():
            raise BundleError(f"model in {folder.path} has no validated epoch yet; train it at least one epoch")
        return load_weights(folder.best_path, model)
    if epoch == "last":
        if not folder.has_state():
            raise BundleError(f"model in {folder.path} has no finished epoch yet")
        return load_resume_point(folder.state_path, model)
    kept = folder.snapshots()
    if epoch not in kept:
        raise BundleError(f"no snapshot of epoch {epoch!r}; kept epochs: {sorted(kept) or 'none'} "
                          "(or use 'best' or 'last')")
    return load_weights(kept[int(epoch)], model)


def _check_images(dataset: Any, card: ModelCard) -> np.ndarray:
    """Up to 16 real validation images as network input, or random pixels if the dataset is gone (None)."""
    spec = card.input
    if dataset is not None:
        images = dataset.images("val")[:16]
    else:
        images = np.random.default_rng(0).integers(
            0, 256, (4, spec.dataset_height, spec.dataset_width, spec.channels), dtype=np.uint8)
    return to_network_input(np.asarray(images), spec.crop_hw) if len(images) else to_network_input(
        np.zeros((1, spec.height, spec.width, spec.channels), np.uint8), None)


class _Deployed(torch.nn.Module):
    """Softmax probabilities and the features the head takes: the graph before the unfamiliar score is added."""

    def __init__(self, model: NormalizedNet) -> None:
        super().__init__()
        self.model = model
        self.extract = networks.feature_extractor(model.net)
        self.head = networks.classifier_head(model.net)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.extract(self.model.normalize(pixels)).flatten(1)
        return torch.softmax(self.head(features), dim=1), features


def _features(model: NormalizedNet, pixels: np.ndarray, batch_size: int = 64) -> np.ndarray:
    extract = networks.feature_extractor(model.net)
    with torch.no_grad():
        return np.concatenate([extract(model.normalize(torch.from_numpy(pixels[i:i + batch_size]))).flatten(1).numpy()
                               for i in range(0, len(pixels), batch_size)])


def _fit_unfamiliar(model: NormalizedNet, config: dict[str, Any], card: ModelCard,
                    dataset: Any) -> tuple[Unfamiliar | None, dict[str, Any]]:
    """The detector from the features of (at most :data:`MAX_BANK`) training images, or why there is none."""
    if dataset is None:
        return None, {"reason": f"its training images (dataset {config['dataset']!r}) are no longer in the store"}
    labels = dataset.labels("train")
    rng = np.random.default_rng(int(config.get("seed", 0)))
    keep = np.sort(rng.choice(len(labels), min(len(labels), MAX_BANK), replace=False))
    try:
        features = _features(model, to_network_input(np.asarray(dataset.images("train")[keep]), card.input.crop_hw))
    except NetworkError as exc:
        return None, {"reason": f"its network has no feature layer shoal knows ({exc})"}
    detector = fit_unfamiliar(features, labels[keep], seed=int(config.get("seed", 0)))
    if detector is None:
        return None, {"reason": f"it has too few training images ({len(labels)}) to set a threshold"}
    return detector, detector.to_manifest()


def _export_onnx(model: NormalizedNet, path: Path, example: np.ndarray, detector: Unfamiliar | None) -> list[str]:
    """Export the deployed graph: probabilities, and with a detector the unfamiliar score and verdict."""
    import onnx

    exportable_pools(model)
    # Without a detector the features are not needed (and a network shoal knows no feature layer of
    # cannot give them): the graph is the softmax alone.
    module, outputs = ((_Deployed(model), [PROBABILITIES, FEATURES]) if detector
                       else (Probabilities(model), [PROBABILITIES]))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        # The exporter restores the wrapper's mode afterwards: make it eval so the model stays in eval.
        torch.onnx.export(module.eval(), (torch.from_numpy(example),), str(path), opset_version=OPSET,
                          input_names=[INPUT], output_names=outputs,
                          dynamic_axes={name: {0: "batch"} for name in (INPUT, *outputs)}, dynamo=False)
    if detector is None:
        return outputs
    graph = onnx.load(str(path))
    add_unfamiliar(graph, detector)
    onnx.save(graph, str(path))
    return [o.name for o in graph.graph.output]


def _compare_onnx(model: NormalizedNet, path: Path, pixels: np.ndarray, detector: Unfamiliar | None) -> float:
    """The largest difference between the graph and torch (probabilities and unfamiliar score)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT: pixels})
    with torch.no_grad():
        want = [torch.softmax(model(torch.from_numpy(pixels)), dim=1).numpy()]
    if detector is not None:
        want.append(detector.scores(_features(model, pixels)))
    diff = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
    if not np.isfinite(got[0]).all() or diff > ONNX_TOLERANCE:
        raise BundleError(f"the exported ONNX graph differs from the torch model by {diff:.2e} "
                          f"(allowed {ONNX_TOLERANCE:.0e}); please report this with the network name")
    return diff
