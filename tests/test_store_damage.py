"""A damaged store is one line naming what is damaged and the repair, never a traceback or a 500;
a full disk while training leaves the model interrupted and resumable (issue 14, items 7 and 10)."""

from __future__ import annotations

import errno
import json
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from shoal import datasets
from shoal.cli import _register, app
from shoal.errors import NoSpaceError, StoreError
from shoal.models import ModelFolder, describe
from shoal.store import Store
from shoal.training import TrainConfig, resume, train

FAST = dict(network="lenet", batch_size=8, solver="adam", lr=0.003)
_register()


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if "Error" in line]
    assert len(errors) == 1 and errors[0].startswith("Error: "), result.output  # progress lines may come first
    assert result.output.rstrip().endswith(errors[0]) and "Traceback" not in result.output
    return errors[0]


@pytest.fixture()
def damaged_model(shoal_home) -> ModelFolder:
    """A model entry 'm' with a folder whose files we damage."""
    entry = Store().reserve("model", "m", status="done")
    folder = ModelFolder(entry.path)
    folder.write_config({"dataset": "tiny", "network": "lenet"})
    return folder


# -- item 10: the CLI -----------------------------------------------------------------------------
def test_dataset_json_that_is_a_list_is_one_line(tiny_dataset):
    (tiny_dataset.path / "dataset.json").write_text("[]")
    line = one_error_line(cli("dataset", "show", "tiny"))
    assert line == (f"Error: dataset 'tiny' is damaged ({tiny_dataset.path / 'dataset.json'} holds list, not a JSON "
                    "object); delete it with 'shoal dataset delete tiny' and build it again")


def test_truncated_arrays_are_one_line_when_training(tiny_dataset):
    path = tiny_dataset.path / "train_images.npy"
    path.write_bytes(path.read_bytes()[:200])
    line = one_error_line(cli("train", "--dataset", "tiny", "--network", "lenet", "--epochs", "1"))
    assert line.startswith("Error: dataset 'tiny' is damaged (train_images.npy cannot be used:")
    assert line.endswith("delete it with 'shoal dataset delete tiny' and build it again")


def test_garbage_index_is_one_line_naming_the_file_and_the_repair(shoal_home):
    shoal_home.mkdir(parents=True)
    (shoal_home / "index.sqlite").write_bytes(b"this is not a database, it is garbage" * 100)
    line = one_error_line(cli("dataset", "list"))
    assert line.startswith(f"Error: the store index {shoal_home / 'index.sqlite'} is damaged (file is not a database)")
    assert "move it aside" in line
    assert one_error_line(cli("model", "list")) == line


def test_a_full_index_disk_is_no_space_not_damage(tmp_path):
    error = Store(tmp_path)._index_error(sqlite3.OperationalError("database or disk is full"))
    assert isinstance(error, NoSpaceError) and str(error).startswith(f"no space left on {tmp_path}")


def test_garbage_config_or_card_is_one_line(damaged_model):
    damaged_model.config_path.write_bytes(b"\xff\xfe garbage {")
    line = one_error_line(cli("model", "show", "m"))
    assert line.startswith(f"Error: model 'm' is damaged ({damaged_model.config_path} cannot be read:")
    assert line.endswith("delete it with 'shoal model delete m' and train it again")
    damaged_model.write_config({"dataset": "tiny"})
    damaged_model.card_path.write_text('"just a string"')
    line = one_error_line(cli("model", "show", "m"))
    assert line.startswith(f"Error: model 'm' is damaged ({damaged_model.card_path} cannot be read: it holds str")


def test_bad_metrics_lines_are_skipped(damaged_model):
    damaged_model.metrics_path.write_bytes(
        b'[]\n"x"\n{"type": "epoch"}\n{"type": "epoch", "epoch": "2", "val_accuracy": 1}\n\xff\xfe\n{cut\n'
        b'{"type": "epoch", "epoch": 1, "val_accuracy": 0.5}\n'
    )
    assert damaged_model.history() == [{"epoch": 1, "val_accuracy": 0.5}]
    assert describe("m")["history"] == [{"epoch": 1, "val_accuracy": 0.5}]


def test_a_summary_that_is_not_json_reads_as_empty(shoal_home):
    store = Store()
    store.reserve("model", "m", summary={"pid": 1})
    con = sqlite3.connect(store.db_path)
    with con:
        con.execute("UPDATE entries SET summary = 'not json {'")
    con.close()
    assert store.get("model", "m").summary == {}
    assert cli("model", "list").exit_code == 0


def test_a_garbage_resume_point_is_one_line(tiny_dataset):
    result = train(TrainConfig(dataset="tiny", name="m", epochs=1, **FAST))
    ModelFolder(result.folder).state_path.write_bytes(b"garbage, not a zip")
    line = one_error_line(cli("train", "--resume", "m", "--epochs", "2"))
    assert line.startswith(f"Error: model 'm' cannot be resumed: its resume point {result.folder / 'state.pt'} "
                           "is damaged (Weights only load failed); export an epoch that was kept")
    assert "export an epoch that was kept" in line


# -- item 10: the web app --------------------------------------------------------------------------
def test_the_web_app_answers_a_damaged_store_with_a_4xx_naming_it(tiny_dataset, damaged_model, shoal_home):
    from shoal.server import Settings, create_app

    (tiny_dataset.path / "dataset.json").write_text("[]")
    damaged_model.config_path.write_text("{garbage")
    with TestClient(create_app(Settings(home=shoal_home, run_jobs=False)), base_url="http://127.0.0.1") as c:
        got = c.get("/api/datasets/tiny")
        assert 400 <= got.status_code < 500 and "dataset 'tiny' is damaged" in got.json()["detail"]
        got = c.get("/api/models/m")
        assert 400 <= got.status_code < 500 and "model 'm' is damaged" in got.json()["detail"]
        (shoal_home / "index.sqlite").write_bytes(b"garbage" * 1000)
        for p in ("index.sqlite-wal", "index.sqlite-shm"):
            (shoal_home / p).unlink(missing_ok=True)
        got = c.get("/api/datasets")
        assert 400 <= got.status_code < 500 and "the store index" in got.json()["detail"]


# -- item 7: a full disk while training -------------------------------------------------------------
def test_a_full_disk_at_the_resume_point_leaves_the_model_interrupted_and_resumable(tiny_dataset, monkeypatch):
    from shoal.training import snapshots

    real, saves = snapshots.torch.save, []

    def save(obj, path):  # the second epoch's resume point finds the disk full half-way
        saves.append(path)
        if len(saves) == 2:
            Path(path).write_bytes(b"half a file")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, path)

    monkeypatch.setattr(snapshots.torch, "save", save)
    with pytest.raises(NoSpaceError, match=r"^no space left on .*m: model 'm' stopped and is interrupted at its "
                                           r"last saved epoch; free some space, then resume it with "
                                           r"'shoal train --resume m'$"):
        train(TrainConfig(dataset="tiny", name="m", epochs=3, **FAST))
    folder = ModelFolder.of("m")
    assert Store().get("model", "m").status == "interrupted"
    assert not folder.state_path.with_name("state.pt.tmp").exists()
    assert [e["type"] for e in folder.events()][-1] == "stopped"
    monkeypatch.setattr(snapshots.torch, "save", real)  # space is free again
    done = resume("m")
    assert done.status == "done" and [h["epoch"] for h in done.history] == [1, 2, 3]


def test_a_full_disk_at_the_status_update_leaves_the_model_interrupted(tiny_dataset, monkeypatch):
    real, calls = Store.update, []

    def update(self, kind, name, **kwargs):
        calls.append(kwargs)
        if (kwargs.get("summary") or {}).get("epoch") == 2:
            raise NoSpaceError(f"no space left on {self.home}: the store index cannot be written")
        return real(self, kind, name, **kwargs)

    monkeypatch.setattr(Store, "update", update)
    with pytest.raises(NoSpaceError, match="model 'm' stopped and is interrupted"):
        train(TrainConfig(dataset="tiny", name="m", epochs=3, **FAST))
    assert Store().get("model", "m").status == "interrupted"
    assert ModelFolder.of("m").has_state()


def test_a_damaged_dataset_is_skipped_in_lists_with_its_reason(tiny_dataset):
    (tiny_dataset.path / "dataset.json").write_text(json.dumps({"format": 1, "splits": []}))
    with pytest.warns(UserWarning, match="dataset 'tiny' is damaged"):
        assert datasets.list() == []
    with pytest.raises(StoreError.__mro__[1], match="dataset 'tiny' is damaged"):
        datasets.load("tiny")
