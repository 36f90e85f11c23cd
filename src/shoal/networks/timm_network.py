"""Any timm model as a shoal network (``timm:<name>`` or a bare name timm knows)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from shoal.errors import NetworkError
from shoal.networks.registry import Network, NetworkSpec
from shoal.networks.hub import hub_cache_path

if TYPE_CHECKING:
    import torch
    from timm.models import PretrainedCfg
    from torch import nn

__all__ = ["TimmNetwork"]

PREFIX = "timm:"


class TimmNetwork(Network):
    """A timm architecture; everything shoal needs comes from timm's own facilities.

    Input size, interpolation and normalisation come from the model's pretrained config.
    The head is ``get_classifier()`` (sized by ``create_model(num_classes=...)``), the
    features are ``forward_head(forward_features(x), pre_logits=True)``, the stages are
    the coarse parameter groups of ``group_matcher(coarse=True)`` (for EfficientNet:
    ``conv_stem``+``bn1``, then ``blocks[0]`` … ``blocks[6]``, the last with
    ``conv_head``+``bn2``), and the Grad-CAM layer is the last entry of ``feature_info``.
    ``pretrained=True`` uses timm's download (Hugging Face Hub or URL, cached).
    """

    timm_name: ClassVar[str] = ""  # set per instance by for_name, per class by subclasses

    @classmethod
    @functools.cache
    def for_name(cls, timm_name: str) -> TimmNetwork:
        """The adapter of a timm model name (with or without a ``.tag``).

        Args:
            timm_name: A name ``timm.is_model`` accepts.

        Returns:
            The adapter, with a spec named ``timm:<timm_name>``.
        """
        network = cls()
        network.timm_name = timm_name
        network.spec = spec_from_cfg(f"{PREFIX}{timm_name}", f"timm model {timm_name}", timm_name)
        return network

    def pretrained_cfg(self) -> PretrainedCfg | None:
        """timm's pretrained config for this name (None if it has none)."""
        from timm.models import get_pretrained_cfg

        return get_pretrained_cfg(self.timm_name)

    def pretrained_offline(self) -> bool:
        cfg = self.pretrained_cfg()
        if cfg is None:
            return False
        if cfg.hf_hub_id:
            from huggingface_hub import try_to_load_from_cache

            repo, _, revision = cfg.hf_hub_id.partition("@")
            for filename in (cfg.hf_hub_filename, "model.safetensors", "pytorch_model.bin"):
                if filename and isinstance(
                    try_to_load_from_cache(repo, filename, revision=revision or None), str
                ):
                    return True
        return bool(cfg.url) and hub_cache_path(cfg.url).is_file()

    def build(self, num_classes: int, channels: int) -> nn.Module:
        import timm

        return timm.create_model(
            self.timm_name, pretrained=False, num_classes=num_classes, in_chans=channels
        )

    def build_pretrained(self, num_classes: int, channels: int) -> tuple[nn.Module, str]:
        import timm

        cfg = self.pretrained_cfg()
        if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
            raise NetworkError(
                f"timm model {self.timm_name!r} has no pretrained weights; "
                f"timm.list_models('{self.timm_name.split('.')[0]}*', pretrained=True) lists "
                f"the tags that have them, or use pretrained=None to train from scratch."
            )
        where = f"hf-hub:{cfg.hf_hub_id}" if cfg.hf_hub_id else f"url:{cfg.url or cfg.file}"
        try:
            model = timm.create_model(
                self.timm_name, pretrained=True, num_classes=num_classes, in_chans=channels
            )
        except (OSError, RuntimeError, ValueError) as exc:
            cache = (
                f"pre-fill the Hugging Face cache (HF_HOME) with `hf download {cfg.hf_hub_id}`"
                if cfg.hf_hub_id
                else f"put the file in the torch hub cache at {hub_cache_path(cfg.url)}"
            )
            raise NetworkError(
                f"could not get the pretrained weights of timm model {self.timm_name!r} from "
                f"{where} ({type(exc).__name__}: {exc}). Offline? Either pass a weights file "
                f"with --weights path/to/weights.safetensors (pretrained='path/...' in "
                f"Python), or on a machine that is online {cache}."
            ) from exc
        return model, f"timm:{where}"

    def first_conv_name(self, model: nn.Module) -> str:
        first = getattr(model, "pretrained_cfg", {}).get("first_conv") or ""
        return first if isinstance(first, str) else first[0]

    def heads(self, model: nn.Module) -> dict[str, nn.Module]:
        names = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
        names = (names,) if isinstance(names, str) else tuple(names)
        modules = dict(model.named_modules())
        heads = {name: modules[name] for name in names if name in modules}
        if not heads:
            classifier = model.get_classifier()
            heads = {name: m for name, m in modules.items() if m is classifier}
        if not heads:
            raise NetworkError(
                f"{self.spec.name}: timm's get_classifier() returned a module that is not part "
                f"of the model; shoal cannot split its head."
            )
        return heads

    def stages(self, model: nn.Module) -> list[tuple[str, list[str]]]:
        from timm.models import group_parameters

        head = {p for name in self.heads(model) for p in _params_under(model, name)}
        groups = group_parameters(model, model.group_matcher(coarse=True))
        stages = []
        for group_id in sorted(groups):
            names = [n for n in groups[group_id] if n not in head]
            if names:
                stages.append((_label(names), names))
        return stages

    def features(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        def extract(x: torch.Tensor) -> torch.Tensor:
            return model.forward_head(model.forward_features(x), pre_logits=True)

        return extract

    def target_layer(self, model: nn.Module) -> nn.Module:
        if self.target_layer_name:
            return model.get_submodule(self.target_layer_name)
        info = getattr(model, "feature_info", None)
        if not info:
            raise NetworkError(
                f"{self.spec.name} has no feature_info, so shoal cannot tell its last "
                f"spatial layer."
            )
        last = info[-1]
        return model.get_submodule(last["module"] if isinstance(last, dict) else last.module)


def spec_from_cfg(name: str, description: str, timm_name: str) -> NetworkSpec:
    """A spec from timm's pretrained config for ``timm_name`` (ImageNet 224 if none).

    Args:
        name: The shoal name of the network.
        description: One line for listings.
        timm_name: The timm model name, with or without tag.

    Returns:
        The spec; mean and std are converted to pixel units (×255).
    """
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(timm_name)
    size = tuple(cfg.input_size[-2:]) if cfg else (224, 224)
    mean = cfg.mean if cfg else IMAGENET_DEFAULT_MEAN
    std = cfg.std if cfg else IMAGENET_DEFAULT_STD
    has_weights = bool(cfg and (cfg.hf_hub_id or cfg.url or cfg.file))
    return NetworkSpec(
        name=name,
        description=description,
        family="timm",
        input_size=(int(size[0]), int(size[1])),
        mean=tuple(round(255.0 * m, 4) for m in mean),
        std=tuple(round(255.0 * s, 4) for s in std),
        pretrained="timm" if has_weights else None,
        interpolation=(cfg.interpolation if cfg else None) or "bilinear",
    )


def _params_under(model: nn.Module, module_name: str) -> list[str]:
    prefix = f"{module_name}."
    return [n for n, _ in model.named_parameters() if n.startswith(prefix)]


def _label(parameter_names: list[str]) -> str:
    """'conv_stem+bn1', 'blocks.3': the modules a stage's parameters live in."""
    modules: list[str] = []
    for name in parameter_names:
        parts = name.split(".")
        module = ".".join(parts[:2]) if len(parts) > 2 and re.fullmatch(r"\d+", parts[1]) else parts[0]
        if module not in modules:
            modules.append(module)
    return "+".join(modules)
