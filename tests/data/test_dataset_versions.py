"""Dataset versions (``shoal dataset edit``): NAME@2, @3 keep the split of every image that stays."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from shoal import datasets
from shoal.cli import app
from shoal.data.versions import changed_images, edit, split_version, version_info, versions
from shoal.errors import ConfigError, DatasetError
from shoal.store import check_name


def _where(ds):
    return {p: (s, ds.classes[y]) for s in ("train", "val", "test") for p, y in zip(ds.sources(s), ds.labels(s))}


def test_a_version_keeps_the_split_of_the_remaining_images(tiny_dataset):
    base = tiny_dataset
    train, val = base.sources("train"), base.sources("val")
    moved, dropped, dropped_val = train[0], train[1], val[0]
    new_class = next(c for c in base.classes if c != base.classes[base.labels("train")[0]])
    v2 = edit("tiny", relabel={moved: new_class}, exclude=[dropped, dropped_val])
    assert v2.name == "tiny@2" and split_version(v2.name) == ("tiny", 2)
    before, after = _where(base), _where(v2)
    assert set(after) == set(before) - {dropped, dropped_val}
    for path, (split, label) in after.items():
        assert split == before[path][0]  # same split for every image that stays
        assert label == (new_class if path == moved else before[path][1])
    # the pixels travel with their image
    old_rows = {p: i for i, p in enumerate(train)}
    for i, p in enumerate(v2.sources("train")):
        assert np.array_equal(v2.images("train")[i], base.images("train")[old_rows[p]])
    assert v2.count("train") == base.count("train") - 1 and v2.count("val") == base.count("val") - 1
    assert v2.splits["train"][new_class] == base.splits["train"][new_class] + 1
    info = version_info(v2)
    assert info["parent"] == "tiny" and info["number"] == 2
    assert info["relabelled"] == [{"image": moved, "split": "train", "from": base.classes[base.labels("train")[0]],
                                   "to": new_class}]
    assert {e["image"] for e in info["excluded"]} == {dropped, dropped_val}
    assert changed_images(base, v2) == {moved, dropped, dropped_val}
    # the source folder is untouched, and the next edit of either version is @3
    assert datasets.load("tiny").count() == base.count()
    v3 = edit("tiny@2", exclude=[train[2]])
    assert v3.name == "tiny@3" and version_info(v3)["parent"] == "tiny@2"
    assert [v["name"] for v in versions("tiny@3")] == ["tiny", "tiny@2", "tiny@3"]
    assert versions("tiny")[1] == {"name": "tiny@2", "number": 2, "parent": "tiny", "relabelled": 1, "excluded": 2,
                                   "counts": {"train": v2.count("train"), "val": v2.count("val"), "test": 0}}


def test_edit_refuses_what_it_cannot_do(tiny_dataset):
    path = tiny_dataset.sources("train")[0]
    with pytest.raises(ConfigError, match="nothing to change"):
        edit("tiny")
    with pytest.raises(ConfigError, match=r"'dog' is not a class of dataset 'tiny' \(its classes: circle, square, triangle\)"):
        edit("tiny", relabel={path: "dog"})
    with pytest.raises(DatasetError, match="'/no/such.png' is not an image of dataset 'tiny'"):
        edit("tiny", exclude=["/no/such.png"])
    with pytest.raises(ConfigError, match="both relabelled and excluded"):
        edit("tiny", relabel={path: "square"}, exclude=[path])
    circles = [p for p, y in zip(tiny_dataset.sources("train"), tiny_dataset.labels("train")) if y == 0]
    with pytest.raises(DatasetError, match="leaves class 'circle' with no training image"):
        edit("tiny", exclude=circles)
    assert [v["name"] for v in versions("tiny")] == ["tiny"]  # nothing was stored


def test_names_may_carry_a_version():
    assert check_name("birds@2") == "birds@2"
    assert check_name("birds@2-efficientnet_lite0", "model") == "birds@2-efficientnet_lite0"
    with pytest.raises(ConfigError, match="'@2' is not allowed"):
        check_name("@2")


def test_cli_edit_from_a_review_and_show_the_versions(tiny_dataset, tmp_path):
    train = tiny_dataset.sources("train")
    review = {"suspects": [
        {"image": train[0], "split": "train", "given": "circle", "suggested": "square", "action": "relabel"},
        {"image": train[1], "split": "train", "given": "circle", "suggested": "circle", "action": "exclude"},
        {"image": train[2], "split": "train", "given": "circle", "suggested": "triangle", "action": "keep"}]}
    file = tmp_path / "review.json"
    file.write_text(json.dumps(review))
    relative = train[3].replace(tiny_dataset.source + "/", "")
    out = CliRunner().invoke(app, ["dataset", "edit", "tiny", "--from-review", str(file), "--relabel", f"{relative}=triangle"])
    assert out.exit_code == 0, out.output
    assert "Stored 'tiny@2' (version 2 of 'tiny', from 'tiny'): 2 relabelled, 1 excluded" in out.stdout
    v2 = datasets.load("tiny@2")
    labels = dict(zip(v2.sources("train"), (v2.classes[y] for y in v2.labels("train"))))
    assert labels[train[0]] == "square" and labels[train[3]] == "triangle" and train[1] not in labels
    shown = CliRunner().invoke(app, ["dataset", "show", "tiny@2"])
    assert shown.exit_code == 0
    assert "tiny@2" in shown.stdout and "from tiny: 2 relabelled, 1 excluded" in shown.stdout
    assert f"excluded (train, {tiny_dataset.classes[tiny_dataset.labels('train')[1]]}): {train[1]}" in shown.stdout
    data = json.loads(CliRunner().invoke(app, ["dataset", "show", "tiny", "--json"]).stdout)
    assert [v["name"] for v in data["versions"]] == ["tiny", "tiny@2"] and data["version"]["number"] == 1
    bad = CliRunner().invoke(app, ["dataset", "edit", "tiny", "--relabel", "nothing"])
    assert bad.exit_code == 1 and "Error: --relabel takes PATH=CLASS, got 'nothing'" in bad.output


def test_a_damaged_version_keeps_its_number(tiny_dataset):
    train = tiny_dataset.sources("train")
    v2 = edit("tiny", exclude=[train[0]])
    (v2.path / "dataset.json").write_text("{ cut short")
    assert [v["name"] for v in versions("tiny")] == ["tiny"]  # the damaged one is skipped when listing
    v3 = edit("tiny", exclude=[train[1]])  # but its number is taken: the next edit is @3, not a clash with @2
    assert v3.name == "tiny@3" and version_info(v3)["parent"] == "tiny"
    assert [v["name"] for v in versions("tiny")] == ["tiny", "tiny@3"]


def test_a_version_checks_the_free_space_and_reserves_its_blocks(tiny_dataset, monkeypatch):
    from shoal.data import dataset as dataset_module
    from shoal.data import versions as versions_module
    from shoal.errors import NoSpaceError
    from shoal.store import Store

    train = tiny_dataset.sources("train")
    with monkeypatch.context() as full:
        full.setattr(dataset_module, "_free_bytes", lambda folder: 0)
        with pytest.raises(NoSpaceError, match=r"^no space left on .*: \d+ MB needed to build dataset 'tiny@2'"):
            edit("tiny", exclude=[train[0]])
    assert not Store().exists("dataset", "tiny@2") and [p.name for p in Store().tmp_path.iterdir()] == []
    allocated = []
    allocate = versions_module.allocate
    monkeypatch.setattr(versions_module, "allocate", lambda path, shape: (allocated.append(shape), allocate(path, shape)))
    v2 = edit("tiny", exclude=[train[0]])
    width, height = tiny_dataset.size
    assert allocated == [(v2.count(s), height, width, tiny_dataset.channels) for s in ("train", "val", "test")]
