"""``load()`` and :class:`Classifier`: a bundle ready to classify images.

An image becomes network input exactly as the model's validation images did while it
trained (the manifest records how):

1. :func:`shoal.data.imageops.prepare` decodes and resizes it to the dataset size with the
   dataset's resize mode and channels — the very function that built the dataset;
2. :func:`shoal.preprocess.to_network_input` centre-crops it to the input size when the
   model trained on crops, and lays it out as float32 ``N×C×H×W`` pixels 0..255.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shoal.bundle import Bundle, InputSpec, open_bundle
from shoal.bundle.card import UnfamiliarSpec
from shoal.data.imageops import ImageError, prepare
from shoal.config import check_int
from shoal.errors import BundleError, ConfigError, InputError
from shoal.inference import runtimes, sources
from shoal.machine import usable_cores
from shoal.preprocess import centre_crop, to_network_input

DEFAULT_BATCH_SIZE = 32
_Output = tuple[np.ndarray, "float | None"]  # one image's probabilities and unfamiliar score


@dataclass(frozen=True)
class Result:
    """What the model says about one input.

    Attributes:
        source: the input: its path or URL as given, ``<array>``, ``<bytes>``, ``<PIL image>``
            (with its index in a list), or a video's name.
        predictions: ``(label, probability)`` pairs, most probable first.
        error: why the input could not be classified (then ``predictions`` is empty).
        frame: for video, the frame's index.
        time_s: for video files, the frame's time in seconds.
        unfamiliar: whether the image looks like none of the training images (its probabilities
            then say little); ``None`` when the model cannot tell (see ``unfamiliar_reason``).
        unfamiliar_score: the cosine distance to the k-th nearest training image (0 = identical);
            above the model's threshold the image is unfamiliar.
        unfamiliar_reason: why ``unfamiliar`` is ``None``.
    """

    source: str
    predictions: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None
    frame: int | None = None
    time_s: float | None = None
    unfamiliar: bool | None = None
    unfamiliar_score: float | None = None
    unfamiliar_reason: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the input was classified."""
        return self.error is None

    @property
    def label(self) -> str | None:
        """The most probable class (``None`` after an error)."""
        return self.predictions[0][0] if self.predictions else None

    @property
    def probability(self) -> float | None:
        """The probability of :attr:`label`."""
        return self.predictions[0][1] if self.predictions else None

    def to_dict(self) -> dict[str, Any]:
        """``{"source", "predictions": [{"label", "probability"}, ...], "unfamiliar", "unfamiliar_score"}``
        (+ ``unfamiliar_reason``, ``error``, ``frame``, ``time_s`` when set)."""
        out: dict[str, Any] = {"source": self.source,
                               "predictions": [{"label": label, "probability": p} for label, p in self.predictions]}
        if self.error is not None:
            out["error"] = self.error
        else:
            out["unfamiliar"], out["unfamiliar_score"] = self.unfamiliar, self.unfamiliar_score
            if self.unfamiliar_reason is not None:
                out["unfamiliar_reason"] = self.unfamiliar_reason
        if self.frame is not None:
            out["frame"] = self.frame
        if self.time_s is not None:
            out["time_s"] = self.time_s
        return out


@dataclass(frozen=True)
class Heatmap:
    """A Grad-CAM heat-map of one image for one class.

    Attributes:
        source: the image.
        label: the class explained.
        probability: the model's probability for it.
        heat: float32 ``H×W`` in 0..1 over the network's input (1 = most important).
        pixels: uint8 ``H×W×C``: the network's input as an image.
        image: the overlay of ``heat`` on ``pixels`` (a PIL image).
    """

    source: str
    label: str
    probability: float
    heat: np.ndarray = field(repr=False)
    pixels: np.ndarray = field(repr=False)
    image: Any = field(repr=False)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the overlay (PNG, JPEG... by the file's extension); return the path."""
        out = Path(path)
        self.image.save(out)
        return out


class Classifier:
    """A trained model, ready to classify images. Make one with :func:`load`.

    Attributes:
        path: the bundle's folder or ``.shoal`` file.
        manifest: the bundle's ``shoal.json``.
        card: its :class:`~shoal.bundle.ModelCard` (architecture, labels, input, normalisation).
        labels: the class names, in the model's output order.
        input: how images are prepared (:class:`InputSpec`).
        runtime: the engine (``runtime.name`` is ``"onnx"`` or ``"torch"``).
        trust_code: whether :meth:`heatmap` and :meth:`layers` may rebuild a network defined
            by a ``.py`` file (that runs the file; see :func:`load`).
    """

    def __init__(self, bundle: Bundle, runtime: runtimes.Runtime, *, threads: int | None = None,
                 trust_code: bool = False) -> None:
        self.path = bundle.path
        self.manifest = bundle.manifest
        self.card = bundle.card
        self.labels = bundle.labels
        self.input: InputSpec = bundle.card.input
        self.runtime = runtime
        self.threads = threads or usable_cores()
        self.trust_code = trust_code
        self._bundle = bundle
        self._torch: runtimes.TorchRuntime | None = None  # built on first use of heatmap()/layers()
        unfamiliar = UnfamiliarSpec.from_manifest(bundle.manifest, str(bundle.path))
        self.unfamiliar_threshold: float | None = unfamiliar.threshold
        self.unfamiliar_reason: str | None = (
            None if unfamiliar.reason is None else f"the model cannot tell: {unfamiliar.reason}")

    def __repr__(self) -> str:
        return (f"Classifier({str(self.path)!r}, architecture={self.card.architecture!r}, "
                f"labels={len(self.labels)}, runtime={self.runtime.name!r})")

    # -- preprocessing ----------------------------------------------------------------------------
    def prepare(self, source: Any) -> np.ndarray:
        """Decode and resize one image to the dataset size: uint8 ``H×W×C``, as the dataset stored it.

        Args:
            source: a path, bytes, PIL image or RGB NumPy array (not a URL: see :meth:`predict`).

        Raises:
            InputError: the image cannot be decoded (the message says why).
        """
        return prepare(source, self.input.dataset_wh, self.input.resize_mode, self.input.channels)

    def network_input(self, images: list[np.ndarray]) -> np.ndarray:
        """Stack prepared images into the network's float32 ``N×C×H×W`` input (centre-cropped if trained so)."""
        return to_network_input(images, self.input.crop_hw)

    # -- prediction -------------------------------------------------------------------------------
    def predict(self, x: Any, top: int | None = 5, *, bgr: bool = False,
                batch_size: int = DEFAULT_BATCH_SIZE) -> Result | list[Result]:
        """Classify one image or many.

        Args:
            x: a path, an http(s) URL (50 MiB at most, 15 s timeout), bytes, an open binary file,
                a PIL image or a NumPy array (uint8 ``H×W×3`` RGB, ``H×W`` gray, ``H×W×4`` RGBA) — or a
                folder (every image in it, recursively, sorted), a list of any of these, or an
                ``N×H×W×C`` array.
            top: how many classes to return per image, most probable first; ``None`` = all.
            bgr: NumPy arrays are BGR(A), as OpenCV gives them.
            batch_size: images per run of the network.

        Returns:
            One :class:`Result` for a single image; a list of them, in input order, for a list,
            a folder or a batch array. In a list, an input that cannot be read gets a result with
            ``error`` set and no predictions, and the others are still classified.

        Raises:
            InputError: a single input cannot be read or classified.
            ConfigError: ``top`` or ``batch_size`` is not an int >= 1.
        """
        top = self._check_top(top)
        items, single = sources.expand(x, bgr=bgr)
        results = [self._result(item, out, error, top) for item, out, error in self._run(items, batch_size)]
        if single:
            if results[0].error is not None:
                raise InputError(results[0].error)
            return results[0]
        return results

    def predict_iter(self, x: Any, top: int | None = 5, *, bgr: bool = False,
                     batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[Result]:
        """Like :meth:`predict` for many images, but yield each result as soon as its batch has run.

        Memory stays bounded by two batches, so this suits folders of any size. An input that
        cannot be read yields a result with ``error`` set, even when it is the only one.

        Raises:
            ConfigError: ``top`` or ``batch_size`` is not an int >= 1.
        """
        top = self._check_top(top)
        items, _ = sources.expand(x, bgr=bgr, strict=False)
        for item, out, error in self._run(items, batch_size):
            yield self._result(item, out, error, top)

    def predict_proba(self, x: Any, *, bgr: bool = False, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Class probabilities, one row per image in input order, columns in :attr:`labels` order.

        Args:
            x: what :meth:`predict` takes; a single image gives one row.
            bgr: NumPy arrays are BGR(A).
            batch_size: images per run of the network.

        Returns:
            float32 array ``N×len(labels)``.

        Raises:
            InputError: any input cannot be read (the message names it).
        """
        items, _ = sources.expand(x, bgr=bgr)
        rows = []
        for _item, out, error in self._run(items, batch_size):
            if error is not None or out is None:
                raise InputError(str(error))
            rows.append(out[0])
        return np.stack(rows) if rows else np.zeros((0, len(self.labels)), np.float32)

    def predict_video(self, source: str | int, top: int | None = 5, *, every: int = 1,
                      batch_size: int = 8) -> Iterator[Result]:
        """Classify every ``every``-th frame of a video file or camera (needs ``shoal[video]``).

        Args:
            source: a video file's path, or a camera index (``0``, or ``"0"``).
            top: classes per frame.
            every: classify frames 0, every, 2·every, ...
            batch_size: frames per run of the network for files (a camera runs frame by frame).

        Yields:
            A :class:`Result` per classified frame, with ``frame`` (and ``time_s`` for files) set.

        Raises:
            VideoError: OpenCV is not installed, or the video or camera cannot be opened.
        """
        from shoal.inference.video import classify_video

        return classify_video(self, source, every=every, top=top, batch_size=batch_size)

    # -- looking inside (torch) ----------------------------------------------------------------------
    def heatmap(self, x: Any, target: str | int | None = None, *, bgr: bool = False) -> Heatmap:
        """Grad-CAM: where the network looked to score one class on one image (needs ``shoal[train]``).

        Args:
            x: one image (anything :meth:`predict` takes for a single image).
            target: the class to explain, by label or index; ``None`` = the top class.
            bgr: a NumPy array is BGR.

        Returns:
            A :class:`Heatmap`; ``heatmap.image`` is the overlay, ``heatmap.save(path)`` writes it.

        Raises:
            InputError: the image cannot be read. ConfigError: unknown ``target``, or torch missing.
            CodeNotAllowedError: the network is a ``.py`` file and the model was loaded without
                ``trust_code=True``.
        """
        from shoal.inference.explain import grad_cam, overlay

        source, pixels = self._one(x, bgr=bgr)
        index = self._class_index(target)
        engine = self._torch_runtime()
        heat, index, probs = grad_cam(engine.model, self.network_input([pixels]), index)
        view = self.network_view(pixels)
        return Heatmap(source, self.labels[index], float(probs[index]), heat, view, overlay(view, heat))

    def layers(self, x: Any, *, bgr: bool = False) -> Any:
        """Every layer's output statistics and activation images for one image (needs ``shoal[train]``).

        Returns:
            A :class:`~shoal.inference.explain.LayerReport`; write it with
            :func:`~shoal.inference.explain.write_layers_html`.
        """
        from shoal.inference.explain import layer_stats

        source, pixels = self._one(x, bgr=bgr)
        engine = self._torch_runtime()
        return layer_stats(engine.model, self.network_input([pixels]), source=source,
                           architecture=self.card.architecture, labels=self.labels)

    def network_view(self, pixels: np.ndarray) -> np.ndarray:
        """The part of prepared pixels (uint8 ``H×W×C``) the network sees: the centre crop, if any."""
        crop = self.input.crop_hw
        if crop is None:
            return pixels
        return np.ascontiguousarray(centre_crop(pixels.transpose(2, 0, 1), crop).transpose(1, 2, 0))

    def _one(self, x: Any, *, bgr: bool) -> tuple[str, np.ndarray]:
        items, single = sources.expand(x, bgr=bgr)
        if not single or len(items) != 1:
            raise InputError("give one image here (a path, URL, bytes, PIL image or array), not a list or folder")
        loaded = self._load(items[0])
        if isinstance(loaded, str):
            raise InputError(loaded)
        return items[0].source, loaded

    def _class_index(self, target: str | int | None) -> int | None:
        if target is None:
            return None
        if isinstance(target, str) and target in self.labels:
            return self.labels.index(target)
        if isinstance(target, (int, np.integer)) and not isinstance(target, bool) and 0 <= target < len(self.labels):
            return int(target)
        raise ConfigError(f"target must be one of the model's classes ({', '.join(self.labels)}) or an index "
                          f"0..{len(self.labels) - 1}, got {target!r}")

    def _torch_runtime(self) -> runtimes.TorchRuntime:
        if isinstance(self.runtime, runtimes.TorchRuntime):
            return self.runtime
        if self._torch is None:
            self._torch = runtimes.TorchRuntime(self._bundle, device="cpu", trust_code=self.trust_code)
        return self._torch

    def _check_top(self, top: int | None) -> int:
        if top is None:
            return len(self.labels)
        if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
            raise ConfigError(f"top must be an int >= 1 (or None for all {len(self.labels)} classes), got {top!r}")
        return min(int(top), len(self.labels))

    def _result(self, item: sources.Item, out: _Output | None, error: str | None, top: int) -> Result:
        if error is not None or out is None:
            return Result(item.source, [], error)
        probs, score = out
        order = np.argsort(-probs, kind="stable")[:top]
        predictions = [(self.labels[i], float(probs[i])) for i in order]
        if score is None or self.unfamiliar_threshold is None:
            return Result(item.source, predictions, unfamiliar_reason=self.unfamiliar_reason)
        return Result(item.source, predictions, unfamiliar=bool(score > self.unfamiliar_threshold),
                      unfamiliar_score=float(score))

    def _load(self, item: sources.Item) -> np.ndarray | str:
        """The item's prepared pixels, or the error message that says why it cannot be read."""
        try:
            return self.prepare(sources.fetch(item))
        except ImageError as exc:  # its own label is <bytes>/<array>; name the item as results do
            return f"cannot read image {item.source}: {exc.reason}"
        except InputError as exc:
            return str(exc)

    def _run(self, items: list[sources.Item], batch_size: int) -> Iterator[tuple[sources.Item, _Output | None, str | None]]:
        """Yield ``(item, (probabilities, unfamiliar score), error)`` in order; the next batch loads while one runs."""
        check_int("batch_size", batch_size, minimum=1)
        chunks = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
        if len(items) <= 1:
            for chunk in chunks:
                yield from self._classify(chunk, [self._load(item) for item in chunk])
            return
        with ThreadPoolExecutor(max_workers=min(self.threads, len(items)), thread_name_prefix="shoal-load") as pool:
            pending: list[Future[np.ndarray | str]] = [pool.submit(self._load, item) for item in chunks[0]]
            for index, chunk in enumerate(chunks):
                loaded = [f.result() for f in pending]
                if index + 1 < len(chunks):
                    pending = [pool.submit(self._load, item) for item in chunks[index + 1]]
                yield from self._classify(chunk, loaded)

    def _classify(self, chunk: list[sources.Item], loaded: list[np.ndarray | str]
                  ) -> Iterator[tuple[sources.Item, _Output | None, str | None]]:
        good = [pixels for pixels in loaded if isinstance(pixels, np.ndarray)]
        probs, scores = self.runtime.run(self.network_input(good)) if good else (np.zeros((0, 0)), None)
        outputs = iter(zip(probs, scores if scores is not None else [None] * len(probs)))
        for item, pixels in zip(chunk, loaded):
            if isinstance(pixels, np.ndarray):
                yield item, next(outputs), None
            else:
                yield item, None, pixels


def resolve(model: str | os.PathLike[str]) -> Path:
    """Find a bundle from a path or the name of a model in the store.

    Args:
        model: a bundle folder, a ``.shoal`` file, or a model name (its bundle in ``SHOAL_HOME``).

    Returns:
        The bundle's path.

    Raises:
        BundleError: nothing of that name, or the model has no bundle yet.
    """
    path = Path(model).expanduser()
    if path.exists() or not isinstance(model, str) or os.sep in model or model.endswith(".shoal"):
        return path
    from shoal.models import ModelFolder, status
    from shoal.store import Store, check_name

    store = Store()
    try:
        check_name(model, "model")
    except ConfigError:
        return path
    if not store.db_path.exists() or not store.exists("model", model):
        known = [e.name for e in store.list("model")] if store.db_path.exists() else []
        hint = f" (trained models: {', '.join(known)})" if known else " (no trained models in the store yet)"
        raise BundleError(f"no model bundle at {model!r} and no model of that name in {store.home}{hint}: "
                          "give a bundle folder, a .shoal file, or a model name from 'shoal model list'")
    folder = ModelFolder.of(model, store=store)
    if not folder.has_bundle():
        raise BundleError(f"model {model!r} has no bundle yet (status {status(model, store=store).status}): "
                          "wait for training to end, "
                          f"or write one from a snapshot with 'shoal export {model} --epoch last --out {model}.shoal'")
    return folder.bundle_path


def load(path: str | os.PathLike[str], *, runtime: str = "onnx", threads: int | None = None,
         device: str = "auto", trust_code: bool = False) -> Classifier:
    """Load a model bundle for classification.

    Args:
        path: a bundle folder, a ``.shoal`` file, or the name of a trained model in the store.
        runtime: ``"onnx"`` (default: ONNX Runtime, never imports torch) or ``"torch"`` (rebuilds
            the network in PyTorch: GPUs, heat-maps; needs ``shoal[train]``).
        threads: CPU threads for the network and for loading images; ``None`` = all usable cores.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps`` (ONNX Runtime: CPU unless ``cuda``).
        trust_code: a bundle is data, but one whose network is a user's ``.py`` file (its
            ``architecture`` is ``file:...`` or ends in ``.py``) is rebuilt in torch by running that
            file. Only ``trust_code=True`` allows it, for ``runtime="torch"``, :meth:`Classifier.heatmap`
            and :meth:`Classifier.layers`; the ONNX runtime never runs code.

    Returns:
        The :class:`Classifier`.

    Raises:
        BundleError: no bundle there, or it is damaged or from a newer shoal.
        ConfigError: an unknown runtime or device, or ``threads`` < 1.
        CodeNotAllowedError: ``runtime="torch"`` on a bundle whose network is a ``.py`` file,
            without ``trust_code=True``.

    Example:
        >>> import shoal  # doctest: +SKIP
        >>> model = shoal.load("dolphins.shoal")  # doctest: +SKIP
        >>> model.predict("dolphin1.jpg").label  # doctest: +SKIP
        'dolphin'
    """
    runtimes.check_threads(threads)
    bundle = open_bundle(resolve(path))  # checks the model card before an engine starts
    engine = runtimes.create(bundle, runtime, threads=threads, device=device, trust_code=trust_code)
    return Classifier(bundle, engine, threads=threads, trust_code=trust_code)
