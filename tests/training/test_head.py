"""The fitted head: honest probabilities on data whose true probabilities are known."""

from __future__ import annotations

import numpy as np
import pytest

from shoal.errors import TrainingError
from shoal.training.head import fit_head


def _gaussians(n: int, seed: int, dims: int = 16, shift: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two overlapping unit Gaussians at ±shift on the first axis; returns x, y and the true P(y=1|x)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, dims))
    x[:, 0] += np.where(y == 1, shift, -shift)
    true = 1 / (1 + np.exp(-2 * shift * x[:, 0]))  # log-odds of N(+s, 1) vs N(-s, 1)
    return x.astype(np.float32), y, true


def _ece(probs: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    confidence, predicted = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            total += inside.mean() * abs(confidence[inside].mean() - (predicted[inside] == y[inside]).mean())
    return total


def test_fitted_head_is_calibrated_on_overlapping_classes():
    x, y, _ = _gaussians(1200, seed=0)
    head = fit_head(x, y, num_classes=2, seed=0)
    test_x, test_y, true = _gaussians(4000, seed=1)
    probs = head.probabilities(test_x)
    assert _ece(probs, test_y) < 0.05
    assert probs.max() <= 0.999
    assert np.abs(probs[:, 1] - true).mean() < 0.08  # close to the true posterior, not just calibrated on average
    assert head.folds == 5 and len(head.curve) == 13
    assert head.strength < 100  # the cross-validated strength regularises: noise dims are not fitted


def test_more_classes_and_absent_class_get_a_row_each():
    rng = np.random.default_rng(0)
    centres = np.eye(4, 8) * 4
    y = rng.integers(0, 3, 300)  # class 3 has no training feature
    x = centres[y] + rng.normal(size=(300, 8))
    head = fit_head(x, y, num_classes=4, seed=0)
    assert head.weight.shape == (4, 8) and head.bias.shape == (4,)
    probs = head.probabilities(centres)
    assert (probs[:3].argmax(1) == [0, 1, 2]).all()
    assert probs[:, 3].max() < 1e-6
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)


def test_views_of_one_image_stay_in_one_fold():
    # Each image and its near-copy: if copies were split across folds, held-out log-loss would
    # reward the weakest regularisation; grouped, it must not look better than the ungrouped fit.
    x, y, _ = _gaussians(200, seed=2)
    views = np.concatenate([x, x + 1e-3])
    labels = np.concatenate([y, y])
    grouped = fit_head(views, labels, num_classes=2, groups=np.tile(np.arange(200), 2), seed=0)
    leaky = fit_head(views, labels, num_classes=2, seed=0)
    assert min(p["log_loss"] for p in grouped.curve) > min(p["log_loss"] for p in leaky.curve)


def test_binary_head_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    x, y, _ = _gaussians(300, seed=3)
    head = fit_head(x, y, num_classes=2, seed=0)
    reference = LogisticRegression(C=head.strength, max_iter=1000).fit(x, y)
    np.testing.assert_allclose(head.probabilities(x), reference.predict_proba(x), atol=1e-4)


def test_too_few_images_to_cross_validate_still_fits():
    x = np.array([[0.0, 10.0], [10.0, 0.0], [1.0, 9.0]])
    head = fit_head(x, np.array([0, 1, 0]), num_classes=2)
    assert head.folds == 0 and head.curve == [] and head.strength == 1.0
    assert head.probabilities(x).argmax(1).tolist() == [0, 1, 0]


def test_one_class_is_refused():
    with pytest.raises(TrainingError, match="images of 1 class"):
        fit_head(np.zeros((4, 2)), np.zeros(4, int), num_classes=2)


def test_held_out_probabilities_come_from_heads_that_never_saw_the_image():
    """Out-of-fold probabilities at the chosen C: a memorable duplicate of each point lifts in-sample
    probabilities, but out of fold a flipped label gets no help from itself."""
    x, y, _ = _gaussians(300, seed=3, shift=1.5)
    flipped = np.arange(0, 300, 10)
    noisy = y.copy()
    noisy[flipped] = 1 - noisy[flipped]
    head = fit_head(x, noisy, num_classes=2, seed=0, held_out=True)
    assert head.held_out is not None and head.held_out.shape == (300, 2)
    assert np.allclose(head.held_out.sum(1), 1, atol=1e-5)
    given = head.held_out[np.arange(300), noisy]
    # the flipped points get low probability for their given label, far lower than the rest
    assert np.median(given[flipped]) < 0.3 < np.median(np.delete(given, flipped))
    # without the option, or with too few images to cross-validate, there is none
    assert fit_head(x, noisy, num_classes=2, seed=0).held_out is None
    assert fit_head(x[:3], np.array([0, 1, 0]), num_classes=2, held_out=True).held_out is None
