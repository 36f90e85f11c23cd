"""The classify-many answer (``server.services.predict``): its scores are :func:`shoal.evaluate.score`'s."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from shoal.evaluate import score
from shoal.inference.classifier import Result
from shoal.server.services.predict import _many

LABELS = ["a", "b", "c", "d", "e", "f"]


def result(source: str, probs: list[float]) -> Result:
    order = np.argsort(probs)[::-1]
    return Result(source, [(LABELS[i], probs[i]) for i in order], unfamiliar=False, unfamiliar_score=0.1)


def test_classify_many_scores_are_evaluate_score_and_an_unknown_class_counts_as_missed() -> None:
    classifier = SimpleNamespace(labels=LABELS, unfamiliar_threshold=0.5, unfamiliar_reason=None)
    probs = [[0.5, 0.1, 0.1, 0.1, 0.1, 0.1],   # a -> a
             [0.04, 0.2, 0.3, 0.16, 0.05, 0.25],  # a -> c, a 6th
             [0.1, 0.6, 0.1, 0.1, 0.05, 0.05],  # b -> b
             [0.4, 0.2, 0.1, 0.1, 0.1, 0.1]]    # zebra (not a class of the model)
    truth = ["a", "a", "b", "zebra"]
    items = [(f"{t}/{i}.png", None, t) for i, t in enumerate(truth)] + [("loose.png", None, None)]
    results = [result(s, p) for (s, _, _), p in zip(items, probs + [[1 / 6] * 6])]
    out = _many(classifier, "toy", items, results, top=2)

    want = score(LABELS, np.array(probs[:3]), np.array([0, 0, 1]), ["0", "1", "2"])
    a = next(c for c in want.per_class if c["label"] == "a")
    assert out["summary"] == {"images": 5, "errors": 0, "with_truth": 4, "unfamiliar": 0,
                              "top1_accuracy": pytest.approx(2 / 4), "top5_accuracy": pytest.approx(2 / 4)}
    assert out["per_class"] == [
        {"label": "a", "images": 2, "top1_accuracy": a["recall"], "top5_accuracy": a["top5"], "known": True},
        {"label": "b", "images": 1, "top1_accuracy": 1.0, "top5_accuracy": 1.0, "known": True},
        {"label": "zebra", "images": 1, "top1_accuracy": 0.0, "top5_accuracy": 0.0, "known": False}]
    assert a["recall"] == 0.5 and a["top5"] == 0.5  # the second 'a' is the sixth most probable
    assert [len(r["predictions"]) for r in out["results"]] == [2] * 5
    assert [r.get("top1") for r in out["results"]] == [True, False, True, False, None]
