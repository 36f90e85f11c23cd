"""Device lanes: which trainings may run at the same time, for the web app's job runner and the CLI alike.

A training runs in the lane of its device: ``cpu`` and ``mps`` are one lane each (one training at a
time), every GPU is a lane of its own. A running job in the store's job table holds its lane (its
GPUs: ``progress["gpus"]``) while its process lives. The job runner
(:class:`shoal.server.jobs.Runner`) starts queued jobs into free lanes; a CLI training
(:func:`hold`) waits until its lane is free, then records itself as a running job, so the web app
shows it and starts nothing else there. A dead process holds nothing. Torch-free.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.models import pid_alive
from shoal.store import Job, Store

STARTING_S = 5.0  # a job marked running this recently without a pid is a worker being started
WAIT_POLL_S = 1.0  # how often a waiting CLI training looks again


def visible_gpus() -> list[str]:
    """The ids of the GPUs this machine lets us use, without torch: ``CUDA_VISIBLE_DEVICES`` when set,
    else the ``/dev/nvidiaN`` devices."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and not g.strip().startswith("-")]
    found = [p.name[len("nvidia"):] for p in Path("/dev").glob("nvidia[0-9]*")]
    return sorted((g for g in found if g.isdigit()), key=int)


def device_lane(device: str, *, nproc: int = 1) -> str:
    """The lane a training on ``device`` in ``nproc`` processes runs in (``auto`` resolved without torch).

    ``cuda`` is any one GPU, ``cuda*N`` any N GPUs, ``cuda:N`` the GPU numbered N.
    """
    if device == "auto":
        if visible_gpus() or Path("/dev/nvidiactl").exists():
            device = "cuda"
        elif sys.platform == "darwin" and platform.machine() == "arm64":
            device = "mps"
        else:
            device = "cpu"
    if device == "cuda" and nproc > 1:
        return f"cuda*{nproc}"
    return device


def gpus_wanted(lane: str) -> tuple[int, int | None] | None:
    """How many GPUs a lane's job takes, and which one when it names it: ``cuda`` (1, None),
    ``cuda*N`` (N, None), ``cuda:N`` (1, N); None for a lane that is no GPU's."""
    if lane == "cuda":
        return 1, None
    if lane.startswith("cuda*") and lane[5:].isdigit():
        return int(lane[5:]), None
    if lane.startswith("cuda:") and lane[5:].isdigit():
        return 1, int(lane[5:])
    return None


def held_gpus(job: Job, gpus: list[str]) -> list[str]:
    """The GPUs a running job holds: those recorded in its progress, or (recorded without) its lane's first."""
    if "gpus" in job.progress:
        return list(job.progress["gpus"])
    wanted = gpus_wanted(job.lane)
    if wanted is None:
        return []
    count, index = wanted
    return [gpus[index]] if index is not None and index < len(gpus) else gpus[:count]


def alive(job: Job) -> bool:
    """Whether a running job's process lives (or is being started: no pid yet, marked running just now)."""
    if pid_alive(job.pid):
        return True
    return job.pid is None and (job.started is None or time.time() - job.started <= STARTING_S)


def blockers(running: list[Job], lane: str, gpus: list[str], *, visible: list[str] | None = None) -> list[Job]:
    """The live running jobs that keep a training of ``lane`` (on ``gpus``) from starting now.

    A GPU lane is blocked by a job holding one of the same GPUs; any other lane (``cpu``, ``mps``)
    by a job in the same lane. Jobs whose process is gone block nothing. ``visible``: this machine's
    GPUs (:func:`visible_gpus`, looked up here when not given), for a job recorded without its GPUs.
    """
    if gpus_wanted(lane) is None:
        return [j for j in running if j.lane == lane and alive(j)]
    mine = set(gpus)
    visible = visible_gpus() if visible is None else visible
    return [j for j in running if alive(j) and mine & set(held_gpus(j, visible))]


def cli_gpus(lane: str, gpus: list[str]) -> list[str]:
    """The GPUs a command-line training of ``lane`` uses: torch's own choice, the first visible ones
    (``cuda``, ``cuda*N``), or the one named (``cuda:N``); none off the GPU."""
    wanted = gpus_wanted(lane)
    if wanted is None:
        return []
    count, index = wanted
    if index is not None:
        return gpus[index:index + 1]
    return gpus[:count]


@dataclass
class Held:
    """A lane held by this process (:func:`hold`); ``status`` is what its job row says when it ends."""

    job: Job | None
    status: str = "done"


@contextlib.contextmanager
def hold(kind: str, target: str, *, device: str, nproc: int = 1, store: Store | None = None,
         on_wait: Callable[[list[Job], str], Any] | None = None, poll_s: float = WAIT_POLL_S) -> Iterator[Held]:
    """Take the lane of a training on ``device`` for this process, waiting while another job holds it.

    While it waits, ``on_wait(blockers, what)`` (``what``: ``cpu``, ``cuda:0``...) is called whenever the jobs in the way change. Once
    free, a running job row (``kind``, ``target``, this pid) records the hold; when the block ends it
    is marked with :attr:`Held.status` (``done`` unless changed), ``interrupted`` on Ctrl-C, or
    with the error as ``failed`` (or the status set before raising). A process killed outright leaves a running row whose dead pid holds nothing.

    Args:
        kind: the job's kind (``train``, ``resume``).
        target: the model's name, as the web app shows it.
        device: the training's device (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``).
        nproc: the processes of a data-parallel run (N GPUs on CUDA).
        store: the store; default ``SHOAL_HOME``.
        on_wait: told who is in the way, when that changes.
        poll_s: how often to look again while waiting.
    """
    store = store or Store()
    lane = device_lane(device, nproc=nproc)
    visible = visible_gpus()
    gpus = cli_gpus(lane, visible)
    what = ", ".join(f"cuda:{visible.index(g)}" for g in gpus) or lane  # as torch numbers them here
    seen: list[int] | None = None

    def claim(running: list[Job]) -> dict[str, Any] | None:
        nonlocal seen
        ahead = blockers(running, lane, gpus, visible=visible)
        if not ahead:
            return {"stage": f"training from the command line (pid {os.getpid()})", **({"gpus": gpus} if gpus else {})}
        if [j.id for j in ahead] != seen and on_wait is not None:
            on_wait(ahead, what)
        seen = [j.id for j in ahead]
        return None

    while (job := store.add_running_job(kind, target, lane=lane, pid=os.getpid(), params={"cli": True},
                                        claim=claim)) is None:
        time.sleep(poll_s)
    held = Held(job)
    try:
        yield held
    except KeyboardInterrupt:
        store.update_job(job.id, status="interrupted", finished=time.time(), only_if=("running",),
                         error="stopped with Ctrl-C (the last finished epoch is saved)")
        raise
    except BaseException as exc:  # failed, unless the caller said otherwise (interrupted: resumable)
        store.update_job(job.id, status="failed" if held.status == "done" else held.status, finished=time.time(),
                         only_if=("running",), error=str(exc) or type(exc).__name__)
        raise
    store.update_job(job.id, status=held.status, finished=time.time(), only_if=("running",))


def describe_wait(ahead: list[Job], what: str) -> str:
    """One line for a training that waits: ``Waiting for cuda:0, used by model a (job 3, pid 41) …``."""
    users = ", ".join(f"{'model' if j.kind in ('train', 'resume') else j.kind} {j.target} (job {j.id}"
                      f"{f', pid {j.pid}' if j.pid else ''})" for j in ahead)
    return f"Waiting for {what}, used by {users} …"
