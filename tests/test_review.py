"""Label review (``shoal review``): a toy set with deliberately flipped labels gets its flipped images ranked first."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("cleanlab")

CLASSES = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def flipped_home(tmp_path_factory, module_image_folder_factory):
    """A store with the shapes (40 per class) where 4 images of every class were moved to another
    class's folder, and the default fine-tune (a fitted head) trained on it. The synthetic file
    names keep their true class (``circle_017.png``)."""
    from shoal import datasets
    from shoal.training import TrainConfig, train

    home = tmp_path_factory.mktemp("review") / "shoal-home"
    root = module_image_folder_factory(CLASSES, 40, size=(40, 32), name="flipped-src")
    rng = np.random.default_rng(1)
    flipped = set()
    for c in CLASSES:
        for f in rng.choice(sorted((root / c).iterdir()), 4, replace=False):
            dest = root / rng.choice([o for o in CLASSES if o != c]) / f.name
            shutil.move(f, dest)
            flipped.add(str(dest))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SHOAL_HOME", str(home))
        datasets.create(root, "shapes", size=32)
        result = train(TrainConfig(dataset="shapes", pretrained=True))
        yield home, result.name, flipped


@pytest.fixture()
def reviewed(flipped_home):
    from shoal.review import review

    home, model, flipped = flipped_home
    return review(model, top=None), flipped


def test_review_ranks_most_flipped_images_at_the_top(reviewed):
    result, flipped = reviewed
    labels = [s for s in result.suspects if s.kind == "label"]
    top = labels[:len(flipped)]
    assert sum(s.image in flipped for s in top) >= 0.75 * len(flipped)  # precision at the number flipped
    assert sum(s.image in flipped for s in labels) >= 0.75 * len(flipped)  # recall of the flagged
    assert result.suspects[0].kind == "label" and result.suspects[0].image in flipped
    # the suggested label is the true one (the synthetic file name starts with it)
    hits = [s for s in top if s.image in flipped]
    assert sum(s.suggested == s.image.rsplit("/", 1)[1].split("_")[0] for s in hits) >= 0.9 * len(hits)
    assert "fitted head's own cross-validation" in result.method


def test_review_proposes_changes_to_training_images_only(reviewed):
    result, _ = reviewed
    assert {s.split for s in result.suspects} <= {"train", "val"}
    for s in result.suspects:
        if s.split == "val":
            assert s.action == "keep"
        elif s.kind == "label":
            assert s.action == "relabel" and s.suggested != s.given
    assert result.images == {"train": 91, "val": 29}
    probs = result.probabilities
    assert probs.shape == (120, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_review_finds_duplicates_and_outliers(flipped_home, module_image_folder_factory, tmp_path):
    """A copy of a training image in the validation folder is a duplicate (the training copy is flagged,
    to keep validation honest); a picture of noise among the circles is an outlier."""
    from PIL import Image

    from shoal import datasets
    from shoal.review import review
    from shoal.training import TrainConfig, train

    home, _, _ = flipped_home
    src = module_image_folder_factory(CLASSES, 15, size=(40, 32), name="dup-src", seed=5)
    val = module_image_folder_factory(CLASSES, 4, size=(40, 32), name="dup-val", seed=6)
    for c in CLASSES:
        shutil.copy(src / c / f"{c}_000.png", val / c / "copy.png")
    noise = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    Image.fromarray(noise).save(src / "circle" / "noise.png")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SHOAL_HOME", str(home))
        datasets.create(src, "dups", size=32, val_folder=str(val))
        name = train(TrainConfig(dataset="dups", pretrained=True, name="dups-model")).name
        result = review(name, top=None)
    duplicates = [s for s in result.suspects if "duplicate" in s.kinds]
    copies = [s for s in duplicates if s.duplicate_of and s.duplicate_of.endswith("copy.png")]
    assert len(copies) == 3 and {s.split for s in copies} == {"train"}
    assert all(s.image.endswith("_000.png") and s.action == "exclude" for s in copies if s.kind == "duplicate")
    outliers = [s for s in result.suspects if "outlier" in s.kinds]
    assert any(s.image.endswith("noise.png") for s in outliers)


def test_review_cli_prints_rows_and_json(flipped_home, monkeypatch):
    from shoal.cli import app

    home, model, flipped = flipped_home
    monkeypatch.setenv("SHOAL_HOME", str(home))
    out = CliRunner().invoke(app, ["review", model, "--top", "5", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["model"] == model and data["dataset"] == "shapes" and len(data["suspects"]) == 5
    assert set(data["suspects"][0]) >= {"image", "given", "suggested", "kind", "score", "action"}
    text = CliRunner().invoke(app, ["review", model, "--top", "3"])
    assert text.exit_code == 0 and "label" in text.stdout and "relabel" in text.stdout
    missing = CliRunner().invoke(app, ["review", "nope"])
    assert missing.exit_code == 1 and "no model of that name" in missing.output


def test_the_loop_review_edit_retrain_compare(flipped_home, monkeypatch, tmp_path):
    """review --json → dataset edit --from-review → train on the version → evaluate A B on the images neither changed."""
    from shoal import datasets
    from shoal.cli import app
    from shoal.compare import compare
    from shoal.data.versions import version_info
    from shoal.training import TrainConfig, train

    home, model, flipped = flipped_home
    monkeypatch.setenv("SHOAL_HOME", str(home))
    runner = CliRunner()
    saved = tmp_path / "review.json"
    saved.write_text(runner.invoke(app, ["review", model, "--json", "--top", "100"]).stdout)
    edited = runner.invoke(app, ["dataset", "edit", "shapes", "--from-review", str(saved)])
    assert edited.exit_code == 0, edited.output
    v2 = datasets.load("shapes@2")
    fixed = {c["image"] for c in version_info(v2)["relabelled"]}
    assert len(fixed & flipped) >= 0.75 * len([p for p in flipped if p in datasets.load("shapes").sources("train")])
    assert all(c["split"] == "train" for c in version_info(v2)["relabelled"])
    second = train(TrainConfig(dataset="shapes@2", pretrained=True)).name
    assert second == "shapes@2-efficientnet_lite0"
    compared = compare(model, second)
    assert compared.split == "val" and compared.images == v2.count("val") == 29 and compared.left_out == 0
    assert compared.first.count == compared.second.count == 29
    assert compared.second.accuracy >= compared.first.accuracy - 0.05  # cleaner labels do not make it worse
    out = runner.invoke(app, ["evaluate", model, second])
    assert out.exit_code == 0, out.output
    assert f"{model} vs {second}: 29 val images with the same label in both datasets" in out.stdout
    refused = runner.invoke(app, ["evaluate", model, second, "--folder", str(tmp_path)])
    assert refused.exit_code == 1 and "leave out --dataset, --folder and --out" in refused.output
    # an image the version left out of validation is not compared on
    dropped = v2.sources("val")[0]
    assert runner.invoke(app, ["dataset", "edit", "shapes@2", "--exclude", dropped]).exit_code == 0
    third = train(TrainConfig(dataset="shapes@3", pretrained=True)).name
    compared = compare(model, third)
    assert compared.images == 28 and compared.left_out == 1


def test_review_of_a_model_trained_with_the_loop_probes_its_features(flipped_home, monkeypatch):
    """An end-to-end model (LeNet from scratch, the training loop) saw its training images, so its own
    probabilities are no evidence: the review reads its features out of the bundle graph and cross-validates
    a linear probe on them; the flipped images still come first."""
    from shoal.models import ModelFolder
    from shoal.review import review
    from shoal.training import TrainConfig, train

    home, _, flipped = flipped_home
    monkeypatch.setenv("SHOAL_HOME", str(home))
    result = train(TrainConfig(dataset="shapes", network="lenet", epochs=8, solver="adam", lr=0.003, name="shapes-loop"))
    assert ModelFolder.of("shapes-loop").read_config()["head"] == "sgd" and "lr" in result.history[-1]
    reviewed = review("shapes-loop", top=None)
    assert reviewed.method.startswith("a logistic regression cross-validated on the model's own features")
    labels = [s for s in reviewed.suspects if s.kind == "label"]
    top = labels[:len(flipped)]
    assert sum(s.image in flipped for s in top) >= 0.6 * len(flipped), [(s.image, s.score) for s in top]
    assert reviewed.suspects[0].kind == "label" and reviewed.suspects[0].image in flipped
