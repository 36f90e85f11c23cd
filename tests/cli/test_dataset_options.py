"""``shoal dataset create`` with a test split and per-class limits, as a user types them."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from shoal import datasets
from shoal.cli import _register, app

_register()
runner = CliRunner()


def create(*args: str) -> dict:
    result = runner.invoke(app, ["dataset", "create", *args, "--size", "8", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_test_holds_out_a_third_split_apart_from_train_and_val(shoal_home, image_folder_factory):
    root = image_folder_factory(["a", "b"], 10, size=(10, 10))
    data = create(str(root), "--name", "held", "--val", "25", "--test", "20")

    assert data["splits"] == {"train": {"a": 6, "b": 6}, "val": {"a": 2, "b": 2}, "test": {"a": 2, "b": 2}}
    ds = datasets.load("held")
    assert ds.images("test").shape == (4, 8, 8, 3) and sorted(ds.labels("test").tolist()) == [0, 0, 1, 1]
    test, train, val = (set(ds.sources(split)) for split in ("test", "train", "val"))
    assert len(test) == 4 and test.isdisjoint(train) and test.isdisjoint(val)
    assert len(test | train | val) == 20  # every image in exactly one split

    without = create(str(root), "--name", "no-test", "--val", "25")
    assert without["splits"]["test"] == {"a": 0, "b": 0} and without["splits"]["train"] == {"a": 8, "b": 8}


def test_min_and_max_per_class_leave_out_small_classes_and_cap_large_ones(shoal_home, image_folder_factory):
    root = image_folder_factory(["big", "bigger", "small", "tiny"], [10, 12, 3, 2], size=(10, 10))
    data = create(str(root), "--name", "capped", "--val", "25", "--min-per-class", "3", "--max-per-class", "8")

    assert data["classes"] == ["big", "bigger", "small"]  # 'tiny' has 2 images, fewer than 3
    totals = {c: sum(data["splits"][s][c] for s in ("train", "val", "test")) for c in data["classes"]}
    assert totals == {"big": 8, "bigger": 8, "small": 3}
    assert [s["reason"] for s in data["skipped"]] == ["class 'tiny' left out: 2 image files, fewer than min_per_class (3)"]
    ds = datasets.load("capped")
    assert len(ds.sources("train")) + len(ds.sources("val")) == 19
    assert np.bincount(np.concatenate([ds.labels("train"), ds.labels("val")])).tolist() == [8, 8, 3]

    kept_two = create(str(root), "--name", "min-two", "--min-per-class", "2")
    assert kept_two["classes"] == ["big", "bigger", "small", "tiny"]  # the default would keep it too
