"""Every stage of ``shoal train``, ``export`` and ``evaluate`` longer than a moment says what it does."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from typer.testing import CliRunner

from shoal.cli import _register, app
from shoal.cli import train as train_cli

_register()
runner = CliRunner()
FAST = ["--network", "lenet", "--batch-size", "8", "--solver", "adam", "--lr", "0.003"]


@pytest.fixture()
def shown(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """What ``shoal train``'s progress prints to stderr (bars are drawn only on a terminal)."""
    text = io.StringIO()
    monkeypatch.setattr(train_cli, "err", Console(file=text, width=200))
    return text


def test_the_loop_says_it_builds_caches_features_and_writes_the_bundle(shown: io.StringIO) -> None:
    progress = train_cli._Progress(tensorboard=False)
    for event in [
        {"type": "prepare", "message": "building lenet"},
        {"type": "prepare", "message": "computing the frozen backbone's features of 36 images, once"},
        {"type": "features", "done": 32, "total": 36},
        {"type": "features", "done": 36, "total": 36},
        {"type": "start", "name": "m", "cached_features": True, "bf16": False, "resumed": False, "epoch": 0,
         "epochs": 1, "train_images": 27, "val_images": 9, "device": "cpu"},
        {"type": "export", "message": "writing the bundle of epoch 1 (ONNX export, checked against torch)"},
    ]:
        progress(event)
    progress.close()
    assert [line for line in shown.getvalue().splitlines() if line.strip()] == [
        "Building lenet …",
        "Computing the frozen backbone's features of 36 images, once …",
        "Training m on 27 images (9 for validation), on cached backbone features, on cpu",
        "Writing the bundle of epoch 1 (ONNX export, checked against torch) …",
    ]


def test_a_resumed_run_says_after_which_epoch(shown: io.StringIO) -> None:
    progress = train_cli._Progress(tensorboard=False)
    progress({"type": "start", "name": "r", "cached_features": False, "bf16": False, "resumed": True, "epoch": 1,
              "epochs": 3, "train_images": 27, "val_images": 9, "device": "cpu"})
    progress.close()
    assert [line for line in shown.getvalue().splitlines() if line.strip()] == [
        "Resuming r after epoch 1 of 3",
        "Training r on 27 images (9 for validation), end to end, on cpu",
    ]


def test_a_fitted_head_says_it_writes_the_bundle(shown: io.StringIO) -> None:
    progress = train_cli._Progress(tensorboard=False)
    progress({"type": "export", "message": "writing the bundle (ONNX graph checked against the fitted head)"})
    assert shown.getvalue() == "Writing the bundle (ONNX graph checked against the fitted head) …\n"


def test_training_end_to_end_and_resuming_print_each_stage(tiny_dataset) -> None:
    first = runner.invoke(app, ["train", "--dataset", "tiny", "--epochs", "1", "--name", "r", *FAST])
    assert first.exit_code == 0, first.output
    lines = first.stderr.splitlines()
    assert lines[0] == "Building lenet …"
    assert lines[1].startswith("Training r on 27 images (9 for validation), end to end")
    assert lines[-1] == "Writing the bundle of epoch 1 (ONNX export, checked against torch) …"

    more = runner.invoke(app, ["train", "--resume", "r", "--epochs", "2"])
    assert more.exit_code == 0, more.output
    assert more.stderr.splitlines()[:2] == ["Building lenet …", "Resuming r after epoch 1 of 2"]


def test_a_frozen_backbone_in_the_loop_shows_its_feature_stage(tiny_dataset) -> None:
    result = runner.invoke(app, ["train", "--dataset", "tiny", "--epochs", "1", "--name", "f", "--freeze", "backbone",
                                 "--head", "sgd", *FAST])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[:2] == ["Building lenet …", "Computing the frozen backbone's features of 36 images, once …"]
    assert lines[2].startswith("Training f on 27 images (9 for validation), on cached backbone features")


def test_export_and_evaluate_show_what_they_do_on_a_terminal(tiny_dataset, tmp_path, monkeypatch) -> None:
    from shoal.cli import evaluate as evaluate_cli

    assert runner.invoke(app, ["train", "--dataset", "tiny", "--epochs", "1", "--name", "m", *FAST]).exit_code == 0
    terminal = io.StringIO()
    for module in (train_cli, evaluate_cli):
        monkeypatch.setattr(module, "err", Console(file=terminal, force_terminal=True, width=200))
    exported = runner.invoke(app, ["export", "m", "--out", str(tmp_path / "m.shoal")])
    assert exported.exit_code == 0, exported.output
    assert "Writing the bundle of m, epoch best …" in terminal.getvalue()
    evaluated = runner.invoke(app, ["evaluate", "m"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "Evaluating m on the val split of its own dataset …" in terminal.getvalue()
    assert (exported.stderr, evaluated.stderr) == ("", "")  # off a terminal, nothing: scripts read stdout alone
