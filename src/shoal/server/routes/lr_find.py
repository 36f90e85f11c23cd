"""``/api/lr-find``: queue the learning-rate range test for the training a new-model form describes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from shoal.errors import ConfigError
from shoal.server import services
from shoal.server.deps import RunnerDep, StoreDep
from shoal.server.schemas import JobOut, ModelCreate
from shoal.server.services import improve

router = APIRouter(prefix="/lr-find", tags=["training"])


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut,
             summary="Find a learning rate: the range test for this training (a queued job)")
def find_lr(body: ModelCreate, store: StoreDep, runner: RunnerDep) -> dict[str, Any]:
    """Takes the body of ``POST /api/models`` (``lr``, ``name`` and ``processes`` are ignored). The test trains for up to
    100 steps, so it waits in the device's lane like a training; follow it with ``GET /api/jobs/{id}``:
    when done, ``progress.finding`` holds the curve (``lrs``, ``smoothed``), the ``suggestion`` and why."""
    if body.previous or body.network_file:
        raise ConfigError("the learning-rate finder starts from scratch, the network's pretrained weights or "
                          "uploaded weights; not from a previous model or a network file")
    job = improve.submit_lr_find(store, runner, dataset=body.dataset, network=body.network, pretrained=body.pretrained,
                                 weights=body.weights, options=body.options.model_dump())
    return services.job_view(runner, job)
