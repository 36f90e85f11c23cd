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
from shoal.errors import ConfigError, DatasetError, NotFoundError
from shoal.evaluate import calibration, evaluate, score, write_html
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
    assert e.log_loss == pytest.approx(-np.mean(np.log([0.9, 0.2, 0.8, 0.3, 0.9, 0.05])), rel=1e-6)
    b = e.per_class[1]
    assert b == {"label": "b", "precision": pytest.approx(1 / 3), "recall": 0.5,
                 "f1": pytest.approx(2 * (1 / 3) * 0.5 / (1 / 3 + 0.5)), "support": 2, "top5": 1.0,
                 "unfamiliar": None}
    assert e.per_class[2]["precision"] == 1.0 and e.per_class[2]["recall"] == 0.5
    assert [(j.source, j.true, j.predicted) for j in e.wrong] == [("img5", "c", "b"), ("img1", "a", "b")]
    assert e.wrong[0].probability == pytest.approx(0.85) and e.wrong[0].true_probability == pytest.approx(0.05)
    # A class's row holds the images predicted as it, by its probability: the wrong ones too, never others.
    assert [j.source for j in e.top_per_class["b"]] == ["img5", "img2"]
    assert [j.source for j in e.top_per_class["c"]] == ["img4"]
    assert e.calibration == calibration(probs, truth)
    as_json = json.loads(json.dumps(e.to_dict()))
    assert as_json["confusion"] == e.confusion and as_json["log_loss"] == e.log_loss
    assert as_json["calibration"]["ece"] == e.calibration.ece and len(as_json["calibration"]["bins"]) == 10


def test_calibration_on_a_hand_computed_example():
    # Two images at confidence 0.9, one right: accuracy 0.5. Two at 0.6, both right: accuracy 1.
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    c = calibration(probs, np.array([0, 1, 1, 1]))
    assert c.ece == pytest.approx(0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6))
    assert [(b.low, b.high) for b in c.bins] == [(pytest.approx(i / 10), pytest.approx((i + 1) / 10)) for i in range(10)]
    full = {i: (b.count, b.confidence, b.accuracy) for i, b in enumerate(c.bins) if b.count}
    assert full == {5: (2, pytest.approx(0.6), 1.0), 8: (2, pytest.approx(0.9), 0.5)}
    assert c.bins[0].count == 0 and c.bins[0].confidence is None and c.bins[0].accuracy is None


def test_calibration_bins_include_their_upper_edge():
    probs = np.array([[0.5, 0.5], [1.0, 0.0], [0.25, 0.75], [0.1, 0.9]])
    c = calibration(probs, np.array([0, 0, 1, 0]), bins=4)
    assert [b.count for b in c.bins] == [0, 1, 1, 2]  # 0.5 in (0.25, 0.5]; 0.75 in (0.5, 0.75]; 0.9 and 1.0 last
    assert c.bins[3].accuracy == 0.5 and c.bins[3].confidence == pytest.approx(0.95)
    assert c.ece == pytest.approx((abs(1 - 0.5) + abs(1 - 0.75) + 2 * abs(0.5 - 0.95)) / 4)


def test_calibrated_probabilities_score_near_zero_and_overconfident_ones_high():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 100_000)
    right = rng.uniform(size=confidence.size) < confidence  # right exactly as often as it is sure
    probs = np.stack([confidence, 1 - confidence], 1)
    truth = np.where(right, 0, 1)
    assert calibration(probs, truth).ece < 0.01
    sure = np.stack([np.full(confidence.size, 0.999), np.full(confidence.size, 0.001)], 1)
    overconfident = calibration(sure, truth)  # always 99.9 %, right about 75 % of the time
    assert overconfident.ece == pytest.approx(0.999 - right.mean())
    assert overconfident.ece > 0.2 and [b.count for b in overconfident.bins][-1] == confidence.size


def test_calibration_refuses_what_it_cannot_bin():
    with pytest.raises(ConfigError, match="bins must be an int >= 1, got 0"):
        calibration(np.array([[1.0, 0.0]]), np.array([0]), bins=0)
    with pytest.raises(ConfigError, match=r"truth must hold one class index per row of probabilities \(2\), got shape \(3,\)"):
        calibration(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1, 1]))
    with pytest.raises(ConfigError, match=r"probabilities must be an N×classes array with N >= 1, got shape \(0,\)"):
        calibration(np.array([]), np.array([]))


def test_classes_never_predicted_or_absent():
    e = score(["a", "b", "c"], np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0]], np.float32), np.array([0, 1]), ["x", "y"])
    assert e.per_class[1] == {"label": "b", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "top5": 1.0,
                            "unfamiliar": None}
    assert e.per_class[2] == {"label": "c", "precision": 0.0, "recall": None, "f1": None, "support": 0, "top5": None,
                            "unfamiliar": None}
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
    assert e.count == 9 and e.on == "dataset 'rgb' (val)" and e.dataset == rgb.dataset and e.name == rgb.name
    assert e.accuracy == pytest.approx(manifest["metrics"]["val_accuracy"])
    assert e.log_loss == pytest.approx(manifest["metrics"]["val_loss"], abs=1e-4)
    assert sum(map(sum, e.confusion)) == 9 and e.labels == list(rgb.labels)
    assert len(e.top_per_class) == 3 and sum(map(len, e.top_per_class.values())) == 9  # each image in one row
    assert all(j.predicted == label for label, items in e.top_per_class.items() for j in items)
    assert sum(b.count for b in e.calibration.bins) == 9


def test_without_a_dataset_or_folder_the_models_own_dataset_is_used(rgb, tmp_path):
    e = evaluate(rgb.bundle, store=Store(rgb.home))
    assert e.on == "dataset 'rgb' (val), the one it was trained on" and e.dataset == rgb.dataset and e.count == 9
    with pytest.raises(NotFoundError) as gone:
        evaluate(rgb.bundle, store=Store(tmp_path / "elsewhere"))
    assert str(gone.value) == (f"model {rgb.name!r} was trained on dataset 'rgb', which is no longer in "
                               f"{tmp_path / 'elsewhere'}; evaluate it on a folder of class sub-folders instead "
                               "(shoal evaluate MODEL --folder DIR)")


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
    with pytest.raises(ConfigError, match="give either dataset .* or folder .*, not both"):
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


def test_the_html_report_shows_the_matrix_calibration_and_the_images(rgb, tmp_path):
    e = evaluate(rgb.bundle, dataset=rgb.dataset, store=Store(rgb.home), top_per_class=2)
    page = write_html(e, tmp_path / "report.html").read_text(encoding="utf-8")
    assert f"<h1>Evaluation of {rgb.name}</h1>" in page and f"<p class=muted>Bundle {rgb.bundle}</p>" in page
    assert "<h2>Confusion matrix</h2>" in page and "true \\ predicted" in page
    assert page.count("data:image/png;base64,") == (sum(map(len, e.top_per_class.values())) + len(e.wrong)
                                                    + len(e.unfamiliar))
    assert (f"Accuracy <b>{e.accuracy:.2%}</b>, log-loss {e.log_loss:.4f},\n"
            f"expected calibration error {e.calibration.ece:.2%}.") in page
    assert "<h2>Calibration</h2>" in page and 'aria-label="reliability diagram"' in page
    assert page.count("<tr><td>0.") + page.count("<tr><td>1.") >= 1  # the reliability table, one row per full bin
    assert "<script" not in page and 'src="http' not in page  # self-contained


def test_the_report_captions_each_row_with_its_own_class(tmp_path):
    labels = ["dolphin", "seahorse"]
    probs = np.array([[0.97, 0.03], [0.2, 0.8], [0.999, 0.001], [0.4, 0.6]])
    truth = np.array([0, 1, 1, 0])  # the third is a seahorse called a dolphin at 99.9 %
    pixels = lambda i: np.full((8, 8, 3), 40 * i, np.uint8)  # noqa: E731
    e = score(labels, probs, truth, ["d1.jpg", "s1.jpg", "s2.jpg", "d2.jpg"], model="/m/bundle", name="sea",
              on="folder photos", pixels=pixels)
    assert [(j.source, j.probability) for j in e.top_per_class["dolphin"]] == [("s2.jpg", pytest.approx(0.999)),
                                                                                  ("d1.jpg", pytest.approx(0.97))]
    assert [j.source for j in e.wrong] == ["s2.jpg", "d2.jpg"]
    page = write_html(e, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<figcaption>99.9%<br>is seahorse</figcaption>" in page and "<figcaption>97.0%</figcaption>" in page
    assert "<figcaption>dolphin 99.9%<br>is seahorse</figcaption>" in page  # the same image among the wrong
    assert page.count("<figure class=wrong>") == 2 * 2  # each wrong image in its row and in the wrong list
    assert ("The images predicted as each class, by the probability of that class; those of another class (red) "
            "are wrong.") in page
    assert "<title>shoal evaluation of sea: folder photos</title>" in page
    one_sided = score(labels, np.array([[0.9, 0.1]]), np.array([0]), ["d.jpg"])
    assert "<p>No image was predicted as seahorse.</p>" in write_html(one_sided, tmp_path / "o.html").read_text()


def test_cli_text_json_and_report(rgb, tmp_path, monkeypatch):
    monkeypatch.setenv("SHOAL_HOME", str(rgb.home))
    text = runner.invoke(app, ["evaluate", rgb.name, "--dataset", rgb.dataset])
    assert text.exit_code == 0, text.output
    report = evaluate(rgb.name, dataset=rgb.dataset)
    lines = text.stdout.splitlines()
    assert lines[0] == f"Model {rgb.name} on dataset 'rgb' (val): 9 images"
    assert lines[1].endswith(f"  log-loss {report.log_loss:.4f}  expected calibration error {report.calibration.ece:.2%}")
    assert lines[2] == (f"unfamiliar: {report.unfamiliar_count} of 9 images ({report.unfamiliar_rate:.2%}) look like "
                        "none of the training images")
    assert lines[4] == "reliability (images by top-1 confidence; a calibrated model's accuracy equals its confidence)"
    assert lines[5] == " confidence  images  mean conf.   accuracy"
    full = [b for b in report.calibration.bins if b.count]
    assert lines[6 : 6 + len(full)] == [f"{b.low:>5.2f}–{b.high:<5.2f}  {b.count:>6}  {b.confidence:>10.2%}  "
                                        f"{b.accuracy:>9.2%}" for b in full]
    assert "confusion matrix (rows: true class, columns: predicted)" in text.stdout
    as_json = runner.invoke(app, ["evaluate", rgb.name, "--dataset", rgb.dataset, "--json", "--out",
                                  str(tmp_path / "r.html")])
    data = json.loads(as_json.stdout)
    assert data["count"] == 9 and len(data["confusion"]) == 3 and not math.isnan(data["log_loss"])
    assert data["name"] == rgb.name and data["calibration"] == report.calibration.to_dict()
    assert data["unfamiliar_rate"] == report.unfamiliar_rate and data["unfamiliar_count"] == report.unfamiliar_count
    assert (tmp_path / "r.html").exists() and "Report:" in as_json.stderr
    missing = runner.invoke(app, ["evaluate", rgb.name, "--dataset", "nope"])
    assert missing.exit_code == 1 and missing.stderr.startswith("Error: no dataset named 'nope'")
    both = runner.invoke(app, ["evaluate", rgb.name, "--dataset", "rgb", "--folder", str(tmp_path)])
    assert both.exit_code == 1 and both.stderr == (
        "Error: give either --dataset (a stored dataset's name) or --folder (a folder of class sub-folders), "
        "not both\n")


def test_cli_defaults_to_the_models_own_dataset(rgb, tmp_path, monkeypatch):
    monkeypatch.setenv("SHOAL_HOME", str(rgb.home))
    own = runner.invoke(app, ["evaluate", rgb.name])
    assert own.exit_code == 0, own.output
    assert own.stdout.splitlines()[0] == f"Model {rgb.name} on dataset 'rgb' (val), the one it was trained on: 9 images"
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "elsewhere"))
    gone = runner.invoke(app, ["evaluate", str(rgb.bundle)])
    assert gone.exit_code == 1 and gone.stderr == (
        f"Error: model {rgb.name!r} was trained on dataset 'rgb', which is no longer in {tmp_path / 'elsewhere'}; "
        "evaluate it on a folder of class sub-folders instead (shoal evaluate MODEL --folder DIR)\n")
    copy = shutil.copytree(rgb.bundle, tmp_path / "imported")
    manifest = json.loads((copy / "shoal.json").read_text())
    del manifest["training"]
    (copy / "shoal.json").write_text(json.dumps(manifest))
    unknown = runner.invoke(app, ["evaluate", str(copy)])
    assert unknown.exit_code == 1 and unknown.stderr == (
        "Error: give --dataset (a stored dataset's name) or --folder (a folder of class sub-folders): "
        f"model {rgb.name!r} does not record the dataset it was trained on\n")


def test_score_counts_and_lists_the_unfamiliar_images(tmp_path):
    labels = ["dolphin", "seahorse"]
    probs = np.array([[0.97, 0.03], [0.2, 0.8], [0.999, 0.001], [0.4, 0.6], [0.9, 0.1]])
    truth = np.array([0, 1, 1, 0, 0])
    scores = np.array([0.10, 0.70, 0.95, 0.20, 0.80])  # above 0.5: s1, s2 and d3 are unfamiliar
    pixels = lambda i: np.full((8, 8, 3), 40 * i, np.uint8)  # noqa: E731
    e = score(labels, probs, truth, ["d1.jpg", "s1.jpg", "s2.jpg", "d2.jpg", "d3.jpg"], name="sea", on="folder photos",
              pixels=pixels, unfamiliar_scores=scores, unfamiliar_threshold=0.5, unfamiliar=2)
    assert e.unfamiliar_count == 3 and e.unfamiliar_rate == pytest.approx(0.6) and e.unfamiliar_reason is None
    assert [(j.source, j.unfamiliar_score) for j in e.unfamiliar] == [("s2.jpg", 0.95), ("d3.jpg", 0.8)]  # 2 kept
    assert [row["unfamiliar"] for row in e.per_class] == [1, 2]
    assert [(j.source, j.unfamiliar) for j in e.wrong] == [("s2.jpg", True), ("d2.jpg", False)]
    as_json = json.loads(json.dumps(e.to_dict()))
    assert as_json["unfamiliar_rate"] == pytest.approx(0.6) and as_json["unfamiliar_count"] == 3
    assert [j["source"] for j in as_json["unfamiliar"]] == ["s2.jpg", "d3.jpg"]
    assert as_json["wrong"][0]["unfamiliar"] is True and as_json["wrong"][0]["unfamiliar_score"] == 0.95
    text = e.summary()
    assert "unfamiliar: 3 of 5 images (60.00%) look like none of the training images" in text
    assert "  s2.jpg  is seahorse, predicted dolphin 99.90%  UNFAMILIAR" in text
    assert "  d3.jpg  is dolphin, predicted dolphin 90.00%, score 0.800" in text
    page = write_html(e, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<p>Unfamiliar: 3 of 5 images (60.00%) look like none of the training images.</p>" in page
    assert "<h2>Unfamiliar</h2>" in page and "their probabilities say little" in page
    section = page.split("<h2>Unfamiliar</h2>")[1]
    assert section.count("data:image/png;base64,") == 2 and "<p class=muted>and 1 more.</p>" in section
    assert "<figcaption>dolphin 90.0% · 0.800<br><span class=odd>unfamiliar</span></figcaption>" in section
    assert "<th>unfamiliar</th>" in page and "<td>2</td></tr>" in page  # the per-class column


def test_without_a_detector_the_verdict_is_unknown_and_says_why(tmp_path):
    e = score(["a", "b"], np.array([[0.9, 0.1]]), np.array([0]), ["x.jpg"],
              unfamiliar_reason="the model cannot tell: it has too few training images to set a threshold")
    assert e.unfamiliar_count is None and e.unfamiliar_rate is None and e.unfamiliar == []
    assert e.to_dict()["unfamiliar_reason"] == "the model cannot tell: it has too few training images to set a threshold"
    assert ("unfamiliar: unknown, the model cannot tell: it has too few training images to set a threshold"
            in e.summary())
    page = write_html(e, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<p>Unknown: the model cannot tell: it has too few training images to set a threshold.</p>" in page


def test_stored_images_and_files_get_the_verdict_predict_gives(rgb, tmp_path):
    model = shoal.load(rgb.bundle)
    stored = evaluate(model, dataset=rgb.dataset, store=Store(rgb.home), top_per_class=9)
    from_files = evaluate(model, folder=rgb.images, top_per_class=100)
    results = {r.source: r for r in model.predict(sorted(rgb.images.rglob("*.*")))}
    for report in (stored, from_files):  # the stored pixels (the network run directly) and the files (predict)
        judged = [j for items in report.top_per_class.values() for j in items]
        assert len(judged) == report.count
        for j in judged:
            assert j.unfamiliar == results[j.source].unfamiliar
            assert j.unfamiliar_score == pytest.approx(results[j.source].unfamiliar_score, abs=1e-5)
    # Images unlike any training image, filed under a known class: full-range noise and black-and-white stripes (a
    # model that has learned the classes' colours finds a flat red frame much like its red circles).
    from PIL import Image

    odd = tmp_path / "odd" / rgb.labels[0]
    odd.mkdir(parents=True)
    for i in range(3):
        noise = np.random.default_rng(i).integers(0, 256, (32, 40, 3), dtype=np.uint8)
        Image.fromarray(noise).save(odd / f"noise{i}.png")
        stripes = np.tile((np.arange(40) // (2 + i) % 2 * 255).astype(np.uint8)[None, :, None], (32, 1, 3))
        Image.fromarray(stripes).save(odd / f"stripes{i}.png")
    foreign = evaluate(model, folder=tmp_path / "odd")
    assert foreign.unfamiliar_rate >= 0.5 > stored.unfamiliar_rate
    assert len(foreign.unfamiliar) == foreign.unfamiliar_count and all(j.unfamiliar for j in foreign.unfamiliar)


def test_compare_runs_each_model_as_evaluate_does(rgb, tmp_path):
    from shoal import datasets
    from shoal.compare import compare

    same = compare(str(rgb.bundle), str(rgb.bundle), store=Store(rgb.home))
    alone = evaluate(rgb.bundle, dataset=rgb.dataset, store=Store(rgb.home))
    assert (same.split, same.images, same.left_out) == ("val", 9, 0)
    assert same.first.accuracy == same.second.accuracy == alone.accuracy
    assert same.first.log_loss == pytest.approx(alone.log_loss)
    # A dataset of that name stored at another size: the images are prepared again from their files (the
    # check evaluate makes), and an image whose file is gone is scored by neither model.
    other = Store(tmp_path / "other")
    images = tmp_path / "images"
    shutil.copytree(rgb.images, images)
    datasets.create(images, "rgb", size=20, val_pct=25, store=other)
    gone = datasets.load("rgb", store=other).sources("val")[0]
    (images / gone).unlink()  # a source relative to the folder, or absolute (then / keeps it whole)
    resized = compare(str(rgb.bundle), str(rgb.bundle), store=other)
    again = evaluate(rgb.bundle, dataset="rgb", store=other)
    assert (resized.images, resized.left_out) == (again.count, 1) and again.count == 8
    assert resized.first.accuracy == again.accuracy and resized.first.log_loss == pytest.approx(again.log_loss)
    assert [s["source"] for s in resized.first.skipped] == [gone]
    with pytest.raises(NotFoundError, match="was trained on dataset 'rgb', which is no longer in .*; evaluate each "
                                            "model on a folder of class sub-folders instead"):
        compare(str(rgb.bundle), str(rgb.bundle), store=Store(tmp_path / "empty"))
