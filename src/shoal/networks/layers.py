"""A network stored as data: a declarative layer list (JSON) that :class:`LayerNet` builds.

Imported architectures (:mod:`shoal.importers.caffe`) are kept this way — never as generated
code. The architecture's name is ``layers:`` followed by the compact JSON of the spec, so a
model card, a bundle's manifest and a training config carry the whole network, and
:func:`shoal.networks.create` rebuilds it like any other name.

The spec::

    {"format": 1, "source": "caffe", "name": "AlexNet",
     "input": {"blob": "data", "shape": [C, H, W], "bgr": true},
     "layers": [{"op": "conv", "name": "conv1", "key": "conv1", "bottom": ["data"], "top": ["conv1"], ...}, ...],
     "output": "fc8", "num_outputs": 1000, "head": "fc8"}

Each layer reads its ``bottom`` blobs and writes its ``top`` blobs (in place when they share a
name). Ops: ``conv``, ``pool`` (Caffe's window arithmetic: ``in_size``/``out_size`` fixed,
padding explicit, the AVE divisor clipped as Caffe clips it), ``lrn`` (across or within
channels), ``linear`` (flattens from axis 1), ``relu``, ``prelu``, ``sigmoid``, ``tanh``,
``dropout``, ``concat``, ``eltwise``, ``flatten``, ``softmax``, ``batchnorm``, ``scale``,
``power``, ``split``. With ``input.bgr`` the network takes RGB pixels and swaps them to BGR
first, so every runtime feeds it as it feeds any shoal model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shoal.errors import NetworkError
from shoal.networks.registry import Network, NetworkSpec

__all__ = ["PREFIX", "LayerNet", "LayerNetwork", "architecture", "parse_architecture"]

PREFIX = "layers:"
SPEC_FORMAT = 1


def architecture(spec: dict[str, Any]) -> str:
    """The architecture name that carries ``spec``: ``layers:`` + its compact JSON."""
    return PREFIX + json.dumps(spec, separators=(",", ":"), sort_keys=True)


def parse_architecture(name: str) -> dict[str, Any]:
    """The spec inside a ``layers:`` name.

    Raises:
        NetworkError: not JSON, or not a layer list this shoal builds.
    """
    try:
        spec = json.loads(name.removeprefix(PREFIX))
    except ValueError as exc:
        raise NetworkError(f"the layer list of a {PREFIX} network is not valid JSON ({exc}); the model is damaged") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("layers"), list) or "input" not in spec:
        raise NetworkError(f"a {PREFIX} network must hold a JSON object with 'input' and 'layers'; the model is damaged")
    if spec.get("format", SPEC_FORMAT) > SPEC_FORMAT:
        raise NetworkError(f"this layer list has format {spec.get('format')}; this shoal builds format {SPEC_FORMAT} "
                           "— upgrade shoal (pip install -U shoal)")
    return spec


class _Pool(nn.Module):
    """Caffe pooling on a fixed input size: explicit padding to the exact extent of the windows."""

    def __init__(self, entry: dict[str, Any]) -> None:
        super().__init__()
        self.max = entry["mode"] == "max"
        (kh, kw), (sh, sw), (ph, pw) = entry["kernel"], entry["stride"], entry["pad"]
        (h, w), (oh, ow) = entry["in_size"], entry["out_size"]
        self.kernel, self.stride = (kh, kw), (sh, sw)
        after_h, after_w = (oh - 1) * sh + kh - h - ph, (ow - 1) * sw + kw - w - pw
        self.keep = (h + min(after_h, 0), w + min(after_w, 0))  # rows/columns no window reaches
        self.padding = (pw, max(after_w, 0), ph, max(after_h, 0))
        self.in_size = (h, w)
        if not self.max:
            # Caffe's divisor: the window clipped to the padded input (H + pad), not to the overhang.
            rows = torch.tensor([min(i * sh - ph + kh, h + ph) - (i * sh - ph) for i in range(oh)], dtype=torch.float32)
            cols = torch.tensor([min(j * sw - pw + kw, w + pw) - (j * sw - pw) for j in range(ow)], dtype=torch.float32)
            self.register_buffer("factor", (kh * kw) / (rows[:, None] * cols[None, :]), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.in_size:
            raise NetworkError(f"this imported network takes a fixed input size; a pooling layer got "
                               f"{tuple(x.shape[-2:])} instead of {self.in_size}")
        if self.keep != self.in_size:
            x = x[..., : self.keep[0], : self.keep[1]]
        if self.max:
            return F.max_pool2d(F.pad(x, self.padding, value=float("-inf")), self.kernel, self.stride)
        return F.avg_pool2d(F.pad(x, self.padding), self.kernel, self.stride) * self.factor


class _WithinLRN(nn.Module):
    """Caffe's LRN within a channel: ``x · (1 + α · mean_{n×n}(x²))^−β`` (k is not used)."""

    def __init__(self, size: int, alpha: float, beta: float) -> None:
        super().__init__()
        self.size, self.alpha, self.beta = size, alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = F.avg_pool2d(x * x, self.size, 1, (self.size - 1) // 2, count_include_pad=True)
        return x * torch.pow(1 + self.alpha * mean, -self.beta)


class _AcrossLRN(nn.Module):
    """Caffe's LRN across channels: ``x · (k + α/n · Σ_{n channels} x²)^−β``, written out so every exporter agrees."""

    def __init__(self, size: int, alpha: float, beta: float, k: float) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = (self.size - 1) // 2
        squares = F.pad((x * x).unsqueeze(1), (0, 0, 0, 0, half, half))  # N, 1, C + 2·half, H, W
        summed = F.avg_pool3d(squares, (self.size, 1, 1), stride=1).squeeze(1)  # mean over the n channels
        return x * torch.pow(self.k + self.alpha * summed, -self.beta)


class _BatchNorm(nn.Module):
    """Caffe's BatchNorm at inference (running statistics), with NVCaffe's built-in affine when present."""

    def __init__(self, channels: int, eps: float, affine: bool) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=self.training, momentum=0.001, eps=self.eps)


class _Scale(nn.Module):
    """Caffe's Scale (one factor per channel, optional bias) and Bias layers."""

    def __init__(self, channels: int, multiply: bool, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels)) if multiply else None
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.weight is not None:
            x = x * self.weight.view(shape)
        if self.bias is not None:
            x = x + self.bias.view(shape)
        return x


class _Linear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.flatten(x, 1))


def _function(entry: dict[str, Any]) -> Callable[..., torch.Tensor]:
    """The parameter-free ops."""
    op = entry["op"]
    if op == "relu":
        slope = entry.get("slope", 0.0)
        return (lambda x: F.relu(x)) if slope == 0 else (lambda x: F.leaky_relu(x, slope))
    if op == "sigmoid":
        return torch.sigmoid
    if op == "tanh":
        return torch.tanh
    if op == "concat":
        return lambda *xs: torch.cat(xs, dim=entry["axis"])
    if op == "eltwise":
        operation, coeff = entry["operation"], entry["coeff"]
        if operation == "prod":
            return lambda *xs: _reduce(xs, torch.mul)
        if operation == "max":
            return lambda *xs: _reduce(xs, torch.maximum)
        if all(c == 1 for c in coeff):
            return lambda *xs: _reduce(xs, torch.add)
        return lambda *xs: _reduce([c * x for c, x in zip(coeff, xs)], torch.add)
    if op == "flatten":
        return lambda x: torch.flatten(x, entry["axis"], entry["end_axis"])
    if op == "softmax":
        return lambda x: torch.softmax(x, dim=entry["axis"])
    if op == "power":
        power, scale, shift = entry["power"], entry["scale"], entry["shift"]
        if power == 1:
            return lambda x: x * scale + shift
        return lambda x: torch.pow(x * scale + shift, power)
    if op == "split":
        return lambda x: x
    raise NetworkError(f"layer {entry.get('name')!r} has the op {op!r}, which this shoal does not build")


def _reduce(xs: Any, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    out = xs[0]
    for x in xs[1:]:
        out = fn(out, x)
    return out


class LayerNet(nn.Module):
    """The network a declarative layer list describes.

    Args:
        spec: the layer list (see the module's docs).
        num_classes: outputs; when it differs from the spec's, the head (its last InnerProduct)
            gets this many outputs and fresh weights.
        channels: input channels; must be the spec's.
    """

    def __init__(self, spec: dict[str, Any], num_classes: int, channels: int) -> None:
        super().__init__()
        shape = spec["input"]["shape"]
        if channels != shape[0]:
            raise NetworkError(f"this imported network takes {shape[0]}-channel images, not {channels}; "
                               f"build it with channels={shape[0]}")
        if num_classes != spec["num_outputs"] and not spec.get("head"):
            raise NetworkError(f"this imported network has {spec['num_outputs']} outputs and no InnerProduct head "
                               f"shoal can resize to {num_classes} classes")
        self.spec = spec
        self.input_blob = spec["input"]["blob"]
        self.bgr = bool(spec["input"].get("bgr"))
        self.output = spec["output"]
        self.layers = nn.ModuleDict()
        self.steps: list[tuple[dict[str, Any], Callable[..., torch.Tensor]]] = []
        for entry in spec["layers"]:
            module = self._module(entry, num_classes if entry.get("key") == spec.get("head") else None)
            if module is not None:
                self.layers[entry.get("key") or f"op{len(self.layers)}"] = module
                self.steps.append((entry, module))
            else:
                self.steps.append((entry, _function(entry)))

    @staticmethod
    def _module(entry: dict[str, Any], head_outputs: int | None) -> nn.Module | None:
        op = entry["op"]
        if op == "conv":
            return nn.Conv2d(entry["in"], entry["out"], tuple(entry["kernel"]), tuple(entry["stride"]),
                             tuple(entry["pad"]), tuple(entry["dilation"]), entry["group"], entry["bias"])
        if op == "linear":
            return _Linear(entry["in"], head_outputs or entry["out"], bias=entry["bias"])
        if op == "pool":
            return _Pool(entry)
        if op == "lrn":
            if entry["region"] == "within":
                return _WithinLRN(entry["size"], entry["alpha"], entry["beta"])
            return _AcrossLRN(entry["size"], entry["alpha"], entry["beta"], entry["k"])
        if op == "prelu":
            return nn.PReLU(entry["channels"])
        if op == "dropout":
            return nn.Dropout(entry["p"])
        if op == "batchnorm":
            return _BatchNorm(entry["channels"], entry["eps"], entry["affine"])
        if op == "scale":
            return _Scale(entry["channels"], entry["multiply"], entry["bias"])
        return None

    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every blob after the forward pass."""
        if self.bgr:
            x = x[:, [2, 1, 0]]
        blobs = {self.input_blob: x}
        for entry, step in self.steps:
            out = step(*[blobs[b] for b in entry["bottom"]])
            for top in entry["top"]:
                blobs[top] = out
        return blobs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[self.output].flatten(1)


class LayerNetwork(Network):
    """The adapter of a ``layers:`` name: builds :class:`LayerNet`, finds its head and stages."""

    def __init__(self, name: str) -> None:
        self.layer_spec = parse_architecture(name)
        c, h, w = self.layer_spec["input"]["shape"]
        mean = tuple(self.layer_spec.get("mean") or [0.0] * 3)
        std = tuple(self.layer_spec.get("std") or [1.0] * 3)
        count = len(self.layer_spec["layers"])
        self.spec = NetworkSpec(name=name, description=f"{self.layer_spec.get('name', 'network')}, imported from "
                                f"{self.layer_spec.get('source', 'a layer list')} ({count} layers)",
                                family="shoal", input_size=(h, w), mean=mean if len(mean) == 3 else mean * 3,
                                std=std if len(std) == 3 else std * 3)

    def build(self, num_classes: int, channels: int) -> nn.Module:
        return LayerNet(self.layer_spec, num_classes, channels)

    def first_conv_name(self, model: nn.Module) -> str:
        return next((f"layers.{e['key']}" for e in self.layer_spec["layers"] if e["op"] == "conv"), "")

    def heads(self, model: nn.Module) -> dict[str, nn.Module]:
        head = self.layer_spec.get("head")
        if not head:
            raise NetworkError("this imported network does not end with an InnerProduct layer, so shoal has no "
                               "classifier head to fit or replace")
        return {f"layers.{head}": model.get_submodule(f"layers.{head}")}

    def stages(self, model: nn.Module) -> list[tuple[str, list[str]]]:
        head = self.layer_spec.get("head")
        found = []
        for entry in self.layer_spec["layers"]:
            key = entry.get("key")
            if key and key != head:
                names = [n for n, _ in model.named_parameters() if n.startswith(f"layers.{key}.")]
                if names:
                    found.append((entry["name"], names))
        return found

    def target_layer(self, model: nn.Module) -> nn.Module:
        convs = [e["key"] for e in self.layer_spec["layers"] if e["op"] == "conv"]
        if not convs:
            raise NetworkError("this imported network has no convolution, so it has no spatial layer for a heat-map")
        return model.get_submodule(f"layers.{convs[-1]}")
