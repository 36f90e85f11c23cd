"""A user's own network, defined in a Python file (``file:path/to/net.py``).

The file must define a factory function::

    def create_network(num_classes: int, channels: int) -> torch.nn.Module: ...

shoal calls it with keyword arguments. Optional module-level constants state the input
contract: ``INPUT_SIZE`` (an int or ``(height, width)``, default 224), ``MEAN`` and
``STD`` (pixel units 0..255, one number or one per channel; defaults 0 and 255, i.e.
inputs scaled to 0..1). The classifier head is ``model.get_classifier()`` when the
model has that method (timm's convention), otherwise its last ``nn.Linear``; stages
are the model's top-level children that hold parameters (head excluded); the first
convolution is its first ``nn.Conv2d`` and the Grad-CAM layer its last.
"""

from __future__ import annotations

import hashlib
import importlib.util
import numbers
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from shoal.errors import NetworkError
from shoal.networks.registry import Network, NetworkSpec
from shoal.trust import FILE_PREFIX

__all__ = ["FACTORY", "FileNetwork"]

FACTORY = "create_network"
"""Name of the function a network file must define."""

PREFIX = FILE_PREFIX  # the one rule for which names are network files lives in shoal.trust


class FileNetwork(Network):
    """The network a user's ``.py`` file builds with :data:`FACTORY`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().resolve()
        self.module = _import(self.path)
        factory = getattr(self.module, FACTORY, None)
        if not callable(factory):
            defined = sorted(
                name
                for name, value in vars(self.module).items()
                if callable(value) and not name.startswith("_")
                and getattr(value, "__module__", None) == self.module.__name__
            )
            raise NetworkError(
                f"network file '{self.path}' defines no function {FACTORY}(num_classes, channels)"
                f"{f' (it defines {defined})' if defined else ''}; add one that returns your "
                f"nn.Module, e.g.\n\ndef {FACTORY}(num_classes: int, channels: int) -> nn.Module:\n"
                f"    return MyNet(num_classes=num_classes, in_channels=channels)"
            )
        self.factory = factory
        doc = (self.module.__doc__ or "").strip().splitlines()
        self.spec = NetworkSpec(
            name=f"{PREFIX}{self.path}",
            description=doc[0] if doc else f"network from {self.path.name}",
            family="file",
            input_size=_input_size(self.module, self.path),
            mean=_per_channel(self.module, "MEAN", 0.0, self.path),
            std=_per_channel(self.module, "STD", 255.0, self.path, positive=True),
        )

    def build(self, num_classes: int, channels: int) -> nn.Module:
        try:
            model = self.factory(num_classes=num_classes, channels=channels)
        except Exception as exc:  # user code: any failure is reported as theirs
            raise NetworkError(
                f"{FACTORY}(num_classes={num_classes}, channels={channels}) in '{self.path}' "
                f"raised {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(model, nn.Module):
            raise NetworkError(
                f"{FACTORY}() in '{self.path}' returned {type(model).__name__}, not a "
                f"torch.nn.Module; return the network instance."
            )
        return model

    def first_conv_name(self, model: nn.Module) -> str:
        return next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), "")

    def heads(self, model: nn.Module) -> dict[str, nn.Module]:
        modules = dict(model.named_modules())
        get_classifier = getattr(model, "get_classifier", None)
        if callable(get_classifier):
            classifier = get_classifier()
            found = {n: m for n, m in modules.items() if m is classifier and n}
        else:
            linear = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
            found = {linear[-1]: modules[linear[-1]]} if linear else {}
        if not found:
            raise NetworkError(
                f"shoal cannot find the classifier of the network in '{self.path}': give it a "
                f"get_classifier() method returning its last layer, or end it with an nn.Linear."
            )
        return found

    def stages(self, model: nn.Module) -> list[tuple[str, list[str]]]:
        head = tuple(f"{name}." for name in self.heads(model))
        stages = []
        for child, _ in model.named_children():
            names = [
                n
                for n, _ in model.named_parameters()
                if n.startswith(f"{child}.") and not n.startswith(head)
            ]
            if names:
                stages.append((child, names))
        return stages

    def target_layer(self, model: nn.Module) -> nn.Module:
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise NetworkError(
                f"the network in '{self.path}' has no nn.Conv2d, so it has no spatial layer "
                f"for a heat-map."
            )
        return convs[-1]


def _import(path: Path) -> ModuleType:
    """Execute the file as a module of its own (a fresh one on every call)."""
    if not path.is_file():
        raise NetworkError(
            f"network file '{path}' does not exist; give the path of a .py file that defines "
            f"{FACTORY}(num_classes, channels)."
        )
    if path.suffix != ".py":
        raise NetworkError(f"network file '{path}' is not a .py file; give a Python file.")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(f"shoal_user_network_{digest}", path)
    if spec is None or spec.loader is None:
        raise NetworkError(f"network file '{path}' cannot be imported as a Python module.")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # user code: report any failure with the file's name
        raise NetworkError(
            f"importing network file '{path}' failed: {type(exc).__name__}: {exc}"
        ) from exc
    return module


def _input_size(module: ModuleType, path: Path) -> tuple[int, int]:
    value: Any = getattr(module, "INPUT_SIZE", 224)
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise NetworkError(
            f"INPUT_SIZE in '{path}' must be an int or (height, width) of positive ints, "
            f"got {value!r}."
        )
    return int(value[0]), int(value[1])


def _per_channel(
    module: ModuleType, name: str, default: float, path: Path, *, positive: bool = False
) -> tuple[float, ...]:
    value: Any = getattr(module, name, default)
    values = (value,) * 3 if isinstance(value, numbers.Real) else value
    if isinstance(values, (tuple, list)) and len(values) == 1:
        values = tuple(values) * 3
    ok = (
        isinstance(values, (tuple, list))
        and len(values) == 3
        and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)
        and (not positive or all(v > 0 for v in values))
    )
    if not ok:
        rule = "positive numbers" if positive else "numbers"
        raise NetworkError(
            f"{name} in '{path}' must be one number or one per channel (R, G, B), {rule} in "
            f"pixel units 0..255, got {value!r}."
        )
    return tuple(float(v) for v in values)
