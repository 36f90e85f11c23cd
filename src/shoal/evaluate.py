"""How good is a model? Accuracy, loss, confusion matrix, per-class scores, telling images.

:func:`evaluate` runs a model over a stored dataset's split, or over any folder with one
sub-folder per class, and returns an :class:`Evaluation`: accuracy (and top-5), mean
cross-entropy, the confusion matrix, precision/recall/F1 per class, the most confidently
wrong images, and for each class the images the model is surest belong to it (DIGITS'
"Top N" page). :func:`write_html` turns it into a self-contained HTML report with the
confusion matrix and the images as pictures.

Torch-free: it classifies through :func:`shoal.load` (ONNX Runtime by default).

Example:
    >>> from shoal.evaluate import evaluate, write_html       # doctest: +SKIP
    >>> report = evaluate("dolphins.shoal", dataset="dolphins")  # doctest: +SKIP
    >>> report.accuracy, report.confusion                      # doctest: +SKIP
    (1.0, [[16, 0], [0, 14]])
    >>> write_html(report, "report.html")                      # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shoal.errors import ConfigError, DatasetError
from shoal.inference import Classifier, load
from shoal.store import Store

SPLITS = ("train", "val", "test")
_EPS = 1e-12


@dataclass(frozen=True)
class Judged:
    """One image's verdict."""

    source: str  # file, or "<split>[index]" for a stored image without a known source
    true: str  # its class
    predicted: str  # the model's top class
    probability: float  # the model's probability for ``predicted``
    true_probability: float  # the model's probability for ``true``
    index: int  # position among the evaluated images

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "true": self.true, "predicted": self.predicted,
                "probability": self.probability, "true_probability": self.true_probability}


@dataclass
class Evaluation:
    """The scores of a model on a set of labelled images.

    Attributes:
        model: the bundle's path.
        on: what was evaluated, e.g. ``dataset 'dolphins' (val)`` or ``folder photos/``.
        labels: the model's classes (the confusion matrix's order).
        count: images evaluated.
        accuracy: top-1 accuracy.
        top5: top-5 accuracy when the model has more than 5 classes, else ``None``.
        loss: mean cross-entropy of the predicted probabilities (natural log).
        confusion: ``confusion[t][p]`` = images of class ``t`` predicted as ``p``.
        per_class: per class: ``label``, ``precision``, ``recall``, ``f1``, ``support``.
        wrong: the most confidently wrong images, surest first.
        top_per_class: per class, the images the model is surest belong to it.
        skipped: files that could not be read (``source``, ``error``).
    """

    model: str
    on: str
    labels: list[str]
    count: int
    accuracy: float
    top5: float | None
    loss: float
    confusion: list[list[int]]
    per_class: list[dict[str, Any]]
    wrong: list[Judged]
    top_per_class: dict[str, list[Judged]]
    skipped: list[dict[str, str]] = field(default_factory=list)
    pixels: Callable[[int], np.ndarray] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every figure and list."""
        return {"model": self.model, "on": self.on, "labels": self.labels, "count": self.count,
                "accuracy": self.accuracy, "top5": self.top5, "loss": self.loss, "confusion": self.confusion,
                "per_class": self.per_class, "wrong": [j.to_dict() for j in self.wrong],
                "top_per_class": {k: [j.to_dict() for j in v] for k, v in self.top_per_class.items()},
                "skipped": self.skipped}

    def summary(self) -> str:
        """A plain-text report: figures, confusion matrix, per-class table, wrong images."""
        lines = [f"Model {self.model} on {self.on}: {self.count} images",
                 f"accuracy {self.accuracy:.2%}" + (f"  top-5 {self.top5:.2%}" if self.top5 is not None else "")
                 + f"  loss {self.loss:.4f}", "", "confusion matrix (rows: true class, columns: predicted)"]
        width = max(7, *(len(label) for label in self.labels))
        lines.append(" " * (width + 2) + "".join(f"{label[:width]:>{width + 2}}" for label in self.labels))
        for label, row in zip(self.labels, self.confusion):
            lines.append(f"{label:>{width}}  " + "".join(f"{n:>{width + 2}}" for n in row))
        lines += ["", f"{'class':>{width}}  {'precision':>9}  {'recall':>9}  {'F1':>9}  {'images':>6}"]
        for row in self.per_class:
            lines.append(f"{row['label']:>{width}}  {_pct(row['precision'])}  {_pct(row['recall'])}  "
                         f"{_pct(row['f1'])}  {row['support']:>6}")
        if self.wrong:
            lines += ["", "most confidently wrong:"]
            lines += [f"  {j.source}  is {j.true}, predicted {j.predicted} {j.probability:.2%}" for j in self.wrong]
        if self.skipped:
            lines += ["", f"skipped {len(self.skipped)} unreadable file(s):"]
            lines += [f"  {s['error']}" for s in self.skipped]
        return "\n".join(lines)


def _pct(value: float | None) -> str:
    return f"{'n/a':>9}" if value is None else f"{value:>9.2%}"


def evaluate(model: str | os.PathLike[str] | Classifier, *, dataset: str | None = None, split: str = "val",
             folder: str | os.PathLike[str] | None = None, wrong: int = 10, top_per_class: int = 9,
             store: Store | None = None, batch_size: int = 32) -> Evaluation:
    """Score a model on a stored dataset's split, or on a folder with one sub-folder per class.

    Args:
        model: a loaded :class:`~shoal.inference.Classifier`, or what :func:`shoal.load` takes.
        dataset: a stored dataset; its images are used as stored when the model was trained
            at the same size, resize mode and channels (else they are prepared again from
            their source files).
        split: ``val`` (default), ``test`` or ``train``.
        folder: instead of a dataset, a folder of class sub-folders (names = the model's labels).
        wrong: how many of the most confidently wrong images to keep.
        top_per_class: how many of the surest images to keep per class.
        store: where datasets live; default ``SHOAL_HOME``.
        batch_size: images per run of the network.

    Returns:
        The :class:`Evaluation`.

    Raises:
        ConfigError: neither or both of ``dataset`` and ``folder``; a bad ``split``, ``wrong`` or
            ``top_per_class``.
        DatasetError: the split is empty, a class is unknown to the model, or the folder has
            no readable image.
        NotFoundError: no such dataset.
    """
    if (dataset is None) == (folder is None):
        raise ConfigError("give either dataset (a stored dataset's name) or folder (a folder of class sub-folders)")
    for name, value in (("wrong", wrong), ("top_per_class", top_per_class)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be an int >= 0, got {value!r}")
    classifier = model if isinstance(model, Classifier) else load(model)
    if dataset is not None:
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        probs, truth, sources, skipped, pixels = _on_dataset(classifier, dataset, split, store, batch_size)
        on = f"dataset {dataset!r} ({split})"
    else:
        probs, truth, sources, skipped, pixels = _on_folder(classifier, Path(folder), batch_size)  # type: ignore[arg-type]
        on = f"folder {folder}"
    return score(classifier.labels, probs, truth, sources, model=str(classifier.path), on=on, wrong=wrong,
                 top_per_class=top_per_class, skipped=skipped, pixels=pixels)


def score(labels: list[str], probs: np.ndarray, truth: np.ndarray, sources: list[str], *, model: str = "", on: str = "",
          wrong: int = 10, top_per_class: int = 9, skipped: list[dict[str, str]] | None = None,
          pixels: Callable[[int], np.ndarray] | None = None) -> Evaluation:
    """Turn probabilities and true classes into an :class:`Evaluation` (no model needed).

    Args:
        labels: class names, the columns of ``probs``.
        probs: ``N×classes`` probabilities.
        truth: ``N`` true class indices.
        sources: ``N`` names of the images.
    """
    n, k = probs.shape
    predicted = probs.argmax(1)
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    true_p = probs[np.arange(n), truth]
    loss = float(-np.log(np.maximum(true_p, _EPS)).mean())
    top5 = None
    if k > 5:
        top5 = float((np.argsort(-probs, 1)[:, :5] == truth[:, None]).any(1).mean())
    per_class = []
    for c, label in enumerate(labels):
        tp = int(confusion[c, c])
        column, row = int(confusion[:, c].sum()), int(confusion[c].sum())
        precision = tp / column if column else 0.0  # never predicted: 0, as scikit-learn reports it
        recall = tp / row if row else None  # no images of the class: undefined
        f1 = None if recall is None else (2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        per_class.append({"label": label, "precision": precision, "recall": recall, "f1": f1, "support": row})

    def judged(i: int) -> Judged:
        return Judged(sources[i], labels[truth[i]], labels[predicted[i]], float(probs[i, predicted[i]]),
                      float(true_p[i]), i)

    wrong_rows = np.flatnonzero(predicted != truth)
    wrong_rows = wrong_rows[np.argsort(-probs[wrong_rows, predicted[wrong_rows]], kind="stable")][:wrong]
    tops = {label: [judged(int(i)) for i in np.argsort(-probs[:, c], kind="stable")[:top_per_class]]
            for c, label in enumerate(labels)}
    return Evaluation(model=model, on=on, labels=list(labels), count=n, accuracy=float((predicted == truth).mean()),
                      top5=top5, loss=loss, confusion=confusion.tolist(), per_class=per_class,
                      wrong=[judged(int(i)) for i in wrong_rows], top_per_class=tops, skipped=skipped or [],
                      pixels=pixels)


def _label_index(classifier: Classifier, classes: list[str] | tuple[str, ...], where: str) -> np.ndarray:
    unknown = [c for c in classes if c not in classifier.labels]
    if unknown:
        raise DatasetError(f"{where} has classes the model does not know: {', '.join(map(repr, unknown))} "
                           f"(the model's classes: {', '.join(map(repr, classifier.labels))}); evaluate on images "
                           "of the model's classes")
    return np.array([classifier.labels.index(c) for c in classes], np.int64)


def _on_dataset(classifier: Classifier, name: str, split: str, store: Store | None, batch_size: int
                ) -> tuple[np.ndarray, np.ndarray, list[str], list[dict[str, str]], Callable[[int], np.ndarray]]:
    from shoal import datasets

    ds = datasets.load(name, store=store)
    to_model = _label_index(classifier, ds.classes, f"dataset {name!r}")
    images, labels, sources = ds.images(split), ds.labels(split), ds.sources(split)
    if len(labels) == 0:
        raise DatasetError(f"dataset {name!r} has no {split} images; evaluate another split "
                           f"(it has {', '.join(f'{s}: {ds.count(s)}' for s in SPLITS)})")
    spec = classifier.input
    same = (tuple(ds.size) == spec.dataset_wh and ds.channels == spec.channels and ds.resize_mode == spec.resize_mode)
    if same:  # the stored pixels are exactly what prepare() would make of the sources
        probs = np.concatenate([classifier.runtime(classifier.network_input(list(images[i : i + batch_size])))
                                for i in range(0, len(labels), batch_size)])
        return probs, to_model[labels], sources, [], lambda i: np.asarray(images[i])
    keep, rows, skipped = _predict_files(classifier, sources, batch_size)
    if not rows:
        raise DatasetError(f"none of the {split} images of dataset {name!r} could be read again from their source "
                           f"files (the model needs {spec.dataset_width}x{spec.dataset_height} "
                           f"{spec.resize_mode}, the dataset stores {ds.size[0]}x{ds.size[1]} {ds.resize_mode})")
    kept_sources = [sources[i] for i in keep]
    return (np.asarray(rows, np.float32), to_model[labels[keep]], kept_sources, skipped,
            lambda i: classifier.prepare(kept_sources[i]))


def _predict_files(classifier: Classifier, sources: list[str], batch_size: int
                   ) -> tuple[list[int], list[list[float]], list[dict[str, str]]]:
    """Probabilities (in the model's label order) of the files that could be read, and why others could not."""
    keep, rows, skipped = [], [], []
    for i, result in enumerate(classifier.predict_iter(sources, None, batch_size=batch_size)):
        if result.ok:
            keep.append(i)
            scores = dict(result.predictions)
            rows.append([scores[label] for label in classifier.labels])
        else:
            skipped.append({"source": result.source, "error": result.error or ""})
    return keep, rows, skipped


def _on_folder(classifier: Classifier, folder: Path, batch_size: int
               ) -> tuple[np.ndarray, np.ndarray, list[str], list[dict[str, str]], Callable[[int], np.ndarray]]:
    from shoal.data.scan import scan_folder

    found = scan_folder(folder)
    classes = [c for c, files in found.files.items() if files]
    if not classes:
        raise DatasetError(f"'{folder}' has no class sub-folders with images: give a folder with one sub-folder "
                           "per class, named like the model's classes")
    to_model = _label_index(classifier, classes, f"folder '{folder}'")
    paths = [str(p) for c in classes for p in found.files[c]]
    truth_all = np.array([to_model[i] for i, c in enumerate(classes) for _ in found.files[c]], np.int64)
    keep, rows, skipped = _predict_files(classifier, paths, batch_size)
    if not rows:
        raise DatasetError(f"no image in '{folder}' could be read ({len(skipped)} file(s) tried)")
    kept = [paths[i] for i in keep]
    return np.asarray(rows, np.float32), truth_all[keep], kept, skipped, lambda i: classifier.prepare(kept[i])


# -- HTML report ---------------------------------------------------------------------------------
def write_html(evaluation: Evaluation, path: str | os.PathLike[str], *, thumbnail: int = 96) -> Path:
    """Write a self-contained HTML report (images embedded as PNG data).

    Args:
        evaluation: from :func:`evaluate`.
        path: the ``.html`` file to write.
        thumbnail: the longest side of each picture, in pixels.

    Returns:
        The written path.
    """
    e = evaluation
    out = Path(path)
    esc = html.escape
    peak = max(1, max((max(row) for row in e.confusion), default=1))
    cells = []
    for t, row in enumerate(e.confusion):
        tds = "".join(
            f'<td style="background:rgba({"40,140,60" if t == p else "200,40,40"},{0.12 + 0.88 * n / peak:.2f})">{n}</td>'
            for p, n in enumerate(row))
        cells.append(f"<tr><th>{esc(e.labels[t])}</th>{tds}</tr>")
    matrix = (f"<table class=cm><tr><th>true \\ predicted</th>{''.join(f'<th>{esc(x)}</th>' for x in e.labels)}</tr>"
              f"{''.join(cells)}</table>")
    per_class = "".join(f"<tr><td>{esc(r['label'])}</td><td>{_fmt(r['precision'])}</td><td>{_fmt(r['recall'])}</td>"
                        f"<td>{_fmt(r['f1'])}</td><td>{r['support']}</td></tr>" for r in e.per_class)

    def figure(j: Judged, caption: str) -> str:
        img = _data_uri(e.pixels(j.index), thumbnail) if e.pixels is not None else ""
        return (f'<figure><img src="{img}" alt="{esc(j.source)}" title="{esc(j.source)}">'
                f"<figcaption>{esc(caption)}</figcaption></figure>")

    wrong = "".join(figure(j, f"{j.true} → {j.predicted} {j.probability:.1%}") for j in e.wrong)
    tops = "".join(
        f"<h3>{esc(label)}</h3><div class=grid>"
        + "".join(figure(j, f"{j.probability:.1%}" + ("" if j.true == label else f" (is {j.true})")) for j in items)
        + "</div>" for label, items in e.top_per_class.items())
    skipped = "".join(f"<li>{esc(s['error'])}</li>" for s in e.skipped)
    top5 = f", top-5 {e.top5:.2%}" if e.top5 is not None else ""
    page = f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>shoal evaluation: {esc(e.on)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222 }}
table {{ border-collapse: collapse; margin: 1em 0 }} td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right }}
.grid {{ display: flex; flex-wrap: wrap; gap: 10px }} figure {{ margin: 0; text-align: center; font-size: 12px }}
figure img {{ display: block; max-width: {thumbnail}px; max-height: {thumbnail}px; image-rendering: pixelated }}
</style></head><body>
<h1>Evaluation of {esc(e.model)}</h1>
<p>On {esc(e.on)}: {e.count} images. Accuracy <b>{e.accuracy:.2%}</b>{top5}, loss {e.loss:.4f}.</p>
<h2>Confusion matrix</h2>{matrix}
<h2>Per class</h2><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>images</th></tr>{per_class}</table>
<h2>Most confidently wrong</h2>{f'<div class=grid>{wrong}</div>' if wrong else '<p>None: every image is right.</p>'}
<h2>Surest images per class</h2>{tops}
{f'<h2>Skipped</h2><ul>{skipped}</ul>' if skipped else ''}
</body></html>
"""
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2%}"


def _data_uri(pixels: np.ndarray, side: int) -> str:
    from PIL import Image

    arr = np.asarray(pixels, np.uint8)
    img = Image.fromarray(arr[:, :, 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr)
    scale = side / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
