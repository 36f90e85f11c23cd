"""Jobs as the app shows them: the queue, recent jobs, aborting one."""

from __future__ import annotations

from typing import Any

from shoal.errors import TrainingError
from shoal.server import monitor
from shoal.server.jobs import Runner
from shoal.store import Job, Store


def job_view(runner: Runner, job: Job) -> dict[str, Any]:
    """A job as the API shows it (with its place in the queue while it waits)."""
    out = job.to_dict()
    out.pop("params", None)
    out["queue_position"] = runner.position(job) if job.status == "queued" else None
    out["eta_s"] = monitor.eta_s(job)
    return out


def list_jobs(store: Store, runner: Runner, *, recent: int = 20) -> list[dict[str, Any]]:
    """Running and queued jobs, then the most recent finished ones."""
    active = store.list_jobs(status=("running", "queued"))
    done = [j for j in store.list_jobs(limit=recent) if j.status not in ("running", "queued")]
    return [job_view(runner, j) for j in active + sorted(done, key=lambda j: -j.id)]


def abort_job(store: Store, runner: Runner, job_id: int) -> dict[str, Any]:
    job = store.get_job(job_id)
    if job.status not in ("queued", "running"):
        raise TrainingError(f"job {job_id} is {job.status}; only queued or running jobs can be aborted")
    return job_view(runner, runner.abort(job))


def active_job(store: Store, target: str, kinds: tuple[str, ...]) -> Job | None:
    jobs = store.list_jobs(status=("queued", "running"), kind=kinds, target=target)
    return jobs[-1] if jobs else None
