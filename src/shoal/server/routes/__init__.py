"""The app's routers: one per area, each with its prefix and tags, combined in :mod:`.api`."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from shoal.server.jobs import Runner
from shoal.server.services import job_view
from shoal.store import Job


def accepted(request: Request, runner: Runner, job: Job, page: str) -> dict[str, Any]:
    """The answer to a queued job (:class:`~shoal.server.schemas.JobAccepted`): the job, its target's name
    and the address of the page that follows it (the route named ``page``)."""
    return {"job": job_view(runner, job), "name": job.target,
            "url": str(request.url_for(page, name=job.target).path)}
