"""The learning-rate range test: on a toy problem its suggestions lie where the loss falls."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from shoal.errors import ConfigError, TrainingError
from shoal.training import TrainConfig
from shoal.training.lr_find import judged_steps, lr_find, suggest


@pytest.fixture()
def toy(shoal_home, image_folder_factory):
    from shoal import datasets

    return datasets.create(image_folder_factory(["circle", "square", "triangle"], 20, size=(40, 32)), "toy", size=32)


def test_the_suggestions_lie_where_the_loss_falls(toy, tmp_path):
    found = lr_find(TrainConfig(dataset="toy", network="lenet", solver="adam", batch_size=16), start=1e-6, end=1,
                    iterations=60)
    lrs, raw = np.asarray(found.lrs), np.asarray(found.losses)
    level = np.median(raw[:6])
    bottom = int(np.argmin(raw))
    assert raw[bottom] < 0.5 * level  # the toy problem is learnt within the range
    first_fall = lrs[np.flatnonzero(raw[:bottom + 1] < 0.95 * level)[0]]
    # steepest descent inside the fall; the valley at its start (the smoothed loss lags the raw one), never past the bottom
    assert first_fall <= found.steep <= lrs[bottom]
    assert first_fall / 10 <= found.valley < lrs[bottom]
    assert found.suggestion == found.valley and "valley" in found.explanation
    data, image = found.save(tmp_path / "curve")
    saved = json.loads(data.read_text())
    assert saved["suggestion"] == found.valley and len(saved["lrs"]) == len(saved["losses"]) == len(found.lrs)
    from PIL import Image

    assert Image.open(image).size == (640, 400)


def test_the_valley_of_a_textbook_curve():
    lrs = [10 ** (i / 10 - 5) for i in range(60)]
    losses = [2.0] * 20 + [2.0 - 0.08 * i for i in range(20)] + [0.4 + 0.4 * i for i in range(20)]
    valley, steep = suggest(lrs, losses)
    assert lrs[20] <= valley <= lrs[39] and lrs[19] <= steep <= lrs[40]


@pytest.mark.parametrize("steps", [5, 8, 11, 14, 15, 60, 100])
def test_the_judged_steps_of_a_test_that_stopped_early_or_ran_through(steps):
    judged = range(steps)[judged_steps(steps, 100)]
    assert len(judged) >= 5  # suggest() needs points: a test that diverged early is judged on the steps it has
    if steps == 100:
        assert judged == range(10, 95)  # the first tenth and the last five are left out


def test_a_loss_that_never_falls_gets_no_suggestion(toy):
    # LeNet with plain SGD does not learn in 30 steps of one rate each: a "valley" there would be noise.
    with pytest.raises(TrainingError, match="^the loss did not fall over the range .* no rate to suggest"):
        lr_find(TrainConfig(dataset="toy", network="lenet", batch_size=16), start=1e-7, end=1e-3, iterations=30)


def test_a_fitted_head_is_refused_in_one_line(toy):
    with pytest.raises(TrainingError, match="^a fitted head has no learning rate to find"):
        lr_find(TrainConfig(dataset="toy", pretrained=True))


def test_cli_saves_the_curve_and_prints_the_suggestion(toy, tmp_path):
    from shoal.cli import app

    out = CliRunner().invoke(app, ["lr-find", "--dataset", "toy", "--network", "lenet", "--solver", "adam",
                                   "--start", "1e-5", "--end", "1", "--iterations", "30", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "suggested learning rate:" in out.stdout and (tmp_path / "lr_find.png").exists()
    refused = CliRunner().invoke(app, ["lr-find", "--dataset", "toy", "--pretrained"])
    assert refused.exit_code == 1 and refused.output.count("\n") == 1 and "a fitted head has no learning rate" in refused.output


def test_train_lr_find_trains_at_the_suggested_rate(toy, shoal_home):
    """``shoal train --lr find``: the range test runs first and the model's config records its suggestion."""
    from shoal.cli import app
    from shoal.models import ModelFolder

    out = CliRunner().invoke(app, ["train", "--dataset", "toy", "--network", "lenet", "--solver", "adam",
                                   "--batch-size", "16", "--epochs", "1", "--lr", "find", "--json"])
    assert out.exit_code == 0, out.output
    said = [line for line in out.stderr.splitlines() if line.startswith("lr-find suggests ")]
    assert len(said) == 1, out.stderr
    suggested = float(said[0].split()[2])
    config = ModelFolder.of("toy-lenet").read_config()
    assert config["lr"] == suggested and config["lr"] != TrainConfig(dataset="toy", network="lenet").resolved().lr
    found = json.loads((shoal_home / "lr-find" / "toy-lenet" / "lr_find.json").read_text())
    assert float(f"{found['suggestion']:.2g}") == suggested
    assert json.loads(out.stdout)["name"] == "toy-lenet"


def test_train_lr_find_refuses_a_fitted_head_in_one_line(toy):
    from shoal.cli import app
    from shoal.training.lr_find import FITTED_HEAD_REFUSAL, with_found_lr

    refused = CliRunner().invoke(app, ["train", "--dataset", "toy", "--pretrained", "--lr", "find"])
    assert refused.exit_code == 1 and refused.output == f"Error: {FITTED_HEAD_REFUSAL}\n"
    with pytest.raises(ConfigError, match="^--lr find: a fitted head has no learning rate"):
        with_found_lr(TrainConfig(dataset="toy", pretrained=True))
    typo = CliRunner().invoke(app, ["train", "--dataset", "toy", "--lr", "fnd"])
    assert typo.exit_code == 1 and "--lr must be a number > 0 or 'find'" in typo.output
