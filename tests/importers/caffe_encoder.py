"""A small protobuf encoder of the tests' own: Caffe nets as a deploy prototxt and a .caffemodel.

Independent of shoal's decoder: it writes bytes by the field numbers of BVLC/NVCaffe's caffe.proto,
so the tests check the decoder against files written the way Caffe writes them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

V1_TYPES = {"Convolution": (4, "CONVOLUTION"), "InnerProduct": (14, "INNER_PRODUCT"), "ReLU": (18, "RELU"),
            "Pooling": (17, "POOLING"), "Softmax": (20, "SOFTMAX"), "LRN": (15, "LRN"), "Dropout": (6, "DROPOUT"),
            "Concat": (3, "CONCAT"), "Flatten": (8, "FLATTEN"), "Eltwise": (25, "ELTWISE"), "TanH": (23, "TANH"),
            "Sigmoid": (19, "SIGMOID"), "Power": (26, "POWER"), "Data": (5, "DATA")}


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def length(number: int, payload: bytes) -> bytes:
    return key(number, 2) + varint(len(payload)) + payload


def vint(number: int, value: int) -> bytes:
    return key(number, 0) + varint(value)


def blob(array: np.ndarray, mode: str = "data") -> bytes:
    """A BlobProto: ``data`` (packed, N-D shape), ``legacy`` (4-D num/channels/height/width),
    ``unpacked`` (one fixed32 record per value), ``double``, ``raw32``/``raw16`` (NVCaffe raw_data)."""
    a = np.asarray(array, np.float32)
    shape_msg = length(7, length(1, b"".join(varint(d) for d in a.shape)))
    if mode == "legacy":
        dims = (1,) * (4 - a.ndim) + a.shape
        head = b"".join(vint(i + 1, d) for i, d in enumerate(dims))
        return head + length(5, a.astype("<f4").tobytes())
    if mode == "data":
        return shape_msg + length(5, a.astype("<f4").tobytes())
    if mode == "unpacked":
        return shape_msg + b"".join(key(5, 5) + struct.pack("<f", v) for v in a.ravel())
    if mode == "double":
        return shape_msg + length(8, a.astype("<f8").tobytes())
    if mode == "raw32":
        return shape_msg + vint(10, 1) + length(12, a.astype("<f4").tobytes())
    if mode == "raw16":
        return shape_msg + vint(10, 2) + length(12, a.astype("<f2").tobytes())
    raise ValueError(mode)


@dataclass
class Layer:
    name: str
    type: str
    bottom: list[str]
    top: list[str]
    params: str = ""  # the prototxt body after bottom/top, e.g. 'convolution_param { num_output: 8 }'
    blobs: list[np.ndarray] = field(default_factory=list)


def prototxt(name: str, shape: tuple[int, ...], layers: list[Layer], *, v1: bool = False, legacy_input: bool = False) -> str:
    lines = [f'name: "{name}"']
    if legacy_input or v1:
        lines.append('input: "data"')
        lines += [f"input_dim: {d}" for d in shape]
    else:
        dims = " ".join(f"dim: {d}" for d in shape)
        lines.append(f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}')
    for layer in layers:
        kind = V1_TYPES[layer.type][1] if v1 else f'"{layer.type}"'
        io = " ".join([f'bottom: "{b}"' for b in layer.bottom] + [f'top: "{t}"' for t in layer.top])
        lines.append(f'{"layers" if v1 else "layer"} {{\n  name: "{layer.name}"  # a comment\n  type: {kind}\n'
                     f"  {io}\n  {layer.params}\n}}")
    return "\n".join(lines) + "\n"


def caffemodel(layers: list[Layer], *, v1: bool = False, mode: str = "data", nvcaffe: bool = False) -> bytes:
    """The trained net: every layer (with its blobs) plus a training-only layer, as Caffe snapshots it."""
    out = [length(1, b"snapshot")]
    extra = [Layer("loss", "SoftmaxWithLoss", ["fc", "label"], ["loss"])] if not v1 else []
    for layer in [*layers, *extra]:
        blob_mode = "legacy" if v1 and mode == "data" else mode
        blobs = [blob(b, blob_mode) for b in layer.blobs]
        if v1:
            body = length(4, layer.name.encode()) + vint(5, V1_TYPES[layer.type][0])
            body += b"".join(length(6, b) for b in blobs)
            out.append(length(2, body))
        else:
            body = length(1, layer.name.encode()) + length(2, layer.type.encode())
            body += b"".join(length(3, b.encode()) for b in layer.bottom) + b"".join(length(4, t.encode()) for t in layer.top)
            body += b"".join(length(7, b) for b in blobs)
            if nvcaffe:  # NVCaffe >= 0.16 writes forward/backward type and math as varints at 145-148
                body += vint(145, 1) + vint(146, 1) + vint(147, 1) + vint(148, 1)
            out.append(length(100, body))
    return b"".join(out)
