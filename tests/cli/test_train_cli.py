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


def test_option_errors_are_one_line_naming_the_flag(tiny_dataset):
    cases = [
        (["--lr", "inf"], "--lr must be a number > 0 and <= 10, got inf"),
        (["--lr", "1e309"], "--lr must be a number > 0 and <= 10, got inf"),
        (["--weight-decay", "inf"], "--weight-decay must be a number from 0 to 1, got inf"),
        (["--gamma", "inf"], "--gamma must be a number from 0 to 100, got inf"),
        (["--power", "inf"], "--power must be a number from 0 to 100, got inf"),
        (["--step-size", "inf"], "--step-size must be a number > 0 and <= 100000, got inf"),
        (["--step-values", "a,b"], "--step-values must be epochs from 0 to 100000 at which multistep drops, "
                                   "comma-separated (for example '10,20'), got 'a,b'"),
        (["--step-values", "nan,-1"], "--step-values must be epochs from 0 to 100000 at which multistep drops, "
                                      "comma-separated (for example '10,20'), got 'nan,-1'"),
        (["--seed", str(10**23)], "--seed must be an int from 0 to 4294967295, got 100000000000000000000000"),
        (["--freeze", "²"], "--freeze must be 'none', 'backbone' or an int >= 0 (how many leading stages to freeze), "
                            "got '²'"),
        (["--lr-policy", "exp", "--gamma", "2"], "--gamma must be at most 1 with --lr-policy exp (it multiplies the "
                                                 "learning rate at each drop), got 2"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["train", "--dataset", "tiny", *args])
        assert result.exit_code == 1, args
        assert result.stderr == f"Error: {message}\n", args
    assert json.loads(runner.invoke(app, ["model", "list", "--json"]).stdout) == []


def test_step_values_are_read_from_the_flag(tiny_dataset):
    result = runner.invoke(app, ["train", "--dataset", "tiny", "--epochs", "1", "--name", "m", "--lr-policy",
                                 "multistep", "--step-values", "10", *FAST])
    assert result.exit_code == 0, result.output
    from shoal.store import Store

    config = json.loads((Store().get("model", "m").path / "config.json").read_text())
    assert config["step_values"] == [10.0]


def test_export_epoch_must_be_best_last_or_a_number(tiny_dataset, tmp_path):
    assert runner.invoke(app, ["train", "--dataset", "tiny", "--epochs", "1", "--name", "m", *FAST]).exit_code == 0
    result = runner.invoke(app, ["export", "m", "--epoch", "²", "--out", str(tmp_path / "b")])
    assert result.exit_code == 1 and result.stderr.startswith("Error: no snapshot of epoch '²'")


def test_train_help_comes_from_the_config_fields():
    from shoal.config import field_docs
    from shoal.training import TrainConfig

    text = " ".join(runner.invoke(app, ["train", "--help"]).output.replace("│", " ").split())
    docs = field_docs(TrainConfig)
    assert f"{docs['solver']} (default: sgd)" in text
    assert ("Base learning rate (default: 0.01 (--head sgd: 0.05, end-to-end fine-tuning: 0.01 for the head, "
            "a tenth for the backbone))") in text
    assert "Passes over the training split (default: 30 (--head sgd: 30, end-to-end fine-tuning: 5))" in text


def test_offline_pretrained_advises_weights_and_registers_nothing(tiny_dataset, tmp_path, monkeypatch):
    from shoal.networks.builtin import AlexNet

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(AlexNet, "pretrained_url", lambda self: "http://127.0.0.1:9/alexnet-owt-7be5be79.pth")
    result = runner.invoke(app, ["train", "--dataset", "tiny", "--network", "alexnet", "--pretrained"])
    assert result.exit_code == 1
    error = result.stderr.splitlines()[-1]
    assert error.startswith("Error: could not get the pretrained alexnet weights")
    assert "pass it with --weights path/to/alexnet-owt-7be5be79.pth" in error
    assert json.loads(runner.invoke(app, ["model", "list", "--json"]).stdout) == []
