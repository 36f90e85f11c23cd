"""A CLI training holds its device's lane in the store, as the web app's jobs do (shoal.lanes)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from shoal import lanes, models
from shoal.cli import _register, app
from shoal.server.jobs import Runner
from shoal.server.services.jobs import list_jobs
from shoal.store import Store
from waiting import GENEROUS_S

_register()
FAST = ["--network", "lenet", "--batch-size", "8", "--solver", "adam", "--lr", "0.003"]


@pytest.fixture()
def holder():
    """Another live process (its pid holds what it is recorded with), ended by the test or at the end."""
    proc = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({GENEROUS_S})"])
    yield proc
    proc.kill()
    proc.wait(timeout=10)


def _hold_for(store: Store, pid: int, *, lane: str, target: str = "other", gpus: list[str] | None = None) -> int:
    job = store.add_running_job("train", target, lane=lane, pid=pid, params={"cli": True},
                                claim=lambda running: {"gpus": gpus} if gpus else {})
    assert job is not None
    return job.id


def test_a_cli_training_waits_for_the_busy_lane_then_shows_as_a_job(tiny_dataset, shoal_home, holder, monkeypatch):
    store = Store()
    held = _hold_for(store, holder.pid, lane="cpu")
    waits: list[str] = []
    describe = lanes.describe_wait

    def wait_then_free(ahead, what):  # the CLI is waiting: now the other training ends (and is reaped)
        waits.append(line := describe(ahead, what))
        holder.kill()
        holder.wait(timeout=GENEROUS_S)
        return line

    monkeypatch.setattr(lanes, "describe_wait", wait_then_free)
    result = CliRunner().invoke(app, ["train", "--dataset", "tiny", "--epochs", "1", "--name", "m", "--device", "cpu",
                                      *FAST])
    assert result.exit_code == 0, result.output
    line = f"Waiting for cpu, used by model other (job {held}, pid {holder.pid}) …"
    assert waits == [line]  # it waited, once, for the other training
    assert line in result.stderr
    mine = store.list_jobs(target="m")
    assert [(j.kind, j.lane, j.status, j.pid, j.params) for j in mine] == [("train", "cpu", "done", os.getpid(),
                                                                             {"cli": True})]
    shown = {j["id"]: j for j in list_jobs(store, Runner(store))}  # what GET /api/jobs answers
    assert shown[mine[0].id]["status"] == "done" and "command line" in shown[mine[0].id]["progress"]["stage"]
    assert models.status("m", store=store).status == "done"


def test_a_free_lane_or_a_dead_holder_does_not_wait(shoal_home, holder):
    store = Store()
    holder.kill()
    holder.wait(timeout=10)
    _hold_for(store, holder.pid, lane="cpu")  # killed outright: its row still says running
    waits: list[str] = []
    with lanes.hold("train", "m", device="cpu", store=store, on_wait=lambda a, w: waits.append(w)) as held:
        running = store.list_jobs(status="running", target="m")
        assert [j.id for j in running] == [held.job.id] and running[0].pid == os.getpid()
        held.status = "aborted"
    assert waits == [] and store.get_job(held.job.id).status == "aborted"


def test_ctrl_c_and_errors_release_the_lane(shoal_home):
    store = Store()
    with pytest.raises(KeyboardInterrupt), lanes.hold("train", "a", device="cpu", store=store) as held:
        raise KeyboardInterrupt
    assert store.get_job(held.job.id).status == "interrupted"
    with pytest.raises(RuntimeError), lanes.hold("train", "b", device="cpu", store=store) as held:
        raise RuntimeError("out of memory")
    job = store.get_job(held.job.id)
    assert (job.status, job.error) == ("failed", "out of memory")
    assert store.list_jobs(status="running") == []


def test_gpu_lanes_are_per_gpu(shoal_home, holder, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    store = Store()
    _hold_for(store, holder.pid, lane="cuda", gpus=["0"])
    with lanes.hold("train", "one", device="cuda:1", store=store) as held:  # the other GPU: no wait
        assert held.job.progress["gpus"] == ["1"]
    waits: list[str] = []

    def wait_then_free(ahead, what):
        waits.append(lanes.describe_wait(ahead, what))
        holder.kill()
        holder.wait(timeout=10)

    with lanes.hold("train", "two", device="cuda", store=store, on_wait=wait_then_free, poll_s=0.05) as held:
        assert held.job.progress["gpus"] == ["0"]  # the first visible GPU, as torch picks it
    assert waits == [f"Waiting for cuda:0, used by model other (job 1, pid {holder.pid}) …"]


def test_the_runner_starts_nothing_on_a_gpu_a_cli_training_holds(shoal_home, holder, monkeypatch):
    started: list[list[str]] = []

    class Worker:
        def __init__(self, args, env, **_):
            started.append(env.get("CUDA_VISIBLE_DEVICES")), setattr(self, "pid", os.getpid())

        def poll(self):
            return None

    monkeypatch.setattr("shoal.server.jobs.subprocess.Popen", Worker)
    store = Store()
    runner = Runner(store, gpus=["0", "1"])
    cli = _hold_for(store, holder.pid, lane="cuda", gpus=["0"])
    named = runner.submit("train", "a", lane="cuda:0", params={}).id
    runner.tick()
    assert store.get_job(named).status == "queued"  # GPU 0 is the CLI training's
    anyone = runner.submit("train", "b", lane="cpu", params={}).id
    runner.tick()
    assert store.get_job(anyone).status == "running"
    holder.kill()
    holder.wait(timeout=10)
    runner.tick()  # the CLI process was killed: its lane is free, its job interrupted
    assert store.get_job(cli).status == "interrupted" and "shoal command" in store.get_job(cli).error
    assert store.get_job(named).status == "running"


def test_blockers_use_the_gpus_they_are_given(shoal_home, holder, monkeypatch):
    store = Store()
    _hold_for(store, holder.pid, lane="cuda:1")  # an older runner's row: its GPU is its lane's
    _hold_for(store, holder.pid, lane="cuda", target="another")
    running = store.list_jobs(status="running")
    looked: list[int] = []
    monkeypatch.setattr(lanes, "visible_gpus", lambda: looked.append(1) or ["0", "1"])
    assert [j.target for j in lanes.blockers(running, "cuda:1", ["1"], visible=["0", "1"])] == ["other"]
    assert looked == []  # the list given, not a look per running job
    assert [j.target for j in lanes.blockers(running, "cuda", ["0"])] == ["another"]
    assert looked == [1]  # not given: looked up once
