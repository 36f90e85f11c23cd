"""Fine-tuning with a frozen backbone by fitting the head, without torch: the default with ``--pretrained``.

prepare the backbone (cached) → features of the stored images (ONNX Runtime) → fit the head
(:mod:`shoal.training.head`) and the unfamiliar detector → compose the bundle's graph
(:mod:`shoal.bundle.compose`) → check it against the fitted head → write the bundle.

Torch is imported only the first time a backbone is used (to export it); see
:mod:`shoal.training.backbone`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shoal import datasets
from shoal.bundle import LABELS_FILE, MANIFEST, ONNX_FILE, WEIGHTS_FILE, manifest, staged
from shoal.bundle.card import ModelCard
from shoal.bundle.compose import INPUT, compose
from shoal.bundle.unfamiliar import Unfamiliar, fit_unfamiliar
from shoal.config import to_dict
from shoal.errors import BundleError, TrainingError
from shoal.models import ModelFolder
from shoal.preprocess import to_network_input
from shoal.store import Store
from shoal.training import backbone as backbones
from shoal.training import distributed
from shoal.training.card import model_card
from shoal.training.config import TrainConfig
from shoal.training.head import FittedHead, fit_head
from shoal.training.run import Aborted, Emitter, EventHandler, TrainResult

# Largest allowed |p_graph - p_head| on the validation images when the bundle is written.
TOLERANCE = 1e-4


def check(config: TrainConfig, dataset: Any, *, store: Store, on_event: EventHandler | None) -> None:
    """Prepare the backbone before a model is registered, so that bad weights leave nothing behind."""
    if isinstance(config.pretrained, str):  # a user's weights file: torch reads it to prepare the backbone anyway
        from shoal.networks.weights import check_weights_path

        check_weights_path(config.pretrained)
    _prepare(config, dataset, store, lambda message: on_event({"type": "prepare", "message": message})
             if on_event else None)


def fit_run(config: TrainConfig, folder: ModelFolder, store: Store, emit: Emitter, *,
            dataset: Any = None) -> TrainResult:
    """Fit the head of ``config``'s frozen backbone on its dataset, and write the bundle.

    ``dataset`` is the stored dataset when the caller has it open already (else it is loaded).
    In a data-parallel run (``--nproc``) every process computes the features of its share of the
    images; rank 0 gathers them, fits the head and writes. The other ranks call :func:`follow`.
    """
    return distributed.in_group(lambda ranks: _fit(config, folder, store, emit, ranks, dataset))


def follow(store: Store) -> TrainResult:
    """The part of a rank other than 0: rank 0's configuration, then the features of this rank's share."""
    def run(ranks: distributed.Group) -> TrainResult:
        config = ranks.share(None)
        dataset = datasets.load(config.dataset, store=store)
        folder = store.folder("model", config.name)  # rank 0's: never written, nor read here
        try:
            _features(config, dataset, _prepare(config, dataset, store, lambda message: None), ranks,
                      abort_requested=lambda: False, on_progress=lambda done, total: None)
        except Aborted:  # rank 0 records it; this rank ends as cleanly
            return TrainResult(config.name, "aborted", folder, None)
        return TrainResult(config.name, "done", folder, None)

    return distributed.in_group(run)


def _fit(config: TrainConfig, folder: ModelFolder, store: Store, emit: Emitter, ranks: distributed.Group,
         dataset: Any) -> TrainResult:
    started = time.perf_counter()
    ranks.share(config)  # the others wait for it: they start once the run is registered
    if dataset is None:
        dataset = datasets.load(config.dataset, store=store)
    prepared = _prepare(config, dataset, store, lambda message: emit({"type": "prepare", "message": message}))
    backbone, card, mean, scale, size = prepared
    folder.write_card(card)
    train_x, val_x = dataset.images("train"), dataset.images("val")
    train_y, val_y = dataset.labels("train"), dataset.labels("val")
    if len(train_y) == 0 or len(val_y) == 0:
        raise TrainingError(f"dataset {dataset.name!r} needs images in both train and val splits "
                            f"(has {len(train_y)} and {len(val_y)}); rebuild it with a larger --val")
    emit({"type": "start", "name": config.name, "classes": dataset.classes, "head": "fit", "resumed": False,
          "epoch": 0, "epochs": 1, "train_images": len(train_y), "val_images": len(val_y),
          "device": "cpu (onnxruntime)", "world_size": ranks.size})
    train_f, *flipped, val_f = _features(
        config, dataset, prepared, ranks, abort_requested=folder.abort_requested,
        on_progress=lambda done, total: emit({"type": "features", "done": done, "total": total,
                                              "elapsed_s": time.perf_counter() - started}))

    # -- fit ------------------------------------------------------------------------------------
    if folder.abort_requested():
        raise Aborted
    views_f = np.concatenate([train_f, *flipped])
    head = fit_head(views_f, np.tile(train_y, 1 + len(flipped)), num_classes=len(dataset.classes),
                    groups=np.tile(np.arange(len(train_y)), 1 + len(flipped)), seed=config.seed,
                    on_fold=lambda done, folds: emit({"type": "cross_validation", "done": done, "total": folds,
                                                      "elapsed_s": time.perf_counter() - started}))
    detector = fit_unfamiliar(train_f, train_y, seed=config.seed)
    emit({"type": "fit", **head.to_dict(), "elapsed_s": time.perf_counter() - started})
    probabilities = head.probabilities(val_f)
    record = {"epoch": 1, "train_loss": _log_loss(head.probabilities(views_f), np.tile(train_y, 1 + len(flipped))),
              **validation_metrics(probabilities, val_y),
              "val_unfamiliar": float((detector.scores(val_f) > detector.threshold).mean()) if detector else None,
              "elapsed_s": time.perf_counter() - started}
    store.update("model", config.name, summary={"epoch": 1, "best_epoch": 1, "val_accuracy": record["val_accuracy"],
                                                "world_size": ranks.size})
    emit({"type": "epoch", **record})

    # -- bundle ---------------------------------------------------------------------------------
    weights = {f"net.{k}": v for k, v in backbones.load_weights(backbone, dataset.channels).items()}
    weights[f"net.{backbone.head['weight']}"] = head.weight
    weights[f"net.{backbone.head['bias']}"] = head.bias
    weights["mean"], weights["scale"] = mean, scale
    pixels = np.asarray(val_x[:16])
    emit({"type": "export", "message": "writing the bundle (ONNX graph checked against the fitted head)"})
    out = write_bundle(folder.bundle_path, name=config.name, card=card, graph=backbone.graph_path(dataset.channels, *size),
                       weights=weights, head=head, detector=detector, config=to_dict(config), history=[record],
                       check=(pixels, probabilities[:16]))
    emit({"type": "done", "bundle": str(out), "best_epoch": 1, "elapsed_s": time.perf_counter() - started})
    return TrainResult(config.name, "done", folder.path, out, [record], 1)


def _features(config: TrainConfig, dataset: Any, prepared: tuple[Any, ...], ranks: distributed.Group, *,
              abort_requested: Callable[[], bool], on_progress: Callable[[int, int], None]) -> list[Any]:
    """The features of each view (the training images, their mirror images with ``flip``, the validation
    images), every process computing its share; on rank 0 whole, elsewhere ``None``."""
    backbone, card, mean, scale, size = prepared
    # Processes sharing a machine share its cores: one ONNX Runtime thread pool each would oversubscribe them.
    threads = config.threads or (max(1, (os.cpu_count() or 1) // ranks.world.local_size) if ranks.size > 1 else None)
    graph = backbones.FeatureGraph(backbone, channels=dataset.channels, crop=card.input.crop_hw, size=size,
                                   mean=mean, scale=scale, batch_size=max(config.batch_size, 32), threads=threads)
    train_x = dataset.images("train")
    views = [(train_x, False)] + ([(train_x, True)] if config.flip else []) + [(dataset.images("val"), False)]
    total, done = sum(len(x) for x, _ in views), 0
    computed = []
    for images, flip in views:
        if ranks.agree(abort_requested()):  # a stop asked of rank 0 stops every rank here
            raise Aborted
        share = ranks.shard(len(images))
        # Rank 0 reports for all, its share standing for each rank's (the shares differ by one image at most).
        part = graph(images[share], flip=flip, on_batch=lambda n, before=done, count=len(images): on_progress(
            before + min(count, n * ranks.size), total))
        computed.append(ranks.gather(part))
        done += len(images)
    return computed


def validation_metrics(probabilities: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """``val_loss`` (log-loss), ``val_accuracy`` and, with at least 5 classes, ``val_top5``."""
    metrics = {"val_loss": _log_loss(probabilities, truth),
               "val_accuracy": float((probabilities.argmax(1) == truth).mean())}
    if probabilities.shape[1] >= 5:
        top5 = np.argsort(-probabilities, axis=1)[:, :5]
        metrics["val_top5"] = float((top5 == truth[:, None]).any(1).mean())
    return metrics


def write_bundle(out: Path, *, name: str, card: ModelCard, graph: Path, weights: dict[str, np.ndarray],
                 head: FittedHead, detector: Unfamiliar | None, config: dict[str, Any],
                 history: list[dict[str, Any]], check: tuple[np.ndarray, np.ndarray]) -> Path:
    """Compose the deployed graph, check it against the fitted head, and write the bundle.

    Args:
        out: the bundle folder (or ``.shoal`` file).
        graph: the backbone's feature graph.
        weights: the whole network's state dict, as ``runtime="torch"`` rebuilds it.
        check: uint8 images and the probabilities the fitted head gives them.

    Raises:
        BundleError: the composed graph disagrees with the fitted head.
    """
    import onnx
    import onnxruntime as ort
    from safetensors.numpy import save_file

    model = compose(onnx.load(str(graph)), mean=np.asarray(weights["mean"], np.float32), scale=np.asarray(weights["scale"], np.float32),
                    weight=head.weight, bias=head.bias, unfamiliar=detector)
    with staged(out) as staging:
        onnx.save(model, str(staging / ONNX_FILE))
        images, want = check
        got = ort.InferenceSession(str(staging / ONNX_FILE), providers=["CPUExecutionProvider"]).run(
            None, {INPUT: to_network_input(images, card.input.crop_hw)})[0]
        diff = float(np.abs(got - want).max())
        if not np.isfinite(got).all() or diff > TOLERANCE:
            raise BundleError(f"the composed ONNX graph differs from the fitted head by {diff:.2e} "
                              f"(allowed {TOLERANCE:.0e}); please report this with the network name")
        save_file({k: np.ascontiguousarray(v, np.float32 if v.dtype.kind == "f" else v.dtype) for k, v in weights.items()},
                  str(staging / WEIGHTS_FILE), metadata={"epoch": "1"})
        (staging / LABELS_FILE).write_text("\n".join(card.labels) + "\n", encoding="utf-8")
        unfamiliar = detector.to_manifest() if detector else {
            "reason": "it has too few training images to set a threshold"}
        (staging / MANIFEST).write_text(json.dumps(manifest(
            name, card, epoch=1, history=history, training=config, unfamiliar=unfamiliar, head=head.to_dict(),
            onnx={"opset": _opset(model), "input": INPUT, "outputs": [o.name for o in model.graph.output],
                  "check": {"against": "fitted head", "images": len(images), "max_abs_diff": diff}},
            versions={"onnx": onnx.__version__, "onnxruntime": ort.__version__}), indent=2), encoding="utf-8")
    return out


def _prepare(config: TrainConfig, dataset: Any, store: Store, on_prepare: Callable[[str], None]
             ) -> tuple[backbones.Backbone, ModelCard, np.ndarray, np.ndarray, tuple[int, int]]:
    """The prepared backbone, the run's card, its normalisation and the graph's input size."""
    made: dict[str, Any] = {}

    def input_size(native: tuple[int, int], normalization: tuple[tuple[float, ...], tuple[float, ...]]
                   ) -> tuple[int, int]:
        made["card"], made["mean"], made["scale"] = model_card(config, dataset, native_size=native,
                                                               normalization=normalization)
        return made["card"].input.height, made["card"].input.width

    prepared, size = backbones.prepare(config.network, config.pretrained, channels=dataset.channels,
                                       input_size=input_size, store=store, on_prepare=on_prepare)
    return prepared, made["card"], made["mean"], made["scale"], size


def _log_loss(probabilities: np.ndarray, truth: np.ndarray) -> float:
    return float(-np.log(np.clip(probabilities[np.arange(len(truth)), truth], 1e-15, None)).mean())


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)

