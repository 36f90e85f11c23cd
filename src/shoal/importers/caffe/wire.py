"""Reading Caffe's binary files (``.caffemodel``, ``.binaryproto``) with a protobuf wire decoder of our own.

Only what an import needs is read: the layers of a ``NetParameter`` (V2 ``layer`` = field 100,
V1 ``layers`` = field 2, V0 detected and refused) with their names, types and parameter blobs,
and ``BlobProto`` (``data``, ``double_data``, NVCaffe's ``raw_data`` in FLOAT/FLOAT16/DOUBLE,
the legacy 4-D shape or ``shape.dim``). Every other field, known or not — NVCaffe writes varints
at 145–148 where BVLC declares messages — is skipped by its wire type, never by the schema.

Field numbers: BVLC ``src/caffe/proto/caffe.proto`` and NVCaffe's (see docs in
``shared/research/caffe.md`` §1). NumPy only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from shoal.importers.caffe.errors import CaffeError

# wire types
VARINT, FIXED64, BYTES, FIXED32 = 0, 1, 2, 5

V1_LAYER_TYPES = {
    0: "", 1: "Accuracy", 2: "BNLL", 3: "Concat", 4: "Convolution", 5: "Data", 6: "Dropout",
    7: "EuclideanLoss", 8: "Flatten", 9: "HDF5Data", 10: "HDF5Output", 11: "Im2col", 12: "ImageData",
    13: "InfogainLoss", 14: "InnerProduct", 15: "LRN", 16: "MultinomialLogisticLoss", 17: "Pooling",
    18: "ReLU", 19: "Sigmoid", 20: "Softmax", 21: "SoftmaxWithLoss", 22: "Split", 23: "TanH",
    24: "WindowData", 25: "Eltwise", 26: "Power", 27: "SigmoidCrossEntropyLoss", 28: "HingeLoss",
    29: "MemoryData", 30: "ArgMax", 31: "Threshold", 32: "DummyData", 33: "Slice", 34: "MVN",
    35: "AbsVal", 36: "Silence", 37: "ContrastiveLoss", 38: "Exp", 39: "Deconvolution",
}
"""V1 ``LayerType`` enum → the V2 type string (Caffe's ``UpgradeV1LayerType``)."""

RAW_TYPES = {0: ("DOUBLE", "<f8"), 1: ("FLOAT", "<f4"), 2: ("FLOAT16", "<f2"),
             3: ("INT", None), 4: ("UINT", None), 5: ("BOOL", None)}
"""NVCaffe's ``Type`` enum for ``BlobProto.raw_data_type``; only the float kinds are weights."""


def read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """Decode one varint at ``pos``; return ``(value, next position)``.

    >>> read_varint(memoryview(bytes([0xAC, 0x02])), 0)
    (300, 2)
    """
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CaffeError("the file ends inside a number: it is truncated or not a Caffe file")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CaffeError("a number in the file is longer than 10 bytes: it is damaged or not a Caffe file")


def signed(value: int) -> int:
    """A varint read as two's-complement int64 (``int32`` negatives are written as 10 bytes)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """Yield ``(field number, wire type, value)`` of one message: an int for varints and fixed
    numbers (their raw bits), a memoryview for length-delimited records.

    Raises:
        CaffeError: groups (wire types 3/4), an unknown wire type, or a record running past the end.
    """
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise CaffeError("the file has a field numbered 0: it is damaged or not a Caffe file")
        if wire == VARINT:
            value, pos = read_varint(buf, pos)
            yield number, wire, value
        elif wire == BYTES:
            size, pos = read_varint(buf, pos)
            if pos + size > end:
                raise CaffeError("a record runs past the end of the file: it is truncated or not a Caffe file")
            yield number, wire, buf[pos : pos + size]
            pos += size
        elif wire == FIXED32:
            if pos + 4 > end:
                raise CaffeError("the file ends inside a number: it is truncated")
            yield number, wire, int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        elif wire == FIXED64:
            if pos + 8 > end:
                raise CaffeError("the file ends inside a number: it is truncated")
            yield number, wire, int.from_bytes(buf[pos : pos + 8], "little")
            pos += 8
        else:
            raise CaffeError(f"the file uses protobuf wire type {wire} (groups), which Caffe never writes: "
                             "it is damaged or not a Caffe file")


def _string(value: int | memoryview) -> str:
    if not isinstance(value, memoryview):
        raise CaffeError("a name field holds a number: the file is damaged or not a Caffe file")
    return bytes(value).decode("utf-8", errors="replace")


def _floats(chunks: list[tuple[int, int | memoryview]], dtype: str) -> np.ndarray:
    """Concatenate packed records and unpacked fixed-width values of a repeated float/double field."""
    width = np.dtype(dtype).itemsize
    parts = []
    for wire, value in chunks:
        if isinstance(value, memoryview):
            if len(value) % width:
                raise CaffeError(f"a packed array of {len(value)} bytes is not a whole number of {width}-byte values")
            parts.append(np.frombuffer(value, dtype))
        else:
            parts.append(np.frombuffer(int(value).to_bytes(width, "little"), dtype))
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def _ints(chunks: list[tuple[int, int | memoryview]]) -> list[int]:
    """A repeated integer field, packed or not."""
    out: list[int] = []
    for wire, value in chunks:
        if isinstance(value, memoryview):
            pos = 0
            while pos < len(value):
                item, pos = read_varint(value, pos)
                out.append(signed(item))
        else:
            out.append(signed(int(value)))
    return out


@dataclass
class Blob:
    """One ``BlobProto``: float32 values and their shape as written (legacy 4-D or N-D)."""

    data: np.ndarray
    shape: tuple[int, ...]
    source: str = "data"  # which field held the values: data, double_data, raw_data FLOAT/FLOAT16/DOUBLE

    def array(self) -> np.ndarray:
        """The values shaped as written."""
        return self.data.reshape(self.shape)


def parse_blob(buf: memoryview | bytes, where: str = "blob") -> Blob:
    """Decode a ``BlobProto`` (a parameter blob, or a whole ``mean.binaryproto``).

    Values come from ``double_data`` if present, else ``data``, else NVCaffe's ``raw_data`` with its
    ``raw_data_type``; the shape from the legacy num/channels/height/width when any of them is
    present, else ``shape.dim`` (Caffe's ``Blob::FromProto``).

    Raises:
        CaffeError: no values, a raw type that is not a float, or a count that does not fit the shape.
    """
    buf = memoryview(buf)
    legacy: dict[int, int] = {}
    data: list[tuple[int, int | memoryview]] = []
    double: list[tuple[int, int | memoryview]] = []
    dims: list[int] | None = None
    raw: memoryview | None = None
    raw_type: int | None = None
    for number, wire, value in fields(buf):
        if number in (1, 2, 3, 4) and wire == VARINT:
            legacy[number] = signed(int(value))
        elif number == 5:
            data.append((wire, value))
        elif number == 8:
            double.append((wire, value))
        elif number == 7 and isinstance(value, memoryview):
            dims = []
            for sub, sub_wire, sub_value in fields(value):
                if sub == 1:
                    dims += _ints([(sub_wire, sub_value)])
        elif number == 10 and wire == VARINT:
            raw_type = int(value)
        elif number == 12 and isinstance(value, memoryview):
            raw = value
    if legacy:
        shape = tuple(legacy.get(i, 0) for i in (1, 2, 3, 4))
    else:
        shape = tuple(dims or ())
    if double:
        values, source = _floats(double, "<f8"), "double_data"
    elif data:
        values, source = _floats(data, "<f4"), "data"
    elif raw is not None:
        kind, dtype = RAW_TYPES.get(raw_type if raw_type is not None else 1, (str(raw_type), None))
        if dtype is None:
            raise CaffeError(f"{where} stores its values as raw_data of type {kind}; only FLOAT, FLOAT16 and "
                             "DOUBLE are weights shoal can read")
        width = np.dtype(dtype).itemsize
        if len(raw) % width:
            raise CaffeError(f"{where} has {len(raw)} bytes of {kind} raw_data, not a whole number of values")
        values, source = np.frombuffer(raw, dtype).astype(np.float32), f"raw_data {kind}"
    else:
        raise CaffeError(f"{where} has no values (neither data, double_data nor raw_data)")
    expected = int(np.prod(shape)) if shape else len(values)
    if expected != len(values):
        raise CaffeError(f"{where} has {len(values)} values but its shape {list(shape)} holds {expected}; "
                         "the file is damaged")
    return Blob(values, shape or (len(values),), source)


@dataclass
class LayerWeights:
    """A trained layer of a caffemodel: its name, type and parameter blobs."""

    name: str
    type: str
    blobs: list[Blob] = field(default_factory=list)


def parse_caffemodel(data: bytes, where: str = "the caffemodel") -> dict[str, LayerWeights]:
    """Decode a ``.caffemodel`` (a binary ``NetParameter``): the layers that carry blobs, by name.

    V2 (``layer``) and V1 (``layers``) nets are read; a V0 net (a ``layers`` entry holding a
    ``layer`` sub-message) and a net with both lists are refused, as Caffe refuses them.

    Raises:
        CaffeError: HDF5 weights, V0 or mixed nets, or a damaged file.
    """
    if data[:4] == b"\x89HDF":
        raise CaffeError(f"{where} holds HDF5 weights (.caffemodel.h5); shoal reads the protobuf .caffemodel "
                         "only — snapshot the model without snapshot_format: HDF5")
    buf = memoryview(data)
    found: dict[str, LayerWeights] = {}
    kinds = set()
    for number, _wire, value in fields(buf):
        if number in (2, 100) and isinstance(value, memoryview):
            kinds.add(number)
            layer = _parse_layer(value, v1=number == 2, where=where)
            if layer.name in found and found[layer.name].blobs and layer.blobs:
                raise CaffeError(f"{where} has two layers named {layer.name!r} with weights; Caffe matches "
                                 "weights by layer name, so it is ambiguous")
            if layer.blobs or layer.name not in found:
                found[layer.name] = layer
    if kinds == {2, 100}:
        raise CaffeError(f"{where} has both 'layer' and 'layers' lists; Caffe refuses such a net too")
    if not kinds:
        raise CaffeError(f"{where} holds no layers: it is not a Caffe model (or it is empty)")
    return found


def _parse_layer(buf: memoryview, *, v1: bool, where: str) -> LayerWeights:
    name, kind, blobs = "", "", []
    name_field, type_field, blobs_field = (4, 5, 6) if v1 else (1, 2, 7)
    for number, _wire, value in fields(buf):
        if v1 and number == 1 and isinstance(value, memoryview):
            raise CaffeError(f"{where} is a V0 net (from before March 2014); upgrade it with Caffe's "
                             "upgrade_net_proto_binary tool first — shoal reads V1 and V2 nets")
        if number == name_field:
            name = _string(value)
        elif number == type_field:
            kind = V1_LAYER_TYPES.get(int(value), f"V1 type {value}") if v1 else _string(value)
        elif number == blobs_field and isinstance(value, memoryview):
            blobs.append(value)
    return LayerWeights(name, kind, [parse_blob(b, f"blob {i} of layer {name!r} in {where}")
                                     for i, b in enumerate(blobs)])
