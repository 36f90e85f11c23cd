"""The model card: what a trained model takes and how — a typed, torch-free value.

Training writes it to ``model.json`` in the model's folder; the bundle's ``shoal.json``
carries the same fields at its top level (``architecture``, ``labels``, ``input``,
``normalization``). Sizes are named ``width`` and ``height``; the JSON keeps its layout
(``input.size`` and ``input.dataset_size`` are ``[width, height]``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shoal.data.imageops import check_channels, check_resize_mode, check_size
from shoal.errors import BundleError, ConfigError

MEAN_MODES = ("image", "pixel", "network", "none")
"""What is subtracted from the pixels: the dataset's mean image, its per-channel mean, the
network's own mean, or nothing."""

_REEXPORT = "re-export the bundle with this shoal (shoal export MODEL --out ...)"
_BEFORE_VERDICT = "its bundle was written before shoal had the verdict; re-export it (shoal export MODEL --out ...)"


@dataclass(frozen=True)
class InputSpec:
    """How the model wants its images.

    Attributes:
        width: the network's input width, in pixels.
        height: the network's input height.
        channels: 3 (RGB) or 1 (grayscale).
        resize_mode: how a source image is brought to the dataset size (squash | crop | fill | half).
        dataset_width: the width images are resized to, as the dataset was built.
        dataset_height: the height images are resized to.
        crop: centre-crop the dataset-size image to ``width × height``.
    """

    width: int
    height: int
    channels: int
    resize_mode: str
    dataset_width: int
    dataset_height: int
    crop: bool

    @property
    def channel_order(self) -> str:
        """``"RGB"`` or ``"L"``."""
        return "RGB" if self.channels == 3 else "L"

    @property
    def dataset_wh(self) -> tuple[int, int]:
        """``(width, height)`` of the dataset images, as :func:`shoal.data.imageops.prepare` takes it."""
        return (self.dataset_width, self.dataset_height)

    @property
    def crop_hw(self) -> tuple[int, int] | None:
        """``(height, width)`` of the centre crop, as :mod:`shoal.preprocess` takes it, or ``None``."""
        return (self.height, self.width) if self.crop else None

    @classmethod
    def from_dict(cls, section: Any, where: str) -> InputSpec:
        """Read and check a card's ``input`` section.

        Args:
            section: the ``input`` mapping (``size`` [w, h], ``channels``, ``resize_mode``,
                ``dataset_size`` [w, h], ``crop``).
            where: the file it comes from, for messages.

        Returns:
            The checked :class:`InputSpec`.

        Raises:
            BundleError: a field is missing or has a value shoal cannot use.
        """
        try:
            if not isinstance(section, Mapping):
                raise KeyError("input")
            width, height = check_size(section["size"])
            dataset_width, dataset_height = check_size(section.get("dataset_size", section["size"]))
            spec = cls(width=width, height=height, channels=check_channels(section["channels"]),
                       resize_mode=check_resize_mode(section.get("resize_mode", "squash")),
                       dataset_width=dataset_width, dataset_height=dataset_height,
                       crop=bool(section.get("crop", False)))
        except KeyError as exc:
            raise BundleError(f"the manifest of {where!r} lacks input.{exc.args[0]}; {_REEXPORT}") from None
        except ConfigError as exc:
            raise BundleError(f"the manifest of {where!r} has an unusable input section: {exc}") from None
        if spec.crop and (spec.width > spec.dataset_width or spec.height > spec.dataset_height):
            raise BundleError(f"the manifest of {where!r} crops {spec.width}x{spec.height} out of smaller images "
                              f"{spec.dataset_width}x{spec.dataset_height}; the bundle is damaged")
        return spec

    def to_dict(self) -> dict[str, Any]:
        """The ``input`` section as ``model.json`` and ``shoal.json`` store it."""
        return {"size": [self.width, self.height], "channels": self.channels, "channel_order": self.channel_order,
                "resize_mode": self.resize_mode, "dataset_size": [self.dataset_width, self.dataset_height],
                "crop": self.crop, "layout": "NCHW", "dtype": "float32", "range": [0, 255]}


@dataclass(frozen=True)
class Normalization:
    """``(pixels - mean) * scale``, built into the exported network.

    Attributes:
        mean: one of :data:`MEAN_MODES`.
        mean_shape: ``(C, H, W)`` of the mean image, or ``(C, 1, 1)`` for a per-channel mean.
        values: the per-channel mean (``None`` for a mean image, which lives in the weights).
        scale: the per-channel factor applied after subtracting the mean (1 / std).
    """

    mean: str
    mean_shape: tuple[int, int, int]
    values: tuple[float, ...] | None
    scale: tuple[float, ...]

    @classmethod
    def from_dict(cls, section: Any, where: str, *, channels: int) -> Normalization:
        """Read and check a card's ``normalization`` section.

        Args:
            section: the ``normalization`` mapping (``mean``, ``mean_shape``, ``values``, ``scale``).
            where: the file it comes from, for messages.
            channels: the input's channel count, which ``mean_shape`` and ``scale`` must match.

        Returns:
            The checked :class:`Normalization`.

        Raises:
            BundleError: a field is missing or does not fit the input.
        """
        if not isinstance(section, Mapping):
            raise BundleError(f"the manifest of {where!r} lacks 'normalization'; {_REEXPORT}")
        missing = [k for k in ("mean", "mean_shape", "scale") if k not in section]
        if missing:
            raise BundleError(f"the manifest of {where!r} lacks normalization.{missing[0]}; {_REEXPORT}")
        mean, shape, values, scale = section["mean"], section["mean_shape"], section.get("values"), section["scale"]
        if mean not in MEAN_MODES:
            raise BundleError(f"the manifest of {where!r} has normalization.mean {mean!r}; "
                              f"expected one of {', '.join(MEAN_MODES)}")
        if (not isinstance(shape, list) or len(shape) != 3 or not all(_is_int(n) and n >= 1 for n in shape)
                or shape[0] != channels):
            raise BundleError(f"the manifest of {where!r} has normalization.mean_shape {shape!r}; expected "
                              f"[{channels}, height, width] for {channels} channel(s); the bundle is damaged")
        if not _numbers(scale, channels):
            raise BundleError(f"the manifest of {where!r} has normalization.scale {scale!r}; expected "
                              f"{channels} number(s); the bundle is damaged")
        if values is not None and not _numbers(values, channels):
            raise BundleError(f"the manifest of {where!r} has normalization.values {values!r}; expected "
                              f"{channels} number(s) or null; the bundle is damaged")
        return cls(mean=mean, mean_shape=(shape[0], shape[1], shape[2]),
                   values=None if values is None else tuple(float(v) for v in values),
                   scale=tuple(float(s) for s in scale))

    def to_dict(self) -> dict[str, Any]:
        """The ``normalization`` section as ``model.json`` and ``shoal.json`` store it."""
        return {"mean": self.mean, "mean_shape": list(self.mean_shape),
                "values": None if self.values is None else list(self.values), "scale": list(self.scale)}


@dataclass(frozen=True)
class ModelCard:
    """What a trained model is and takes: architecture, class names, input and normalisation.

    Attributes:
        architecture: the network's name (``shoal.networks.create`` builds it again).
        labels: the class names, in output order.
        input: how images are prepared (:class:`InputSpec`).
        normalization: what the network subtracts and scales (:class:`Normalization`).
    """

    architecture: str
    labels: tuple[str, ...]
    input: InputSpec
    normalization: Normalization

    @classmethod
    def from_dict(cls, data: Any, where: str) -> ModelCard:
        """Read and check a card: ``model.json``, or a bundle's ``shoal.json`` (other keys are ignored).

        Args:
            data: the parsed JSON object.
            where: the file it comes from, for messages.

        Returns:
            The checked :class:`ModelCard`.

        Raises:
            BundleError: a field is missing or has a value shoal cannot use; the message names it.
        """
        if not isinstance(data, Mapping):
            raise BundleError(f"the manifest of {where!r} is not a JSON object; {_REEXPORT}")
        for key in ("architecture", "labels", "input", "normalization"):
            if key not in data:
                raise BundleError(f"the manifest of {where!r} lacks {key!r}")
        architecture, labels = data["architecture"], data["labels"]
        if not isinstance(architecture, str) or not architecture:
            raise BundleError(f"the manifest of {where!r} has architecture {architecture!r}; expected a network name")
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
            raise BundleError(f"the manifest of {where!r} has labels {labels!r}; expected a list of class names")
        spec = InputSpec.from_dict(data["input"], where)
        return cls(architecture=architecture, labels=tuple(labels), input=spec,
                   normalization=Normalization.from_dict(data["normalization"], where, channels=spec.channels))

    def to_dict(self) -> dict[str, Any]:
        """The card as ``model.json`` stores it (and as the top of ``shoal.json``)."""
        return {"architecture": self.architecture, "labels": list(self.labels), "input": self.input.to_dict(),
                "normalization": self.normalization.to_dict()}


@dataclass(frozen=True)
class UnfamiliarSpec:
    """A bundle's ``unfamiliar`` section, checked: the detector's settings, or why it has none.

    The bank itself lives in the ONNX graph (:mod:`shoal.bundle.compose`); this is what the
    manifest says about it.

    Attributes:
        threshold: scores above it are unfamiliar; ``None`` when the bundle has no detector.
        k: the neighbour whose cosine distance is the score (``None`` without a detector).
        reason: why the bundle has no detector (``None`` when it has one).
    """

    threshold: float | None
    k: int | None
    reason: str | None

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], where: str) -> UnfamiliarSpec:
        """Read and check the ``unfamiliar`` section of a bundle's ``shoal.json``.

        No section (a bundle from before the verdict) or one with a ``reason`` and no
        ``threshold`` is a bundle without a detector; a ``threshold`` must be a finite number
        and come with ``k``, an int >= 1.

        Raises:
            BundleError: the section is not an object, or its threshold or k is unusable.
        """
        section = manifest.get("unfamiliar")
        if section is None:
            return cls(threshold=None, k=None, reason=_BEFORE_VERDICT)
        if not isinstance(section, Mapping):
            raise BundleError(f"the manifest of {where!r} has unfamiliar {section!r}; expected an object "
                              f"(the detector's k and threshold, or the reason it has none); {_REEXPORT}")
        if "threshold" not in section:
            reason = str(section["reason"]) if "reason" in section else _BEFORE_VERDICT
            return cls(threshold=None, k=None, reason=reason)
        threshold, k = section["threshold"], section.get("k")
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not math.isfinite(threshold):
            raise BundleError(f"the manifest of {where!r} has unfamiliar.threshold {threshold!r}; expected a number "
                              f"(the score above which an image is unfamiliar); {_REEXPORT}")
        if not _is_int(k) or k < 1:
            raise BundleError(f"the manifest of {where!r} has unfamiliar.k {k!r}; expected an int >= 1 "
                              f"(the neighbour whose distance is the score); {_REEXPORT}")
        return cls(threshold=float(threshold), k=k, reason=None)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _numbers(value: Any, count: int) -> bool:
    return (isinstance(value, list) and len(value) == count
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))
