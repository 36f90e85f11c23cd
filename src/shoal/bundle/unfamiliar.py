"""The "unfamiliar" verdict: does an image look like none of the training images?

Deep nearest neighbours (Sun et al., "Out-of-distribution detection with deep nearest
neighbors", ICML 2022): the score of an image is the cosine distance from its embedding (the
features the head takes) to its k-th nearest training embedding. The threshold is set on the
training images themselves, by cross-validation: each fold is scored against the others, and
the threshold is the quantile that flags :data:`FLAG_RATE` of them. Ordinary images are then
flagged about that often, and images of another kind (another subject, a drawing, noise) far
more often. On the reference set with EfficientNet-Lite0 features and k=3 this flagged 0 of 30
validation photos and all 153 photos of an unrelated two-class set (``BRIEF.md`` §6).

NumPy only: the same score is computed inside the bundle's ONNX graph (see
:mod:`shoal.bundle.compose`) and, for the torch runtime, by :meth:`Unfamiliar.scores`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

K = 3
FLAG_RATE = 0.01
FOLDS = 5
# The bank keeps at most this many training embeddings, drawn at random per class in proportion.
# 4096 x 1280 float32 (EfficientNet-Lite0) is 21 MB in the bundle and 5 M multiply-adds per image,
# about 1 % of the backbone's cost; a random sample keeps the density that the threshold assumes.
MAX_BANK = 4096


@dataclass(frozen=True)
class Unfamiliar:
    """A fitted detector: unit-norm training embeddings, k and the threshold.

    Attributes:
        bank: float32 ``(M, D)`` unit-norm embeddings of training images.
        k: the neighbour whose distance is the score.
        threshold: scores above it are "unfamiliar".
        rate: the share of cross-validated training images the threshold flags.
        images: how many training images the threshold and bank come from.
    """

    bank: np.ndarray = field(repr=False)
    k: int
    threshold: float
    rate: float = FLAG_RATE
    images: int = 0

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Cosine distance of each ``(N, D)`` embedding to its k-th nearest in the bank, ``(N,)``."""
        return kth_distance(unit(features), self.bank, self.k)

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's ``unfamiliar`` section (the bank itself lives in the ONNX graph)."""
        return {"method": "knn_cosine", "k": self.k, "threshold": self.threshold, "flag_rate": self.rate,
                "bank_size": int(len(self.bank)), "training_images": self.images}


def unit(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(features, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def kth_distance(queries: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """``1 - `` the k-th largest cosine similarity of each unit-norm query to the unit-norm bank."""
    similarity = queries @ bank.T
    k = min(k, bank.shape[0])
    kth = -np.partition(-similarity, k - 1, axis=1)[:, k - 1]
    return (1.0 - kth).astype(np.float32)


def fit_unfamiliar(features: np.ndarray, labels: np.ndarray, *, seed: int = 0, k: int = K,
                   rate: float = FLAG_RATE, max_bank: int = MAX_BANK, folds: int = FOLDS) -> Unfamiliar | None:
    """Fit the detector on the embeddings of the training images (one view per image).

    Args:
        features: float ``(N, D)`` embeddings.
        labels: ``(N,)`` classes; folds and the bank sample keep their proportions.
        seed: the folds and the bank sample derive from it.
        k: the neighbour whose distance scores an image.
        rate: the share of ordinary images to flag.
        max_bank: the most embeddings the bundle keeps.
        folds: cross-validation folds for the threshold.

    Returns:
        The detector, or ``None`` when there are fewer than ``k + 1`` images per fold to learn from.
    """
    x = unit(features)
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    n_folds = min(folds, len(y) // (k + 1))
    if n_folds < 2:
        return None
    fold = np.empty(len(y), np.int64)
    for c in np.unique(y):  # stratified: each class dealt round-robin over the folds, in random order
        members = rng.permutation(np.flatnonzero(y == c))
        fold[members] = (np.arange(len(members)) + rng.integers(n_folds)) % n_folds
    held_out = np.empty(len(y), np.float32)
    for f in range(n_folds):
        inside = fold == f
        held_out[inside] = kth_distance(x[inside], x[~inside], k)
    threshold = float(np.quantile(held_out, 1.0 - rate))
    return Unfamiliar(_sample(x, y, max_bank, rng), k, threshold, rate, len(y))


def _sample(x: np.ndarray, y: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    if len(x) <= size:
        return x
    keep = np.concatenate([rng.choice(np.flatnonzero(y == c), max(1, round(size * np.mean(y == c))), replace=False)
                           for c in np.unique(y)])
    return x[np.sort(keep[:size])]
