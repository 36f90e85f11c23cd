"""Name resolution, the one factory :func:`create`, and access to a model's parts."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from shoal.config import FREEZE_MODES, check_freeze, check_int
from shoal.errors import ConfigError, NetworkError
from shoal.networks import builtin as _builtin  # noqa: F401  (registers the built-in networks)
from shoal.networks.registry import (
    Network,
    NetworkInfo,
    NetworkSpec,
    check_channels,
    list_networks,
    registered_networks,
)
from shoal.networks.timm_network import PREFIX as TIMM_PREFIX
from shoal.networks.layers import PREFIX as LAYERS_PREFIX
from shoal.networks.timm_network import TimmNetwork
from shoal.networks.user_file import PREFIX as FILE_PREFIX
from shoal.networks.user_file import FileNetwork
from shoal.networks.weights import load_into, read_weights
from shoal.trust import is_network_file

__all__ = [
    "FREEZE_MODES",
    "apply_freeze",
    "check_channels",
    "classifier_head",
    "create",
    "describe",
    "feature_extractor",
    "get_spec",
    "head_modules",
    "list_networks",
    "network_info",
    "resolve_network",
    "split_head",
    "stages",
    "target_layer",
]

logger = logging.getLogger(__name__)

Pretrained = bool | str | os.PathLike[str] | None

HINT = (
    "`shoal networks` lists the built-in networks; any timm model works by name "
    "(timm:<name>), and your own network by file (file:path/to/net.py)."
)


def resolve_network(name: str) -> Network:
    """The adapter for a network name.

    Resolution order: a registered name (``lenet``, ``alexnet``, ``googlenet``,
    ``efficientnet_lite0`` …); ``file:<path>`` or a name ending in ``.py``; ``timm:<name>``;
    a bare name timm knows (``resnet18``, ``convnext_tiny.fb_in1k``).

    Args:
        name: The network's name.

    Returns:
        Its :class:`~shoal.networks.registry.Network` adapter.

    Raises:
        ConfigError: ``name`` is not a non-empty string.
        NetworkError: The name is unknown (the message lists close matches), or the
            network file cannot be used.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"network name must be a non-empty string, got {name!r}; {HINT}")
    registry = registered_networks()
    if name in registry:
        return registry[name]
    if name.startswith(LAYERS_PREFIX):  # a network stored as data (an imported Caffe model)
        from shoal.networks.layers import LayerNetwork

        return LayerNetwork(name)
    if is_network_file(name):
        return FileNetwork(name.removeprefix(FILE_PREFIX))

    import timm

    if name.startswith(TIMM_PREFIX):
        timm_name = name.removeprefix(TIMM_PREFIX)
        if timm.is_model(timm_name):
            return TimmNetwork.for_name(timm_name)
        close = difflib.get_close_matches(timm_name.lower(), timm.list_models(), n=5)
        raise NetworkError(
            f"unknown timm model {timm_name!r}; {_close(close, TIMM_PREFIX)}. "
            f"timm.list_models('*{timm_name.split('.')[0][:6]}*') searches timm's models."
        )
    if timm.is_model(name):
        return TimmNetwork.for_name(name)
    close = difflib.get_close_matches(name.lower(), registry, n=5)
    close += difflib.get_close_matches(name.lower(), timm.list_models(), n=5, cutoff=0.75)
    close = list(dict.fromkeys(close))[:5]
    raise NetworkError(f"unknown network {name!r}; {_close(close)}. {HINT}")


def _close(matches: list[str], prefix: str = "") -> str:
    if not matches:
        return "no close matches"
    return "close matches: " + ", ".join(f"'{prefix}{m}'" for m in matches)


def get_spec(name: str) -> NetworkSpec:
    """The spec (input size, normalisation, pretrained source) of a network name.

    Args:
        name: Any name :func:`resolve_network` accepts.

    Returns:
        The spec, with ``pretrained_offline`` checked now.

    Raises:
        NetworkError: The name is unknown.
    """
    return resolve_network(name).get_spec()


def check_num_classes(num_classes: Any) -> int:
    """Validate a class count.

    Raises:
        ConfigError: ``num_classes`` is not an int >= 1.
    """
    return check_int("num_classes", num_classes, minimum=1)


def _resolve_pretrained(pretrained: Pretrained) -> tuple[str, str | None]:
    """(kind, location): ('none', None), ('default', None) or ('file', path)."""
    if pretrained is None or pretrained is False:
        return "none", None
    if pretrained is True:
        return "default", None
    if isinstance(pretrained, (str, os.PathLike)) and os.fspath(pretrained).strip():
        return "file", os.fspath(pretrained)
    raise ConfigError(
        f"pretrained must be None/False (random init), True (the network's own weights) or "
        f"the path of a weights file, got {pretrained!r}."
    )


def create(
    name: str,
    num_classes: int,
    *,
    pretrained: Pretrained = None,
    channels: int = 3,
    freeze: str | int = "none",
) -> nn.Module:
    """Build a network, optionally with pretrained weights, sized for ``num_classes``.

    With pretrained weights, the classifier head(s) get ``num_classes`` outputs: head
    weights that do not fit are dropped (logged) and keep their fresh initialisation;
    every other weight must fit (see :mod:`shoal.networks.weights`). With ``channels=1``
    the first convolution takes one channel: built so from scratch, or with the
    pretrained RGB filters summed (timm's ``adapt_input_conv``).

    Args:
        name: A registered name (``lenet``, ``alexnet``, ``googlenet``,
            ``efficientnet_lite0``), ``timm:<name>`` or a bare timm name, or
            ``file:path/to/net.py`` / ``path/to/net.py``.
        num_classes: Outputs of the classifier head(s).
        pretrained: None or False for random initialisation; True for the network's
            default weights (``efficientnet_lite0``: the bundled package, offline;
            torchvision and timm networks: their hub, cached after the first download);
            or the path of a ``.safetensors``/``.pth``/``.pt`` file.
        channels: Input channels: 3 (RGB) or 1 (grayscale).
        freeze: ``'none'``; ``'backbone'`` = everything but the head(s); or an int N =
            the first N stages (see :func:`stages`).

    Returns:
        The model, in training mode, with ``model.shoal_info`` (a
        :class:`~shoal.networks.registry.NetworkInfo`) recording how it was made.

    Raises:
        ConfigError: ``num_classes``, ``channels``, ``pretrained`` or ``freeze`` has a
            value outside what it accepts.
        NetworkError: The name is unknown, or the weights cannot be fetched or do not fit.
    """
    check_num_classes(num_classes)
    check_channels(channels)
    freeze_setting = check_freeze(freeze)
    kind, location = _resolve_pretrained(pretrained)
    network = resolve_network(name)

    if kind == "none":
        model, source = network.build(num_classes, channels), "none"
    elif kind == "default":
        model, source = network.build_pretrained(num_classes, channels)
    else:
        weights = read_weights(location)
        model, source = network.build(num_classes, channels), f"file:{location}"
        load_into(model, weights, network=network, source=f"'{location}'")

    model.shoal_info = NetworkInfo(
        spec=network.spec,
        num_classes=num_classes,
        channels=channels,
        pretrained=source,
        freeze="none",
        network=network,
    )
    apply_freeze(model, freeze_setting)
    logger.info(
        "created %s: %d classes, %d channels, weights %s, freeze %s",
        network.spec.name,
        num_classes,
        channels,
        source,
        freeze_setting,
    )
    return model


def network_info(model: nn.Module) -> NetworkInfo:
    """What :func:`create` recorded on ``model`` (DDP and torch.compile wrappers are looked through).

    Raises:
        NetworkError: ``model`` was not made by :func:`create`.
    """
    inner: Any = model
    for _ in range(4):
        info = getattr(inner, "__dict__", {}).get("shoal_info")
        if isinstance(info, NetworkInfo):
            return info
        inner = _wrapped(inner)
        if inner is None:
            break
    raise NetworkError(
        f"this {type(model).__name__} was not made by shoal.networks.create, so shoal does not "
        f"know its parts; build it with shoal.networks.create(name, num_classes)."
    )


def _unwrap(model: nn.Module) -> tuple[nn.Module, Network]:
    """The module create() returned and its adapter."""
    info = network_info(model)
    inner: Any = model
    while "shoal_info" not in inner.__dict__:
        inner = _wrapped(inner)
    return inner, info.network


def _wrapped(model: Any) -> Any:
    """The module inside a torch.compile or DDP/DataParallel wrapper, else None."""
    for attribute in ("_orig_mod", "module"):
        inner = getattr(model, attribute, None)
        if isinstance(inner, nn.Module):
            return inner
    return None


def stages(model: nn.Module) -> list[tuple[str, list[str]]]:
    """The stages ``freeze=N`` counts, in forward order.

    A stage is: LeNet — a conv or hidden fc layer (conv1, conv2, fc1, fc2); AlexNet —
    a conv or hidden fc layer (conv1 … conv5, fc6, fc7); GoogLeNet — a top-level block
    (conv1, conv2, conv3, inception3a … inception5b); timm models — a coarse parameter
    group of ``group_matcher`` (EfficientNet: ``conv_stem``+``bn1``, then ``blocks[i]``);
    a network file — a top-level child with parameters. Heads are never in a stage.

    Args:
        model: A model from :func:`create`.

    Returns:
        ``(label, parameter names)`` per stage.
    """
    inner, network = _unwrap(model)
    return network.stages(inner)


def head_modules(model: nn.Module) -> dict[str, nn.Module]:
    """All classifier head modules by name, main head first (GoogLeNet: fc, aux1, aux2)."""
    inner, network = _unwrap(model)
    return network.heads(inner)


def classifier_head(model: nn.Module) -> nn.Module:
    """The main classifier head (the layer :func:`create` sized to ``num_classes``).

    In eval mode ``classifier_head(model)(feature_extractor(model)(x))`` equals
    ``model(x)``; GoogLeNet's auxiliary heads are not part of it.
    """
    return next(iter(head_modules(model).values()))


def feature_extractor(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from input batch to the (N, D) features the main head takes.

    Run it in eval mode under ``torch.no_grad()`` to cache the features of a frozen
    backbone; training the head on them is then the same as training it in the model.
    LeNet: the 84 outputs of fc2; AlexNet: the 4096 of fc7; GoogLeNet: the 1024 pooled
    features; timm models: ``forward_head(forward_features(x), pre_logits=True)``.

    Args:
        model: A model from :func:`create`.

    Returns:
        The feature function.
    """
    inner, network = _unwrap(model)
    return network.features(inner)


def target_layer(model: nn.Module) -> nn.Module:
    """The module whose output is the last spatial feature map, for Grad-CAM.

    LeNet: the ReLU after conv2; AlexNet: the ReLU after conv5; GoogLeNet:
    inception5b; EfficientNet-Lite: ``bn2`` (after ``conv_head``); other timm models:
    the last ``feature_info`` module; network files: the last ``nn.Conv2d``.
    """
    inner, network = _unwrap(model)
    return network.target_layer(inner)


def split_head(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(backbone parameters, head parameters)``; the heads are :func:`head_modules`."""
    head_ids = {id(p) for head in head_modules(model).values() for p in head.parameters()}
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    head = [p for p in model.parameters() if id(p) in head_ids]
    return backbone, head


def apply_freeze(model: nn.Module, freeze: str | int) -> None:
    """Set ``requires_grad`` on every parameter of ``model`` for a freeze setting.

    All parameters become trainable, then: ``'none'`` freezes nothing; ``'backbone'``
    freezes all but the head(s); an int N freezes the first N :func:`stages`. Frozen
    BatchNorm layers still update their running statistics in training mode; put
    them in eval mode too if they should stay fixed.

    Args:
        model: A model from :func:`create`.
        freeze: ``'none'``, ``'backbone'`` or a stage count.

    Raises:
        ConfigError: The setting is invalid or N exceeds the number of stages.
    """
    setting = check_freeze(freeze)
    inner, network = _unwrap(model)
    for parameter in inner.parameters():
        parameter.requires_grad_(True)
    if setting == "backbone":
        for parameter in split_head(inner)[0]:
            parameter.requires_grad_(False)
    elif isinstance(setting, int):
        all_stages = network.stages(inner)
        if setting > len(all_stages):
            raise ConfigError(
                f"freeze={setting} is more than the {len(all_stages)} stages of "
                f"{network.spec.name} ({', '.join(label for label, _ in all_stages)}); use 0 to "
                f"{len(all_stages)}, or 'backbone' to freeze all but the head."
            )
        frozen = {name for _, names in all_stages[:setting] for name in names}
        for name, parameter in inner.named_parameters():
            if name in frozen:
                parameter.requires_grad_(False)
    inner.shoal_info = dataclasses.replace(network_info(inner), freeze=str(setting))


def describe(model: nn.Module) -> dict[str, Any]:
    """A JSON-ready summary of a model from :func:`create`.

    Returns:
        ``name``, ``family``, ``description``, ``num_classes``, ``channels``,
        ``input_size`` [h, w], ``mean``, ``std`` (pixel units, per input channel),
        ``pretrained`` (weights source), ``freeze``, ``total_parameters``,
        ``trainable_parameters``, ``heads`` (module names) and ``stages`` (labels).
    """
    info = network_info(model)
    mean, std = info.spec.normalization(info.channels)
    return {
        "name": info.spec.name,
        "family": info.spec.family,
        "description": info.spec.description,
        "num_classes": info.num_classes,
        "channels": info.channels,
        "input_size": list(info.spec.input_size),
        "mean": list(mean),
        "std": list(std),
        "pretrained": info.pretrained,
        "freeze": info.freeze,
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "heads": list(head_modules(model)),
        "stages": [label for label, _ in stages(model)],
    }
