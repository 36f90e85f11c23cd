"""Training options a user relies on: early stop, --val-every, --precision, --color-jitter, every solver,
and the guard that stops a run whose loss is no longer a number."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from shoal.bundle import open_bundle
from shoal.cli import _register, app
from shoal.models import ModelFolder
from shoal.store import Store
from shoal.training import TrainConfig, train
from shoal.training.batches import PixelBatches
from shoal.training.solvers import SOLVERS, make_optimizer

_register()
TINY = dict(network="lenet", batch_size=8)


def test_early_stop_ends_the_run_after_that_many_validations_without_improvement(tiny_dataset):
    # A rate far below float32's resolution leaves every weight as it was: no validation after the first improves.
    frozen = dict(solver="sgd", lr=1e-30, momentum=0.0, weight_decay=0.0, epochs=8, **TINY)
    events = []
    result = train(TrainConfig(dataset="tiny", name="stops", early_stop=2, **frozen), on_event=events.append)

    assert [h["epoch"] for h in result.history] == [1, 2, 3]  # the best, then two validations no better
    assert result.status == "done" and result.best_epoch == 1
    assert [(e["epoch"], e["best_epoch"]) for e in events if e["type"] == "early_stop"] == [(3, 1)]
    assert open_bundle(result.bundle).manifest["epoch"] == 1  # the bundle holds the best epoch
    assert Store().get("model", "stops").summary["epoch"] == 3

    unstopped = train(TrainConfig(dataset="tiny", name="runs-on", **frozen))
    assert [h["epoch"] for h in unstopped.history] == list(range(1, 9))  # without the option, every epoch runs


@pytest.mark.parametrize(("val_every", "validated"), [(2, [2, 4]), (3, [3, 4])])
def test_val_every_validates_every_nth_epoch_and_always_the_last(tiny_dataset, val_every, validated):
    result = train(TrainConfig(dataset="tiny", epochs=4, val_every=val_every, solver="adam", lr=0.003, **TINY))

    assert [h["epoch"] for h in result.history] == validated
    epochs = [e for e in ModelFolder(result.folder).events() if e["type"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]  # every epoch trains
    assert [e["epoch"] for e in epochs if "val_accuracy" in e] == validated
    assert result.best_epoch in validated


@pytest.mark.parametrize("precision", ["float32", "bf16"])
def test_the_chosen_precision_is_recorded_in_the_start_event(tiny_dataset, precision):
    events = []
    result = train(TrainConfig(dataset="tiny", epochs=1, precision=precision, solver="adam", lr=0.003, **TINY),
                   on_event=events.append)

    start = next(e for e in events if e["type"] == "start")
    assert start["precision"] == precision and start["bf16"] is (precision == "bf16")
    assert ModelFolder(result.folder).read_config()["precision"] == precision
    assert math.isfinite(result.history[-1]["train_loss"])
    manifest = open_bundle(result.bundle).manifest
    assert manifest["onnx"]["check"]["max_abs_diff"] <= 1e-4  # the exported model is float32 either way


def test_color_jitter_changes_training_views_only_and_reproducibly(tiny_dataset):
    images, labels = np.asarray(tiny_dataset.images("train")), tiny_dataset.labels("train")

    def first_batch(color_jitter: float, *, train: bool) -> torch.Tensor:
        batches = PixelBatches(images, labels, batch_size=8, crop=None, train=train, color_jitter=color_jitter,
                               generator=torch.Generator().manual_seed(0))
        return next(iter(batches))[0]

    plain, jittered = first_batch(0.0, train=True), first_batch(0.5, train=True)
    assert plain.shape == jittered.shape and not torch.equal(plain, jittered)
    assert torch.equal(jittered, first_batch(0.5, train=True))  # drawn from the run's generator: a resume sees the same
    assert torch.equal(first_batch(0.5, train=False), first_batch(0.0, train=False))  # validation is never jittered

    result = train(TrainConfig(dataset="tiny", epochs=1, color_jitter=0.4, solver="adam", lr=0.003, **TINY))
    assert math.isfinite(result.history[-1]["train_loss"]) and result.bundle is not None
    assert open_bundle(result.bundle).manifest["training"]["color_jitter"] == 0.4


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_every_solver_trains_lenet(tiny_dataset, solver):
    result = train(TrainConfig(dataset="tiny", epochs=1, solver=solver, lr=0.01, name=f"m-{solver}", **TINY))

    (record,) = result.history
    assert math.isfinite(record["train_loss"]) and math.isfinite(record["val_loss"])
    assert open_bundle(result.bundle).manifest["training"]["solver"] == solver

    optimizer = make_optimizer(solver, [torch.nn.Parameter(torch.zeros(1))], lr=0.01, momentum=0.9,
                               weight_decay=0.0)
    assert type(optimizer).__name__ == SOLVERS[solver][0]
    assert optimizer.defaults.get("nesterov", False) is (solver == "nesterov")


def test_a_diverging_loss_stops_the_run_with_one_line_naming_a_lower_rate(tiny_dataset):
    out = CliRunner().invoke(app, ["train", "--dataset", "tiny", "--name", "hot", "--network", "lenet",
                                   "--batch-size", "8", "--solver", "sgd", "--lr", "10", "--lr-policy", "fixed",
                                   "--epochs", "20"])

    assert out.exit_code == 1 and "Traceback" not in out.output
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1
    assert errors[0].startswith("Error: the training loss became ")
    assert errors[0].endswith(": the learning rate 10 is too high for this network; try --lr 1")
    entry = Store().get("model", "hot")
    assert entry.status == "failed" and "try --lr 1" in entry.summary["error"]
