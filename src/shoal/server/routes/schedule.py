"""``/api/schedule``: the learning rate a training would use over its run, to preview before training."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from shoal.config import build
from shoal.server.schemas import ScheduleOut
from shoal.training.config import MAX_EPOCHS, TrainConfig
from shoal.training.schedules import preview

router = APIRouter(prefix="/schedule", tags=["training"])


@router.get("", response_model=ScheduleOut, summary="Learning rate over the run for a policy (preview)")
def get_schedule(
    policy: str = "cosine",
    epochs: Annotated[int | None, Query(ge=1, le=MAX_EPOCHS)] = None,
    lr: float | None = None,
    step_size: float | None = None,
    step_values: Annotated[str, Query(description="comma-separated epochs (multistep)")] = "",
    gamma: float = 0.1,
    power: float = 1.0,
    pretrained: bool = False,
    freeze: str | None = None,
    head: str | None = None,
) -> dict[str, Any]:
    """Checked as a training is (a bad value is a 400 naming it); a fitted head answers ``fitted`` and no points."""
    config = build(TrainConfig, None, dataset="preview", lr_policy=policy, epochs=epochs, lr=lr, step_size=step_size,
                   step_values=step_values.replace(" ", ""), gamma=gamma, power=power, pretrained=pretrained,
                   freeze=freeze or None, head=head or None)
    return preview(config)
