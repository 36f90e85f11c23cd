"""The job runner: dataset builds and trainings run in worker processes, queued per lane.

A route validates its input, queues a job row in the store (:meth:`Runner.submit`) and
answers at once. The runner's thread starts the oldest queued job of each free lane as a
separate process (``python -m shoal.server.worker``), which calls the library and writes
its status, progress and any error back into the same row. One lane runs one job at a
time: ``data`` for dataset builds, one per device (``cpu``, ``mps``) for trainings, so a second
training waits for the first. GPUs are lanes each: a training on ``cuda`` takes any free GPU,
``cuda:N`` that one, ``cuda*N`` (``--nproc N``) N of them at once, and waits until they are free;
GPU jobs start in the order they were queued. The worker sees only its GPUs
(``CUDA_VISIBLE_DEVICES``), and the job's ``progress["gpus"]`` records which. A CLI training
holds its lane the same way (:func:`shoal.lanes.hold`: a running job with its pid), so the
runner starts nothing there until it ends; the lane rules live in :mod:`shoal.lanes`.

After a restart, :meth:`Runner.recover` marks the jobs and models whose process is gone as
``interrupted``; a model stays resumable from its last saved epoch.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from shoal import models
from shoal.errors import NotFoundError
from shoal.lanes import alive, device_lane, gpus_wanted, held_gpus, visible_gpus
from shoal.models import TRAIN_KINDS
from shoal.store import Job, Store

__all__ = ["DATA_LANE", "Runner", "device_lane", "gpus_wanted", "visible_gpus"]  # the lane rules: shoal.lanes

logger = logging.getLogger("shoal.server")

DATA_LANE = "data"
STOP_GRACE_S = 15.0  # how long a worker may take to save its state after being interrupted


class Runner:
    """Starts queued jobs in worker processes and watches them.

    Args:
        store: the store holding the job rows.
        poll_s: how often to look for finished and newly queued jobs.
    """

    def __init__(self, store: Store, *, poll_s: float = 0.5, gpus: list[str] | None = None) -> None:
        self.store = store
        self.poll_s = poll_s
        self.gpus = visible_gpus() if gpus is None else list(gpus)  # the GPUs' ids, numbered cuda:0, cuda:1...
        self.log_dir = store.home / "jobs"
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Recover from a previous run, then start watching the queue."""
        self.recover()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="shoal-jobs", daemon=True)
        self._thread.start()

    def stop(self, *, grace_s: float = STOP_GRACE_S) -> None:
        """Stop watching, and interrupt running workers (they save their state and mark it)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._lock:
            procs = dict(self._procs)
        for proc in procs.values():
            if proc.poll() is None:
                _signal(proc, signal.SIGINT)
        deadline = time.monotonic() + grace_s
        for proc in procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL)
                proc.wait(timeout=5)
        self._reap()

    def recover(self) -> None:
        """Mark as ``interrupted`` every job and model whose process is gone (after a restart)."""
        for job in self.store.list_jobs(status="running"):
            if job.id not in self._procs and not models.pid_alive(job.pid):
                self.store.update_job(job.id, status="interrupted", finished=time.time(), only_if=("running",),
                                      error="the server stopped while this job ran")
        for entry in self.store.list("model"):
            if entry.status in models.ACTIVE:
                models.settle(entry.name, store=self.store)

    # -- queue -------------------------------------------------------------------------------------
    def submit(self, kind: str, target: str, *, lane: str, params: dict[str, Any]) -> Job:
        """Queue a job; it starts when its lane is free. Returns the job (status ``queued``)."""
        job = self.store.add_job(kind, target, lane=lane, params=params)
        self._wake.set()
        return job

    def position(self, job: Job) -> int:
        """How many jobs run or wait before ``job`` in its lane (0 = it is running or next).

        The GPU lanes (``cuda``, ``cuda:N``, ``cuda*N``) are one queue (:meth:`tick` starts their jobs in
        order): for a GPU job, every older running or queued GPU job counts."""
        if gpus_wanted(job.lane) is None:
            ahead = self.store.list_jobs(status=("queued", "running"), lane=job.lane)
        else:
            ahead = [j for j in self.store.list_jobs(status=("queued", "running")) if gpus_wanted(j.lane) is not None]
        return sum(1 for j in ahead if j.id < job.id)

    def abort(self, job: Job) -> Job:
        """Stop a job: a queued one never starts; a running training stops after its current step
        (and keeps its saved epochs); a running dataset build stops at once and leaves nothing."""
        if job.status == "queued":
            job = self.store.update_job(job.id, status="aborted", finished=time.time(), only_if=("queued",))
            if job.kind in TRAIN_KINDS and self.store.exists("model", job.target):
                self.store.update("model", job.target, status="aborted")
            return job
        if job.status != "running":
            return job
        if job.kind in TRAIN_KINDS and self.store.exists("model", job.target):
            models.abort(job.target, store=self.store)  # the run notices within one step
            return job
        with self._lock:
            proc = self._procs.get(job.id)
        if proc is not None and proc.poll() is None:
            _signal(proc, signal.SIGINT)
        elif models.pid_alive(job.pid):
            os.kill(job.pid, signal.SIGINT)  # type: ignore[arg-type]
        return self.store.update_job(job.id, status="aborted", finished=time.time(), only_if=("running",))

    # -- the watching thread -----------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # keep watching; the next tick retries
                logger.exception("the job runner failed to check the queue")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def tick(self) -> None:
        """Reap finished workers, then start the oldest queued job of every free lane, and GPU jobs
        in their order while their GPUs are free."""
        self._reap()
        running = self.store.list_jobs(status="running")
        busy, held = set(), set()
        for job in running:
            if job.id in self._procs or alive(job):  # its process lives, or is being started
                busy.add(job.lane)
                held.update(held_gpus(job, self.gpus))  # those it was given, or (an older runner's) its lane's
            else:  # started elsewhere and gone
                self._finish_dead(job, None)
        gpu_queue_blocked = False
        for job in self.store.list_jobs(status="queued"):
            if self._stop.is_set():
                break
            wanted = gpus_wanted(job.lane)
            if wanted is None:
                if job.lane not in busy:
                    busy.add(job.lane)
                    self._launch(job)
                continue
            if gpu_queue_blocked:  # an older GPU job waits: no younger one overtakes it
                continue
            picked = self._pick(wanted, held)
            if picked is None:
                gpu_queue_blocked = True
                continue
            held.update(picked)
            self._launch(job, gpus=picked)

    def _pick(self, wanted: tuple[int, int | None], held: set[str]) -> list[str] | None:
        """Free GPUs for a job wanting them, or None while they are busy."""
        count, index = wanted
        if index is not None:
            if index >= len(self.gpus):  # no such GPU here: the worker's training says so, in its error
                return []
            return [self.gpus[index]] if self.gpus[index] not in held else None
        free = [g for g in self.gpus if g not in held]
        if count > len(self.gpus):
            return []  # never enough: let it start and fail with the training's own message
        return free[:count] if len(free) >= count else None

    def _launch(self, job: Job, *, gpus: list[str] | None = None) -> None:
        now = time.time()
        job = self.store.update_job(job.id, status="running", started=now, only_if=("queued",),
                                    progress={"gpus": gpus} if gpus else None)
        if job.status != "running" or job.started != now:  # aborted meanwhile, or another server took it
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{job.id}.log"
        env = {**os.environ, "SHOAL_HOME": str(self.store.home), "PYTHONUNBUFFERED": "1"}
        if gpus and gpus_wanted(job.lane)[1] is None:  # type: ignore[index]  # cuda, cuda*N: only its own GPUs
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        try:
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "shoal.server.worker", "--home", str(self.store.home), "--job", str(job.id)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                )
        except OSError as exc:
            self.store.update_job(job.id, status="failed", finished=time.time(), error=f"cannot start a worker: {exc}")
            return
        with self._lock:
            self._procs[job.id] = proc
        self.store.update_job(job.id, pid=proc.pid)
        logger.info("job %d (%s %s) started in process %d", job.id, job.kind, job.target, proc.pid)

    def _reap(self) -> None:
        with self._lock:
            done = [(i, p) for i, p in self._procs.items() if p.poll() is not None]
            for job_id, _ in done:
                del self._procs[job_id]
        for job_id, proc in done:
            try:
                job = self.store.get_job(job_id)
            except NotFoundError:
                continue
            if job.status == "running":  # the worker ended without saying how
                self._finish_dead(job, proc.returncode)

    def _finish_dead(self, job: Job, returncode: int | None) -> None:
        if job.params.get("cli"):  # a CLI training's process, killed before it could say how it ended
            status, error = "interrupted", f"the shoal command (pid {job.pid}) ended without finishing"
        elif returncode is not None and returncode < 0:
            status, error = "interrupted", f"the worker process was stopped by signal {-returncode}"
        else:
            status = "failed"
            error = (f"the worker process ended (exit code {returncode}) without finishing; "
                     f"see {self.log_dir / f'{job.id}.log'}")
        self.store.update_job(job.id, status=status, error=error, finished=time.time(), only_if=("running",))
        if job.kind in TRAIN_KINDS and self.store.exists("model", job.target):
            models.settle(job.target, store=self.store)


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        proc.send_signal(sig)
    except (ProcessLookupError, OSError):
        pass
