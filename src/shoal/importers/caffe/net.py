"""A Caffe deploy net and its caffemodel → shoal's declarative layer list and named weights.

The result is data, never code: :func:`convert` returns a JSON-ready ``spec`` that
:class:`shoal.networks.layers.LayerNet` builds, and the tensors to load into it, keyed by
the state-dict names that module gives its parameters. Shapes are inferred here, layer by
layer, exactly as Caffe computes them (pooling's ceil rounding and its clip), and every
learnable layer's blobs are checked against them. Whatever cannot be reproduced faithfully
is refused with one :class:`CaffeError` line that names the layer.

Torch-free (NumPy only).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shoal.importers.caffe.errors import CaffeError
from shoal.importers.caffe.text import Message
from shoal.importers.caffe.wire import V1_LAYER_TYPES, LayerWeights

SPEC_FORMAT = 1

_V1_ENUM_NAMES = ("NONE", "ACCURACY", "BNLL", "CONCAT", "CONVOLUTION", "DATA", "DROPOUT", "EUCLIDEAN_LOSS",
                  "FLATTEN", "HDF5_DATA", "HDF5_OUTPUT", "IM2COL", "IMAGE_DATA", "INFOGAIN_LOSS", "INNER_PRODUCT",
                  "LRN", "MULTINOMIAL_LOGISTIC_LOSS", "POOLING", "RELU", "SIGMOID", "SOFTMAX", "SOFTMAX_LOSS",
                  "SPLIT", "TANH", "WINDOW_DATA", "ELTWISE", "POWER", "SIGMOID_CROSS_ENTROPY_LOSS", "HINGE_LOSS",
                  "MEMORY_DATA", "ARGMAX", "THRESHOLD", "DUMMY_DATA", "SLICE", "MVN", "ABSVAL", "SILENCE",
                  "CONTRASTIVE_LOSS", "EXP", "DECONVOLUTION")
V1_TYPE_BY_NAME = {name: V1_LAYER_TYPES[i] for i, name in enumerate(_V1_ENUM_NAMES)}

INPUT_TYPES = ("Input", "Data", "ImageData", "MemoryData", "DummyData", "WindowData")
SKIPPED_TYPES = ("Accuracy", "Silence")  # train/val bookkeeping that has no effect on the output
SUPPORTED = ("Input", "Data", "Convolution", "Pooling", "LRN", "InnerProduct", "ReLU", "PReLU", "Sigmoid", "TanH",
             "Dropout", "Concat", "Eltwise", "Flatten", "Softmax", "BatchNorm", "Scale", "Bias", "Power", "Split")

Shape = tuple[int, ...]  # one sample's shape: (C, H, W) or (D,)


@dataclass
class Converted:
    """A converted net: the declarative ``spec`` (JSON-ready), the tensors by state-dict name, and notes."""

    spec: dict[str, Any]
    tensors: dict[str, np.ndarray]
    notes: list[str] = field(default_factory=list)

    @property
    def input_shape(self) -> Shape:
        return tuple(self.spec["input"]["shape"])

    @property
    def num_outputs(self) -> int:
        return int(self.spec["num_outputs"])


def _layers(net: Message, where: str) -> tuple[list[Message], bool]:
    """The net's layer messages and whether it is V1; refuses V0 and mixed nets."""
    v2, v1 = net.all("layer"), net.all("layers")
    if v2 and v1:
        raise CaffeError(f"{where} has both 'layer' and 'layers' entries; Caffe refuses such a net too")
    for layer in v1:
        if "layer" in layer:
            raise CaffeError(f"{where} is a V0 net (from before March 2014); upgrade it with Caffe's "
                             "upgrade_net_proto_text tool first — shoal reads V1 and V2 nets")
    return (v1, True) if v1 else (v2, False)


def _type(layer: Message, v1: bool) -> str:
    raw = layer.one("type", "")
    if v1 and not isinstance(raw, int):
        name = str(raw)
        if name in V1_TYPE_BY_NAME:
            return V1_TYPE_BY_NAME[name]
        if name in V1_LAYER_TYPES.values():
            return name
        raise CaffeError(f"layer {layer.one('name', '?')!r} has the unknown V1 type {name!r}")
    if isinstance(raw, int):
        return V1_LAYER_TYPES.get(raw, f"V1 type {raw}")
    return str(raw)


def _included(layer: Message, stages: tuple[str, ...]) -> bool:
    """Caffe's ``Net::StateMeetsRule`` for the state {phase TEST, level 0, ``stages``}."""
    def meets(rule: Message) -> bool:
        phase = rule.enum("phase", ("TRAIN", "TEST"), "")
        if phase and phase != "TEST":
            return False
        if rule.integer("min_level") is not None and 0 < (rule.integer("min_level") or 0):
            return False
        if rule.integer("max_level") is not None and 0 > (rule.integer("max_level") or 0):
            return False
        if any(s not in stages for s in rule.all("stage")):
            return False
        return not any(s in stages for s in rule.all("not_stage"))

    includes, excludes = layer.all("include"), layer.all("exclude")
    if includes:
        return any(meets(r) for r in includes)
    if excludes:
        return not any(meets(r) for r in excludes)
    phase = layer.enum("phase", ("TRAIN", "TEST"), "") if "phase" in layer else ""
    return phase in ("", "TEST")


def _pair(param: Message, name: str, h: str, w: str, default: int | None) -> tuple[int, int]:
    """A 2-D size from ``name`` (one value, or one per dimension) or ``name_h``/``name_w``."""
    if h in param or w in param:
        hv, wv = param.integer(h), param.integer(w)
        if hv is None or wv is None:
            raise CaffeError(f"{h} and {w} must be given together")
        return hv, wv
    values = param.integers(name)
    if not values:
        if default is None:
            raise CaffeError(f"{name} is missing")
        return default, default
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise CaffeError(f"{name} has {len(values)} values; shoal imports 2-D layers only")


def caffe_pool_size(size: int, kernel: int, stride: int, pad: int, *, ceil: bool) -> int:
    """Pooling output size as Caffe computes it (``pooling_layer.cpp``).

    >>> caffe_pool_size(112, 3, 2, 0, ceil=True)   # GoogLeNet's pool1: 56, floor would give 55
    56
    """
    span = (size + 2 * pad - kernel) / stride
    out = (math.ceil(span) if ceil else math.floor(span)) + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


class _Builder:
    def __init__(self, weights: dict[str, LayerWeights]) -> None:
        self.weights = weights
        self.shapes: dict[str, Shape] = {}
        self.layers: list[dict[str, Any]] = []
        self.tensors: dict[str, np.ndarray] = {}
        self.keys: set[str] = set()
        self.notes: list[str] = []

    # -- helpers ------------------------------------------------------------------------------------
    def key(self, name: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_]", "_", name) or "layer"
        if base[0].isdigit():
            base = "l" + base
        key, n = base, 2
        while key in self.keys:
            key, n = f"{base}_{n}", n + 1
        self.keys.add(key)
        return key

    def blobs(self, name: str, kind: str, counts: list[list[int]]) -> list[np.ndarray]:
        """The layer's trained blobs, checked: ``counts`` lists the accepted blob-count layouts (element counts)."""
        found = self.weights.get(name)
        if found is None or not found.blobs:
            raise CaffeError(f"layer {name!r} ({kind}) has no weights in the caffemodel; Caffe would silently "
                             "use random values — check that the caffemodel belongs to this prototxt")
        got = [int(b.data.size) for b in found.blobs]
        for layout in counts:
            if got == layout:
                return [b.data for b in found.blobs]
        want = " or ".join(str(layout) for layout in counts)
        raise CaffeError(f"layer {name!r} ({kind}) has blobs of {got} values in the caffemodel; this prototxt "
                         f"needs {want} — the caffemodel does not belong to this prototxt")

    def shape(self, blob: str, layer: str) -> Shape:
        if blob not in self.shapes:
            raise CaffeError(f"layer {layer!r} reads blob {blob!r}, which no earlier layer produces")
        return self.shapes[blob]

    def add(self, entry: dict[str, Any], tops: list[str], shape: Shape | list[Shape]) -> None:
        self.layers.append(entry)
        shapes = shape if isinstance(shape, list) else [shape] * len(tops)
        for top, s in zip(tops, shapes):
            if any(d <= 0 for d in s):
                raise CaffeError(f"layer {entry['name']!r} gives blob {top!r} the empty shape {list(s)}; "
                                 "the input is too small for this net")
            self.shapes[top] = s

    # -- layers -------------------------------------------------------------------------------------
    def layer(self, msg: Message, kind: str) -> None:
        name = msg.text("name") if isinstance(msg.one("name"), str) else str(msg.one("name", ""))
        bottoms = [str(b) for b in msg.all("bottom")]
        tops = [str(t) for t in msg.all("top")]
        if kind == "Python":
            raise CaffeError(f"layer {name!r} is a Python layer: it runs code from a .py file that cannot be "
                             "imported faithfully (or safely); shoal refuses nets with Python layers")
        if kind.startswith("DetectNet") or kind in ("ClusterDetections", "L1Loss", "Region", "DetectionOutput"):
            raise CaffeError(f"layer {name!r} is a {kind} layer (object detection, NVCaffe/DIGITS custom): "
                             "shoal imports image classifiers only")
        if kind in SKIPPED_TYPES or kind.endswith("Loss"):
            self.notes.append(f"skipped {kind} layer {name!r} (training only)")
            return
        if kind not in SUPPORTED:
            raise CaffeError(f"layer {name!r} has type {kind!r}, which shoal cannot import; supported: "
                             f"{', '.join(SUPPORTED)}")
        base = {"name": name, "bottom": bottoms, "top": tops}
        if kind in ("Input", "Data"):
            raise CaffeError(f"layer {name!r}: a second input layer; shoal imports nets with one input")
        if len(tops) != 1 and kind != "Split":
            raise CaffeError(f"layer {name!r} ({kind}) has {len(tops)} outputs; expected one")
        single = kind not in ("Concat", "Eltwise")
        if single and len(bottoms) != 1:
            raise CaffeError(f"layer {name!r} ({kind}) has {len(bottoms)} inputs; shoal imports the "
                             f"one-input form of {kind} only")
        shapes = [self.shape(b, name) for b in bottoms]
        try:
            getattr(self, f"_{kind.lower()}")(msg, base, shapes, tops)
        except CaffeError as exc:
            text = str(exc)
            raise CaffeError(text if text.startswith("layer ") else f"layer {name!r} ({kind}): {text}") from None

    def _convolution(self, msg: Message, base: dict[str, Any], shapes: list[Shape], tops: list[str]) -> None:
        p = msg.message("convolution_param")
        (shape,) = shapes
        if len(shape) != 3:
            raise CaffeError(f"takes a {len(shape)}-D input; shoal imports 2-D convolutions only")
        if p.integer("axis", 1) != 1:
            raise CaffeError(f"axis {p.integer('axis')}; shoal imports axis 1 only")
        c_in, h, w = shape
        out = p.integer("num_output")
        if not out:
            raise CaffeError("num_output is missing")
        kh, kw = _pair(p, "kernel_size", "kernel_h", "kernel_w", None)
        sh, sw = _pair(p, "stride", "stride_h", "stride_w", 1)
        ph, pw = _pair(p, "pad", "pad_h", "pad_w", 0)
        dh, dw = _pair(p, "dilation", "dilation_h", "dilation_w", 1)
        group = p.integer("group", 1) or 1
        bias = p.flag("bias_term", True)
        if c_in % group or out % group:
            raise CaffeError(f"group {group} does not divide its {c_in} input and {out} output channels")
        oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
        ow = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
        key = self.key(base["name"])
        counts = [out * (c_in // group) * kh * kw] + ([out] if bias else [])
        blobs = self.blobs(base["name"], "Convolution", [counts])
        self.tensors[f"layers.{key}.weight"] = blobs[0].reshape(out, c_in // group, kh, kw)
        if bias:
            self.tensors[f"layers.{key}.bias"] = blobs[1].reshape(out)
        self.add({**base, "op": "conv", "key": key, "in": c_in, "out": out, "kernel": [kh, kw], "stride": [sh, sw],
                  "pad": [ph, pw], "dilation": [dh, dw], "group": group, "bias": bias}, tops, (out, oh, ow))

    def _pooling(self, msg: Message, base: dict[str, Any], shapes: list[Shape], tops: list[str]) -> None:
        p = msg.message("pooling_param")
        (shape,) = shapes
        if len(shape) != 3:
            raise CaffeError(f"takes a {len(shape)}-D input; shoal imports 2-D pooling only")
        c, h, w = shape
        mode = p.enum("pool", ("MAX", "AVE", "STOCHASTIC"), "MAX")
        if mode == "STOCHASTIC":
            raise CaffeError("STOCHASTIC pooling is random (and not implemented on CPU in Caffe); "
                             "shoal cannot import it faithfully")
        if p.flag("global_pooling", False):
            (kh, kw), (sh, sw), (ph, pw) = (h, w), (1, 1), (0, 0)
        else:
            kh, kw = _pair(p, "kernel_size", "kernel_h", "kernel_w", None)
            sh, sw = _pair(p, "stride", "stride_h", "stride_w", 1)
            ph, pw = _pair(p, "pad", "pad_h", "pad_w", 0)
        ceil = p.enum("round_mode", ("CEIL", "FLOOR"), "CEIL") == "CEIL" and not p.flag("torch_pooling", False)
        if ph >= kh or pw >= kw:
            raise CaffeError(f"pad {ph}x{pw} is not smaller than the kernel {kh}x{kw} (Caffe refuses it too)")
        oh = caffe_pool_size(h, kh, sh, ph, ceil=ceil)
        ow = caffe_pool_size(w, kw, sw, pw, ceil=ceil)
        if (oh - 1) * sh - ph >= h or (ow - 1) * sw - pw >= w:
            raise CaffeError(f"its last window (kernel {kh}x{kw}, stride {sh}x{sw}, pad {ph}x{pw} on a {h}x{w} "
                             "input) lies wholly outside the input; Caffe fills it with -FLT_MAX or 0, which "
                             "shoal does not reproduce")
        self.add({**base, "op": "pool", "mode": mode.lower(), "kernel": [kh, kw], "stride": [sh, sw], "pad": [ph, pw],
                  "in_size": [h, w], "out_size": [oh, ow]}, tops, (c, oh, ow))

    def _lrn(self, msg: Message, base: dict[str, Any], shapes: list[Shape], tops: list[str]) -> None:
        p = msg.message("lrn_param")
        (shape,) = shapes
        size = p.integer("local_size", 5) or 5
        if size % 2 == 0:
            raise CaffeError(f"local_size {size} is even; Caffe requires an odd size")
        if len(shape) != 3:
            raise CaffeError("takes a non-image input")
        region = p.enum("norm_region", ("ACROSS_CHANNELS", "WITHIN_CHANNEL"), "ACROSS_CHANNELS")
        self.add({**base, "op": "lrn", "region": "across" if region == "ACROSS_CHANNELS" else "within",
                  "size": size, "alpha": float(p.number("alpha", 1.0) or 0.0), "beta": float(p.number("beta", 0.75)),
                  "k": float(p.number("k", 1.0))}, tops, shape)

    def _innerproduct(self, msg: Message, base: dict[str, Any], shapes: list[Shape], tops: list[str]) -> None:
        p = msg.message("inner_product_param")
        (shape,) = shapes
        if p.integer("axis", 1) != 1:
            raise CaffeError(f"axis {p.integer('axis')}; shoal imports axis 1 only")
        out = p.integer("num_output")
        if not out:
            raise CaffeError("num_output is missing")
        k = int(np.prod(shape))
        bias = p.flag("bias_term", True)
        key = self.key(base["name"])
        blobs = self.blobs(base["name"], "InnerProduct", [[out * k] + ([out] if bias else [])])
        weight = blobs[0].reshape(k, out).T if p.flag("transpose", False) else blobs[0].reshape(out, k)
        self.tensors[f"layers.{key}.weight"] = np.ascontiguousarray(weight)
        if bias:
            self.tensors[f"layers.{key}.bias"] = blobs[1].reshape(out)
        self.add({**base, "op": "linear", "key": key, "in": k, "out": out, "bias": bias}, tops, (out,))

    def _relu(self, msg: Message, base: dict[str, Any], shapes: list[Shape], tops: list[str]) -> None:
        slope = float(msg.message("relu_param").number("negative_slope", 0.0) or 0.0)
        self.add({**base, "op": "relu", "slope": slope}, tops, shapes[0])

    def _prelu(self, msg: Message, base: dict[str, Any], shapes: list[Shape], tops: list[str]) -> None:
        shared = msg.message("prelu_param").flag("channel_shared", False)
        n = 1 if shared else shapes[0][0]
        key = self.key(base["name"])
        self.tensors[f"layers.{key}.weight"] = self.blobs(base["name"], "PReLU", [[n]])[0].reshape(n)
        self.add({**base, "op": "prelu", "key": key, "channels": n}, tops, shapes[0])

    def _sigmoid(self, msg: Message, base: dict[str, Any], shapes: list[Shape], tops: list[str]) -> None:
        self.add({**base, "op": "sigmoid"}, tops, shapes[0])

    def _tanh(self, msg: Message, base: dict[str, Any], shapes: list[Shape], tops: list[str]) -> None:
        self.add({**base, "op": "tanh"}, tops, shapes[0])

    def _dropout(self, msg: Message, base: dict[str, Any], shapes: list[Shape], tops: list[str]) -> None:
        ratio = float(msg.message("dropout_param").number("dropout_ratio", 0.5))
        self.add({**base, "op": "dropout", "p": ratio}, tops, shapes[0])

    def _split(self, msg: Message, base: dict[str, Any], shapes: list[Shape], tops: list[str]) -> None:
        self.add({**base, "op": "split"}, tops, [shapes[0]] * len(tops))

    def _concat(self, msg: Message, base: dict[str, Any], shapes: list[Shape], tops: list[str]) -> None:
        p = msg.message("concat_param")
        axis = p.integer("axis", None)
        axis = p.integer("concat_dim", 1) if axis is None else axis
        rank = len(shapes[0]) + 1
        axis = axis + rank if axis is not None and axis < 0 else axis
        if not axis or axis >= rank or any(len(s) != rank - 1 for s in shapes):
            raise CaffeError(f"concatenates along axis {axis} of inputs shaped {[list(s) for s in shapes]}")
        rest = [tuple(d for i, d in enumerate(s) if i != axis - 1) for s in shapes]
        if len(set(rest)) != 1:
            raise CaffeError(f"inputs {[list(s) for s in shapes]} differ outside axis {axis}")
        out = list(shapes[0])
        out[axis - 1] = sum(s[axis - 1] for s in shapes)
        self.add({**base, "op": "concat", "axis": axis}, tops, tuple(out))

    def _eltwise(self, msg: Message, base: dict[str, Any], shapes: list[Shape], tops: list[str]) -> None:
        p = msg.message("eltwise_param")
        operation = p.enum("operation", ("PROD", "SUM", "MAX"), "SUM").lower()
        coeff = p.floats("coeff")
        if len(set(shapes)) != 1 or len(shapes) < 2:
            raise CaffeError(f"needs at least two inputs of one shape, got {[list(s) for s in shapes]}")
        if coeff and (operation != "sum" or len(coeff) != len(shapes)):
            raise CaffeError("coeff is allowed for SUM only, one per input")
        self.add({**base, "op": "eltwise", "operation": operation, "coeff": coeff or [1.0] * len(shapes)},
                 tops, shapes[0])

    def _flatten(self, msg: Message, base: dict[str, Any], shapes: list[Shape], tops: list[str]) -> None:
        p = msg.message("flatten_param")
        rank = len(shapes[0]) + 1
        axis, end = p.integer("axis", 1) or 0, p.integer("end_axis", -1) or 0
        axis, end = axis % rank, end % rank
        if axis < 1 or end < axis:
            raise CaffeError(f"flattens axes {axis}..{end}; shoal keeps the batch axis")
        dims = [1, *shapes[0]]
        out = (*dims[1:axis], int(np.prod(dims[axis:end + 1])), *dims[end + 1:])
        self.add({**base, "op": "flatten", "axis": axis, "end_axis": end}, tops, out)

    def _softmax(self, msg: Message, base: dict[str, Any], shapes: list[Shape], tops: list[str]) -> None:
        axis = msg.message("softmax_param").integer("axis", 1) or 1
        rank = len(shapes[0]) + 1
        axis = axis % rank
        if axis < 1:
            raise CaffeError("softmax over the batch axis")
        self.add({**base, "op": "softmax", "axis": axis}, tops, shapes[0])

    def _batchnorm(self, msg: Message, base: dict[str, Any], shapes: list[Shape], tops: list[str]) -> None:
        p = msg.message("batch_norm_param")
        if "use_global_stats" in p and not p.flag("use_global_stats", True):
            raise CaffeError("use_global_stats is false: at deploy it would normalise each batch by its own "
                             "statistics; set it true (or remove it) in the deploy prototxt")
        c = shapes[0][0]
        eps = float(p.number("eps", 1e-5))
        found = self.blobs(base["name"], "BatchNorm", [[c, c, 1], [c, c, c, c, 1], [c, c, 1, c, c]])
        if len(found) == 5 and c == 1:
            raise CaffeError("has 5 blobs of one value each: shoal cannot tell NVCaffe 0.15's layout "
                             "[scale, bias, mean, variance, count] from 0.16's [mean, variance, 1, scale, bias]")
        key = self.key(base["name"])
        weight = bias = None
        if len(found) == 3:  # BVLC (and NVCaffe >= 0.16): [mean sum, variance sum, moving-average factor]
            factor = float(found[2][0])
            scale = 0.0 if factor == 0 else 1.0 / factor
            mean, var = found[0] * scale, found[1] * scale
        elif found[4].size == 1:  # NVCaffe 0.15: [scale, bias, mean, variance, counter]
            weight, bias, mean, var = found[0], found[1], found[2], found[3]
            self.notes.append(f"BatchNorm {base['name']!r}: NVCaffe 0.15 layout (scale and bias built in)")
        else:  # NVCaffe >= 0.16 with scale_bias: [mean, variance, correction (1), scale, bias]
            mean, var, weight, bias = found[0], found[1], found[3], found[4]
            self.notes.append(f"BatchNorm {base['name']!r}: NVCaffe 0.16+ layout with scale and bias")
        self.tensors[f"layers.{key}.running_mean"] = np.asarray(mean, np.float32).reshape(c)
        self.tensors[f"layers.{key}.running_var"] = np.asarray(var, np.float32).reshape(c)
        if weight is not None and bias is not None:
            self.tensors[f"layers.{key}.weight"] = np.asarray(weight, np.float32).reshape(c)
            self.tensors[f"layers.{key}.bias"] = np.asarray(bias, np.float32).reshape(c)
        self.add({**base, "op": "batchnorm", "key": key, "channels": c, "eps": eps, "affine": weight is not None},
                 tops, shapes[0])

    def _scale(self, msg: Message, base: dict[str, Any], shapes: list[Shape], tops: list[str],
               *, multiply: bool = True) -> None:
        p = msg.message("scale_param" if multiply else "bias_param")
        if (p.integer("axis", 1), p.integer("num_axes", 1)) != (1, 1):
            raise CaffeError("only axis 1 with num_axes 1 (one factor per channel) is imported")
        c = shapes[0][0]
        bias = p.flag("bias_term", False) if multiply else True
        key = self.key(base["name"])
        found = self.blobs(base["name"], "Scale" if multiply else "Bias",
                           [[c] * (int(multiply) + int(bias))])
        if multiply:
            self.tensors[f"layers.{key}.weight"] = found[0].reshape(c)
        if bias:
            self.tensors[f"layers.{key}.bias"] = found[-1].reshape(c)
        self.add({**base, "op": "scale", "key": key, "channels": c, "multiply": multiply, "bias": bias},
                 tops, shapes[0])

    def _bias(self, msg: Message, base: dict[str, Any], shapes: list[Shape], tops: list[str]) -> None:
        self._scale(msg, base, shapes, tops, multiply=False)

    def _power(self, msg: Message, base: dict[str, Any], shapes: list[Shape], tops: list[str]) -> None:
        p = msg.message("power_param")
        self.add({**base, "op": "power", "power": float(p.number("power", 1.0)), "scale": float(p.number("scale", 1.0)),
                  "shift": float(p.number("shift", 0.0))}, tops, shapes[0])


def _input(net: Message, layers: list[tuple[Message, str]], input_size: tuple[int, int] | None,
           where: str) -> tuple[str, Shape, list[tuple[Message, str]]]:
    """The net's one input blob and its (C, H, W), from the legacy input fields, an Input layer or a Data layer."""
    inputs = net.all("input")
    if inputs:
        if len(inputs) != 1:
            raise CaffeError(f"{where} has {len(inputs)} inputs ({', '.join(map(str, inputs))}); "
                             "shoal imports nets with one image input")
        dims = net.message("input_shape").integers("dim") if "input_shape" in net else net.integers("input_dim")
        return str(inputs[0]), _image_shape(dims, where, input_size), layers
    firsts = [(m, t) for m, t in layers if t in INPUT_TYPES]
    if len(firsts) != 1:
        raise CaffeError(f"{where} has {len(firsts)} input layers; shoal imports nets with one image input "
                         "(an Input layer, input + input_shape, or a Data layer with --input-size)")
    msg, kind = firsts[0]
    rest = [(m, t) for m, t in layers if m is not msg]
    top = str(msg.all("top")[0]) if msg.all("top") else ""
    if kind == "Input":
        shapes = msg.message("input_param").all("shape")
        if len(shapes) != 1 or len(msg.all("top")) != 1:
            raise CaffeError(f"{where}: the Input layer has {len(msg.all('top'))} outputs; shoal imports nets "
                             "with one image input")
        return top, _image_shape(shapes[0].integers("dim"), where, input_size), rest
    if kind != "Data":
        raise CaffeError(f"{where} reads its images with a {kind} layer; give a deploy prototxt (with an Input "
                         "layer or input_shape) instead")
    if input_size is None:
        raise CaffeError(f"{where} reads its images with a Data layer, which does not say their size; give "
                         "--input-size WxH (the crop size, or the dataset's size without a crop)")
    transform = msg.message("transform_param")
    channels = 1 if transform.flag("force_gray", False) else 3
    label_tops = {str(t) for t in msg.all("top")[1:]}
    rest = [(m, t) for m, t in rest if not label_tops & {str(b) for b in m.all("bottom")}]
    return top, (channels, input_size[1], input_size[0]), rest


def _image_shape(dims: list[int], where: str, input_size: tuple[int, int] | None) -> Shape:
    if len(dims) != 4:
        raise CaffeError(f"{where} declares a {len(dims)}-D input {dims}; shoal imports image nets (N, C, H, W)")
    c, h, w = dims[1:]
    if input_size is not None:
        w, h = input_size
    return (c, h, w)


def convert(net: Message, weights: dict[str, LayerWeights], *, where: str = "the prototxt",
            input_size: tuple[int, int] | None = None, stages: tuple[str, ...] = ("deploy",)) -> Converted:
    """Convert a parsed deploy net and its trained layers into a declarative spec and named tensors.

    Args:
        net: the parsed prototxt (:func:`shoal.importers.caffe.text.parse_prototxt`).
        weights: the caffemodel's layers (:func:`shoal.importers.caffe.wire.parse_caffemodel`).
        where: the prototxt's name, for messages.
        input_size: ``(width, height)`` overriding the declared input size (needed for Data layers).
        stages: the net state's stages for include/exclude rules (phase is TEST).

    Returns:
        The :class:`Converted` net. Its ``spec["output"]`` is the blob before a final Softmax
        (the logits; shoal applies the softmax itself).

    Raises:
        CaffeError: anything that cannot be imported faithfully (the message names the layer).
    """
    raw, v1 = _layers(net, where)
    typed = [(m, _type(m, v1)) for m in raw if _included(m, stages)]
    blob, shape, rest = _input(net, typed, input_size, where)
    if shape[0] not in (1, 3):
        raise CaffeError(f"{where}: the input has {shape[0]} channels; shoal imports 1-channel (grayscale) "
                         "or 3-channel (colour) image nets")
    builder = _Builder(weights)
    builder.shapes[blob] = shape
    for msg, kind in rest:
        builder.layer(msg, kind)
    if not builder.layers:
        raise CaffeError(f"{where} has no layers after its input")
    consumed = {b for entry in builder.layers for b in entry["bottom"]}
    produced: list[str] = []
    for entry in builder.layers:
        for top in entry["top"]:
            if top in produced:
                produced.remove(top)
            produced.append(top)
    outputs = [t for t in produced if t not in consumed or t in builder.layers[-1]["top"]]
    outputs = list(dict.fromkeys(outputs))
    if len(outputs) != 1:
        raise CaffeError(f"{where} has {len(outputs)} outputs ({', '.join(outputs)}); shoal imports nets with "
                         "one class-score output")
    output = outputs[0]
    layers = builder.layers
    last = layers[-1]
    if last["op"] == "softmax" and last["axis"] == 1 and len(builder.shapes[last["bottom"][0]]) == 1:
        layers = layers[:-1]
        output = last["bottom"][0]
    else:
        builder.notes.append(f"the net does not end with a Softmax; its output {output!r} is taken as class "
                             "scores and shoal applies a softmax to it")
    out_shape = builder.shapes[output]
    if len(out_shape) != 1 and not (len(out_shape) == 3 and out_shape[1:] == (1, 1)):
        raise CaffeError(f"{where}: its output {output!r} has the shape {list(out_shape)}; an image classifier "
                         "outputs one score per class")
    head = None
    producer = next((e for e in reversed(layers) if output in e["top"]), None)
    if producer is not None and producer["op"] == "linear" and producer is layers[-1]:
        head = producer["key"]
    used = {w for e in layers for w in [e["name"]]}
    unused = [n for n, lw in weights.items() if lw.blobs and n not in used]
    if unused:
        builder.notes.append(f"ignored {len(unused)} trained layer(s) not in the deploy net "
                             f"({', '.join(unused[:5])}{'...' if len(unused) > 5 else ''}), as Caffe does")
    spec = {"format": SPEC_FORMAT, "source": "caffe", "name": str(net.one("name", "") or "caffe"),
            "input": {"blob": blob, "shape": list(shape), "bgr": shape[0] == 3},
            "layers": layers, "output": output, "num_outputs": int(np.prod(out_shape)), "head": head}
    return Converted(spec, builder.tensors, builder.notes)
