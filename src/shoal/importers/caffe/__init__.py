"""Import a Caffe or NVIDIA DIGITS image classifier into the store — no Caffe needed.

:func:`import_caffe` reads a DIGITS job folder or "Download Model" archive, or a deploy
prototxt with its ``.caffemodel``, and makes a model in the store with its bundle
(safetensors, ONNX, manifest), as for a model shoal trained:

1. the files are found (:mod:`.sources`; archives are unpacked with every member checked);
2. the prototxt is parsed (:mod:`.text`), the caffemodel decoded (:mod:`.wire`);
3. the deploy net becomes a declarative layer list (:mod:`.net`), built by
   :class:`shoal.networks.layers.LayerNet` — data, never generated code;
4. the preprocessing DIGITS applied is written into the model card: BGR order (the network
   swaps the RGB pixels it is given), pixels 0..255, the mean image or mean pixel subtracted,
   then ``transform_param.scale``; images are resized to the network input with the job's
   resize mode (``info.json``);
5. the bundle is written and its ONNX graph checked against torch.

An imported model has no training images: its ``unfamiliar`` verdict is null, with the reason.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shoal.bundle.card import InputSpec, ModelCard, Normalization
from shoal.importers.caffe.errors import CaffeError
from shoal.importers.caffe.net import Converted, _included, _layers, _type, convert
from shoal.importers.caffe.sources import ModelFiles, find
from shoal.importers.caffe.text import Message, parse_prototxt
from shoal.importers.caffe.wire import parse_blob, parse_caffemodel

__all__ = ["CaffeError", "Imported", "import_caffe", "read_model"]

NO_UNFAMILIAR = ("it was imported from Caffe without its training images, so there is nothing to compare "
                 "an image with")


@dataclass
class Imported:
    """What an import made.

    Attributes:
        name: the model in the store.
        bundle: its bundle's folder.
        card: its model card.
        notes: what the import decided or skipped (one line each).
        onnx_diff: the largest |ONNX − torch| probability difference on the check images.
    """

    name: str
    bundle: Path
    card: ModelCard
    notes: list[str] = field(default_factory=list)
    onnx_diff: float = 0.0


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CaffeError(f"{path.name} cannot be read as text: {exc}") from None


def read_model(files: ModelFiles, *, input_size: tuple[int, int] | None = None) -> Converted:
    """Parse and convert the deploy net and its weights (no torch).

    Raises:
        CaffeError: anything that cannot be imported faithfully.
    """
    net = parse_prototxt(_read_text(files.deploy), files.deploy.name)
    try:
        data = files.weights.read_bytes()
    except OSError as exc:
        raise CaffeError(f"{files.weights.name} cannot be read: {exc}") from None
    weights = parse_caffemodel(data, files.weights.name)
    return convert(net, weights, where=files.deploy.name, input_size=input_size)


def _labels(path: Path | None, count: int) -> tuple[str, ...]:
    if path is None:
        return tuple(f"class_{i}" for i in range(count))
    lines = _read_text(path).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    if any(not n for n in names):
        raise CaffeError(f"{path.name} has an empty line among its labels (line {names.index('') + 1}); "
                         "one class name per line, in output order")
    if len(names) != count:
        raise CaffeError(f"{path.name} names {len(names)} classes but the network has {count} outputs; give the "
                         "labels file the model was trained with (--labels FILE)")
    return tuple(names)


def _transform(files: ModelFiles) -> Message | None:
    """The TEST-phase Data layer's ``transform_param`` of the train_val net, if there is one."""
    if files.train_val is None:
        return None
    net = parse_prototxt(_read_text(files.train_val), files.train_val.name)
    layers, v1 = _layers(net, files.train_val.name)
    data = [layer for layer in layers if _type(layer, v1) in ("Data", "ImageData")]
    # The one Caffe runs in the TEST phase (by its include/exclude rules), else the first there is.
    chosen = [layer for layer in data if _included(layer, ())] or data
    return chosen[0].message("transform_param") if chosen else None


def _mean_image(path: Path, channels: int, size: tuple[int, int]) -> np.ndarray:
    """A ``mean.binaryproto`` as float32 (C, h, w) at the network size, BGR as stored.

    DIGITS casts the mean image to uint8 and resizes it to the input when the sizes differ.
    """
    try:
        blob = parse_blob(path.read_bytes(), path.name)
    except OSError as exc:
        raise CaffeError(f"{path.name} cannot be read: {exc}") from None
    array = blob.array()
    array = array.reshape(array.shape[-3:]) if array.ndim >= 3 else array
    if array.ndim != 3 or array.shape[0] != channels:
        raise CaffeError(f"{path.name} holds a mean of shape {list(blob.shape)}; the network takes "
                         f"{channels}-channel images")
    width, height = size
    if array.shape[1:] == (height, width):
        return array.astype(np.float32)
    from PIL import Image

    planes = [np.asarray(Image.fromarray(np.clip(np.rint(p), 0, 255).astype(np.uint8)).resize(
        (width, height), Image.Resampling.BILINEAR), np.float32) for p in array]
    return np.stack(planes)


def _parse_mean(value: str | os.PathLike[str] | tuple[float, ...] | list[float], channels: int,
                size: tuple[int, int]) -> tuple[str, np.ndarray]:
    if isinstance(value, (tuple, list)):
        numbers = [float(v) for v in value]
    elif isinstance(value, str) and value.strip().lower() == "none":
        return "none", np.zeros((channels, 1, 1), np.float32)
    elif isinstance(value, str) and not Path(value).expanduser().exists() and "," in value or (
            isinstance(value, str) and _is_number(value)):
        try:
            numbers = [float(v) for v in str(value).split(",")]
        except ValueError:
            raise CaffeError(f"--mean must be a mean file (.binaryproto), 'none', or B,G,R numbers, got {value!r}") from None
    else:
        path = Path(value).expanduser()
        if not path.is_file():
            raise CaffeError(f"--mean must be a mean file (.binaryproto), 'none', or B,G,R numbers; {str(path)!r} "
                             "is not a file")
        return "image", _mean_image(path, channels, size)
    if len(numbers) == 1:
        numbers *= channels
    if len(numbers) != channels:
        raise CaffeError(f"--mean has {len(numbers)} values; the network takes {channels}-channel images "
                         f"(give {'B,G,R' if channels == 3 else 'one value'})")
    return "pixel", np.asarray(numbers, np.float32).reshape(channels, 1, 1)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def preprocessing(files: ModelFiles, converted: Converted, *, mean: Any = None, scale: float | None = None,
                  notes: list[str]) -> tuple[InputSpec, str, np.ndarray, float]:
    """The input spec, the mean mode and mean (BGR, (C, h, w) or (C, 1, 1)) and the scale of an import.

    Raises:
        CaffeError: the mean mode cannot be told, or the mean does not fit the network.
    """
    channels, height, width = converted.input_shape
    transform = _transform(files)
    if mean is not None:
        mode, values = _parse_mean(mean, channels, (width, height))
        notes.append(f"mean: {mode} (given)")
    elif transform is not None and transform.all("mean_value"):
        numbers = transform.floats("mean_value")
        mode, values = _parse_mean(numbers, channels, (width, height))
        notes.append(f"mean: pixel {numbers} (train_val's mean_value)")
    elif transform is not None and "mean_file" in transform:
        named = Path(str(transform.one("mean_file"))).name
        folder = files.folder or files.deploy.parent
        path = folder / named if (folder / named).is_file() else files.mean
        if path is None:
            raise CaffeError(f"the train_val net subtracts the mean file {named!r}, which is not beside the model; "
                             "give it with --mean FILE")
        mode, values = "image", _mean_image(path, channels, (width, height))
        notes.append(f"mean: image ({path.name}, train_val's mean_file)")
    elif transform is not None:
        mode, values = "none", np.zeros((channels, 1, 1), np.float32)
        notes.append("mean: none (train_val's data layer subtracts none)")
    elif files.mean is not None:
        raise CaffeError(f"there is a {files.mean.name} but no train_val.prototxt saying how it was used; give "
                         "--mean FILE (mean image), --mean B,G,R (mean pixel) or --mean none")
    else:
        mode, values = "none", np.zeros((channels, 1, 1), np.float32)
        notes.append("mean: none (no --mean and no train_val.prototxt)")
    if scale is None:
        scale = float(transform.number("scale", 1.0) or 1.0) if transform is not None else 1.0
    if not np.isfinite(scale) or scale <= 0:
        raise CaffeError(f"--scale must be a positive number, got {scale!r}")
    resize = "squash"
    info = files.info or {}
    if isinstance(info.get("image resize mode"), str):
        from shoal.data.imageops import check_resize_mode

        resize = check_resize_mode(info["image resize mode"])
    spec = InputSpec(width=width, height=height, channels=channels, resize_mode=resize, dataset_width=width,
                     dataset_height=height, crop=False)
    return spec, mode, values, scale


def import_caffe(path: str | os.PathLike[str], *, name: str, labels: str | os.PathLike[str] | None = None,
                 mean: Any = None, scale: float | None = None, input_size: tuple[int, int] | None = None,
                 store: Any = None) -> Imported:
    """Import a Caffe or DIGITS classifier as a model in the store, with its bundle.

    Args:
        path: a DIGITS job folder or "Download Model" archive (.tar.gz, .zip...), a deploy
            ``.prototxt`` with its ``.caffemodel`` beside it, or the ``.caffemodel``.
        name: the model's name in the store.
        labels: a labels file (one class a line, output order); default the model's ``labels.txt``,
            else ``class_0``, ``class_1``...
        mean: a mean file (``.binaryproto``), ``"none"``, or the mean pixel ``"B,G,R"`` / a sequence, in
            BGR order as Caffe stores it; default what the train_val net's data layer subtracted.
        scale: the factor applied after the mean; default the train_val's ``transform_param.scale`` or 1.
        input_size: ``(width, height)`` of the network input when the prototxt does not say (Data layers).
        store: the store; default ``SHOAL_HOME``.

    Returns:
        The :class:`Imported` model.

    Raises:
        CaffeError: what cannot be imported faithfully (one line: what and why).
        AlreadyExistsError: the name is taken.

    Example:
        >>> import shoal  # doctest: +SKIP
        >>> shoal.import_caffe("20170301-120000-ab12_epoch_30.tar.gz", name="flowers")  # doctest: +SKIP
    """
    from shoal.store import Store, check_name

    store = store or Store()
    check_name(name, "model")
    if store.exists("model", name):
        from shoal.errors import AlreadyExistsError

        raise AlreadyExistsError(f"model {name!r} already exists; choose another --name, or delete it first "
                                 f"(shoal model delete {name})")
    with tempfile.TemporaryDirectory(prefix="shoal-caffe-") as work:
        files = find(Path(path), Path(work) / "unpacked")
        converted = read_model(files, input_size=input_size)
        notes = list(converted.notes)
        class_names = _labels(Path(labels).expanduser() if labels is not None else files.labels,
                              converted.num_outputs)
        spec, mode, values, factor = preprocessing(files, converted, mean=mean, scale=scale, notes=notes)
        return _store_model(store, name, files, converted, class_names, spec, mode, values, factor, notes)


def _store_model(store: Any, name: str, files: ModelFiles, converted: Converted, labels: tuple[str, ...],
                 spec: InputSpec, mode: str, mean_bgr: np.ndarray, scale: float, notes: list[str]) -> Imported:
    from shoal.importers.caffe.bundle import write_bundle
    from shoal.models import ModelFolder
    from shoal.networks.layers import architecture

    channels = spec.channels
    flip = channels == 3
    mean_rgb = mean_bgr[::-1].copy() if flip else mean_bgr
    pixel = mean_rgb.reshape(channels, -1).mean(axis=1)
    layer_spec = {**converted.spec, "mean": [float(v) for v in pixel], "std": [1.0 / scale] * channels}
    arch = architecture(layer_spec)
    normalization = Normalization(
        mean=mode, mean_shape=tuple(int(d) for d in mean_rgb.shape),  # type: ignore[arg-type]
        values=None if mode == "image" else tuple(float(v) for v in mean_rgb.flatten()),
        scale=(float(scale),) * channels)
    card = ModelCard(architecture=arch, labels=labels, input=spec, normalization=normalization)
    source = {"framework": "caffe", "deploy": files.deploy.name, "weights": files.weights.name,
              "mean": files.mean.name if files.mean else None, "labels": files.labels.name if files.labels else None,
              "train_val": files.train_val.name if files.train_val else None,
              "digits": {k: files.info.get(k) for k in ("job id", "digits version", "caffe flavor", "caffe version",
                                                          "image dimensions", "image resize mode")
                         if k in files.info} if files.info else None,
              "channel_order": "BGR" if flip else "L", "mean_mode": mode, "scale": scale,
              "imported": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    config = {"imported": source, "network": converted.spec.get("name"), "notes": notes}
    summary: dict[str, Any] = {"imported": "caffe", "classes": len(labels), "network": converted.spec.get("name")}
    with store.staging("model", name, summary=summary) as tmp:
        folder = ModelFolder(Path(tmp))
        folder.write_card(card)
        folder.write_config(config)
        diff = write_bundle(folder.bundle_path, name, card, converted.tensors, mean_rgb, config)
    final = ModelFolder.of(name, store=store)
    return Imported(name, final.bundle_path, card, notes, diff)
