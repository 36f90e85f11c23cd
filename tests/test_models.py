"""``shoal.models``: the model folder's one owner (``ModelFolder``) and the one merged ``status``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shoal import models
from shoal.bundle import ModelCard
from shoal.errors import NotFoundError
from shoal.models import ModelFolder
from shoal.store import Store

CARD = {
    "architecture": "lenet", "labels": ["a", "b"],
    "input": {"size": [28, 28], "channels": 1, "channel_order": "L", "resize_mode": "squash",
              "dataset_size": [28, 28], "crop": False, "layout": "NCHW", "dtype": "float32", "range": [0, 255]},
    "normalization": {"mean": "pixel", "mean_shape": [1, 1, 1], "values": [33.0], "scale": [1.0]},
}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- ModelFolder --------------------------------------------------------------------------------------
def test_the_folder_names_every_file_of_a_run(tmp_path: Path):
    folder = ModelFolder(tmp_path)
    assert [p.name for p in (folder.config_path, folder.card_path, folder.metrics_path, folder.state_path,
                             folder.best_path, folder.bundle_path, folder.downloads_path, folder.abort_path)] == [
        "config.json", "model.json", "metrics.jsonl", "state.pt", "best.safetensors", "bundle", "downloads", "ABORT"]
    assert folder.snapshot(7) == tmp_path / "snapshots" / "epoch-0007.safetensors"


def test_an_empty_folder_reads_as_not_started(tmp_path: Path):
    folder = ModelFolder(tmp_path)
    assert folder.read_config() == {} and folder.read_card() is None
    assert folder.events() == [] and folder.history() == [] and folder.snapshots() == {}
    assert not folder.has_state() and not folder.has_bundle() and not folder.abort_requested()


def test_config_and_card_round_trip_in_todays_format(tmp_path: Path):
    folder = ModelFolder(tmp_path)
    folder.write_config({"dataset": "d", "epochs": 3})
    assert json.loads((tmp_path / "config.json").read_text()) == {"dataset": "d", "epochs": 3}
    (tmp_path / "model.json").write_text(json.dumps(CARD))  # as training wrote it before the card was typed
    card = folder.read_card()
    assert isinstance(card, ModelCard) and card.normalization.values == (33.0,)
    folder.write_card(card)
    assert json.loads((tmp_path / "model.json").read_text()) == CARD


def test_history_comes_from_the_metrics_file_latest_record_winning(tmp_path: Path):
    lines = [{"type": "start", "time": 1},
             {"type": "epoch", "time": 2, "epoch": 1, "train_loss": 1.0, "val_accuracy": 0.5, "val_loss": 0.9},
             {"type": "epoch", "time": 3, "epoch": 2, "train_loss": 0.8},  # not validated
             {"type": "epoch", "time": 4, "epoch": 1, "train_loss": 0.9, "val_accuracy": 0.6, "val_loss": 0.8}]
    text = "".join(json.dumps(e) + "\n" for e in lines) + '{"type": "epo'  # a line cut short by a kill
    (tmp_path / "metrics.jsonl").write_text(text)
    folder = ModelFolder(tmp_path)
    assert len(folder.events()) == 4
    assert folder.history() == [{"epoch": 1, "train_loss": 0.9, "val_accuracy": 0.6, "val_loss": 0.8}]


def test_snapshots_are_listed_in_epoch_order(tmp_path: Path):
    folder = ModelFolder(tmp_path)
    for epoch in (10, 2, 5):
        folder.snapshot(epoch).parent.mkdir(exist_ok=True)
        folder.snapshot(epoch).write_bytes(b"")
    assert list(folder.snapshots()) == [2, 5, 10]
    assert folder.snapshots()[5] == folder.snapshot(5)


def test_of_finds_a_stored_model_or_says_which_exist(tmp_path: Path):
    store = Store(tmp_path)
    entry = store.reserve("model", "m", status="running")
    assert ModelFolder.of("m", store=store) == ModelFolder(entry.path)
    with pytest.raises(NotFoundError, match=r"no model named 'x' in .* \(known: 'm'\)"):
        ModelFolder.of("x", store=store)


# -- status -------------------------------------------------------------------------------------------
def test_a_run_whose_process_is_gone_is_interrupted(tmp_path: Path):
    store = Store(tmp_path)
    store.reserve("model", "alive", status="running", summary={"pid": os.getpid()})
    store.reserve("model", "dead", status="running", summary={"pid": _dead_pid()})
    assert models.status("alive", store=store).status == "running"
    dead = models.status("dead", store=store)
    assert dead.status == "interrupted" and dead.entry is not None and dead.entry.status == "running"
    assert store.get("model", "dead").status == "running"  # status() only reads...
    assert models.settle("dead", store=store).status == "interrupted"
    assert store.get("model", "dead").status == "interrupted"  # ...settle() records it
    assert models.describe("dead", store=store)["status"] == "interrupted"


def test_a_waiting_job_shows_queued_and_keeps_a_dead_run_from_being_interrupted(tmp_path: Path):
    store = Store(tmp_path)
    store.reserve("model", "m", status="interrupted")
    job = store.add_job("resume", "m", lane="cpu")
    found = models.status("m", store=store)
    assert found.status == "queued" and found.active_job == job and found.busy
    store.update("model", "m", status="running", summary={"pid": _dead_pid()})
    store.update_job(job.id, status="running")
    assert models.status("m", store=store).status == "running"  # the job's worker is still starting


def test_a_model_known_only_by_its_job_shows_the_jobs_status(tmp_path: Path):
    store = Store(tmp_path)
    job = store.add_job("train", "new", lane="cpu", params={"config": {"dataset": "d"}})
    found = models.status("new", store=store)
    assert (found.status, found.entry, found.job) == ("queued", None, job)
    assert [s.name for s in models.statuses(store=store)] == ["new"]
    store.update_job(job.id, status="failed", error="no such dataset")
    assert models.status("new", store=store).error == "no such dataset"
    assert models.statuses(store=store) == []  # only waiting trainings are listed beside stored models
    with pytest.raises(NotFoundError, match="no model named 'other'"):
        models.status("other", store=store)


def test_the_error_of_a_failed_run_comes_from_the_entry_or_its_job(tmp_path: Path):
    store = Store(tmp_path)
    store.reserve("model", "m", status="failed", summary={"error": "loss became nan"})
    assert models.status("m", store=store).error == "loss became nan"
    store.reserve("model", "k", status="interrupted")
    job = store.add_job("train", "k", lane="cpu")
    store.update_job(job.id, status="interrupted", error="the server stopped while this job ran")
    assert models.status("k", store=store).error == "the server stopped while this job ran"
    assert [(s.name, s.status) for s in models.statuses(store=store)] == [("m", "failed"), ("k", "interrupted")]


def test_a_cli_training_killed_outright_holds_nothing_and_can_be_deleted(tmp_path: Path):
    store = Store(tmp_path)
    dead = _dead_pid()
    store.reserve("model", "m", status="running", summary={"pid": dead, "dataset": "d"})
    job = store.add_running_job("train", "m", lane="cpu", pid=dead, params={"cli": True}, claim=lambda running: {})
    assert job is not None and job.status == "running"  # no web server reaps its row
    found = models.status("m", store=store)
    assert (found.status, found.busy, found.active_job) == ("interrupted", False, None)
    assert not models.job_active(job)
    assert models.training_on("d", store=store) == []  # its dataset can be deleted
    models.delete("m", store=store)
    assert not store.exists("model", "m")
    assert store.get_job(job.id).status == "interrupted"  # its row holds the name no more (the web app's checks)


def test_a_cli_training_killed_before_its_entry_is_interrupted_not_running(tmp_path: Path):
    store = Store(tmp_path)
    job = store.add_running_job("train", "m", lane="cpu", pid=_dead_pid(), params={"cli": True},
                                claim=lambda running: {})
    assert job is not None
    assert models.status("m", store=store).status == "interrupted"
    assert models.statuses(store=store) == []  # not listed as a training under way
    live = store.add_running_job("train", "n", lane="cpu", pid=os.getpid(), params={"cli": True},
                                 claim=lambda running: {})
    assert models.job_active(live) and models.status("n", store=store).busy
