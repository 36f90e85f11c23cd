"""Classification: one image, many (with ground truth from class folders), heat-maps, evaluation."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shoal.errors import InputError
from shoal.server.config import Settings
from shoal.server.security import confine, fetch_image, require_code_allowed, safe_extract
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
        results = classifier.predict([payload for _, payload, _ in items], top=None)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    return _many(classifier, name, items, results, top=top)


MAX_LIST_IMAGES = 5000
"""The most images one list file may send through :func:`classify_list` (one request classifies them all)."""


def classify_list(classifiers: Classifiers, store: Store, settings: Settings, name: str, *, list_file: str,
                  top: int) -> dict[str, Any]:
    """Classify the images a server-side list file names (DIGITS' "classify many" from a list).

    The list file must lie inside the allowed folders, and so must every image it lists (links
    resolved), as for a dataset build; it is read through the bounded list reader. A line may
    end in the image's class, by name or by index (a DIGITS ``val.txt``), which becomes the
    ground truth. Lines that cannot be classified come back as rows with their ``error``.
    The answer is :func:`classify_many`'s, plus ``list_file``.
    """
    from shoal.data.scan import read_image_list

    path = confine(list_file, settings.roots, what="list file")
    classifier = classifiers.get(bundle_path(store, name), bulk=True)
    listed = read_image_list(path, within=[str(r) for r in settings.roots], limit=MAX_LIST_IMAGES)
    labels = list(classifier.labels)

    def truth(label: str | None) -> str | None:
        if label is None or label in labels or not label.isdigit() or int(label) >= len(labels):
            return label
        return labels[int(label)]  # DIGITS' lists give the class's index in labels.txt

    items = [(str(i.path), i.path, truth(i.label)) for i in listed.images]
    results = classifier.predict([payload for _, payload, _ in items], top=None) if items else []
    out = _many(classifier, name, items, results, top=top,
                refused=[(s.path, s.reason) for s in listed.skipped])
    out["list_file"] = str(path)
    return out


def _many(classifier: Any, name: str, items: list[tuple[str, Any, str | None]], results: list[Any], *, top: int,
          refused: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """The answer of classify-many: a row per image (and per refused one); with ground truth, the scores of
    :func:`shoal.evaluate.score` over the images of the model's classes (one of another class counts as missed).

    ``results`` hold every class's probability (``predict(..., top=None)``); the rows show the ``top`` first.
    """
    import numpy as np

    from shoal.evaluate import score

    labels = list(classifier.labels)
    rows: list[dict[str, Any]] = []
    scored: list[tuple[str, str, Any]] = []  # (shown name, true class, result) of the images of known classes
    others: dict[str, int] = {}  # images per true class the model does not have
    for (shown, _, truth), result in zip(items, results):
        found = result.to_dict()
        ranked = [label for label, _ in result.predictions]
        row: dict[str, Any] = {"source": shown, "truth": truth, "error": result.error,
                               "predictions": found["predictions"][:top]}
        for key in ("unfamiliar", "unfamiliar_score", "unfamiliar_reason"):  # as 'shoal classify --json' has them
            if key in found:
                row[key] = found[key]
        if truth is not None and result.error is None:
            row["top1"] = bool(ranked and ranked[0] == truth)
            row["top5"] = truth in ranked[:5]
            if truth in labels:
                scored.append((shown, truth, result))
            else:
                others[truth] = others.get(truth, 0) + 1
        rows.append(row)
    rows += [{"source": shown, "truth": None, "error": reason, "predictions": []} for shown, reason in refused]
    judged = len(scored) + sum(others.values())
    summary: dict[str, Any] = {"images": len(rows), "errors": sum(1 for r in rows if r["error"]),
                               "with_truth": judged, "unfamiliar": None}
    if classifier.unfamiliar_threshold is None:
        summary["unfamiliar_reason"] = classifier.unfamiliar_reason
    else:
        summary["unfamiliar"] = sum(1 for r in rows if r.get("unfamiliar"))
    classes = [{"label": label, "images": n, "top1_accuracy": 0.0, "top5_accuracy": 0.0, "known": False}
               for label, n in others.items()]
    if scored:
        probs = np.array([[dict(r.predictions)[label] for label in labels] for _, _, r in scored], np.float64)
        truth = np.array([labels.index(t) for _, t, _ in scored], np.int64)
        result = score(labels, probs, truth, [shown for shown, _, _ in scored], name=name)
        present = [c for c in result.per_class if c["support"]]
        classes += [{"label": c["label"], "images": c["support"], "top1_accuracy": c["recall"],
                     "top5_accuracy": c["top5"], "known": True} for c in present]
        summary["top1_accuracy"] = sum(c["recall"] * c["support"] for c in present) / judged
        summary["top5_accuracy"] = sum(c["top5"] * c["support"] for c in present) / judged
    elif judged:
        summary["top1_accuracy"] = summary["top5_accuracy"] = 0.0
    return {"model": name, "summary": summary, "per_class": sorted(classes, key=lambda c: c["label"]),
            "results": rows}


def torch_view(classifiers: Classifiers, store: Store, settings: Settings, name: str, *, data: bytes | None,
               filename: str | None, url: str | None, what: str, view: Callable[[Any, Any], Any]) -> Any:
    """Look inside the torch network at one image (a heat-map, the layers): ``view(classifier, image)``.

    Raises:
        InputError: not exactly one image was sent, or it cannot be read (named as it was sent).
        HTTPException: 403 when the network is a ``.py`` file and the server does not run code.
    """
    if bool(url) == (data is not None):
        raise InputError("send one image: either a file in the 'file' field or an address in the 'url' field")
    classifier = classifiers.get(bundle_path(store, name))
    if is_network_file(classifier.manifest.get("architecture")):
        require_code_allowed(settings, f"{what} of model {name!r} (its network is "
                                       f"{classifier.manifest['architecture']!r})")
    source = url or filename or "upload"
    with classifiers.torch_lock:  # the hooks go on the shared torch model: one image at a time
        try:
            return view(classifier, fetch_image(url, settings) if url else data)
        except InputError as exc:
            raise InputError(str(exc).replace("<bytes>", source, 1)) from None


def heatmap_png(classifiers: Classifiers, store: Store, settings: Settings, name: str, *, data: bytes | None,
                filename: str | None, url: str | None, target: str | None) -> tuple[bytes, str, float]:
    """Grad-CAM overlay of one image (PNG bytes), the class it explains and its probability."""
    import io

    heat = torch_view(classifiers, store, settings, name, data=data, filename=filename, url=url,
                      what="a heat-map", view=lambda classifier, image: classifier.heatmap(image, target))
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
