"""``/api/schedule``: the learning rate a policy gives over a run, to preview before training."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from shoal.config import check_number
from shoal.errors import ConfigError
from shoal.server.schemas import ScheduleOut
from shoal.training.config import (
    DROP_POLICIES,
    MAX_EPOCHS,
    MAX_GAMMA,
    MAX_LR,
    MAX_POWER,
    SCRATCH_DEFAULTS,
    check_step_values,
)
from shoal.training.schedules import learning_rate

router = APIRouter(prefix="/schedule", tags=["training"])

MAX_POINTS = 2000


@router.get("", response_model=ScheduleOut, summary="Learning rate over the run for a policy (preview)")
def get_schedule(
    policy: str = "cosine",
    epochs: Annotated[int, Query(ge=1, le=MAX_EPOCHS)] = SCRATCH_DEFAULTS["epochs"],
    lr: float = SCRATCH_DEFAULTS["lr"],
    step_size: float | None = None,
    step_values: Annotated[str, Query(description="comma-separated epochs (multistep)")] = "",
    gamma: float = 0.1,
    power: float = 1.0,
) -> dict[str, Any]:
    # The same bounds a training is checked against: a huge or non-finite value is a 400 naming it, not a 500.
    lr = check_number("lr", lr, minimum=0, exclusive_minimum=True, maximum=MAX_LR)
    step_size = check_number("step_size", step_size, minimum=0, exclusive_minimum=True, maximum=MAX_EPOCHS,
                             optional=True)
    gamma = check_number("gamma", gamma, minimum=0, maximum=MAX_GAMMA)
    power = check_number("power", power, minimum=0, maximum=MAX_POWER)
    steps = check_step_values(step_values.replace(" ", ""))
    if policy in DROP_POLICIES and gamma > 1:
        raise ConfigError(f"gamma must be at most 1 with lr_policy {policy} (it multiplies the learning rate at each "
                          f"drop), got {gamma:g}")
    n = min(MAX_POINTS, epochs * 20)
    points = [(i * epochs / n, learning_rate(policy, i * epochs / n, epochs=epochs, base_lr=lr, step_size=step_size,
                                             step_values=steps, gamma=gamma, power=power)) for i in range(n + 1)]
    return {"policy": policy, "points": [{"epoch": round(e, 6), "lr": v} for e, v in points]}
