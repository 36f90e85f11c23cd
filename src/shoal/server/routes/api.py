"""The JSON API under ``/api``: every action of the pages, documented at ``/docs``."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from shoal.server.routes import datasets, folders, jobs, live, lr_find, models, networks, predict, review, schedule
from shoal.server.security import check_csrf

api_router = APIRouter(prefix="/api", dependencies=[Depends(check_csrf)])
for module in (live, datasets, models, review, predict, jobs, networks, schedule, lr_find, folders):  # live first: /jobs/stream
    api_router.include_router(module.router)
