"""A worker process: runs one queued job through the library and records how it went.

``python -m shoal.server.worker --home HOME --job ID`` is started by the
:class:`~shoal.server.jobs.Runner`; it is never imported by the web server itself. It
reads the job's parameters from the store, calls :func:`shoal.datasets.create`,
:func:`shoal.training.train`, :func:`shoal.training.resume` (or, in ``nproc`` processes,
:func:`shoal.training.distributed.train_processes`),
:func:`shoal.training.lr_find.lr_find` or :func:`shoal.bundle.export` (a download's
export), turns progress into the job row, and ends with the job ``done``, ``failed`` (with the error's message), ``aborted``
or ``interrupted`` (on SIGINT, after the run saved its last epoch).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal.errors import ShoalError
from shoal.store import Job, Store

if TYPE_CHECKING:
    from shoal.models import ModelFolder

PROGRESS_EVERY_S = 0.5


class _Progress:
    """Writes progress into the job row, at most every PROGRESS_EVERY_S (always for epochs).

    The store merges each write into the job's progress, so what the start event says (epochs,
    device, bf16, the first epoch) stays there for every later write."""

    def __init__(self, store: Store, job: Job) -> None:
        self.store, self.job, self.last = store, job, 0.0

    def put(self, values: dict[str, Any], *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            self.store.update_job(self.job.id, progress=values)

    def images(self, done: int, total: int) -> None:
        self.put({"done": done, "total": total}, force=done == total)

    def event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "prepare":
            self.put({"stage": str(event.get("message", "preparing"))}, force=True)
        elif kind in ("features", "cross_validation"):
            what = "computing features" if kind == "features" else "cross-validation"
            self.put({"stage": f"{what} {event['done']}/{event['total']}", "done_steps": event["done"],
                      "total_steps": event["total"]}, force=event["done"] == event["total"])
        elif kind == "start":
            # What the run really uses (not "auto"), and the epoch it starts from (a resumed run's is not 0);
            # an earlier stage's steps are over (the pages show the epochs once they are gone).
            epoch = event.get("epoch", 0)
            self.put({**{k: event[k] for k in ("epochs", "device", "bf16") if k in event}, "stage": "training",
                      "epoch": epoch, "first_epoch": epoch, "done_steps": None, "total_steps": None}, force=True)
        elif kind == "iteration":
            self.put({"epoch": event["epoch"], "train_loss": event["train_loss"], "lr": event["lr"]})
        elif kind == "epoch":
            values = {"epoch": event["epoch"], "train_loss": event["train_loss"]}
            if "val_accuracy" in event:
                values["val_accuracy"] = event["val_accuracy"]
            self.put(values, force=True)


def run_dataset(store: Store, job: Job, progress: _Progress) -> str:
    from shoal import datasets

    params = job.params
    try:
        datasets.create(params["source"], job.target, store=store, progress=progress.images,
                        within=params.get("within"), **params.get("options", {}))
    finally:
        cleanup = params.get("cleanup")
        if cleanup and Path(cleanup).is_relative_to(store.home / "uploads"):
            shutil.rmtree(cleanup, ignore_errors=True)
    return "done"


def run_training(store: Store, job: Job, progress: _Progress) -> str:
    from shoal import training
    from shoal.config import from_dict
    from shoal.training import TrainConfig

    if job.params.get("nproc", 1) > 1:
        return run_processes(store, job, progress)
    if job.kind == "resume":
        result = training.resume(job.target, store=store, on_event=progress.event, epochs=job.params.get("epochs"))
    else:
        config = from_dict(TrainConfig, job.params["config"])
        result = training.train(config, store=store, on_event=progress.event)
    return "aborted" if result.status == "aborted" else "done"


def run_processes(store: Store, job: Job, progress: _Progress) -> str:
    """A data-parallel training (``nproc`` processes), started as ``shoal train --nproc`` starts one; rank 0's
    events are followed from the model's ``metrics.jsonl`` into the job's progress."""
    from shoal.config import from_dict
    from shoal.models import ModelFolder
    from shoal.training import TrainConfig, check_resume, distributed

    nproc = int(job.params["nproc"])
    if job.kind == "resume":
        folder = ModelFolder.of(job.target, store=store)
        epochs = job.params.get("epochs")
        config = check_resume(job.target, epochs=epochs, store=store)
        args = ["train", "--resume", job.target, *(["--epochs", str(epochs)] if epochs else [])]
    else:
        folder = ModelFolder(store.folder("model", job.target))
        config = from_dict(TrainConfig, job.params["config"])
        options = store.home / "jobs" / f"{job.id}.config.json"
        options.parent.mkdir(parents=True, exist_ok=True)
        options.write_text(json.dumps(job.params["config"]), encoding="utf-8")
        args = ["train", "--config", str(options)]
    distributed.check_processes(config, nproc)
    stop = threading.Event()
    follower = threading.Thread(target=_follow, args=(folder, progress.event, stop),
                                kwargs={"seen": len(folder.events()) if job.kind == "resume" else 0}, daemon=True)
    follower.start()
    try:
        return distributed.train_processes(args, nproc=nproc, name=job.target, store=store)
    except distributed.RankLost as exc:  # a process was killed: resumable, as after a server stop
        store.update_job(job.id, error=str(exc))
        return "interrupted"
    finally:
        stop.set()
        follower.join()


def _follow(folder: ModelFolder, handler: Callable[[dict[str, Any]], None], stop: threading.Event, *,
            seen: int) -> None:
    """Pass the run's new events to ``handler`` every PROGRESS_EVERY_S until ``stop``, then the last ones."""
    while True:
        ending = stop.wait(PROGRESS_EVERY_S)
        events = folder.events()
        for event in events[seen:]:
            handler(event)
        seen = len(events)
        if ending:
            return


def run_lr_find(store: Store, job: Job, progress: _Progress) -> str:
    """The learning-rate range test: the steps as progress, then the curve and the suggestion as
    ``progress.finding`` (also saved as ``lr-find/job-ID/lr_find.json`` and ``.png`` in the store)."""
    from shoal.config import from_dict
    from shoal.training import TrainConfig
    from shoal.training.lr_find import lr_find

    finding = lr_find(from_dict(TrainConfig, job.params["config"]), store=store, on_event=lambda e: progress.put(
        {"stage": "finding the learning rate", "done_steps": e["done"], "total_steps": e["total"]}))
    finding.save(store.home / "lr-find" / f"job-{job.id}")
    progress.put({"finding": finding.to_dict()}, force=True)
    return "done"


def run_export(store: Store, job: Job, progress: _Progress) -> str:
    """A ``.shoal`` file of a model's epoch for the web app's download: its stages as progress, then
    ``progress.file`` (the file's name) when it is written."""
    from shoal.bundle import export

    epoch, out = job.params["epoch"], Path(job.params["out"])
    progress.put({"stage": f"exporting epoch {epoch}"}, force=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    export(job.target, epoch=int(epoch) if epoch.isdigit() else epoch, store=store, out=out, on_event=progress.event)
    progress.put({"stage": "written", "file": out.name}, force=True)
    return "done"


RUNNERS = {"dataset": run_dataset, "train": run_training, "resume": run_training, "lr_find": run_lr_find,
           "export": run_export}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shoal.server.worker", description=__doc__)
    parser.add_argument("--home", required=True, help="the store folder (SHOAL_HOME)")
    parser.add_argument("--job", type=int, required=True, help="the job id")
    args = parser.parse_args(argv)
    store = Store(args.home)
    job = store.get_job(args.job)
    store.update_job(job.id, pid=os.getpid())
    print(f"job {job.id}: {job.kind} {job.target} {job.params}", flush=True)
    progress = _Progress(store, job)
    try:
        status = RUNNERS[job.kind](store, job, progress)
    except KeyboardInterrupt:
        store.update_job(job.id, status="interrupted", finished=time.time(), only_if=("running",),
                         error="stopped (the server shut down or the job was aborted)")
        print("interrupted", flush=True)
        return 130
    except ShoalError as exc:
        store.update_job(job.id, status="failed", finished=time.time(), error=str(exc), only_if=("running",))
        print(f"failed: {exc}", flush=True)
        return 1
    except BaseException as exc:  # noqa: BLE001 - record anything, then let the log show the traceback
        traceback.print_exc()
        store.update_job(job.id, status="failed", finished=time.time(), only_if=("running",),
                         error=f"unexpected error ({type(exc).__name__}: {exc}); see the job log")
        return 1
    store.update_job(job.id, status=status, finished=time.time(), only_if=("running",))
    print(status, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
