"""``shoal store`` (disk use, freeing caches, downloads and snapshots) and ``dataset delete`` of a dataset in use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shoal import usage
from shoal.cli import _register, app
from shoal.models import ModelFolder
from shoal.store import Store

_register()
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "80"})


def _model(store: Store, name: str, dataset: str, *, snapshots: int = 2, status: str = "done") -> ModelFolder:
    folder = ModelFolder(store.reserve("model", name, status=status, summary={"dataset": dataset}).path)
    folder.write_config({"dataset": dataset, "network": "lenet"})
    folder.best_path.write_bytes(b"w" * 2_000)
    for epoch in range(1, snapshots + 1):
        folder.snapshot(epoch * 5).parent.mkdir(exist_ok=True)
        folder.snapshot(epoch * 5).write_bytes(b"s" * 100_000)
    folder.downloads_path.mkdir()
    (folder.downloads_path / f"{name}.shoal").write_bytes(b"d" * 30_000)
    return folder


@pytest.fixture()
def filled(tiny_dataset, shoal_home: Path) -> Store:
    """The 'tiny' dataset, two models trained on it (two snapshots each), a prepared backbone."""
    store = Store(shoal_home)
    _model(store, "tiny-a", "tiny")
    _model(store, "tiny-b", "tiny")
    backbone = shoal_home / "cache" / "backbones" / "efficientnet_lite0-default"
    backbone.mkdir(parents=True)
    (backbone / "backbone.onnx").write_bytes(b"o" * 1_500_000)
    return store


def test_store_shows_each_kind_its_size_and_how_to_free_it(filled: Store) -> None:
    found = usage.usage(filled)
    assert found.bytes("snapshots") == 400_000
    assert found.bytes("downloads") == 60_000
    assert found.bytes("caches") == 1_500_000
    assert found.bytes("models") == sum(p.bytes for p in found.of("models")) >= 4_000
    assert found.bytes("datasets") > 0
    result = run("store")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"{filled.home}: {usage_total(filled)}"
    assert lines[1].split() == ["kind", "size", "of", "free", "with"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert rows["snapshots"].split() == ["snapshots", "400.0", "kB", "4", "files", "of", "2", "models",
                                         "--clear-snapshots", "MODEL", "--yes"]
    assert rows["downloads"].split() == ["downloads", "60.0", "kB", "2", "files", "of", "2", "models",
                                         "--clear-downloads"]
    assert rows["caches"].split() == ["caches", "1.5", "MB", "1", "prepared", "backbone", "--clear-cache"]
    assert rows["datasets"].split()[3:] == ["1", "dataset"]
    assert rows["models"].split()[3:] == ["2", "models"]
    assert all(len(line.rstrip()) <= 80 for line in lines[1:])  # the title is the store's path


def usage_total(store: Store) -> str:
    from shoal.cli.store import _human

    return _human(usage.usage(store).total)


def test_store_json_has_every_kind(filled: Store) -> None:
    result = run("store", "--json")
    data = json.loads(result.output)
    assert set(data["kinds"]) == set(usage.KINDS)
    assert data["kinds"]["caches"] == 1_500_000
    assert data["total_bytes"] == sum(data["kinds"].values())


def test_clearing_snapshots_needs_yes_and_keeps_the_rest(filled: Store) -> None:
    result = run("store", "--clear-snapshots", "tiny-a")
    assert result.exit_code == 1
    assert result.output == ("Error: deleting the snapshots of tiny-a (200.0 kB) cannot be undone: their epochs can "
                             "no longer be exported; add --yes to delete them\n")
    folder = ModelFolder.of("tiny-a", store=filled)
    assert len(folder.snapshots()) == 2

    result = run("store", "--clear-snapshots", "tiny-a", "--yes")
    assert (result.exit_code, result.output) == (0, "Freed 200.0 kB: snapshots of tiny-a\n")
    assert folder.snapshots() == {}
    assert folder.best_path.exists()
    assert len(ModelFolder.of("tiny-b", store=filled).snapshots()) == 2

    result = run("store", "--clear-all-snapshots", "--yes")
    assert (result.exit_code, result.output) == (0, "Freed 200.0 kB: snapshots of every model\n")
    assert usage.usage(filled).bytes("snapshots") == 0


def test_clearing_snapshots_of_an_unknown_model_names_the_known_ones(filled: Store) -> None:
    result = run("store", "--clear-snapshots", "nosuch", "--yes")
    assert (result.exit_code, result.output) == (
        1, f"Error: no model named 'nosuch' in {filled.home} (known: 'tiny-a', 'tiny-b')\n")


def test_clearing_the_cache_and_downloads_frees_them_at_once(filled: Store) -> None:
    result = run("store", "--clear-cache", "--clear-downloads")
    assert (result.exit_code, result.output) == (
        0, "Freed 1.5 MB: the cache (prepared backbones)\nFreed 60.0 kB: the web app's downloads\n")
    after = usage.usage(filled)
    assert (after.bytes("caches"), after.bytes("downloads"), after.bytes("snapshots")) == (0, 0, 400_000)


def test_nothing_is_freed_while_a_model_trains(filled: Store) -> None:
    _model(filled, "tiny-c", "tiny", status="running")
    filled.update("model", "tiny-c", summary={"pid": __import__("os").getpid()})  # alive: this process
    result = run("store", "--clear-cache")
    assert (result.exit_code, result.output) == (
        1, "Error: cannot free the cache while 'tiny-c' is training; wait for it to end, or abort it\n")
    assert usage.usage(filled).bytes("caches") == 1_500_000


def test_dataset_delete_asks_for_force_when_models_were_trained_on_it(filled: Store) -> None:
    result = run("dataset", "delete", "tiny")
    assert result.exit_code == 1
    assert result.output == (
        "Error: 2 models were trained on dataset 'tiny' ('tiny-a', 'tiny-b'); without it they cannot be resumed, "
        "exported again or evaluated on it (their bundles keep working). Add --force to delete it anyway\n")
    assert filled.exists("dataset", "tiny")

    result = run("dataset", "delete", "tiny", "--force")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Deleted dataset 'tiny'.\n"
    assert "models trained on it, now without their dataset: tiny-a, tiny-b" in result.output
    assert not filled.exists("dataset", "tiny")


def test_dataset_delete_of_an_unused_dataset_needs_no_force(tiny_dataset) -> None:
    result = run("dataset", "delete", "tiny")
    assert (result.exit_code, result.output) == (0, "Deleted dataset 'tiny'.\n")
