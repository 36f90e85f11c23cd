"""``shoal evaluate MODEL --split S`` and ``--folder DIR``: what is scored, as a user types it."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from shoal.cli import _register, app
from shoal.evaluate import evaluate

_register()
runner = CliRunner()


@pytest.fixture()
def in_store(rgb, monkeypatch):
    monkeypatch.setenv("SHOAL_HOME", str(rgb.home))
    return rgb


def test_split_chooses_which_images_of_the_dataset_are_scored(in_store):
    rgb = in_store
    val = json.loads(runner.invoke(app, ["evaluate", rgb.name, "--json"]).stdout)
    train = runner.invoke(app, ["evaluate", rgb.name, "--dataset", rgb.dataset, "--split", "train", "--json"])
    assert train.exit_code == 0, train.output
    scored = json.loads(train.stdout)
    assert (val["count"], scored["count"]) == (9, 27)  # 12 images a class, a quarter held out for validation
    assert scored["on"] == "dataset 'rgb' (train)" and val["on"].startswith("dataset 'rgb' (val)")
    assert scored["accuracy"] == pytest.approx(evaluate(rgb.name, dataset=rgb.dataset, split="train").accuracy)
    assert [sum(row) for row in scored["confusion"]] == [9, 9, 9]

    text = runner.invoke(app, ["evaluate", rgb.name, "--split", "train"])
    assert text.stdout.splitlines()[0].startswith(f"Model {rgb.name} on dataset 'rgb' (train)")

    none = runner.invoke(app, ["evaluate", rgb.name, "--dataset", rgb.dataset, "--split", "test"])
    assert none.exit_code == 1 and none.stderr.startswith("Error: dataset 'rgb' has no test images")
    assert len(none.stderr.splitlines()) == 1
    bad = runner.invoke(app, ["evaluate", rgb.name, "--split", "dev"])
    assert bad.exit_code == 1 and "split must be one of train, val, test, got 'dev'" in bad.stderr


def test_folder_scores_the_images_of_its_class_sub_folders(in_store, tmp_path):
    rgb = in_store
    folder = tmp_path / "new"
    for label in rgb.labels:
        (folder / label).mkdir(parents=True)
        for image in sorted((rgb.images / label).iterdir())[:2]:
            shutil.copy(image, folder / label / image.name)

    result = runner.invoke(app, ["evaluate", rgb.name, "--folder", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    assert scored["count"] == 6 and scored["on"] == f"folder {folder}"
    assert [sum(row) for row in scored["confusion"]] == [2, 2, 2]
    assert scored["accuracy"] == pytest.approx(evaluate(rgb.bundle, folder=folder).accuracy)
    text = runner.invoke(app, ["evaluate", rgb.name, "--folder", str(folder)])
    assert text.stdout.splitlines()[0] == f"Model {rgb.name} on folder {folder}: 6 images"

    (folder / "zebra").mkdir()
    shutil.copy(next((rgb.images / "circle").iterdir()), folder / "zebra" / "z.png")
    unknown = runner.invoke(app, ["evaluate", rgb.name, "--folder", str(folder)])
    assert unknown.exit_code == 1 and "has classes the model does not know: 'zebra'" in unknown.stderr
