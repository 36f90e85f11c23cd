"""``/api/schedule``: the learning rate a policy gives over a run, to preview before training."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from shoal.errors import ConfigError
from shoal.server.schemas import ScheduleOut
from shoal.training.config import SCRATCH_DEFAULTS
from shoal.training.schedules import learning_rate

router = APIRouter(prefix="/schedule", tags=["training"])

MAX_POINTS = 2000


@router.get("", response_model=ScheduleOut, summary="Learning rate over the run for a policy (preview)")
def get_schedule(
    policy: str = "cosine",
    epochs: Annotated[int, Query(ge=1, le=100_000)] = SCRATCH_DEFAULTS["epochs"],
    lr: Annotated[float, Query(gt=0)] = SCRATCH_DEFAULTS["lr"],
    step_size: Annotated[float | None, Query(gt=0)] = None,
    step_values: Annotated[str, Query(description="comma-separated epochs (multistep)")] = "",
    gamma: Annotated[float, Query(ge=0)] = 0.1,
    power: Annotated[float, Query(ge=0)] = 1.0,
) -> dict[str, Any]:
    try:
        steps = tuple(float(v) for v in step_values.replace(" ", "").split(",") if v)
    except ValueError:
        raise ConfigError(f"step_values must be comma-separated epochs like '10,20', got {step_values!r}") from None
    n = min(MAX_POINTS, epochs * 20)
    points = [(i * epochs / n, learning_rate(policy, i * epochs / n, epochs=epochs, base_lr=lr, step_size=step_size,
                                             step_values=steps, gamma=gamma, power=power)) for i in range(n + 1)]
    return {"policy": policy, "points": [{"epoch": round(e, 6), "lr": v} for e, v in points]}
