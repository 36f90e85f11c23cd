"""How good is a model? Accuracy, log-loss, calibration, confusion matrix, per-class scores, telling images.

:func:`evaluate` runs a model over a stored dataset's split (by default the validation split
of the dataset it was trained on), or over any folder with one sub-folder per class, and
returns an :class:`Evaluation`: accuracy (and top-5), log-loss (mean cross-entropy), the
expected calibration error with its reliability diagram (:func:`calibration`), the
confusion matrix, precision/recall/F1 per class, the most confidently wrong images, for
each class the images predicted as it, surest first (DIGITS' "Top N" page), and the images
the model finds unfamiliar (like none of its training images: their probabilities say little).
:func:`write_html` turns it into a self-contained HTML report with the confusion matrix,
the reliability diagram and the images as pictures.

Torch-free: it classifies through :func:`shoal.load` (ONNX Runtime by default).

Example:
    >>> from shoal.evaluate import evaluate, write_html       # doctest: +SKIP
    >>> report = evaluate("dolphins.shoal", dataset="dolphins")  # doctest: +SKIP
    >>> report.accuracy, report.confusion                      # doctest: +SKIP
    (1.0, [[16, 0], [0, 14]])
    >>> report.log_loss, report.calibration.ece                # doctest: +SKIP
    (0.0213, 0.0187)
    >>> write_html(report, "report.html")                      # doctest: +SKIP
"""

from __future__ import annotations

import html
import io
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from shoal.config import check_int
from shoal.data.imageops import png_uri
from shoal.errors import ConfigError, DatasetError, NotFoundError
from shoal.inference import Classifier, load
from shoal.store import Store

if TYPE_CHECKING:
    from shoal.data.dataset import Dataset

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
    unfamiliar: bool | None = None  # like none of the training images; None when the model cannot tell
    unfamiliar_score: float | None = None  # cosine distance to the k-th nearest training image

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "true": self.true, "predicted": self.predicted,
                "probability": self.probability, "true_probability": self.true_probability,
                "unfamiliar": self.unfamiliar, "unfamiliar_score": self.unfamiliar_score}


@dataclass(frozen=True)
class ReliabilityBin:
    """One bar of a reliability diagram: the images whose top-1 confidence is in ``(low, high]``."""

    low: float  # the bin's lower edge (the first bin also holds confidence 0)
    high: float  # its upper edge, included
    count: int  # images in the bin
    confidence: float | None  # their mean top-1 probability; None when the bin is empty
    accuracy: float | None  # the share of them classified right; None when the bin is empty


@dataclass(frozen=True)
class Calibration:
    """How well a model's confidence matches its accuracy (see :func:`calibration`).

    Attributes:
        ece: the expected calibration error, 0 (calibrated) to 1: the gap between mean
            confidence and accuracy per bin, averaged with the bins' image counts as weights.
        bins: the reliability diagram, one :class:`ReliabilityBin` per equal-width bin, empty ones included.
    """

    ece: float
    bins: tuple[ReliabilityBin, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"ece": self.ece, "bins": [asdict(b) for b in self.bins]}


def calibration(probabilities: np.ndarray, truth: np.ndarray, bins: int = 10) -> Calibration:
    """The expected calibration error and reliability diagram of top-1 predictions.

    The images are put into ``bins`` equal-width bins of their top-1 probability (the
    confidence), ``(0, 1/bins]``, ..., ``((bins-1)/bins, 1]``. In each bin the mean confidence is
    compared with the accuracy, and the expected calibration error is the mean of the gaps
    weighted by the bins' image counts (Guo et al., "On Calibration of Modern Neural
    Networks", 2017). Torch-free.

    Args:
        probabilities: ``N×classes`` predicted probabilities, ``N >= 1``.
        truth: ``N`` true class indices.
        bins: how many equal-width confidence bins.

    Returns:
        The :class:`Calibration`.

    Raises:
        ConfigError: shapes that do not match, or ``bins`` not an int >= 1.

    Example:
        >>> c = calibration(np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]]), np.array([0, 1, 1, 1]))
        >>> round(c.ece, 3), [(b.count, round(b.confidence, 2), b.accuracy) for b in c.bins if b.count]
        (0.4, [(2, 0.6, 1.0), (2, 0.9, 0.5)])
    """
    bins = int(check_int("bins", bins, minimum=1))  # type: ignore[arg-type]
    probs = np.asarray(probabilities, np.float64)
    labels = np.asarray(truth)
    if probs.ndim != 2 or len(probs) == 0:
        raise ConfigError(f"probabilities must be an N×classes array with N >= 1, got shape {probs.shape}")
    if labels.shape != (len(probs),):
        raise ConfigError(f"truth must hold one class index per row of probabilities ({len(probs)}), "
                          f"got shape {labels.shape}")
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    confidence_sum = np.bincount(which, weights=confidence, minlength=bins)
    correct_sum = np.bincount(which, weights=correct, minlength=bins)
    ece = float(np.abs(correct_sum - confidence_sum).sum() / len(probs))
    return Calibration(ece=ece, bins=tuple(
        ReliabilityBin(low=float(edges[b]), high=float(edges[b + 1]), count=int(counts[b]),
                       confidence=float(confidence_sum[b] / counts[b]) if counts[b] else None,
                       accuracy=float(correct_sum[b] / counts[b]) if counts[b] else None)
        for b in range(bins)))


@dataclass
class Evaluation:
    """The scores of a model on a set of labelled images.

    Attributes:
        model: the bundle's path.
        name: the model's name (the manifest's ``name``; the bundle's file name when it has none).
        on: what was evaluated, e.g. ``dataset 'dolphins' (val)`` or ``folder photos/``.
        dataset: the stored dataset evaluated on, or ``None`` for a folder.
        labels: the model's classes (the confusion matrix's order).
        count: images evaluated.
        accuracy: top-1 accuracy.
        top5: top-5 accuracy when the model has more than 5 classes, else ``None``.
        log_loss: mean cross-entropy of the predicted probabilities (natural log).
        calibration: the expected calibration error and reliability diagram (10 bins).
        confusion: ``confusion[t][p]`` = images of class ``t`` predicted as ``p``.
        per_class: per class: ``label``, ``precision``, ``recall``, ``f1``, ``support``, ``top5``
            (the share of its images whose class is among the five most probable) and ``unfamiliar``
            (how many of its images were flagged; ``None`` when the model cannot tell).
        wrong: the most confidently wrong images, surest first.
        top_per_class: per class, the images predicted as it, by its probability, surest first;
            those whose true class is another are wrong (and the surest of them are in ``wrong``).
        skipped: files that could not be read (``source``, ``error``).
        unfamiliar_count: how many images look like none of the training images (their
            probabilities say little); ``None`` when the model cannot tell.
        unfamiliar_rate: ``unfamiliar_count`` / ``count``; ``None`` when the model cannot tell.
        unfamiliar: the unfamiliar images kept, most unfamiliar first.
        unfamiliar_reason: why the model cannot tell (its bundle has no detector), else ``None``.
    """

    model: str
    name: str
    on: str
    dataset: str | None
    labels: list[str]
    count: int
    accuracy: float
    top5: float | None
    log_loss: float
    calibration: Calibration
    confusion: list[list[int]]
    per_class: list[dict[str, Any]]
    wrong: list[Judged]
    top_per_class: dict[str, list[Judged]]
    skipped: list[dict[str, str]] = field(default_factory=list)
    unfamiliar_count: int | None = None
    unfamiliar_rate: float | None = None
    unfamiliar: list[Judged] = field(default_factory=list)
    unfamiliar_reason: str | None = None
    pixels: Callable[[int], np.ndarray] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every figure and list."""
        return {"model": self.model, "name": self.name, "on": self.on, "dataset": self.dataset,
                "labels": self.labels, "count": self.count, "accuracy": self.accuracy, "top5": self.top5,
                "log_loss": self.log_loss, "calibration": self.calibration.to_dict(), "confusion": self.confusion,
                "per_class": self.per_class, "wrong": [j.to_dict() for j in self.wrong],
                "top_per_class": {k: [j.to_dict() for j in v] for k, v in self.top_per_class.items()},
                "skipped": self.skipped, "unfamiliar_count": self.unfamiliar_count,
                "unfamiliar_rate": self.unfamiliar_rate, "unfamiliar": [j.to_dict() for j in self.unfamiliar],
                "unfamiliar_reason": self.unfamiliar_reason}

    def summary(self) -> str:
        """A plain-text report: figures, calibration, confusion matrix, per-class table, wrong images."""
        lines = [f"Model {self.name} on {self.on}: {self.count} images",
                 f"accuracy {self.accuracy:.2%}" + (f"  top-5 {self.top5:.2%}" if self.top5 is not None else "")
                 + f"  log-loss {self.log_loss:.4f}  expected calibration error {self.calibration.ece:.2%}",
                 f"unfamiliar: {self.unfamiliar_text()}", "",
                 "reliability (images by top-1 confidence; a calibrated model's accuracy equals its confidence)",
                 f"{'confidence':>11}  {'images':>6}  {'mean conf.':>10}  {'accuracy':>9}"]
        lines += [f"{b.low:>5.2f}–{b.high:<5.2f}  {b.count:>6}  {b.confidence:>10.2%}  {b.accuracy:>9.2%}"
                  for b in self.calibration.bins if b.count]
        lines += ["", "confusion matrix (rows: true class, columns: predicted)"]
        width = max(7, *(len(label) for label in self.labels))
        lines.append(" " * (width + 2) + "".join(f"{label[:width]:>{width + 2}}" for label in self.labels))
        for label, row in zip(self.labels, self.confusion):
            lines.append(f"{label:>{width}}  " + "".join(f"{n:>{width + 2}}" for n in row))
        lines += ["", f"{'class':>{width}}  {'precision':>9}  {'recall':>9}  {'F1':>9}  {'images':>6}  {'unfamiliar':>10}"]
        for row in self.per_class:
            lines.append(f"{row['label']:>{width}}  {_pct(row['precision'])}  {_pct(row['recall'])}  "
                         f"{_pct(row['f1'])}  {row['support']:>6}  {_count(row['unfamiliar']):>10}")
        if self.wrong:
            lines += ["", "most confidently wrong:"]
            lines += [f"  {j.source}  is {j.true}, predicted {j.predicted} {j.probability:.2%}"
                      + ("  UNFAMILIAR" if j.unfamiliar else "") for j in self.wrong]
        if self.unfamiliar:
            lines += ["", "unfamiliar (like none of the training images; their probabilities say little):"]
            lines += [f"  {j.source}  is {j.true}, predicted {j.predicted} {j.probability:.2%}, "
                      f"score {j.unfamiliar_score:.3f}" for j in self.unfamiliar]
        if self.skipped:
            lines += ["", f"skipped {len(self.skipped)} unreadable file(s):"]
            lines += [f"  {s['error']}" for s in self.skipped]
        return "\n".join(lines)

    def unfamiliar_text(self) -> str:
        """``2 of 30 images (6.67%) look like none of the training images``, or why that is unknown."""
        if self.unfamiliar_count is None or self.unfamiliar_rate is None:
            return f"unknown, {self.unfamiliar_reason or 'the model cannot tell'}"
        return (f"{self.unfamiliar_count} of {self.count} images ({self.unfamiliar_rate:.2%}) look like none of "
                "the training images")


def _pct(value: float | None) -> str:
    return f"{'n/a':>9}" if value is None else f"{value:>9.2%}"


def _count(value: int | None) -> str:
    return "n/a" if value is None else str(value)


def evaluate(model: str | os.PathLike[str] | Classifier, *, dataset: str | None = None, split: str = "val",
             folder: str | os.PathLike[str] | None = None, wrong: int = 10, top_per_class: int = 9,
             unfamiliar: int = 20, store: Store | None = None, batch_size: int = 32) -> Evaluation:
    """Score a model on a stored dataset's split, or on a folder with one sub-folder per class.

    Args:
        model: a loaded :class:`~shoal.inference.Classifier`, or what :func:`shoal.load` takes.
        dataset: a stored dataset; its images are used as stored when the model was trained
            at the same size, resize mode and channels (else they are prepared again from
            their source files). Without ``dataset`` and ``folder``: the dataset the model was
            trained on (the manifest's ``training.dataset``).
        split: ``val`` (default), ``test`` or ``train``.
        folder: instead of a dataset, a folder of class sub-folders (names = the model's labels).
        wrong: how many of the most confidently wrong images to keep.
        top_per_class: how many images predicted as each class to keep, surest first.
        unfamiliar: how many of the unfamiliar images to keep, most unfamiliar first (all are counted).
        store: where datasets live; default ``SHOAL_HOME``.
        batch_size: images per run of the network.

    Returns:
        The :class:`Evaluation`.

    Raises:
        ConfigError: both ``dataset`` and ``folder``, or neither for a model that records no
            dataset; a bad ``split``, ``wrong``, ``top_per_class`` or ``unfamiliar``.
        DatasetError: the split is empty, a class is unknown to the model, or the folder has
            no readable image.
        NotFoundError: no such dataset, or the model's own dataset is no longer in the store.
    """
    if dataset is not None and folder is not None:
        raise ConfigError("give either dataset (a stored dataset's name) or folder (a folder of class sub-folders), "
                          "not both", options=("dataset", "folder"))
    check_int("wrong", wrong, minimum=0)
    check_int("top_per_class", top_per_class, minimum=0)
    check_int("unfamiliar", unfamiliar, minimum=0)
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}", options=("split",))
    classifier = model if isinstance(model, Classifier) else load(model)
    name = classifier.manifest.get("name") or classifier.path.name.removesuffix(".shoal")
    if folder is not None:
        probs, scores, truth, sources, skipped, pixels = _on_folder(classifier, Path(folder), batch_size)
        on = f"folder {folder}"
    else:
        from shoal import datasets

        on = f"dataset {dataset!r} ({split})"
        if dataset is None:
            dataset = own_dataset(classifier, name, store)
            on = f"dataset {dataset!r} ({split}), the one it was trained on"
        probs, scores, truth, sources, skipped, pixels = on_dataset(
            classifier, datasets.load(dataset, store=store), split, batch_size)
    return score(classifier.labels, probs, truth, sources, model=str(classifier.path), name=name, on=on,
                 dataset=dataset, wrong=wrong, top_per_class=top_per_class, skipped=skipped, pixels=pixels,
                 unfamiliar_scores=scores, unfamiliar_threshold=classifier.unfamiliar_threshold,
                 unfamiliar_reason=classifier.unfamiliar_reason, unfamiliar=unfamiliar)


def own_dataset(classifier: Classifier, name: str, store: Store | None = None, *, comparing: bool = False) -> str:
    """The stored dataset the model was trained on (its manifest's ``training.dataset``), refused in one
    line when the model records none or the store no longer has it.

    Args:
        classifier: the model; name: its name, for the messages.
        store: where datasets live; default ``SHOAL_HOME``.
        comparing: the refusals are worded for :func:`shoal.compare.compare` (which takes no dataset).

    Raises:
        ConfigError: the model records no dataset (:class:`DatasetError` when ``comparing``).
        NotFoundError: the dataset is no longer in the store.
    """
    dataset = (classifier.manifest.get("training") or {}).get("dataset")
    instead = ("evaluate each model on a folder of class sub-folders instead (shoal evaluate MODEL --folder DIR)"
               if comparing else
               "evaluate it on a folder of class sub-folders instead (shoal evaluate MODEL --folder DIR)")
    if not dataset:
        if comparing:
            raise DatasetError(f"model {name!r} does not record the dataset it was trained on; {instead}")
        raise ConfigError(f"give dataset (a stored dataset's name) or folder (a folder of class sub-folders): "
                          f"model {name!r} does not record the dataset it was trained on", options=("dataset", "folder"))
    store = Store() if store is None else store
    if not store.exists("dataset", dataset):
        raise NotFoundError(f"model {name!r} was trained on dataset {dataset!r}, which is no longer in {store.home}; "
                            f"{instead}")
    return dataset


def score(labels: list[str], probs: np.ndarray, truth: np.ndarray, sources: list[str], *, model: str = "",
          name: str = "", on: str = "", dataset: str | None = None, wrong: int = 10, top_per_class: int = 9,
          skipped: list[dict[str, str]] | None = None, pixels: Callable[[int], np.ndarray] | None = None,
          unfamiliar_scores: np.ndarray | None = None, unfamiliar_threshold: float | None = None,
          unfamiliar_reason: str | None = None, unfamiliar: int = 20) -> Evaluation:
    """Turn probabilities and true classes into an :class:`Evaluation` (no model needed).

    Args:
        labels: class names, the columns of ``probs``.
        probs: ``N×classes`` probabilities.
        truth: ``N`` true class indices.
        sources: ``N`` names of the images.
        model: the bundle's path; name: the model's name (default: ``model``).
        on: what was evaluated, in words; dataset: the stored dataset's name, if one.
        unfamiliar_scores: ``N`` unfamiliar scores and unfamiliar_threshold the model's threshold
            (an image above it is unfamiliar); without both, the verdict is unknown, and
            unfamiliar_reason says why.
        unfamiliar: how many of the unfamiliar images to keep, most unfamiliar first.
    """
    n, k = probs.shape
    predicted = probs.argmax(1)
    known = unfamiliar_scores is not None and unfamiliar_threshold is not None
    scores = np.asarray(unfamiliar_scores, np.float64) if known else None
    flagged = scores > unfamiliar_threshold if scores is not None else None
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    true_p = probs[np.arange(n), truth]
    log_loss = float(-np.log(np.maximum(true_p, _EPS)).mean())
    in_top5 = (np.argsort(-probs, 1)[:, :5] == truth[:, None]).any(1)
    top5 = float(in_top5.mean()) if k > 5 else None
    per_class = []
    for c, label in enumerate(labels):
        tp = int(confusion[c, c])
        column, row = int(confusion[:, c].sum()), int(confusion[c].sum())
        precision = tp / column if column else 0.0  # never predicted: 0, as scikit-learn reports it
        recall = tp / row if row else None  # no images of the class: undefined
        f1 = None if recall is None else (2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        per_class.append({"label": label, "precision": precision, "recall": recall, "f1": f1, "support": row,
                          "top5": float(in_top5[truth == c].mean()) if row else None,
                          "unfamiliar": int(flagged[truth == c].sum()) if flagged is not None else None})

    def judged(i: int) -> Judged:
        return Judged(sources[i], labels[truth[i]], labels[predicted[i]], float(probs[i, predicted[i]]),
                      float(true_p[i]), i, bool(flagged[i]) if flagged is not None else None,
                      float(scores[i]) if scores is not None else None)

    def surest(rows: np.ndarray, keep: int) -> list[Judged]:  # by the probability of the predicted class
        return [judged(int(i)) for i in rows[np.argsort(-probs[rows, predicted[rows]], kind="stable")][:keep]]

    tops = {label: surest(np.flatnonzero(predicted == c), top_per_class) for c, label in enumerate(labels)}
    odd: list[Judged] = []
    if scores is not None and flagged is not None:
        rows = np.flatnonzero(flagged)
        odd = [judged(int(i)) for i in rows[np.argsort(-scores[rows], kind="stable")][:unfamiliar]]
    return Evaluation(model=model, name=name or model, on=on, dataset=dataset, labels=list(labels), count=n,
                      accuracy=float((predicted == truth).mean()), top5=top5, log_loss=log_loss,
                      calibration=calibration(probs, truth), confusion=confusion.tolist(), per_class=per_class,
                      wrong=surest(np.flatnonzero(predicted != truth), wrong), top_per_class=tops,
                      skipped=skipped or [], unfamiliar_count=int(flagged.sum()) if flagged is not None else None,
                      unfamiliar_rate=float(flagged.mean()) if flagged is not None else None, unfamiliar=odd,
                      unfamiliar_reason=None if flagged is not None else (unfamiliar_reason or "the model cannot tell"),
                      pixels=pixels)


def _label_index(classifier: Classifier, classes: list[str] | tuple[str, ...], where: str) -> np.ndarray:
    unknown = [c for c in classes if c not in classifier.labels]
    if unknown:
        raise DatasetError(f"{where} has classes the model does not know: {', '.join(map(repr, unknown))} "
                           f"(the model's classes: {', '.join(map(repr, classifier.labels))}); evaluate on images "
                           "of the model's classes")
    return np.array([classifier.labels.index(c) for c in classes], np.int64)


class Scored(NamedTuple):
    """What a model made of some labelled images (before :func:`score` judges it)."""

    probs: np.ndarray
    """``N×classes`` probabilities, in the model's label order."""
    scores: np.ndarray | None
    """``N`` unfamiliar scores (``None`` without a detector)."""
    truth: np.ndarray
    """``N`` true classes, as indices into the model's labels."""
    sources: list[str]
    """``N`` source paths of the images."""
    skipped: list[dict[str, str]]
    """The files that could not be read (``source``, ``error``): not among the ``N``."""
    pixels: Callable[[int], np.ndarray]
    """The pixels of image ``i`` of the ``N`` (for the report's pictures)."""


def on_dataset(classifier: Classifier, ds: Dataset, split: str, batch_size: int = 32, *,
               rows: Sequence[int] | None = None, sources: list[str] | None = None) -> Scored:
    """Run a model over a stored dataset's split, or over the given ``rows`` of it.

    The stored pixels are used when the dataset was built at the model's size, channels and
    resize mode (they are then exactly what the model would make of the source files); otherwise
    each image is prepared again from its source file, and the files that cannot be read are skipped.

    Args:
        classifier: the model.
        ds: the loaded dataset.
        split: ``train``, ``val`` or ``test``.
        batch_size: images per run of the network.
        rows: the split's images to run, by index (default: all, in order).
        sources: the split's :meth:`~shoal.data.dataset.Dataset.sources`, when already read.

    Raises:
        DatasetError: the dataset has classes the model does not know, no image is to be run, or
            none of the source files could be read again.
    """
    to_model = _label_index(classifier, ds.classes, f"dataset {ds.name!r}")
    images, labels = ds.images(split), ds.labels(split)
    sources = ds.sources(split) if sources is None else sources
    index = np.arange(len(labels)) if rows is None else np.asarray(rows, np.int64)
    if len(index) == 0:
        raise DatasetError(f"dataset {ds.name!r} has no {split} images; evaluate another split "
                           f"(it has {', '.join(f'{s}: {ds.count(s)}' for s in SPLITS)})")
    picked, truth = [sources[i] for i in index], to_model[labels[index]]
    spec = classifier.input
    same = (tuple(ds.size) == spec.dataset_wh and ds.channels == spec.channels and ds.resize_mode == spec.resize_mode)
    if same:  # the stored pixels are exactly what prepare() would make of the sources
        runs = [classifier.runtime.run(classifier.network_input(
                    list(images[i : i + batch_size] if rows is None else images[index[i : i + batch_size]])))
                for i in range(0, len(index), batch_size)]
        probs = np.concatenate([p for p, _ in runs])
        scores = np.concatenate([s for _, s in runs]) if all(s is not None for _, s in runs) else None
        return Scored(probs, scores, truth, picked, [], lambda i: np.asarray(images[index[i]]))
    keep, found, scores, skipped = _predict_files(classifier, picked, batch_size)
    if not found:
        raise DatasetError(f"none of the {split} images of dataset {ds.name!r} could be read again from their source "
                           f"files (the model needs {spec.dataset_width}x{spec.dataset_height} "
                           f"{spec.resize_mode}, the dataset stores {ds.size[0]}x{ds.size[1]} {ds.resize_mode})")
    kept = [picked[i] for i in keep]
    return Scored(np.asarray(found, np.float32), scores, truth[keep], kept, skipped,
                  lambda i: classifier.prepare(kept[i]))


def _predict_files(classifier: Classifier, sources: list[str], batch_size: int
                   ) -> tuple[list[int], list[list[float]], np.ndarray | None, list[dict[str, str]]]:
    """Probabilities (in the model's label order) and unfamiliar scores of the files that could be read,
    and why others could not."""
    keep, rows, scores, skipped = [], [], [], []
    for i, result in enumerate(classifier.predict_iter(sources, None, batch_size=batch_size)):
        if result.ok:
            keep.append(i)
            by_label = dict(result.predictions)
            rows.append([by_label[label] for label in classifier.labels])
            scores.append(result.unfamiliar_score)
        else:
            skipped.append({"source": result.source, "error": result.error or ""})
    known = bool(scores) and all(s is not None for s in scores)
    return keep, rows, np.asarray(scores, np.float64) if known else None, skipped


def _on_folder(classifier: Classifier, folder: Path, batch_size: int) -> Scored:
    from shoal.data.scan import scan_folder

    found = scan_folder(folder)
    classes = [c for c, files in found.files.items() if files]
    if not classes:
        raise DatasetError(f"'{folder}' has no class sub-folders with images: give a folder with one sub-folder "
                           "per class, named like the model's classes")
    to_model = _label_index(classifier, classes, f"folder '{folder}'")
    paths = [str(p) for c in classes for p in found.files[c]]
    truth_all = np.array([to_model[i] for i, c in enumerate(classes) for _ in found.files[c]], np.int64)
    keep, rows, scores, skipped = _predict_files(classifier, paths, batch_size)
    if not rows:
        raise DatasetError(f"no image in '{folder}' could be read ({len(skipped)} file(s) tried)")
    kept = [paths[i] for i in keep]
    return Scored(np.asarray(rows, np.float32), scores, truth_all[keep], kept, skipped,
                  lambda i: classifier.prepare(kept[i]))


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
                        f"<td>{_fmt(r['f1'])}</td><td>{r['support']}</td><td>{_count(r['unfamiliar'])}</td></tr>"
                        for r in e.per_class)

    def figure(j: Judged, caption: str) -> str:  # a wrong prediction is framed in red, with its true class below
        img = thumbnail_uri(e.pixels(j.index), thumbnail) if e.pixels is not None else ""
        right = j.true == j.predicted
        return (f'<figure{"" if right else " class=wrong"}><img src="{img}" alt="{esc(j.source)}" '
                f'title="{esc(j.source)}"><figcaption>{esc(caption)}{"" if right else f"<br>is {esc(j.true)}"}'
                f'{"<br><span class=odd>unfamiliar</span>" if j.unfamiliar else ""}</figcaption></figure>')

    wrong = "".join(figure(j, f"{j.predicted} {j.probability:.1%}") for j in e.wrong)
    odd = "".join(figure(j, f"{j.predicted} {j.probability:.1%} · {j.unfamiliar_score:.3f}") for j in e.unfamiliar)
    if e.unfamiliar_count is None:
        odd_section = f"<p>Unknown: {esc(e.unfamiliar_reason or 'the model cannot tell')}.</p>"
    elif not e.unfamiliar_count:
        odd_section = "<p>None: every image looks like some of the training images.</p>"
    else:
        more = e.unfamiliar_count - len(e.unfamiliar)
        odd_section = (f"<div class=grid>{odd}</div>"
                       + (f"<p class=muted>and {more} more.</p>" if more > 0 else ""))
    tops = "".join(
        f"<h3>{esc(label)}</h3>"
        + (f"<div class=grid>{''.join(figure(j, f'{j.probability:.1%}') for j in items)}</div>" if items
           else f"<p>No image was predicted as {esc(label)}.</p>")
        for label, items in e.top_per_class.items())
    bins = "".join(f"<tr><td>{b.low:.1f}–{b.high:.1f}</td><td>{b.count}</td><td>{_fmt(b.confidence)}</td>"
                   f"<td>{_fmt(b.accuracy)}</td></tr>" for b in e.calibration.bins if b.count)
    skipped = "".join(f"<li>{esc(s['error'])}</li>" for s in e.skipped)
    top5 = f", top-5 {e.top5:.2%}" if e.top5 is not None else ""
    page = f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>shoal evaluation of {esc(e.name)}: {esc(e.on)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222 }}
table {{ border-collapse: collapse; margin: 1em 0 }} td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right }}
.grid {{ display: flex; flex-wrap: wrap; gap: 10px }} figure {{ margin: 0; text-align: center; font-size: 12px }}
figure img {{ display: block; max-width: {thumbnail}px; max-height: {thumbnail}px; image-rendering: pixelated }}
figure.wrong img {{ outline: 3px solid #c82828 }} figure.wrong figcaption {{ color: #c82828 }}
.odd {{ color: #a86200; font-weight: 600 }}
.calibration {{ display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start }} .muted {{ color: #666 }}
</style></head><body>
<h1>Evaluation of {esc(e.name)}</h1>
<p class=muted>Bundle {esc(e.model)}</p>
<p>On {esc(e.on)}: {e.count} images. Accuracy <b>{e.accuracy:.2%}</b>{top5}, log-loss {e.log_loss:.4f},
expected calibration error {e.calibration.ece:.2%}.</p>
<p>Unfamiliar: {esc(e.unfamiliar_text())}.</p>
<h2>Confusion matrix</h2>{matrix}
<h2>Per class</h2><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>images</th><th>unfamiliar</th></tr>{per_class}</table>
<h2>Calibration</h2>
<p>Is the model as sure as it is right? The images are grouped by the probability of their top class (the
confidence). In a calibrated model the accuracy of each group equals its mean confidence: the bars reach the
diagonal. The expected calibration error is the gap, averaged over the images.</p>
<div class=calibration>{_reliability_svg(e.calibration)}
<table><tr><th>confidence</th><th>images</th><th>mean confidence</th><th>accuracy</th></tr>{bins}</table></div>
<h2>Most confidently wrong</h2>{f'<div class=grid>{wrong}</div>' if wrong else '<p>None: every image is right.</p>'}
<h2>Surest images per class</h2>
<p>The images predicted as each class, by the probability of that class; those of another class (red) are wrong.</p>
{tops}
<h2>Unfamiliar</h2>
<p>Images that look like none of the training images: their probabilities say little. An image is unfamiliar when
the distance of its features to its nearest training images (the score after its class) is above the model's
threshold, set on the training images so that few ordinary images are flagged.</p>
{odd_section}
{f'<h2>Skipped</h2><ul>{skipped}</ul>' if skipped else ''}
</body></html>
"""
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out


def _reliability_svg(c: Calibration, side: int = 240) -> str:
    """The reliability diagram as inline SVG: per bin a bar to its accuracy, the gap to its mean confidence in red."""
    pad = 34

    def x(v: float) -> float:
        return pad + v * side

    def y(v: float) -> float:
        return pad / 2 + (1 - v) * side

    shapes = []
    for b in c.bins:
        if not b.count:
            continue
        left, width = x(b.low) + 1, (b.high - b.low) * side - 2
        shapes.append(f'<rect x="{left:.1f}" y="{y(b.accuracy):.1f}" width="{width:.1f}" '
                      f'height="{y(0) - y(b.accuracy):.1f}" fill="#2b7bb9"><title>{b.low:.1f}–{b.high:.1f}: '
                      f'{b.count} images, mean confidence {b.confidence:.1%}, accuracy {b.accuracy:.1%}</title></rect>')
        top, bottom = sorted((y(b.accuracy), y(b.confidence)))
        shapes.append(f'<rect x="{left:.1f}" y="{top:.1f}" width="{width:.1f}" height="{bottom - top:.1f}" '
                      'fill="#c82828" fill-opacity="0.45"/>')
    ticks = "".join(f'<text x="{x(v):.1f}" y="{y(0) + 14:.1f}" text-anchor="middle">{v:g}</text>'
                    f'<text x="{pad - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>' for v in (0, 0.5, 1))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{side + pad + 10}" height="{side + pad + 24}" '
            f'font-size="11" font-family="system-ui, sans-serif" role="img" aria-label="reliability diagram">'
            f'<rect x="{x(0)}" y="{y(1)}" width="{side}" height="{side}" fill="none" stroke="#999"/>'
            f'{"".join(shapes)}<line x1="{x(0)}" y1="{y(0)}" x2="{x(1)}" y2="{y(1)}" stroke="#444" '
            f'stroke-dasharray="4 3"/>{ticks}<text x="{x(0.5)}" y="{y(0) + 30:.1f}" text-anchor="middle">'
            f'confidence (top-1 probability)</text><text transform="translate(10 {y(0.5):.1f}) rotate(-90)" '
            f'text-anchor="middle">accuracy</text></svg>')


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2%}"


def thumbnail_uri(pixels: np.ndarray, side: int = 96) -> str:
    """An image (uint8 H×W×C) as a PNG ``data:`` URI, shrunk to at most ``side`` pixels on its longest side."""
    from PIL import Image

    arr = np.asarray(pixels, np.uint8)
    img = Image.fromarray(arr[:, :, 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr)
    scale = side / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return png_uri(buf.getvalue())
