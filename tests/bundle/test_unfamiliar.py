"""The unfamiliar verdict: k-th nearest cosine distance, threshold from cross-validation."""

from __future__ import annotations

import numpy as np

from shoal.bundle.unfamiliar import MAX_BANK, fit_unfamiliar, kth_distance, unit


def _clusters(n: int, seed: int, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(centres), n)
    return centres[y] + 0.3 * rng.normal(size=(n, centres.shape[1])), y


def test_flags_another_distribution_and_few_ordinary_images():
    rng = np.random.default_rng(0)
    familiar = rng.normal(size=(2, 64)) * 3
    other = rng.normal(size=(2, 64)) * 3
    x, y = _clusters(400, 1, familiar)
    detector = fit_unfamiliar(x, y, seed=0)
    assert detector is not None
    ordinary, _ = _clusters(2000, 2, familiar)
    strange, _ = _clusters(500, 3, other)
    assert (detector.scores(ordinary) > detector.threshold).mean() < 0.03
    assert (detector.scores(strange) > detector.threshold).mean() > 0.95


def test_score_is_the_kth_nearest_cosine_distance():
    bank = unit(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    query = unit(np.array([[1.0, 0.0]]))
    # similarities 1, 0, 0.707: the 2nd nearest is at 1 - 0.707
    np.testing.assert_allclose(kth_distance(query, bank, 2), [1 - np.sqrt(0.5)], rtol=1e-6)
    np.testing.assert_allclose(kth_distance(query, bank, 1), [0.0], atol=1e-6)


def test_bank_is_bounded_and_keeps_every_class():
    x, y = _clusters(MAX_BANK + 500, 0, np.eye(3, 8) * 5)
    detector = fit_unfamiliar(x, y, seed=0)
    assert detector is not None and len(detector.bank) <= MAX_BANK
    nearest = (detector.bank @ unit(np.eye(3, 8)).T).argmax(1)
    assert set(nearest.tolist()) == {0, 1, 2}
    assert detector.to_manifest()["training_images"] == MAX_BANK + 500


def test_too_few_images_give_no_detector():
    assert fit_unfamiliar(np.ones((5, 4)), np.zeros(5, int)) is None
