"""The solvers ``--solver`` names: each a ``torch.optim`` class and the options it takes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

# name -> (torch.optim class name, extra options given the momentum). Held as names so that
# checking a config does not import torch.
SOLVERS: dict[str, tuple[str, Callable[[float], dict[str, Any]]]] = {
    "sgd": ("SGD", lambda momentum: {"momentum": momentum}),
    "nesterov": ("SGD", lambda momentum: {"momentum": momentum or 0.9, "nesterov": True}),
    "adam": ("Adam", lambda momentum: {}),
    "adamw": ("AdamW", lambda momentum: {}),
    "adagrad": ("Adagrad", lambda momentum: {}),
    "rmsprop": ("RMSprop", lambda momentum: {"momentum": momentum}),
    "adadelta": ("Adadelta", lambda momentum: {}),
}


def make_optimizer(name: str, params: Iterable[Any], *, lr: float, momentum: float, weight_decay: float) -> Any:
    """Return the ``torch.optim`` optimizer ``name`` over ``params`` (name checked by TrainConfig)."""
    import torch

    class_name, extra = SOLVERS[name]
    return getattr(torch.optim, class_name)(params, lr=lr, weight_decay=weight_decay, **extra(momentum))
