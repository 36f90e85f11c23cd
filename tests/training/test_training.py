"""Training runs end to end: metrics, snapshots, resume, abort, failures and the bundle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from shoal import datasets
from shoal.bundle import export, open_bundle
from shoal.preprocess import to_network_input
from shoal.errors import BundleError, NotFoundError, ShoalError, TrainingError
from shoal.models import ModelFolder, describe
from shoal.store import Store
from shoal.training import TrainConfig, resume, train
from waiting import GENEROUS_S, wait_for

FAST = dict(network="lenet", batch_size=8, solver="adam", lr=0.003)


def test_lenet_learns_and_writes_a_complete_bundle(tiny_dataset):
    events = []
    result = train(TrainConfig(dataset="tiny", epochs=4, **FAST), on_event=events.append)

    assert result.status == "done" and Store().get("model", "tiny-lenet").status == "done"
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    for h in result.history:
        assert {"epoch", "train_loss", "val_loss", "val_accuracy", "lr", "elapsed_s", "images_per_s"} <= set(h)
        assert 0 <= h["val_accuracy"] <= 1
    assert result.history[-1]["val_accuracy"] >= 2 / 3  # three easy colours; chance is 1/3
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["prepare", "start"] and kinds[-1] == "done" and "iteration" in kinds
    logged = [json.loads(line) for line in (result.folder / "metrics.jsonl").read_text().splitlines()]
    assert [e["type"] for e in logged] == kinds

    bundle = open_bundle(result.bundle)
    files = sorted(p.name for p in result.bundle.iterdir())
    assert files == ["labels.txt", "model.onnx", "model.safetensors", "shoal.json"]  # nothing pickled
    m = bundle.manifest
    assert m["labels"] == ["circle", "square", "triangle"]
    assert (result.bundle / "labels.txt").read_text().split() == m["labels"]
    assert m["architecture"] == "lenet" and m["input"]["resize_mode"] == "squash"
    assert m["input"]["dataset_size"] == [32, 32] and m["input"]["channel_order"] == "RGB"
    assert m["normalization"]["mean"] == "image"
    assert m["epoch"] == result.best_epoch and m["training"]["lr"] == 0.003
    assert m["onnx"]["opset"] >= 17 and m["onnx"]["check"]["max_abs_diff"] <= 1e-4
    assert m["onnx"]["check"]["images"] == 9  # real validation images


def test_onnx_output_matches_torch_and_batches_dynamically(tiny_dataset):
    import onnxruntime as ort
    import torch

    from shoal.models import ModelFolder
    from shoal.networks.normalized import rebuild
    from shoal.networks.weights import load_weights

    result = train(TrainConfig(dataset="tiny", epochs=1, **FAST))
    card = ModelFolder(result.folder).read_card()
    model = rebuild(card.architecture, len(card.labels), channels=card.input.channels,
                    mean_shape=card.normalization.mean_shape).eval()
    load_weights(result.bundle / "model.safetensors", model)
    assert card.input.crop and (card.input.width, card.input.height) == (28, 28)  # LeNet's native size, inside 32x32
    pixels = to_network_input(np.asarray(tiny_dataset.images("val")), (28, 28))
    session = ort.InferenceSession(str(result.bundle / "model.onnx"))
    got = session.run(None, {"pixels": pixels})[0]
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(pixels)), 1).numpy()
    assert got.shape == (9, 3)
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(got.sum(1), 1, atol=1e-5)


def test_sgd_head_trains_on_cached_features(tiny_dataset):
    events = []
    result = train(TrainConfig(dataset="tiny", pretrained=True, head="sgd", epochs=15, batch_size=8),
                   on_event=events.append)
    start = next(e for e in events if e["type"] == "start")
    assert start["cached_features"] is True
    manifest = open_bundle(result.bundle).manifest
    assert manifest["architecture"] == "efficientnet_lite0"
    assert manifest["normalization"]["mean"] == "network"
    assert manifest["normalization"]["values"] == [127.5] * 3
    assert result.history[-1]["val_accuracy"] >= 2 / 3  # 32-pixel shapes, chance is 1/3
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] / 2


def test_interrupted_run_resumes_to_the_same_result(tiny_dataset):
    config = dict(epochs=4, flip=True, crop=28, **FAST)
    straight = train(TrainConfig(dataset="tiny", name="straight", **config))

    def stop_after_epoch_2(event):
        if event["type"] == "epoch" and event["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(dataset="tiny", name="cut", **config), on_event=stop_after_epoch_2)
    assert Store().get("model", "cut").status == "interrupted"
    with pytest.raises(TrainingError, match="has trained 2 epochs; epochs is the total, not the number to add: "
                                            "give 2 or more"):
        resume("cut", epochs=1)
    resumed = resume("cut")  # the refused --epochs 1 left the planned 4

    assert resumed.status == "done"
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    for a, b in zip(straight.history, resumed.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)


def test_a_run_killed_after_its_resume_point_resumes_with_its_log_and_row_caught_up(tiny_dataset, monkeypatch):
    from shoal.training import loop

    stored = loop._store_progress

    def killed_at_epoch_2(store, name, state, world_size):  # between the resume point and the log line and row
        if state["epoch"] == 2:
            raise KeyboardInterrupt
        stored(store, name, state, world_size)

    monkeypatch.setattr(loop, "_store_progress", killed_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(dataset="tiny", name="cut", epochs=2, **FAST))
    assert [h["epoch"] for h in describe("cut")["history"]] == [1]
    monkeypatch.setattr(loop, "_store_progress", stored)

    resumed = resume("cut")  # nothing left to train: it writes the bundle
    assert [h["epoch"] for h in resumed.history] == [h["epoch"] for h in describe("cut")["history"]] == [1, 2]
    summary = Store().get("model", "cut").summary
    assert summary["epoch"] == 2 and summary["best_epoch"] == resumed.best_epoch
    manifest = open_bundle(resumed.bundle).manifest
    assert manifest["epoch"] == resumed.best_epoch and manifest["metrics"] is not None
    assert [h["epoch"] for h in manifest["history"]] == [1, 2]


def test_a_run_stopped_early_and_killed_in_its_export_resumes_to_its_bundle_alone(tiny_dataset, monkeypatch):
    import shoal.bundle.writer
    from shoal.training import loop

    monkeypatch.setattr(loop, "_better", lambda record, best: False)  # only the first epoch improves
    exported = shoal.bundle.writer.export_model

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(shoal.bundle.writer, "export_model", killed)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(dataset="tiny", name="early", epochs=10, early_stop=1, **FAST))
    monkeypatch.setattr(shoal.bundle.writer, "export_model", exported)

    events = []
    resumed = resume("early", on_event=events.append)
    assert [h["epoch"] for h in resumed.history] == [1, 2], "it trained an epoch the stopped run never did"
    assert resumed.best_epoch == 1 and open_bundle(resumed.bundle).manifest["epoch"] == 1
    assert [e["best_epoch"] for e in events if e["type"] == "early_stop"] == [1]

    # A new total is a new plan: the finished model trains on, with its patience restored.
    extended = resume("early", epochs=12)
    assert [h["epoch"] for h in extended.history] == [1, 2, 3]
    # So it does from a resume point saved before the total was kept in it.
    import torch

    folder = ModelFolder.of("early")
    saved = torch.load(folder.state_path, weights_only=True)
    del saved["state"]["epochs"]
    torch.save(saved, folder.state_path)
    assert [h["epoch"] for h in resume("early", epochs=14).history] == [1, 2, 3, 4]


def test_a_resume_cannot_end_on_an_epoch_it_never_validated(tiny_dataset):
    def stop_after_epoch_3(event):
        if event["type"] == "epoch" and event["epoch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(dataset="tiny", name="sparse", epochs=10, val_every=5, **FAST), on_event=stop_after_epoch_3)
    with pytest.raises(TrainingError, match=r"has trained 3 epochs, the last one not validated \(it validates every "
                                            r"5\); epochs is the total, not the number to add: give 4 or more"):
        resume("sparse", epochs=3)
    assert resume("sparse", epochs=4).best_epoch == 4  # the last epoch is validated


def test_a_killed_run_resumes_from_its_last_epoch(tiny_dataset, shoal_home):
    cmd = [sys.executable, "-c", "from shoal.cli import main; main()"]
    env = {**os.environ, "SHOAL_HOME": str(shoal_home)}
    # Far more epochs than it can run before the kill, however fast the machine: it is killed after its first.
    proc = subprocess.Popen(cmd + ["train", "--dataset", "tiny", "--network", "lenet", "--epochs", "100000",
                                   "--batch-size", "8", "--name", "killed"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = Store(shoal_home)
    try:
        wait_for("the first epoch of the run to kill", lambda: proc.poll() is not None or (
            store.exists("model", "killed") and describe("killed", store=store)["history"]), every=0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (shoal_home / "models" / "killed" / "state.pt").exists(), "the run saved no epoch before it was killed"
    assert store.get("model", "killed").status == "running"  # as a kill leaves it

    # The resume point may be an epoch ahead of the log if the kill fell between the two.
    finished = len(describe("killed", store=store)["history"])
    done = subprocess.run(cmd + ["train", "--resume", "killed", "--epochs", str(finished + 2), "--json"], env=env,
                          capture_output=True, text=True, timeout=GENEROUS_S)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["name"] == "killed"
    assert [h["epoch"] for h in report["history"]] == list(range(1, finished + 3))
    assert open_bundle(report["bundle"]).manifest["epoch"] == report["best_epoch"]


def test_abort_stops_the_run(tiny_dataset):
    store = Store()

    def abort_at_first_step(event):
        if event["type"] == "iteration":
            (store.folder("model", "tiny-lenet") / "ABORT").touch()

    result = train(TrainConfig(dataset="tiny", epochs=50, log_every=1, **FAST), on_event=abort_at_first_step)
    assert result.status == "aborted" and result.bundle is None
    assert store.get("model", "tiny-lenet").status == "aborted"


def test_failures_are_recorded_with_their_reason(tiny_dataset):
    with pytest.raises(TrainingError, match=r"crop 64 is larger than the dataset's images \(32x32\); use --crop 32 or less"):
        train(TrainConfig(dataset="tiny", crop=64, **FAST))
    entry = Store().get("model", "tiny-lenet")
    assert entry.status == "failed" and "crop 64" in entry.summary["error"]


def test_missing_dataset_leaves_no_model_behind(shoal_home):
    with pytest.raises(NotFoundError, match="no dataset named 'nope'"):
        train(TrainConfig(dataset="nope"))
    assert Store().list("model") == []


def test_snapshots_export_by_epoch_and_as_a_single_file(tiny_dataset, tmp_path):
    train(TrainConfig(dataset="tiny", epochs=3, snapshot_every=1, **FAST))
    single = export("tiny-lenet", epoch=2, out=tmp_path / "e2.shoal")
    assert zipfile.is_zipfile(single)
    assert open_bundle(single).manifest["epoch"] == 2
    assert export("tiny-lenet", epoch="last", out=tmp_path / "last").joinpath("shoal.json").exists()
    with pytest.raises(BundleError, match=r"no snapshot of epoch 9; kept epochs: \[1, 2, 3\]"):
        export("tiny-lenet", epoch=9, out=tmp_path / "e9")


@pytest.mark.parametrize("network", ["alexnet", "googlenet"])
def test_standard_networks_train_from_scratch(shoal_home, image_folder_factory, network):
    folder = image_folder_factory(["a", "b"], 6, size=(64, 64))
    datasets.create(folder, "d64", size=64)
    result = train(TrainConfig(dataset="d64", network=network, epochs=1, batch_size=4, lr=0.001))
    assert result.status == "done"
    assert open_bundle(result.bundle).manifest["input"]["size"] == [64, 64]


def test_grayscale_datasets_train_single_channel_networks(shoal_home, image_folder_factory):
    folder = image_folder_factory(2, 6, size=(32, 32))
    datasets.create(folder, "gray", size=28, grayscale=True)
    result = train(TrainConfig(dataset="gray", epochs=1, **FAST))
    assert open_bundle(result.bundle).manifest["input"]["channel_order"] == "L"


@pytest.mark.parametrize(("mean", "values"), [("pixel", None), ("none", [0.0, 0.0, 0.0]), ("network", [0.0, 0.0, 0.0])])
def test_mean_subtraction_modes_are_built_into_the_model(tiny_dataset, mean, values):
    result = train(TrainConfig(dataset="tiny", epochs=1, mean=mean, **FAST))
    norm = open_bundle(result.bundle).manifest["normalization"]
    assert norm["mean"] == mean and norm["mean_shape"] == [3, 1, 1]
    expected = values if values is not None else tiny_dataset.mean_pixel().tolist()
    assert norm["values"] == pytest.approx(expected, rel=1e-5)
    assert norm["scale"] == pytest.approx([1 / 255] * 3)  # LeNet's inputs are 0..1


@pytest.mark.parametrize(("option", "message"), [
    ({"network": "alexnett"}, "unknown network 'alexnett'"),
    ({"pretrained": "missing.pth"}, "pretrained weights file 'missing.pth' does not exist"),
])
def test_bad_network_or_weights_leave_no_model_behind(tiny_dataset, option, message):
    with pytest.raises(ShoalError, match=message):
        train(TrainConfig(dataset="tiny", name="typo", **option))
    assert not Store().exists("model", "typo")
    train(TrainConfig(dataset="tiny", name="typo", epochs=1, **FAST))  # the corrected command works


def test_freezing_the_first_stages_keeps_them_and_trains_the_rest(tiny_dataset):
    import torch
    from safetensors.torch import load_file

    from shoal import networks

    events = []
    result = train(TrainConfig(dataset="tiny", pretrained=True, freeze=2, epochs=1, batch_size=8, lr=0.01),
                   on_event=events.append)
    assert next(e for e in events if e["type"] == "start")["cached_features"] is False  # part of the backbone trains: features change every step
    trained = load_file(str(result.bundle / "model.safetensors"))
    start = networks.create("efficientnet_lite0", 3, pretrained=True).state_dict()
    stem, late = "conv_stem.weight", "blocks.6.0.conv_pw.weight"
    assert torch.equal(trained[f"net.{stem}"], start[stem])  # stage 1 frozen
    assert torch.equal(trained["net.bn1.running_mean"], start["bn1.running_mean"])  # its statistics too
    assert not torch.equal(trained[f"net.{late}"], start[late])  # later stages trained


def test_a_run_is_reproducible_from_its_recorded_configuration(tiny_dataset):
    from shoal.config import build

    first = train(TrainConfig(dataset="tiny", name="first", epochs=2, flip=True, **FAST))
    again = train(build(TrainConfig, first.folder / "config.json", name="again"))
    assert [h["train_loss"] for h in again.history] == [h["train_loss"] for h in first.history]
    assert [h["val_loss"] for h in again.history] == [h["val_loss"] for h in first.history]
