"""shoal.evaluate and ``shoal evaluate``: the figures, the lists, the report."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

import shoal
from inference_fixtures import ToyModel
from shoal.cli import _register, app
from shoal.errors import ConfigError, DatasetError
from shoal.evaluate import evaluate, score, write_html
from shoal.store import Store

_register()
runner = CliRunner()



def test_score_computes_every_figure_from_probabilities():
    labels = ["a", "b", "c"]
    probs = np.array([[0.9, 0.05, 0.05],   # a → a
                      [0.2, 0.7, 0.1],     # a → b  (wrong, 0.7)
                      [0.1, 0.8, 0.1],     # b → b
                      [0.6, 0.3, 0.1],     # b → a  (wrong, 0.6)
                      [0.05, 0.05, 0.9],   # c → c
                      [0.1, 0.85, 0.05]],  # c → b  (wrong, 0.85)
                     np.float32)
    truth = np.array([0, 0, 1, 1, 2, 2])
    e = score(labels, probs, truth, [f"img{i}" for i in range(6)], wrong=2, top_per_class=2)
    assert e.count == 6 and e.accuracy == pytest.approx(0.5) and e.top5 is None
    assert e.confusion == [[1, 1, 0], [1, 1, 0], [0, 1, 1]]
    assert e.loss == pytest.approx(-np.mean(np.log([0.9, 0.2, 0.8, 0.3, 0.9, 0.05])), rel=1e-6)
    b = e.per_class[1]
    assert b == {"label": "b", "precision": pytest.approx(1 / 3), "recall": 0.5,
                 "f1": pytest.approx(2 * (1 / 3) * 0.5 / (1 / 3 + 0.5)), "support": 2}
    assert e.per_class[2]["precision"] == 1.0 and e.per_class[2]["recall"] == 0.5
    assert [(j.source, j.true, j.predicted) for j in e.wrong] == [("img5", "c", "b"), ("img1", "a", "b")]
    assert e.wrong[0].probability == pytest.approx(0.85) and e.wrong[0].true_probability == pytest.approx(0.05)
    assert [j.source for j in e.top_per_class["b"]] == ["img5", "img2"]
    assert json.loads(json.dumps(e.to_dict()))["confusion"] == e.confusion


def test_classes_never_predicted_or_absent():
    e = score(["a", "b", "c"], np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0]], np.float32), np.array([0, 1]), ["x", "y"])
    assert e.per_class[1] == {"label": "b", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert e.per_class[2] == {"label": "c", "precision": 0.0, "recall": None, "f1": None, "support": 0}
    assert "n/a" in e.summary()


def test_top5_with_more_than_five_classes():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(7), size=50).astype(np.float32)
    truth = rng.integers(0, 7, 50)
    e = score([str(i) for i in range(7)], probs, truth, [str(i) for i in range(50)])
    ranks = np.argsort(-probs, 1)[:, :5]
    assert e.top5 == pytest.approx(np.mean([t in r for t, r in zip(truth, ranks)]))


def test_a_dataset_split_scores_like_training_validation(rgb):
    e = evaluate(rgb.bundle, dataset=rgb.dataset, store=Store(rgb.home))
    manifest = shoal.load(rgb.bundle).manifest
    assert e.count == 9 and e.on == "dataset 'rgb' (val)"
    assert e.accuracy == pytest.approx(manifest["metrics"]["val_accuracy"])
    assert e.loss == pytest.approx(manifest["metrics"]["val_loss"], abs=1e-4)
    assert sum(map(sum, e.confusion)) == 9 and e.labels == list(rgb.labels)
    assert len(e.top_per_class) == 3 and all(len(v) == 9 for v in e.top_per_class.values())


def test_a_folder_scores_what_predict_says(rgb, tmp_path):
    folder = tmp_path / "unseen"
    for label in rgb.labels[:2]:
        shutil.copytree(rgb.images / label, folder / label)
    (folder / rgb.labels[0] / "broken.png").write_bytes(b"nope")
    e = evaluate(rgb.bundle, folder=folder, wrong=100)
    model = shoal.load(rgb.bundle)
    files = sorted(p for label in rgb.labels[:2] for p in (folder / label).iterdir() if p.name != "broken.png")
    results = model.predict(files)
    right = sum(r.label == f.parent.name for r, f in zip(results, files))
    assert e.count == len(files) and e.accuracy == pytest.approx(right / len(files))
    assert len(e.wrong) == len(files) - right
    assert [s["source"] for s in e.skipped] == [str(folder / rgb.labels[0] / "broken.png")]
    assert e.per_class[2]["support"] == 0


def test_bad_requests_are_refused(rgb, tmp_path):
    with pytest.raises(ConfigError, match="give either dataset"):
        evaluate(rgb.bundle)
    with pytest.raises(ConfigError, match="give either dataset"):
        evaluate(rgb.bundle, dataset="rgb", folder=tmp_path)
    with pytest.raises(ConfigError, match="split must be one of train, val, test, got 'dev'"):
        evaluate(rgb.bundle, dataset="rgb", split="dev", store=Store(rgb.home))
    with pytest.raises(DatasetError, match="dataset 'rgb' has no test images"):
        evaluate(rgb.bundle, dataset="rgb", split="test", store=Store(rgb.home))
    (tmp_path / "zebra").mkdir()
    shutil.copy(next(rgb.images.glob("circle/*.png")), tmp_path / "zebra" / "z.png")
    with pytest.raises(DatasetError, match=r"has classes the model does not know: 'zebra' \(the model's classes: "
                                           r"'circle', 'square', 'triangle'\)"):
        evaluate(rgb.bundle, folder=tmp_path)
    with pytest.raises(ConfigError, match="wrong must be an int >= 0, got -1"):
        evaluate(rgb.bundle, folder=tmp_path, wrong=-1)


def test_the_html_report_shows_the_matrix_and_the_images(rgb, tmp_path):
    e = evaluate(rgb.bundle, dataset=rgb.dataset, store=Store(rgb.home), top_per_class=2)
    page = write_html(e, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<h2>Confusion matrix</h2>" in page and "true \\ predicted" in page
    assert page.count("data:image/png;base64,") == 2 * 3 + len(e.wrong)
    assert f"Accuracy <b>{e.accuracy:.2%}</b>" in page


def test_cli_text_json_and_report(rgb, tmp_path, monkeypatch):
    monkeypatch.setenv("SHOAL_HOME", str(rgb.home))
    text = runner.invoke(app, ["evaluate", rgb.name, "--dataset", rgb.dataset])
    assert text.exit_code == 0, text.output
    assert text.stdout.splitlines()[0] == f"Model {rgb.bundle} on dataset 'rgb' (val): 9 images"
    assert "confusion matrix (rows: true class, columns: predicted)" in text.stdout
    as_json = runner.invoke(app, ["evaluate", rgb.name, "--dataset", rgb.dataset, "--json", "--out",
                                  str(tmp_path / "r.html")])
    data = json.loads(as_json.stdout)
    assert data["count"] == 9 and len(data["confusion"]) == 3 and not math.isnan(data["loss"])
    assert (tmp_path / "r.html").exists() and "Report:" in as_json.stderr
    missing = runner.invoke(app, ["evaluate", rgb.name, "--dataset", "nope"])
    assert missing.exit_code == 1 and missing.stderr.startswith("Error: no dataset named 'nope'")
