"""``/api/jobs``: the queue of dataset builds and trainings."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from shoal.server import services
from shoal.server.deps import RunnerDep, StoreDep
from shoal.server.schemas import JobOut

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the job's number")]  # what SQLite can hold


@router.get("", response_model=list[JobOut], summary="Running and queued jobs, then the latest finished ones")
def list_jobs(store: StoreDep, runner: RunnerDep) -> list[dict[str, Any]]:
    return services.list_jobs(store, runner)


@router.get("/{job_id}", response_model=JobOut, summary="One job: status, progress, error")
def get_job(job_id: JobId, store: StoreDep, runner: RunnerDep) -> dict[str, Any]:
    return services.job_view(runner, store.get_job(job_id))


@router.post("/{job_id}/abort", response_model=JobOut, summary="Abort a queued or running job")
def abort_job(job_id: JobId, store: StoreDep, runner: RunnerDep) -> dict[str, Any]:
    return services.abort_job(store, runner, job_id)
