"""Learning-rate policies as pure functions of training progress (in epochs).

They follow Caffe's definitions (which DIGITS exposed), measured in epochs instead of
iterations so that they do not depend on the batch size; the web app plots them with
the same function before a run starts.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from shoal.config import check_choice

if TYPE_CHECKING:
    from shoal.training.config import TrainConfig

# name -> f(t, total, base_lr, step_size, step_values, gamma, power)
Policy = Callable[[float, float, float, float, Sequence[float], float, float], float]


def _fixed(t, total, lr, step, steps, gamma, power):
    return lr


def _step(t, total, lr, step, steps, gamma, power):
    return lr * gamma ** math.floor(t / step)


def _multistep(t, total, lr, step, steps, gamma, power):
    return lr * gamma ** bisect.bisect_right(sorted(steps), t)


def _exp(t, total, lr, step, steps, gamma, power):
    return lr * gamma**t


def _inv(t, total, lr, step, steps, gamma, power):
    return lr * (1 + gamma * t) ** -power


def _poly(t, total, lr, step, steps, gamma, power):
    return lr * max(0.0, 1 - t / total) ** power


def _sigmoid(t, total, lr, step, steps, gamma, power):
    # Caffe: falls (gamma < 0) or rises around `step`; shoal takes gamma > 0 as the steepness of a fall.
    return lr * 0.5 * (1 - math.tanh(gamma * (t - step) / 2))  # = lr / (1 + exp(gamma (t - step))), never overflows


def _cosine(t, total, lr, step, steps, gamma, power):
    return lr * 0.5 * (1 + math.cos(math.pi * min(t / total, 1.0)))


def _onecycle(t, total, lr, step, steps, gamma, power):
    # Smith's one-cycle: warm up over the first 30 % from lr/25, then anneal to lr/1e4 (cosine).
    warm = 0.3 * total
    if t < warm:
        return lr / 25 + (lr - lr / 25) * 0.5 * (1 - math.cos(math.pi * t / warm))
    frac = (t - warm) / max(total - warm, 1e-12)
    return lr / 1e4 + (lr - lr / 1e4) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))


POLICIES: dict[str, Policy] = {
    "fixed": _fixed,
    "step": _step,
    "multistep": _multistep,
    "exp": _exp,
    "inv": _inv,
    "poly": _poly,
    "sigmoid": _sigmoid,
    "cosine": _cosine,
    "onecycle": _onecycle,
}


def learning_rate(
    policy: str,
    epoch: float,
    *,
    epochs: float,
    base_lr: float,
    step_size: float | None = None,
    step_values: Sequence[float] = (),
    gamma: float = 0.1,
    power: float = 1.0,
) -> float:
    """Return the learning rate at ``epoch`` (fractional) of a run of ``epochs``.

    Args:
        policy: one of :data:`POLICIES`.
        epoch: progress in epochs, 0 at the start.
        epochs: length of the run.
        base_lr: the base learning rate.
        step_size: epochs between drops (step) or the midpoint (sigmoid); default a third of the run.
        step_values: epochs at which multistep drops by ``gamma``.
        gamma: drop factor.
        power: exponent of inv and poly.

    Raises:
        ConfigError: for an unknown policy.

    >>> learning_rate("step", 10, epochs=30, base_lr=0.01, step_size=10, gamma=0.1)
    0.001
    """
    check_choice("lr_policy", policy, POLICIES)
    step = step_size if step_size else max(epochs / 3, 1e-9)
    return POLICIES[policy](epoch, epochs, base_lr, step, step_values, gamma, power)


def schedule(policy: str, *, epochs: int, points_per_epoch: int = 10, **kwargs: float) -> list[tuple[float, float]]:
    """Return ``(epoch, lr)`` points over a whole run, for plotting a policy before training."""
    n = max(1, int(epochs * points_per_epoch))
    return [(e, learning_rate(policy, e, epochs=epochs, **kwargs)) for e in (i * epochs / n for i in range(n + 1))]


BACKBONE_LR_SCALE = 0.1
"""End to end from pretrained weights, the backbone learns at this share of the head's rate."""


def backbone_scale(config: TrainConfig) -> float:
    """The backbone's share of the rate: a tenth when fine-tuning more than the head, else 1.

    Discriminative rates, as fastai's ``fine_tune``: pretrained features are already good,
    the head is new to them. ``config`` is resolved (its ``freeze`` filled in).
    """
    return BACKBONE_LR_SCALE if config.finetune and config.freeze != "backbone" else 1.0


def preview(config: TrainConfig, *, points: int = 2000) -> dict[str, Any]:
    """The learning rates a training of ``config`` will use, before it starts (the web app plots them).

    Returns:
        ``policy``, ``epochs``, ``lr`` (the head's base rate), ``backbone_scale`` (the share
        of it the backbone learns at), ``fitted`` and ``points`` [{``epoch``, ``lr``}] over the
        run (at most ``points`` + 1). A fitted head (``head='fit'``) has no rate at all:
        ``fitted`` is true, ``points`` empty and the rates ``None``.
    """
    config = config.resolved()
    if config.head == "fit":
        return {"policy": config.lr_policy, "epochs": None, "lr": None, "backbone_scale": None, "fitted": True,
                "points": []}
    epochs = config.epochs or 1
    n = min(points, epochs * 20)
    at = [i * epochs / n for i in range(n + 1)]
    return {"policy": config.lr_policy, "epochs": epochs, "lr": config.lr, "backbone_scale": backbone_scale(config),
            "fitted": False,
            "points": [{"epoch": round(e, 6), "lr": learning_rate(
                config.lr_policy, e, epochs=epochs, base_lr=config.lr or 0.0, step_size=config.step_size,
                step_values=config.step_values, gamma=config.gamma, power=config.power)} for e in at]}
