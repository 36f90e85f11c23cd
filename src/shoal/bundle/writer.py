"""Writing a bundle from a trained model's folder (needs torch; reading does not)."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path
import numpy as np
import torch

from shoal import __version__
from shoal.bundle import FORMAT_VERSION, LABELS_FILE, MANIFEST, ONNX_FILE, SUFFIX, WEIGHTS_FILE, zip_bundle
from shoal.bundle.card import ModelCard
from shoal.errors import BundleError, NotFoundError
from shoal.models import ModelFolder
from shoal.networks.export import exportable_pools
from shoal.networks.normalized import NormalizedNet, Probabilities, rebuild
from shoal.networks.weights import load_resume_point, load_weights, save_weights
from shoal.preprocess import to_network_input
from shoal.store import Store

OPSET = 17
ONNX_TOLERANCE = 1e-4  # largest allowed |p_onnx - p_torch| on the check images


def export_model(name: str, *, epoch: int | str = "best", store: Store | None = None,
                 out: str | Path | None = None) -> Path:
    """Write the bundle of a trained model, for its best epoch, last epoch or a kept snapshot.

    Args:
        name: the model in the store.
        epoch: ``"best"`` (highest validation accuracy), ``"last"``, or an epoch with a snapshot.
        store: the store; default ``SHOAL_HOME``.
        out: a folder, or a path ending in ``.shoal`` for the single-file form;
            default ``<model folder>/bundle``.

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
    model = rebuild(card.architecture, len(card.labels), channels=card.input.channels,
                    mean_shape=card.normalization.mean_shape)
    chosen = _load_epoch(folder, model, epoch)
    model.eval()
    history = folder.history()
    out = Path(out) if out is not None else folder.bundle_path

    with tempfile.TemporaryDirectory(prefix="shoal-bundle-", dir=out.parent if out.parent.exists() else None) as tmp:
        staging = Path(tmp) / "bundle"
        staging.mkdir()
        save_weights(staging / WEIGHTS_FILE, model, epoch=chosen)
        pixels = _check_images(config["dataset"], card, store)
        _export_onnx(model, staging / ONNX_FILE, pixels[:1])
        diff = _compare_onnx(model, staging / ONNX_FILE, pixels)
        (staging / LABELS_FILE).write_text("\n".join(card.labels) + "\n", encoding="utf-8")
        manifest = {
            "format": FORMAT_VERSION,
            "shoal_version": __version__,
            "name": name,
            **card.to_dict(),
            "epoch": chosen,
            "metrics": next((h for h in history if h["epoch"] == chosen), None),
            "history": history,
            "training": config,
            "onnx": {"opset": OPSET, "input": "pixels", "output": "probabilities",
                     "check": {"images": len(pixels), "max_abs_diff": diff}},
            "versions": {"shoal": __version__, "torch": torch.__version__},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == SUFFIX:
            return zip_bundle(staging, out)
        if out.exists():
            shutil.rmtree(out)
        shutil.move(str(staging), out)
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


def _check_images(dataset_name: str, card: ModelCard, store: Store) -> np.ndarray:
    """Up to 16 real validation images as network input, or random pixels if the dataset is gone."""
    from shoal import datasets

    spec = card.input
    try:
        images = datasets.load(dataset_name, store=store).images("val")[:16]
    except NotFoundError:
        images = np.random.default_rng(0).integers(
            0, 256, (4, spec.dataset_height, spec.dataset_width, spec.channels), dtype=np.uint8)
    return to_network_input(np.asarray(images), spec.crop_hw) if len(images) else to_network_input(
        np.zeros((1, spec.height, spec.width, spec.channels), np.uint8), None)


def _export_onnx(model: NormalizedNet, path: Path, example: np.ndarray) -> None:
    exportable_pools(model)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        # The exporter restores the wrapper's mode afterwards: make it eval so the model stays in eval.
        torch.onnx.export(Probabilities(model).eval(), (torch.from_numpy(example),), str(path), opset_version=OPSET,
                          input_names=["pixels"], output_names=["probabilities"],
                          dynamic_axes={"pixels": {0: "batch"}, "probabilities": {0: "batch"}}, dynamo=False)


def _compare_onnx(model: NormalizedNet, path: Path, pixels: np.ndarray) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"pixels": pixels})[0]
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(pixels)), dim=1).numpy()
    diff = float(np.abs(got - want).max())
    if diff > ONNX_TOLERANCE:
        raise BundleError(f"the exported ONNX graph differs from the torch model by {diff:.2e} "
                          f"(allowed {ONNX_TOLERANCE:.0e}); please report this with the network name")
    return diff
