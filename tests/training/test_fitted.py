"""The default fine-tune: a fitted head on a cached backbone, without torch once prepared."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import shoal
from shoal.bundle import export, open_bundle
from shoal.errors import BundleError, ConfigError, TrainingError
from shoal.preprocess import to_network_input
from shoal.training import TrainConfig, resume, train
from waiting import GENEROUS_S


@pytest.fixture(scope="module")
def fitted_home(tmp_path_factory, module_image_folder_factory):
    """One store for this module's tests (``SHOAL_HOME`` points at it while they run), holding the shapes dataset
    and one fitted model: fitting it is the slow part, so it is done once. The tests only add to it."""
    from shoal import datasets

    home = tmp_path_factory.mktemp("fitted") / "shoal-home"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SHOAL_HOME", str(home))
        # 40 images per class of the tiny shapes (30 train, 10 validation): enough to set a threshold.
        shapes = datasets.create(module_image_folder_factory(["circle", "square", "triangle"], 40, size=(40, 32),
                                                             name="src"), "shapes", size=32)
        events: list[dict] = []
        result = train(TrainConfig(dataset="shapes", pretrained=True), on_event=events.append)
        yield home, shapes, result, events


@pytest.fixture()
def shapes(fitted_home):
    return fitted_home[1]


@pytest.fixture()
def fitted(fitted_home):
    _, _, result, events = fitted_home
    return result, events


def _gradient(i: int) -> np.ndarray:
    ramp = np.linspace(0, 255, 32)
    g = np.outer(ramp, np.ones(32)) if i % 2 else np.outer(np.ones(32), ramp)
    return np.stack([g, np.roll(g, i * 5, 0), 255 - g], -1).astype(np.uint8)


def _checkerboard(i: int) -> np.ndarray:
    board = (np.indices((32, 32)).sum(0) // (2 + i)) % 2 * 255
    return np.repeat(board[..., None], 3, 2).astype(np.uint8)


def test_fitted_head_is_the_default_fine_tune_and_its_bundle_is_checked(fitted):
    result, events = fitted
    kinds = [e["type"] for e in events]
    assert kinds[0] == "prepare" and "preparing efficientnet_lite0 for fast fine-tuning, once" in events[0]["message"]
    assert kinds[1:3] == ["start", "features"] and kinds[-2:] == ["export", "done"]
    assert kinds.index("cross_validation") < kinds.index("fit") < kinds.index("epoch") < kinds.index("export")
    fit = next(e for e in events if e["type"] == "fit")
    assert fit["method"] == "logistic_regression" and fit["folds"] == 5 and len(fit["curve"]) == 13
    assert fit["strength"] in [point["C"] for point in fit["curve"]]

    manifest = open_bundle(result.bundle).manifest
    assert manifest["format"] == 2 and manifest["training"]["head"] == "fit"
    assert manifest["training"]["epochs"] is None and manifest["training"]["lr"] is None
    assert manifest["head"]["strength"] == fit["strength"]
    assert manifest["onnx"]["outputs"] == ["probabilities", "unfamiliar_score", "unfamiliar"]
    assert manifest["onnx"]["check"]["against"] == "fitted head" and manifest["onnx"]["check"]["max_abs_diff"] <= 1e-4
    assert manifest["unfamiliar"]["k"] == 3 and manifest["unfamiliar"]["training_images"] == 90
    assert result.history[0]["val_accuracy"] >= 0.9  # 32-pixel coloured shapes; chance is 1/3
    assert 0 < result.history[0]["val_loss"] < np.log(3)


def test_composed_graph_matches_the_torch_model(fitted, shapes):
    result, _ = fitted
    onnx_model = shoal.load(result.bundle)
    torch_model = shoal.load(result.bundle, runtime="torch")
    pixels = to_network_input(np.asarray(shapes.images("val")), None)
    got, got_scores = onnx_model.runtime.run(pixels)
    want, want_scores = torch_model.runtime.run(pixels)
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-4)
    np.testing.assert_allclose(torch_model.runtime(pixels), want, atol=1e-5)  # head(features) is the network


def test_unfamiliar_flags_another_kind_of_image(fitted, shapes):
    result, _ = fitted
    model = shoal.load(result.bundle)
    ordinary = model.predict(list(np.asarray(shapes.images("val"))))
    strange = model.predict([_gradient(i) for i in range(4)] + [_checkerboard(i) for i in range(4)])
    assert sum(r.unfamiliar for r in ordinary) <= 1  # of 30
    assert all(r.unfamiliar for r in strange)
    assert all(r.unfamiliar_score > model.unfamiliar_threshold for r in strange)
    record = strange[0].to_dict()
    assert record["unfamiliar"] is True and record["unfamiliar_score"] == pytest.approx(strange[0].unfamiliar_score)


def test_cached_backbone_path_imports_no_torch(fitted_home):
    home = fitted_home[0]
    code = ("import sys; from shoal.training import TrainConfig, train; "
            "r = train(TrainConfig(dataset='shapes', pretrained=True, name='again', seed=1)); "
            "import shoal; shoal.load(r.bundle); "
            "print(r.status, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=GENEROUS_S, env={**os.environ, "SHOAL_HOME": str(home)})
    assert out.stdout.split() == ["done", "False"], out.stderr


def test_loop_options_are_refused_for_a_fitted_head():
    with pytest.raises(ConfigError, match=r"^epochs, lr belong to the training loop, which a fitted head does not "
                                          r"run .*; use head sgd to train the head with the loop$"):
        TrainConfig(dataset="tiny", pretrained=True, epochs=3, lr=0.1).resolved()
    with pytest.raises(ConfigError, match="head 'fit' needs a frozen backbone"):
        TrainConfig(dataset="tiny", pretrained=True, head="fit", freeze="none").resolved()
    with pytest.raises(ConfigError, match="head 'fit' fits a head on pretrained features"):
        TrainConfig(dataset="tiny", head="fit").resolved()
    assert TrainConfig(dataset="tiny", pretrained=True, freeze="none").resolved().head == "sgd"


def test_a_fitted_model_has_no_epochs_to_resume_or_export(fitted, tmp_path):
    result, _ = fitted
    with pytest.raises(TrainingError, match="has a fitted head: it has no epochs to resume"):
        resume(result.name)
    with pytest.raises(BundleError, match="has a fitted head: one result, no epochs; export it without --epoch"):
        export(result.name, epoch=3)
    copy = export(result.name, out=tmp_path / "model.shoal")
    assert json.loads(open_bundle(copy).read("shoal.json"))["head"]["method"] == "logistic_regression"


def test_end_to_end_fine_tuning_starts_from_the_fitted_head(shapes):
    events: list[dict] = []
    result = train(TrainConfig(dataset="shapes", pretrained=True, freeze="none", epochs=1, log_every=1, name="e2e"),
                   on_event=events.append)
    messages = [e["message"] for e in events if e["type"] == "prepare"]
    assert "fitting the head on the pretrained features first" in messages
    config = json.loads((result.folder / "config.json").read_text())
    assert (config["head"], config["lr"], config["epochs"]) == ("sgd", 0.01, 1)
    first = next(e for e in events if e["type"] == "iteration")
    assert first["train_loss"] < 0.5  # a fresh head on three classes starts near ln 3 = 1.1
    assert result.history[0]["val_accuracy"] >= 0.9


def test_the_cli_shows_and_exports_a_fitted_model(fitted, tmp_path):
    from typer.testing import CliRunner

    from shoal.cli import _register, app

    _register()
    result, _ = fitted
    runner = CliRunner()
    shown = runner.invoke(app, ["model", "show", result.name])
    assert shown.exit_code == 0, shown.output
    lines = [line.strip() for line in shown.stdout.splitlines()]
    assert "head        fit" in lines
    assert any(line.startswith("fit         logistic regression, C=") and "5-fold cross-validated" in line
               for line in lines)
    assert any(line.startswith("validation  accuracy ") for line in lines)
    exported = runner.invoke(app, ["export", result.name, "--out", str(tmp_path / "m.shoal")])
    assert exported.exit_code == 0 and (tmp_path / "m.shoal").stat().st_mode & 0o777 == 0o644
