"""Training: ``train(TrainConfig(...))`` turns a stored dataset into a model bundle.

Configs, solvers and schedules import without torch (the web app plots schedules with
them); so do ``train``/``resume`` and the fitted head. The loop, which needs torch, loads on
first use.
"""

from typing import Any

from shoal.training.config import TrainConfig
from shoal.training.schedules import POLICIES, learning_rate, schedule
from shoal.training.solvers import SOLVERS

__all__ = ["POLICIES", "SOLVERS", "TrainConfig", "TrainResult", "build_model", "check_resume", "learning_rate",
           "resume", "schedule", "train"]

_RUN_NAMES = {"TrainResult", "check_resume", "resume", "train"}


def __getattr__(name: str) -> Any:
    if name in _RUN_NAMES:
        from shoal.training import run

        return getattr(run, name)
    if name == "build_model":
        from shoal.training import loop

        return loop.build_model
    raise AttributeError(f"module 'shoal.training' has no attribute {name!r}")
