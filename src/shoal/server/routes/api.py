"""The JSON API under ``/api``: every action of the pages, documented at ``/docs``."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from shoal.server.routes import datasets, folders, jobs, models, networks, predict, schedule
from shoal.server.security import check_csrf

api_router = APIRouter(prefix="/api", dependencies=[Depends(check_csrf)])
for module in (datasets, models, predict, jobs, networks, schedule, folders):
    api_router.include_router(module.router)
