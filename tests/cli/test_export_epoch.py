"""``shoal export NAME --epoch best|last|N``: which weights the written bundle holds."""

from __future__ import annotations

from safetensors.numpy import load_file
from typer.testing import CliRunner

from shoal.bundle import REQUIRED, open_bundle
from shoal.cli import _register, app
from shoal.training import TrainConfig, train

_register()
runner = CliRunner()


def export(name: str, epoch: str, out) -> tuple[int, dict, dict]:
    result = runner.invoke(app, ["export", name, "--epoch", epoch, "--out", str(out)])
    assert result.exit_code == 0, result.output
    bundle = open_bundle(result.stdout.strip())
    return bundle.manifest["epoch"], bundle.manifest, load_file(bundle.path / "model.safetensors")


def test_export_epoch_picks_the_best_the_last_or_a_kept_snapshot(tiny_dataset, tmp_path):
    result = train(TrainConfig(dataset="tiny", name="m", network="lenet", batch_size=8, epochs=3, snapshot_every=1,
                               solver="adam", lr=0.003))
    by_epoch = {h["epoch"]: h for h in result.history}

    best, manifest, best_weights = export("m", "best", tmp_path / "best")
    assert best == result.best_epoch and manifest["metrics"]["val_accuracy"] == by_epoch[best]["val_accuracy"]
    last, manifest, last_weights = export("m", "last", tmp_path / "last")
    assert last == 3 and manifest["metrics"]["val_loss"] == by_epoch[3]["val_loss"]
    first, manifest, first_weights = export("m", "1", tmp_path / "e1")
    assert first == 1 and manifest["metrics"]["val_loss"] == by_epoch[1]["val_loss"]

    assert best_weights.keys() == first_weights.keys() == last_weights.keys()
    assert any((first_weights[k] != last_weights[k]).any() for k in first_weights)  # not the same weights relabelled

    missing = runner.invoke(app, ["export", "m", "--epoch", "7", "--out", str(tmp_path / "e7")])
    assert missing.exit_code == 1
    assert missing.stderr == "Error: no snapshot of epoch 7; kept epochs: [1, 2, 3] (or use 'best' or 'last')\n"
    assert not (tmp_path / "e7").exists()

    # Over a bundle it replaces it; a folder of the user's own files it refuses, and keeps them.
    again, _, _ = export("m", "1", tmp_path / "best")
    assert again == 1 and sorted(p.name for p in (tmp_path / "best").iterdir()) == sorted(REQUIRED)
    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "thesis.txt").write_text("four years")
    refused = runner.invoke(app, ["export", "m", "--out", str(documents)])
    assert refused.exit_code == 1
    assert refused.stderr.startswith(f"Error: '{documents}' is a folder holding other files than a bundle's "
                                     f"(thesis.txt): writing the bundle there would delete them; give a new folder")
    assert [p.name for p in documents.iterdir()] == ["thesis.txt"]
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)  # hidden, but the user's all the same
    assert runner.invoke(app, ["export", "m", "--out", str(project)]).exit_code == 1
    assert [p.name for p in project.iterdir()] == [".git"]
    opened = tmp_path / "opened"  # a new folder a file manager has looked into
    opened.mkdir()
    (opened / ".DS_Store").write_bytes(b"\0")
    assert runner.invoke(app, ["export", "m", "--out", str(opened)]).exit_code == 0
    assert sorted(p.name for p in opened.iterdir()) == sorted(REQUIRED)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("shoal-bundle-")] == []
