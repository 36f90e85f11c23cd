"""Classification: one image, many (with ground truth from class folders), heat-maps, evaluation."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from shoal.errors import InputError
from shoal.server.config import Settings
from shoal.server.security import fetch_image, require_code_allowed, safe_extract
from shoal.server.services.assets import upload_dir
from shoal.server.services.caches import Classifiers
from shoal.server.services.downloads import bundle_path
from shoal.store import Store
from shoal.trust import is_network_file


def classify(classifiers: Classifiers, store: Store, settings: Settings, name: str, *, data: bytes | None,
             filename: str | None, url: str | None, top: int) -> dict[str, Any]:
    """Top classes of one image: the same JSON object ``shoal classify --json`` prints for it."""
    if url and data is not None:
        raise InputError("send one image: either a file in the 'file' field or an address in the 'url' field")
    if not url and data is None:
        raise InputError("send an image: a file in the 'file' field, or an http(s) address in the 'url' field")
    classifier = classifiers.get(bundle_path(store, name))
    source = url or filename or "upload"
    try:
        result = classifier.predict(fetch_image(url, settings) if url else data, top=top)
    except InputError as exc:
        raise InputError(str(exc).replace("<bytes>", source, 1)) from None
    out = result.to_dict()
    out["source"] = source
    return out


def classify_many(classifiers: Classifiers, store: Store, settings: Settings, name: str, *,
                  files: list[tuple[str, bytes]], archive: Path | None, top: int) -> dict[str, Any]:
    """Classify several uploaded images, or a zip of class folders whose names are the ground truth.

    Returns one row per image (top classes; with ground truth, whether the true class is first
    and among the top 5), top-1/top-5 accuracy and accuracy per class when there is ground truth.
    """
    from shoal.inference.sources import list_images

    classifier = classifiers.get(bundle_path(store, name), bulk=True)
    items: list[tuple[str, Any, str | None]] = []  # (shown name, payload, true class)
    workdir = None
    try:
        if archive is not None:
            workdir = Path(tempfile.mkdtemp(prefix="classify-", dir=upload_dir(store)))
            root = safe_extract(archive, workdir / "x", settings)
            for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX"))):
                for path in list_images(folder):
                    items.append((path.relative_to(root).as_posix(), path, folder.name))
            for path in sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")):
                items.append((path.name, path, None))
        for filename, data in files:
            items.append((filename, data, None))
        if not items:
            raise InputError("no images to classify: upload image files, or a zip with one folder of images per class")
        results = classifier.predict([payload for _, payload, _ in items], top=max(top, 5))
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    rows, per_class = [], {}
    labels = set(classifier.labels)
    for (shown, _, truth), result in zip(items, results):
        found = result.to_dict()
        ranked = [p["label"] for p in found["predictions"]]
        row: dict[str, Any] = {"source": shown, "truth": truth, "error": result.error,
                               "predictions": found["predictions"][:top]}
        for key in ("unfamiliar", "unfamiliar_score", "unfamiliar_reason"):  # as 'shoal classify --json' has them
            if key in found:
                row[key] = found[key]
        if truth is not None and result.error is None:
            row["top1"] = bool(ranked and ranked[0] == truth)
            row["top5"] = truth in ranked[:5]
            stats = per_class.setdefault(truth, {"images": 0, "top1": 0, "top5": 0, "known": truth in labels})
            stats["images"] += 1
            stats["top1"] += row["top1"]
            stats["top5"] += row["top5"]
        rows.append(row)
    judged = [r for r in rows if "top1" in r]
    summary: dict[str, Any] = {"images": len(rows), "errors": sum(1 for r in rows if r["error"]),
                               "with_truth": len(judged), "unfamiliar": None}
    if classifier.unfamiliar_threshold is None:
        summary["unfamiliar_reason"] = classifier.unfamiliar_reason
    else:
        summary["unfamiliar"] = sum(1 for r in rows if r.get("unfamiliar"))
    if judged:
        summary["top1_accuracy"] = sum(r["top1"] for r in judged) / len(judged)
        summary["top5_accuracy"] = sum(r["top5"] for r in judged) / len(judged)
    classes = [{"label": c, "images": s["images"], "top1_accuracy": s["top1"] / s["images"],
                "top5_accuracy": s["top5"] / s["images"], "known": s["known"]} for c, s in sorted(per_class.items())]
    return {"model": name, "summary": summary, "per_class": classes, "results": rows}


def heatmap_png(classifiers: Classifiers, store: Store, settings: Settings, name: str, *, data: bytes | None,
                filename: str | None, url: str | None, target: str | None) -> tuple[bytes, str, float]:
    """Grad-CAM overlay of one image (PNG bytes), the class it explains and its probability."""
    import io

    if bool(url) == (data is not None):
        raise InputError("send one image: either a file in the 'file' field or an address in the 'url' field")
    classifier = classifiers.get(bundle_path(store, name))
    if is_network_file(classifier.manifest.get("architecture")):
        require_code_allowed(settings, f"a heat-map of model {name!r} (its network is "
                                       f"{classifier.manifest['architecture']!r})")
    source = url or filename or "upload"
    with classifiers.torch_lock:  # Grad-CAM hooks the shared torch model: one image at a time
        try:
            heat = classifier.heatmap(fetch_image(url, settings) if url else data, target)
        except InputError as exc:
            raise InputError(str(exc).replace("<bytes>", source, 1)) from None
    buffer = io.BytesIO()
    image = heat.image
    if max(image.size) < 224:  # small inputs (LeNet's 28 px) are enlarged to be seen
        factor = -(-224 // max(image.size))
        image = image.resize((image.width * factor, image.height * factor), resample=0)
    image.save(buffer, format="PNG")
    return buffer.getvalue(), heat.label, heat.probability


def evaluation(classifiers: Classifiers, store: Store, name: str, *, split: str, wrong: int,
               per_class: int) -> dict[str, Any]:
    """Scores of a model on a split of the dataset it was trained on (:func:`shoal.evaluate.evaluate`), with thumbnails."""
    from shoal.evaluate import evaluate, thumbnail_uri

    result = evaluate(classifiers.get(bundle_path(store, name), bulk=True), split=split, wrong=wrong,
                      top_per_class=per_class, store=store)

    def item(j: Any) -> dict[str, Any]:
        out = {"source": os.path.basename(j.source), "truth": j.true, "predicted": j.predicted,
               "probability": j.probability, "true_probability": j.true_probability,
               "unfamiliar": j.unfamiliar, "unfamiliar_score": j.unfamiliar_score}
        if result.pixels is not None:
            out["image"] = thumbnail_uri(result.pixels(j.index))
        return out

    return {
        "model": name, "dataset": result.dataset, "split": split, "on": result.on, "images": result.count,
        "accuracy": result.accuracy, "top5_accuracy": result.top5, "log_loss": result.log_loss,
        "calibration": result.calibration.to_dict(), "labels": result.labels,
        "confusion_matrix": result.confusion, "per_class": result.per_class,
        "confidently_wrong": [item(j) for j in result.wrong],
        "most_confident": {label: [item(j) for j in items] for label, items in result.top_per_class.items()},
        "unfamiliar_count": result.unfamiliar_count, "unfamiliar_rate": result.unfamiliar_rate,
        "unfamiliar": [item(j) for j in result.unfamiliar], "unfamiliar_reason": result.unfamiliar_reason,
        "skipped": result.skipped,
    }
