"""The job runner's GPU lanes, on a faked list of GPUs: one job per GPU, N GPUs for --nproc N, in order."""

from __future__ import annotations

import os
from typing import Any

import pytest

from shoal.server import jobs
from shoal.server.jobs import Runner, device_lane, gpus_wanted
from shoal.store import Store


class FakeProcess:
    """A worker that runs until the test ends it."""

    def __init__(self, args: list[str], env: dict[str, str], **_: Any) -> None:
        self.args, self.env, self.pid, self.returncode = args, env, os.getpid(), None

    def poll(self) -> int | None:
        return self.returncode


@pytest.fixture()
def runner(tmp_path, monkeypatch):
    started: list[FakeProcess] = []

    def popen(args, **kwargs):
        started.append(FakeProcess(args, **kwargs))
        return started[-1]

    monkeypatch.setattr(jobs.subprocess, "Popen", popen)
    r = Runner(Store(tmp_path / "home"), gpus=["0", "1", "2"])
    r.started = started  # type: ignore[attr-defined]
    return r


def _finish(runner: Runner, job_id: int) -> None:
    runner.store.update_job(job_id, status="done", only_if=("running",))
    runner._procs[job_id].returncode = 0  # type: ignore[attr-defined]


def _state(runner: Runner) -> dict[int, tuple[str, list[str] | None]]:
    return {j.id: (j.status, j.progress.get("gpus")) for j in runner.store.list_jobs()}


def test_lanes_of_devices():
    assert device_lane("cuda") == "cuda" and device_lane("cuda", nproc=4) == "cuda*4"
    assert device_lane("cuda:1") == "cuda:1" and device_lane("cpu", nproc=2) == "cpu"
    assert gpus_wanted("cuda") == (1, None) and gpus_wanted("cuda*4") == (4, None)
    assert gpus_wanted("cuda:2") == (1, 2) and gpus_wanted("cpu") is None and gpus_wanted("data") is None


def test_auto_finds_the_gpus_without_torch(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert jobs.visible_gpus() == ["3", "5"] and device_lane("auto") == "cuda"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert jobs.visible_gpus() == []


def test_one_job_per_gpu_and_the_next_waits(runner):
    ids = [runner.submit("train", f"m{i}", lane="cuda", params={}).id for i in range(4)]
    runner.tick()
    assert _state(runner) == {ids[0]: ("running", ["0"]), ids[1]: ("running", ["1"]), ids[2]: ("running", ["2"]),
                              ids[3]: ("queued", None)}
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in runner.started] == ["0", "1", "2"]
    _finish(runner, ids[1])
    runner.tick()
    assert _state(runner)[ids[3]] == ("running", ["1"])  # the GPU that came free
    assert runner.started[-1].env["CUDA_VISIBLE_DEVICES"] == "1"


def test_nproc_takes_n_gpus_and_nobody_overtakes_it(runner):
    first = runner.submit("train", "a", lane="cuda", params={}).id
    runner.tick()
    wide = runner.submit("train", "b", lane=device_lane("cuda", nproc=3), params={}).id
    later = runner.submit("train", "c", lane="cuda", params={}).id
    runner.tick()
    # two GPUs are free, but the 3-GPU job is older: it waits for three, and the later one behind it
    assert _state(runner)[wide] == ("queued", None) and _state(runner)[later] == ("queued", None)
    _finish(runner, first)
    runner.tick()
    assert _state(runner)[wide] == ("running", ["0", "1", "2"])
    assert runner.started[-1].env["CUDA_VISIBLE_DEVICES"] == "0,1,2"
    assert _state(runner)[later] == ("queued", None)
    _finish(runner, wide)
    runner.tick()
    assert _state(runner)[later] == ("running", ["0"])


def test_a_named_gpu_waits_for_that_one(runner):
    on_one = runner.submit("train", "a", lane="cuda:1", params={}).id
    runner.tick()
    again = runner.submit("train", "b", lane="cuda:1", params={}).id
    other = runner.submit("train", "c", lane="cuda:2", params={}).id
    runner.tick()
    state = _state(runner)
    assert state[on_one] == ("running", ["1"]) and state[again] == ("queued", None)
    assert "CUDA_VISIBLE_DEVICES" not in runner.started[0].env or runner.started[0].env.get(
        "CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")  # cuda:1 is numbered among all GPUs
    assert state[other] == ("queued", None)  # behind the older job that waits for GPU 1
    _finish(runner, on_one)
    runner.tick()
    assert _state(runner)[again] == ("running", ["1"]) and _state(runner)[other] == ("running", ["2"])


def test_cpu_and_data_lanes_are_not_held_up_by_gpus(runner):
    wide = runner.submit("train", "w", lane="cuda*4", params={}).id  # more than there are: starts, and fails itself
    cpu = runner.submit("train", "c", lane="cpu", params={}).id
    build = runner.submit("dataset", "d", lane="data", params={}).id
    runner.tick()
    state = _state(runner)
    assert state[wide][0] == state[cpu][0] == state[build][0] == "running"


def test_the_queue_position_counts_every_older_gpu_job(runner):
    ids = [runner.submit("train", f"m{i}", lane=lane, params={}).id
           for i, lane in enumerate(["cuda", "cuda:1", "cuda*2", "cuda:0", "cpu", "cuda"])]
    runner.tick()  # the first two start; the 2-GPU job waits for two free GPUs, and the rest behind it
    state = _state(runner)
    assert [state[i][0] for i in ids] == ["running", "running", "queued", "queued", "running", "queued"]
    jobs_ = {j.id: j for j in runner.store.list_jobs()}
    assert [runner.position(jobs_[i]) for i in ids[2:4]] == [2, 3]  # all GPU lanes are one queue
    assert runner.position(jobs_[ids[5]]) == 4  # not counting the cpu job, whatever its id
    cpu_later = runner.store.get_job(runner.submit("train", "c2", lane="cpu", params={}).id)
    assert runner.position(cpu_later) == 1  # a cpu job counts only its own lane
