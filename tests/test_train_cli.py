"""``shoal train``, ``shoal model ...`` and ``shoal export`` as a user types them."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from shoal.bundle import open_bundle
from shoal.cli import _register, app

_register()
runner = CliRunner()
FAST = ["--network", "lenet", "--batch-size", "8", "--solver", "adam", "--lr", "0.003"]


def test_train_json_reports_bundle_and_history(tiny_dataset):
    result = runner.invoke(app, ["train", "--dataset", "tiny", "--epochs", "2", "--name", "m", "--json", *FAST])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["name"] == "m" and report["status"] == "done"
    assert [h["epoch"] for h in report["history"]] == [1, 2]
    for h in report["history"]:
        assert {"epoch", "train_loss", "val_loss", "val_accuracy", "lr", "elapsed_s"} <= set(h)
    assert open_bundle(report["bundle"]).labels == ["circle", "square", "triangle"]
    assert "epoch   2/2" in result.stderr  # one summary line per epoch, on stderr


def test_model_list_show_export_delete(tiny_dataset, tmp_path):
    assert runner.invoke(app, ["train", "--dataset", "tiny", "--epochs", "1", "--name", "m", *FAST]).exit_code == 0

    listed = json.loads(runner.invoke(app, ["model", "list", "--json"]).stdout)
    assert [(m["name"], m["status"]) for m in listed] == [("m", "done")]
    shown = json.loads(runner.invoke(app, ["model", "show", "m", "--json"]).stdout)
    assert shown["config"]["network"] == "lenet" and len(shown["history"]) == 1 and shown["bundle"]
    text = runner.invoke(app, ["model", "show", "m"]).stdout
    assert "lenet" in text and "Bundle:" in text

    exported = runner.invoke(app, ["export", "m", "--out", str(tmp_path / "m.shoal")])
    assert exported.exit_code == 0 and open_bundle(exported.stdout.strip()).manifest["name"] == "m"

    assert runner.invoke(app, ["model", "delete", "m"]).exit_code == 0
    gone = runner.invoke(app, ["model", "show", "m"])
    assert gone.exit_code == 1 and "Error: no model named 'm'" in gone.stderr


def test_tensorboard_writes_event_files(tiny_dataset, shoal_home):
    result = runner.invoke(app, ["train", "--dataset", "tiny", "--epochs", "1", "--name", "tb", "--tensorboard", *FAST])
    assert result.exit_code == 0, result.output
    assert list((shoal_home / "models" / "tb" / "tensorboard").glob("events.out.tfevents.*"))


def test_user_errors_are_one_line_and_exit_1(tiny_dataset):
    missing = runner.invoke(app, ["train", "--dataset", "nope"])
    assert missing.exit_code == 1
    assert missing.stderr.startswith("Error: no dataset named 'nope'")
    bad = runner.invoke(app, ["train", "--dataset", "tiny", "--solver", "adma"])
    assert bad.exit_code == 1 and "did you mean 'adam'?" in bad.stderr
    no_dataset = runner.invoke(app, ["train"])
    assert no_dataset.exit_code == 1 and "--dataset is required" in no_dataset.stderr


def test_resume_continues_a_stopped_model(tiny_dataset):
    runner.invoke(app, ["train", "--dataset", "tiny", "--epochs", "1", "--name", "r", *FAST])
    more = runner.invoke(app, ["train", "--resume", "r", "--epochs", "3", "--json"])
    assert more.exit_code == 0, more.output
    assert [h["epoch"] for h in json.loads(more.stdout)["history"]] == [1, 2, 3]


def test_networks_lists_the_registry():
    listed = json.loads(runner.invoke(app, ["networks", "--json"]).stdout)
    names = [n["name"] for n in listed]
    assert {"lenet", "alexnet", "googlenet", "efficientnet_lite0"} <= set(names)
    lite0 = next(n for n in listed if n["name"] == "efficientnet_lite0")
    assert lite0["pretrained_offline"] is True and lite0["input_size"] == [224, 224]
    assert "efficientnet_lite0" in runner.invoke(app, ["networks", "efficient*"]).stdout
