"""Learning-rate policies as pure functions of training progress (in epochs).

They follow Caffe's definitions (which DIGITS exposed), measured in epochs instead of
iterations so that they do not depend on the batch size; the web app plots them with
the same function before a run starts.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence

from shoal.config import check_choice

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
