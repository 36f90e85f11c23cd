"""A bundle as an NVIDIA Triton Inference Server model: ``shoal export NAME --format triton --out DIR``.

DIR is a Triton model repository; the model goes into ``DIR/<name>/``::

    <name>/config.pbtxt    platform onnxruntime_onnx, the graph's inputs and outputs
    <name>/labels.txt      class names (Triton's classification extension reads them)
    <name>/1/model.onnx    the bundle's graph, unchanged

The names, element types and shapes in ``config.pbtxt`` are read from the ONNX graph itself
(through ONNX Runtime, so this needs no torch), never restated from what shoal meant to write:
``pixels`` float32 ``[batch, C, H, W]``; ``probabilities`` float32 ``[batch, classes]``; and when
the bundle has an unfamiliar threshold, ``unfamiliar_score`` float32 and ``unfamiliar`` bool, both
``[batch]``. A graph whose first axis is the batch on every tensor gets Triton's batching
(``max_batch_size``, the batch axis left out of ``dims``, dynamic batching); a ``[batch]``
tensor is ``dims: [ 1 ]`` with ``reshape: { shape: [ ] }``, as Triton asks.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shoal.bundle import LABELS_FILE, ONNX_FILE, Bundle, open_bundle, own_files, replace_folder
from shoal.errors import BundleError

if TYPE_CHECKING:
    from shoal.store import Store

CONFIG_FILE = "config.pbtxt"
VERSION = "1"  # the one model version written
MAX_BATCH_SIZE = 64  # the largest batch Triton's dynamic batcher forms

# ONNX Runtime's element type names -> Triton's data types.
DATA_TYPES = {
    "tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16", "tensor(bfloat16)": "TYPE_BF16",
    "tensor(double)": "TYPE_FP64", "tensor(bool)": "TYPE_BOOL", "tensor(uint8)": "TYPE_UINT8",
    "tensor(int8)": "TYPE_INT8", "tensor(int16)": "TYPE_INT16", "tensor(int32)": "TYPE_INT32",
    "tensor(int64)": "TYPE_INT64", "tensor(string)": "TYPE_STRING",
}


@dataclass(frozen=True)
class Tensor:
    """One input or output of the graph: its name, Triton data type and full shape (-1 = any)."""

    name: str
    data_type: str
    shape: tuple[int, ...]
    batched: bool  # the first axis has no fixed size (the graph's batch axis)


def graph_tensors(onnx_bytes: bytes) -> tuple[list[Tensor], list[Tensor]]:
    """The inputs and outputs of an ONNX graph, as Triton names their types.

    Raises:
        BundleError: the graph cannot be read, or has a tensor type Triton does not serve.
    """
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise BundleError(f"the bundle's ONNX graph cannot be read: {exc}") from exc

    def tensor(arg: object) -> Tensor:
        name, kind, dims = arg.name, arg.type, list(arg.shape)  # type: ignore[attr-defined]
        if kind not in DATA_TYPES:
            raise BundleError(f"the graph's {name!r} is a {kind}, which Triton does not serve")
        shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in dims)
        return Tensor(name, DATA_TYPES[kind], shape, batched=bool(shape) and shape[0] == -1)

    return [tensor(a) for a in session.get_inputs()], [tensor(a) for a in session.get_outputs()]


def model_config(name: str, inputs: list[Tensor], outputs: list[Tensor], *, labels_output: str | None,
                 max_batch_size: int = MAX_BATCH_SIZE) -> str:
    """The ``config.pbtxt`` text of a Triton model serving this graph with ONNX Runtime.

    Batching is Triton's when every tensor's first axis is the batch; otherwise the shapes are
    given whole and ``max_batch_size`` is 0.
    """
    batching = all(t.batched for t in (*inputs, *outputs))

    def entry(t: Tensor) -> str:
        dims = list(t.shape[1:] if batching else t.shape)
        lines = [f'    name: "{t.name}"', f"    data_type: {t.data_type}"]
        if batching and not dims:  # a [batch] tensor: Triton wants one element per request, reshaped away
            lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
        else:
            lines.append(f"    dims: [ {', '.join(str(d) for d in dims)} ]")
        if t.name == labels_output:
            lines.append(f'    label_filename: "{LABELS_FILE}"')
        return "  {\n" + "\n".join(lines) + "\n  }"

    text = [f'name: "{name}"', 'platform: "onnxruntime_onnx"', 'backend: "onnxruntime"',
            f"max_batch_size: {max_batch_size if batching else 0}",
            "input [\n" + ",\n".join(entry(t) for t in inputs) + "\n]",
            "output [\n" + ",\n".join(entry(t) for t in outputs) + "\n]"]
    if batching:
        text.append("dynamic_batching { }")
    return "\n".join(text) + "\n"


def write_repository(bundle: Bundle | str | os.PathLike[str], out: str | os.PathLike[str], *, name: str,
                     max_batch_size: int = MAX_BATCH_SIZE) -> Path:
    """Write ``bundle`` as the Triton model ``name`` into the model repository ``out``.

    ``out/name`` is replaced whole (other models in ``out`` stay); a reader never sees half a model.

    Returns:
        The model's folder, ``out/name``.

    Raises:
        BundleError: ``out/name`` exists and is not a Triton model (replacing it would delete its files).
    """
    target = _model_folder(out, name)
    bundle = bundle if isinstance(bundle, Bundle) else open_bundle(bundle)
    graph = bundle.read(ONNX_FILE)
    inputs, outputs = graph_tensors(graph)
    probabilities = next((t.name for t in outputs if t.name == "probabilities"), None)
    config = model_config(name, inputs, outputs, labels_output=probabilities, max_batch_size=max_batch_size)
    repository = target.parent
    repository.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=repository) as tmp:
        staging = Path(tmp) / name
        (staging / VERSION).mkdir(parents=True)
        (staging / VERSION / ONNX_FILE).write_bytes(graph)
        (staging / LABELS_FILE).write_text("".join(f"{label}\n" for label in bundle.labels), encoding="utf-8")
        (staging / CONFIG_FILE).write_text(config, encoding="utf-8")
        replace_folder(target, staging, aside=Path(tmp) / "old")
    return target


def _model_folder(out: str | os.PathLike[str], name: str) -> Path:
    """``out/name``, once checked to be new, empty or a Triton model (replacing anything else would delete it)."""
    target = Path(out).expanduser() / name
    if target.exists() and not (target.is_dir() and ((target / CONFIG_FILE).is_file() or not own_files(target))):
        raise BundleError(f"{str(target)!r} exists and is not a Triton model (it has no {CONFIG_FILE}): writing "
                          f"model {name!r} there would delete its files; give --out a model repository")
    return target


def export_triton(name: str, *, epoch: int | str = "best", out: str | os.PathLike[str],
                  store: Store | None = None) -> Path:
    """Write model ``name`` (its ``epoch``, as :func:`shoal.bundle.export` would bundle it) into
    the Triton model repository ``out``. Returns the model's folder, ``out/name``."""
    from shoal.bundle import export

    if Path(out).suffix == ".shoal":
        raise BundleError(f"--out {str(out)!r}: a Triton model repository is a folder, not a .shoal file; "
                          "give a folder, e.g. --out models/")
    _model_folder(out, name)  # before the export's work
    with tempfile.TemporaryDirectory(prefix="shoal-triton-") as tmp:
        bundle = export(name, epoch=epoch, store=store, out=Path(tmp) / "bundle")
        return write_repository(bundle, out, name=name)
