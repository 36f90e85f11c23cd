"""Label review: which training and validation images are probably mislabelled, ambiguous, duplicated or odd.

How a model's images are judged (:func:`review`):

1. **Embeddings.** Every train and validation image goes through the model's own bundle graph,
   read out at ``features``, the embedding its head takes (the same graph for a fitted head and
   for an end-to-end model; torch is not needed).
2. **Out-of-fold probabilities.** A model has seen its training images, so its own probabilities
   on them are not evidence. The training images are scored by the cross-validation of a
   logistic-regression head on those embeddings (:func:`shoal.training.head.fit_head`,
   ``held_out=True``, the seed, folds and mirrored views of the run): each image is predicted
   by a head that never saw it. For a fitted head this *is* the head's own cross-validation;
   for an end-to-end model it is a linear probe of the model's features. Validation images are
   scored by the head fitted on all training images.
3. **Label issues** are ranked by cleanlab's confident learning
   (``cleanlab.filter.find_label_issues``, ``cleanlab.rank.get_label_quality_scores``), which is
   AGPL-3.0 and so an optional extra: ``pip install 'shoal[review]'``.
4. **Ambiguous** images have two classes within :data:`AMBIGUOUS_MARGIN` of each other;
   **duplicates** have a cosine similarity of at least :data:`DUPLICATE_SIMILARITY` to another
   image; **outliers** score above the model's unfamiliar threshold (the k-th nearest training
   embedding, the image itself left out; :mod:`shoal.bundle.unfamiliar`).

By default the review proposes changes to training images only (``action``: relabel a label
issue, exclude a duplicate); validation images are listed with ``keep``, so that a later
comparison can use the ones nobody changed. ``shoal dataset edit --from-review`` applies the
actions of a saved ``shoal review --json``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shoal.bundle.card import UnfamiliarSpec
from shoal.bundle.compose import FEATURES
from shoal.bundle.unfamiliar import K as UNFAMILIAR_K, fit_unfamiliar, kth_distance, unit
from shoal.errors import BundleError, DatasetError, TrainingError
from shoal.store import Store

KINDS = ("label", "duplicate", "outlier", "ambiguous")
"""The kinds of issue, in the order rows are listed (an image flagged twice is shown once, as the first)."""

AMBIGUOUS_MARGIN = 0.2
"""An image is ambiguous when its two most probable classes (out of fold) are closer than this."""

DUPLICATE_SIMILARITY = 0.98
"""Two images whose embeddings have at least this cosine similarity are near-duplicates."""


_EXPLAIN = {
    "label": "its given label is probably wrong (confident learning on out-of-fold probabilities)",
    "duplicate": "it is a near-duplicate of another image",
    "outlier": "it looks like none of the other training images (above the unfamiliar threshold)",
    "ambiguous": "two classes are about equally likely",
}


@dataclass(frozen=True)
class Suspect:
    """One image worth a look.

    Attributes:
        image: its source path (as the dataset records it).
        split: ``train`` or ``val``.
        index: its row in that split.
        given: the label it has.
        suggested: the most probable other label (a label issue or ambiguous image), else the given one.
        kind: the first of :data:`KINDS` it was flagged for.
        score: how strongly (0..1, higher is worse): ``1 - p(given)`` for a label issue, ``1 -``
            the margin for an ambiguous image, the similarity for a duplicate, the unfamiliar
            score for an outlier.
        probability: the out-of-fold probability of the given label.
        action: what is proposed: ``relabel`` (to ``suggested``), ``exclude`` or ``keep``.
        kinds: every kind it was flagged for.
        duplicate_of: the image it duplicates, for a duplicate.
    """

    image: str
    split: str
    index: int
    given: str
    suggested: str
    kind: str
    score: float
    probability: float
    action: str
    kinds: tuple[str, ...] = ()
    duplicate_of: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "split": self.split, "index": self.index, "given": self.given,
                "suggested": self.suggested, "kind": self.kind, "score": round(self.score, 4),
                "probability": round(self.probability, 4), "action": self.action, "kinds": list(self.kinds),
                "duplicate_of": self.duplicate_of}


@dataclass(frozen=True)
class Review:
    """The suspects of one model's dataset, most suspicious first.

    Attributes:
        model: the model reviewed.
        dataset: the dataset its images come from.
        method: how the out-of-fold probabilities were obtained, in words.
        images: how many images were reviewed, by split.
        counts: how many images were flagged, by kind (before ``top`` cut the list).
        suspects: the rows, at most ``top``.
        probabilities: float32 ``(N, K)`` out-of-fold probabilities of the train then val images (for tests and tools).
    """

    model: str
    dataset: str
    method: str
    images: dict[str, int]
    counts: dict[str, int]
    suspects: list[Suspect]
    probabilities: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0), np.float32))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``shoal review --json``; ``shoal dataset edit --from-review`` reads it back)."""
        return {"model": self.model, "dataset": self.dataset, "method": self.method, "images": self.images,
                "counts": self.counts, "suspects": [s.to_dict() for s in self.suspects]}

    def summary(self) -> str:
        """A plain-text table of the suspects."""
        total = sum(self.images.values())
        flagged = ", ".join(f"{self.counts.get(k, 0)} {k}" for k in KINDS)
        lines = [f"review of {self.model!r} on dataset {self.dataset!r}: {total} images "
                 f"({', '.join(f'{n} {s}' for s, n in self.images.items())}); flagged {flagged}",
                 f"probabilities: {self.method}"]
        if not self.suspects:
            lines.append("nothing looks wrong")
            return "\n".join(lines)
        lines.append(f"{'#':>3}  {'kind':<9} {'score':>5}  {'split':<5} {'given':<12} {'suggested':<12} "
                     f"{'action':<7} image")
        for i, s in enumerate(self.suspects, 1):
            extra = f"  (duplicate of {s.duplicate_of})" if s.duplicate_of else ""
            lines.append(f"{i:>3}  {s.kind:<9} {s.score:5.2f}  {s.split:<5} {s.given:<12} {s.suggested:<12} "
                         f"{s.action:<7} {s.image}{extra}")
        lines.append("kinds: " + "; ".join(f"{k}: {_EXPLAIN[k]}" for k in KINDS))
        return "\n".join(lines)


def review(model: str, *, top: int | None = 50, store: Store | None = None,
           on_progress: Callable[[str], None] | None = None) -> Review:
    """Rank a trained model's training and validation images by how suspicious they look.

    Args:
        model: the name of a trained model in the store, or its bundle (its dataset must be in the store).
        top: keep at most this many rows (``None``: all flagged images).
        store: where the model and its dataset are.
        on_progress: told what is being done.

    Returns:
        The :class:`Review`.

    Raises:
        MissingExtraError: cleanlab is not installed (``pip install 'shoal[review]'``).
        BundleError: no such model, or its graph has no ``features`` to read.
        DatasetError: its dataset is gone or has classes the model does not know.
        TrainingError: too few images per class to cross-validate.
    """
    from shoal import datasets
    from shoal.bundle import open_bundle
    from shoal.extras import require
    from shoal.inference.classifier import resolve

    require("review", "shoal review")
    import cleanlab.filter
    import cleanlab.rank

    store = Store() if store is None else store
    say = on_progress or (lambda message: None)
    bundle = open_bundle(resolve(model))
    threshold = UnfamiliarSpec.from_manifest(bundle.manifest, str(bundle.path)).threshold
    training = bundle.manifest.get("training") or {}
    name = training.get("dataset")
    if not isinstance(name, str):
        raise BundleError(f"model {model!r} does not record the dataset it was trained on; review needs it")
    ds = datasets.load(name, store=store)
    if list(ds.classes) != list(bundle.labels):
        raise DatasetError(f"dataset {name!r} has classes {list(ds.classes)} but model {model!r} has "
                           f"{bundle.labels}; the dataset was changed after training")
    seed, flip = int(training.get("seed", 0)), bool(training.get("flip", False))
    fitted = (bundle.manifest.get("head") or {}).get("method") == "logistic_regression"

    say("computing the embeddings of the training and validation images")
    embed = _Embedder(bundle)
    crop = bundle.card.input.crop_hw
    train_x, val_x = ds.images("train"), ds.images("val")
    train_y, val_y = ds.labels("train"), ds.labels("val")
    train_f = embed(train_x, crop)
    val_f = embed(val_x, crop) if len(val_y) else np.zeros((0, train_f.shape[1]), np.float32)
    views = [train_f] + ([embed(train_x, crop, flip=True)] if flip else [])

    say("cross-validating a head for out-of-fold probabilities")
    from shoal.training.head import fit_head

    n = len(train_y)
    head = fit_head(np.concatenate(views), np.tile(train_y, len(views)), num_classes=ds.num_classes,
                    groups=np.tile(np.arange(n), len(views)), seed=seed, held_out=True)
    if head.held_out is None:
        raise TrainingError(f"dataset {name!r} has too few training images per class to cross-validate "
                            "(at least 2 of every class are needed); add images and rebuild it")
    train_p = head.held_out.reshape(len(views), n, -1).mean(0)
    val_p = head.probabilities(val_f) if len(val_y) else np.zeros((0, ds.num_classes), np.float32)
    probs = np.concatenate([train_p, val_p]).astype(np.float32)
    probs /= probs.sum(1, keepdims=True)
    labels = np.concatenate([train_y, val_y])
    splits = ["train"] * n + ["val"] * len(val_y)
    rows = list(range(n)) + list(range(len(val_y)))
    sources = ds.sources("train") + ds.sources("val")
    method = ("the fitted head's own cross-validation (logistic regression on the backbone's features, "
              f"{head.folds} folds, C={head.strength:g})" if fitted else
              "a logistic regression cross-validated on the model's own features (the embedding its head takes; "
              f"{head.folds} folds, C={head.strength:g}), since the network saw its training images")
    method += "; validation images by the head fitted on all training images"

    say("ranking label issues (cleanlab), duplicates and outliers")
    flagged: dict[int, dict[str, Any]] = {}

    def flag(i: int, kind: str, score: float, **extra: Any) -> None:
        entry = flagged.setdefault(i, {"kinds": {}, "extra": {}})
        entry["kinds"][kind] = float(score)
        entry["extra"].update(extra)

    quality = cleanlab.rank.get_label_quality_scores(labels, probs, method="self_confidence")
    present = np.unique(labels)
    if len(present) == ds.num_classes:
        issues = cleanlab.filter.find_label_issues(labels, probs, return_indices_ranked_by="self_confidence")
    else:  # cleanlab needs every class among the labels: judge the present ones, renormalised
        sub = probs[:, present] / probs[:, present].sum(1, keepdims=True)
        remap = np.searchsorted(present, labels)
        issues = cleanlab.filter.find_label_issues(remap, sub, return_indices_ranked_by="self_confidence")
    for i in issues:
        flag(int(i), "label", 1.0 - float(quality[i]))

    ordered = np.sort(probs, axis=1)
    margin = ordered[:, -1] - ordered[:, -2] if probs.shape[1] > 1 else np.ones(len(probs))
    for i in np.flatnonzero(margin < AMBIGUOUS_MARGIN):
        flag(int(i), "ambiguous", 1.0 - float(margin[i]))

    embeddings = unit(np.concatenate([train_f, val_f]))
    for i, j, similarity in _duplicates(embeddings, DUPLICATE_SIMILARITY):
        # flag the training copy (excluding it keeps validation honest), else the later image
        keep, drop = (j, i) if splits[i] == "train" and splits[j] != "train" else (i, j)
        flag(drop, "duplicate", similarity, duplicate_of=sources[keep])

    if threshold is None:
        detector = fit_unfamiliar(train_f, train_y, seed=seed)
        threshold = detector.threshold if detector is not None else None
    if threshold is not None and n > UNFAMILIAR_K:
        bank = embeddings[:n]
        outlying = np.concatenate([kth_distance(bank, bank, UNFAMILIAR_K + 1),  # itself is the nearest
                                   kth_distance(embeddings[n:], bank, UNFAMILIAR_K)])
        for i in np.flatnonzero(outlying > float(threshold)):
            flag(int(i), "outlier", float(outlying[i]))

    suspects = []
    for i, entry in flagged.items():
        kinds = tuple(k for k in KINDS if k in entry["kinds"])
        kind = kinds[0]
        given = int(labels[i])
        others = np.argsort(-probs[i])
        best_other = int(others[0] if others[0] != given else others[1]) if probs.shape[1] > 1 else given
        suggested = best_other if kind in ("label", "ambiguous") else given
        action = "keep"
        if splits[i] == "train" and kind == "label":
            action = "relabel"
        elif splits[i] == "train" and kind == "duplicate":
            action = "exclude"
        suspects.append(Suspect(sources[i], splits[i], rows[i], ds.classes[given], ds.classes[suggested], kind,
                                entry["kinds"][kind], float(probs[i, given]), action, kinds,
                                entry["extra"].get("duplicate_of") if kind == "duplicate" else None))
    suspects.sort(key=lambda s: (KINDS.index(s.kind), -s.score))
    counts = {k: sum(1 for s in suspects if s.kind == k) for k in KINDS}
    return Review(str(model), name, method, {"train": n, "val": int(len(val_y))}, counts,
                  suspects if top is None else suspects[:top], probs)


def _duplicates(embeddings: np.ndarray, threshold: float, block: int = 1024) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, similarity)``, ``i < j``, of unit embeddings at least ``threshold`` alike; each j once."""
    found: list[tuple[int, int, float]] = []
    seen: set[int] = set()
    for start in range(0, len(embeddings), block):
        similarity = embeddings[start:start + block] @ embeddings.T
        for r, row in enumerate(similarity):
            i = start + r
            for j in np.flatnonzero(row[i + 1:] >= threshold) + i + 1:
                if int(j) not in seen and i not in seen:
                    seen.add(int(j))
                    found.append((i, int(j), float(row[j])))
    return found


class _Embedder:
    """The bundle's graph read out at ``features``: uint8 ``N×H×W×C`` images → float32 ``(N, D)``."""

    def __init__(self, bundle: Any, batch_size: int = 32) -> None:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper

        from shoal.bundle import ONNX_FILE

        graph = onnx.load_from_string(bundle.read(ONNX_FILE))
        if not any(FEATURES in node.output for node in graph.graph.node):
            raise BundleError(f"the graph of {str(bundle.path)!r} has no {FEATURES!r} (the embedding its head "
                              "takes), so its images cannot be compared; retrain it with this shoal")
        if FEATURES not in {o.name for o in graph.graph.output}:
            graph.graph.output.append(helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, None))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.batch_size = batch_size

    def __call__(self, images: np.ndarray, crop: tuple[int, int] | None, *, flip: bool = False) -> np.ndarray:
        from shoal.preprocess import to_network_input

        out = []
        for start in range(0, len(images), self.batch_size):
            x = to_network_input(np.asarray(images[start:start + self.batch_size]), crop)
            if flip:
                x = np.ascontiguousarray(x[..., ::-1])
            out.append(self.session.run([FEATURES], {self.input: x})[0].reshape(len(x), -1))
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)
