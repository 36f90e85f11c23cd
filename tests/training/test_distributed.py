"""Data-parallel training on torch.distributed (gloo, 2 CPU processes): the same result as one
process on the same global batch, rank 0 alone writes, a killed rank ends the run as interrupted
and --resume finishes it, a fitted head computes its features sharded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shoal import datasets
from shoal.bundle import open_bundle
from shoal.errors import ConfigError
from shoal.models import describe
from shoal.store import Store
from shoal.training import TrainConfig, train
from shoal.training.batches import PixelBatches
from ranks import process_of_rank
from waiting import GENEROUS_S, wait_for

# Deterministic: no crop, no flip, float32, plain SGD; 36 training images = 3 global batches of 12.
RUN = dict(network="lenet", epochs=3, batch_size=12, crop=0, solver="sgd", lr=0.05, precision="float32")
FLAGS = ["--network", "lenet", "--epochs", "3", "--batch-size", "12", "--crop", "0", "--solver", "sgd", "--lr", "0.05",
         "--precision", "float32"]
SHOAL = [sys.executable, "-m", "shoal"]

# Runs the library's train() under torch.distributed's launcher (as 'torchrun ... -m shoal' does) and
# records, per rank, the weights every rank ends with and every write it makes.
SPY = '''
import json, os, sys, torch
from shoal.training import TrainConfig, train, loop, snapshots, run
from shoal.models import ModelFolder
from shoal.store import Store
rank, out = int(os.environ["RANK"]), sys.argv[1]
writes = []
def spy(owner, name):
    real = getattr(owner, name)
    def wrapped(*args, **kwargs):
        writes.append(name)
        return real(*args, **kwargs)
    setattr(owner, name, wrapped)
for owner, name in [(snapshots, "stage_best"), (snapshots, "save_state"), (ModelFolder, "write_card"),
                    (ModelFolder, "write_config"), (Store, "reserve"), (Store, "update"), (run.Emitter, "__call__")]:
    spy(owner, name)
evaluate = loop.evaluate
def last_weights(forward, batches, num_classes, device, model, **kwargs):
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, f"{out}/rank{rank}.pt")
    return evaluate(forward, batches, num_classes, device, model, **kwargs)
loop.evaluate = last_weights
result = train(TrainConfig(**json.loads(sys.argv[2])))
json.dump({"writes": sorted(set(writes)), "history": result.history, "bundle": str(result.bundle)},
          open(f"{out}/rank{rank}.json", "w"))
'''


@pytest.fixture
def even(shoal_home, image_folder_factory):
    """3 classes of 16 images: 12 train (36, so every global batch of 12 is whole) and 4 validation each."""
    folder = image_folder_factory(["circle", "square", "triangle"], 16, size=(40, 32), name="even-src")
    return datasets.create(folder, "even", size=32)


def _env(home: Path) -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "SHOAL_HOME": str(home), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}


def test_shards_of_a_pass_make_up_the_single_process_batches():
    import numpy as np

    images, labels = np.zeros((9, 2, 2, 1), np.uint8), np.arange(9)  # 9 over 2 ranks: one image padded
    one = PixelBatches(images, labels, batch_size=4, crop=None, train=True, seed=3)
    two = [PixelBatches(images, labels, batch_size=2, crop=None, train=True, seed=3, shard=(rank, 2)) for rank in (0, 1)]
    for epoch in (1, 2):
        for batches in (one, *two):
            batches.set_epoch(epoch)
        single = [y.tolist() for _, y in one]
        shards = [[y.tolist() for _, y in b] for b in two]
        assert len(two[0]) == len(two[1]) == 3 == len(shards[0]) == len(shards[1])  # equal steps on every rank
        # every global batch is the single process's, the last padded from the start of the pass
        assert [sorted(a + b) for a, b in zip(*shards)][:2] == [sorted(b) for b in single[:2]]
        assert sorted(shards[0][2] + shards[1][2]) == sorted(single[2] + single[0][:1])
    assert single != [y.tolist() for _, y in PixelBatches(images, labels, batch_size=4, crop=None, train=True, seed=3)]
    val = [PixelBatches(images, labels, batch_size=4, crop=None, train=False, shard=(rank, 2)) for rank in (0, 1)]
    assert sorted(sum(([*y.tolist()] for b in val for _, y in b), [])) == list(range(9))  # each image once


@pytest.mark.parametrize("path", ["end to end", "cached features"])
def test_two_gloo_processes_train_as_one_on_the_same_global_batch(even, shoal_home, tmp_path, path):
    import torch
    from safetensors.torch import load_file

    run = RUN if path == "end to end" else {**RUN, "freeze": "backbone", "head": "sgd"}  # features sharded, gathered
    single = train(TrainConfig(dataset="even", name="one", **run))
    assert [e for e in single.folder.joinpath("metrics.jsonl").read_text().splitlines()
            if '"start"' in e][0].count('"cached_features": true') == (path == "cached features")

    script = tmp_path / "spy.py"
    script.write_text(SPY)
    launched = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                               str(script), str(tmp_path), json.dumps({"dataset": "even", "name": "two", **run})],
                              env=_env(shoal_home), capture_output=True, text=True, timeout=GENEROUS_S)
    assert launched.returncode == 0, launched.stderr[-3000:]

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    weights = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for key in weights[0]:  # DDP kept the ranks' weights identical
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=0, atol=1e-6)
    # ...and equal to one process's on the same global batch (all-reduced gradients, sharded epochs)
    one = load_file(single.folder / "best.safetensors")
    saved = load_file(shoal_home / "models" / "two" / "best.safetensors")
    for key in one:
        torch.testing.assert_close(saved[key], one[key], rtol=1e-4, atol=1e-5)
    # validation metrics are all-reduced: every rank saw the whole validation split's figures
    figures = ("epoch", "train_loss", "lr", "val_loss", "val_accuracy")
    assert [{k: h[k] for k in figures} for h in ranks[0]["history"]] == [{k: h[k] for k in figures}
                                                                         for h in ranks[1]["history"]]
    for a, b in zip(single.history, ranks[0]["history"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
        assert b["val_accuracy"] == a["val_accuracy"]

    # only rank 0 writes: events, snapshots, the resume point, the store entry, the card, the bundle
    assert ranks[1]["writes"] == [] and ranks[1]["bundle"] == "None"
    assert {"stage_best", "save_state", "write_card", "write_config", "reserve", "update", "__call__"} <= set(
        ranks[0]["writes"])
    events = [json.loads(line) for line in (shoal_home / "models" / "two" / "metrics.jsonl").read_text().splitlines()]
    starts = [e for e in events if e["type"] == "start"]
    assert len(starts) == 1 and starts[0]["world_size"] == 2
    assert [e["epoch"] for e in events if e["type"] == "epoch"] == [1, 2, 3]
    best = max(ranks[0]["history"], key=lambda h: (h["val_accuracy"], -h["val_loss"]))["epoch"]
    assert open_bundle(ranks[0]["bundle"]).manifest["epoch"] == best


def test_a_killed_rank_ends_the_run_as_interrupted_and_resume_finishes_it(even, shoal_home):
    env = _env(shoal_home)
    # Far more epochs than it can run before the kill: rank 1 is killed once the first epoch is saved.
    proc = subprocess.Popen(SHOAL + ["train", "--dataset", "even", "--name", "cut", "--nproc", "2",
                                     *FLAGS[:4], "--epochs", "100000", *FLAGS[6:]],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = Store(shoal_home)
    try:
        wait_for("the first epoch of the 2-process run", lambda: proc.poll() is not None or (
            (shoal_home / "models" / "cut" / "state.pt").exists()), every=0.1)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        rank1 = wait_for("rank 1's process", lambda: process_of_rank(proc.pid, 1))
        os.kill(rank1, signal.SIGKILL)
        out, err = proc.communicate(timeout=GENEROUS_S)  # the launcher stops rank 0: no hang
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert "rank 1 was killed (SIGKILL)" in err and "resume it with 'shoal train --resume cut --nproc 2'" in err, err
    assert describe("cut", store=store)["status"] == "interrupted"

    finished = len(describe("cut", store=store)["history"])
    done = subprocess.run(SHOAL + ["train", "--resume", "cut", "--epochs", str(finished + 1), "--json"],
                          env=env, capture_output=True, text=True, timeout=GENEROUS_S)  # and in one process
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert [h["epoch"] for h in report["history"]] == list(range(1, finished + 2))
    assert store.get("model", "cut").status == "done"


def test_abort_and_ctrl_c_stop_every_rank(even, shoal_home):
    env = _env(shoal_home)
    store = Store(shoal_home)

    def start(name: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(SHOAL + ["train", "--dataset", "even", "--name", name, "--nproc", "2",
                                         *FLAGS[:4], "--epochs", "100000", *FLAGS[6:]],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(f"the first epoch of {name}", lambda: proc.poll() is not None or (
            (shoal_home / "models" / name / "state.pt").exists()), every=0.1)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        return proc

    aborted = start("aborted")
    try:
        (shoal_home / "models" / "aborted" / "ABORT").touch()  # as the web app's abort does
        _, err = aborted.communicate(timeout=GENEROUS_S)
    finally:
        if aborted.poll() is None:
            aborted.kill()
    assert aborted.returncode == 0 and "Aborted." in err, err[-3000:]
    assert store.get("model", "aborted").status == "aborted"

    interrupted = start("interrupted")
    try:
        interrupted.send_signal(signal.SIGINT)  # Ctrl-C at the launcher: it passes it on to every rank
        _, err = interrupted.communicate(timeout=GENEROUS_S)
    finally:
        if interrupted.poll() is None:
            interrupted.kill()
    assert interrupted.returncode == 130, err[-3000:]
    assert "Resume with: shoal train --resume interrupted --nproc 2" in err
    assert describe("interrupted", store=store)["status"] == "interrupted"
    assert process_of_rank(interrupted.pid, 1) is None


def test_nproc_2_trains_the_digits_sample_through_the_cli(shoal_home):
    from shoal.data.sample import build_sample

    env = _env(shoal_home)
    build_sample(store=Store(shoal_home))
    done = subprocess.run(SHOAL + ["train", "--dataset", "digits", "--network", "lenet", "--epochs", "2",
                                   "--solver", "adam", "--lr", "0.003", "--batch-size", "64", "--nproc", "2", "--json"],
                          env=env, capture_output=True, text=True, timeout=GENEROUS_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("Training digits-lenet on") == 1  # rank 0 alone reports
    assert "on cpu, 2 data-parallel processes" in done.stderr
    report = json.loads(done.stdout)  # one JSON object: rank 0's
    assert report["status"] == "done" and report["history"][0]["val_accuracy"] > 0.5
    shown = json.loads(subprocess.run(SHOAL + ["model", "show", "digits-lenet", "--json"], env=env,
                                      capture_output=True, text=True, timeout=GENEROUS_S).stdout)
    assert shown["summary"]["world_size"] == 2
    text = subprocess.run(SHOAL + ["model", "show", "digits-lenet"], env=env, capture_output=True, text=True,
                          timeout=GENEROUS_S).stdout
    assert "processes   2 (data-parallel)" in text


def test_a_fitted_head_shares_its_features_over_the_processes(even, shoal_home):
    """--pretrained --nproc 2: each process computes the features of its half of the images, rank 0 fits the
    head on all of them: the same model as one process makes."""
    import numpy as np
    from safetensors.numpy import load_file

    env = _env(shoal_home)
    reports = {}
    for name, nproc in (("one", "1"), ("two", "2")):
        done = subprocess.run(SHOAL + ["train", "--dataset", "even", "--pretrained", "--flip", "--name", name,
                                       "--nproc", nproc, "--json"],
                              env=env, capture_output=True, text=True, timeout=GENEROUS_S)
        assert done.returncode == 0, done.stderr[-3000:]
        reports[name] = json.loads(done.stdout)
    assert reports["two"]["history"][0]["val_loss"] == pytest.approx(reports["one"]["history"][0]["val_loss"], abs=1e-4)
    one, two = (load_file(Path(reports[name]["bundle"]) / "model.safetensors") for name in ("one", "two"))
    assert one.keys() == two.keys()
    # Up to the solver's tolerance: features summed in another order may stop L-BFGS an iteration apart.
    assert all(np.allclose(one[k], two[k], rtol=1e-3, atol=1e-3 * float(np.abs(one[k]).max())) for k in one)
    start = next(e for e in map(json.loads, (shoal_home / "models" / "two" / "metrics.jsonl").read_text().splitlines())
                 if e["type"] == "start")
    assert start["world_size"] == 2


def test_nproc_is_refused_in_one_line_where_it_cannot_work(even, shoal_home):
    env = _env(shoal_home)
    uneven = subprocess.run(SHOAL + ["train", "--dataset", "even", *FLAGS, "--batch-size", "13", "--nproc", "2"],
                            env=env, capture_output=True, text=True, timeout=GENEROUS_S)
    assert uneven.returncode == 1 and "--batch-size is the global batch and must split evenly over 2 processes, " \
        "got 13; use a multiple of 2, e.g. 12" in uneven.stderr
    with pytest.raises(ConfigError, match="sync_bn must be true or false"):
        TrainConfig(dataset="even", sync_bn="yes")
    assert not Store(shoal_home).exists("model", "even-lenet")
