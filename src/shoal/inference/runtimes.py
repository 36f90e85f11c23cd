"""The engines that turn a batch of network input into class probabilities.

Both take float32 ``N×C×H×W`` pixels 0..255 (normalisation is inside the model) and return
float32 ``N×classes`` softmax probabilities; ``run()`` also returns the unfamiliar scores
(:mod:`shoal.bundle.unfamiliar`) where the bundle has a detector.

* :class:`OnnxRuntime` (the default) runs the bundle's ``model.onnx`` with ONNX Runtime:
  no torch import, fast to start, fast on CPU.
* :class:`TorchRuntime` rebuilds the network from ``model.safetensors`` and the manifest
  (needs the ``train`` extra): for GPUs, and for looking inside the network (heat-maps).
  A bundle whose network is a user's ``.py`` file is rebuilt only with ``trust_code=True``
  (building it runs that file; see :mod:`shoal.trust`).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from shoal.bundle import ONNX_FILE, WEIGHTS_FILE, Bundle
from shoal.bundle.card import UnfamiliarSpec
from shoal.bundle.compose import BANK, SCORE
from shoal.bundle.unfamiliar import Unfamiliar
from shoal.config import check_choice, check_int
from shoal.errors import BundleError, ConfigError
from shoal.machine import DEVICES, torch_device, usable_cores
from shoal.trust import check_bundle_code

if TYPE_CHECKING:
    import torch

RUNTIMES = ("onnx", "torch")


class Runtime(Protocol):
    """What the classifier needs from an engine."""

    name: str
    device: str

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """Return ``N×classes`` probabilities for float32 ``N×C×H×W`` pixels 0..255."""
        ...

    def run(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Return the probabilities and the ``(N,)`` unfamiliar scores (``None`` without a detector)."""
        ...


def check_threads(threads: int | None) -> int | None:
    """Return ``threads`` if it is ``None`` (every usable core) or an int >= 1.

    Raises:
        ConfigError: for anything else.
    """
    return check_int("threads", threads, minimum=1, optional=True)


def create(bundle: Bundle, runtime: str, *, threads: int | None, device: str, trust_code: bool = False) -> Runtime:
    """Start the engine ``runtime`` (``"onnx"`` or ``"torch"``) on a bundle.

    Raises:
        ConfigError: unknown runtime or device, or a device that is not available.
        BundleError: the model file cannot be loaded.
        CodeNotAllowedError: ``runtime="torch"`` on a bundle whose network is a ``.py`` file,
            without ``trust_code``.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be 'onnx' (fast, no torch) or 'torch' (GPUs, heat-maps), got {runtime!r}")
    check_choice("device", device, DEVICES)
    threads = check_threads(threads)
    if runtime == "onnx":
        return OnnxRuntime(bundle, threads=threads, device=device)
    return TorchRuntime(bundle, threads=threads, device=device, trust_code=trust_code)


class OnnxRuntime:
    """ONNX Runtime on the bundle's ``model.onnx``, tuned for latency.

    One intra-op thread per usable core, sequential execution (the graph is a chain), all
    graph optimisations (constant folding, conv/batch-norm/activation fusion, NCHWc layouts).
    Worker threads do not spin between runs: measured on 2 shared cores, spinning saves
    under a millisecond per Lite0 image when the cores are idle but costs up to 8 ms when
    another process (or this process's own image loading) wants them.

    Args:
        bundle: the opened bundle.
        threads: intra-op threads; ``None`` = every usable core.
        device: ``auto``/``cpu`` run on CPU; ``cuda`` needs the ``onnxruntime-gpu`` package.
    """

    name = "onnx"

    def __init__(self, bundle: Bundle, *, threads: int | None = None, device: str = "auto") -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads or usable_cores()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about unused initialisers are noise to a user
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ConfigError("device 'cuda' needs the onnxruntime-gpu package (pip install onnxruntime-gpu) "
                                  "and a CUDA GPU; use device='cpu', or runtime='torch' on a GPU machine")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        elif device == "mps":
            raise ConfigError("device 'mps' is served by runtime='torch'; ONNX Runtime runs on 'cpu' or 'cuda'")
        source: Any = str(bundle.path / ONNX_FILE) if bundle.path.is_dir() else bundle.read(ONNX_FILE)
        try:
            self.session = ort.InferenceSession(source, options, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types, not exported stably
            raise BundleError(f"the ONNX graph of bundle {str(bundle.path)!r} cannot be loaded: {exc}") from exc
        self.device = "cuda" if device == "cuda" else "cpu"
        self.threads = options.intra_op_num_threads
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        outputs = {o.name for o in self.session.get_outputs()}
        self.score_name = SCORE if SCORE in outputs else None

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: pixels})[0]

    def run(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities, and the unfamiliar scores where the graph computes them."""
        if self.score_name is None:
            return self(pixels), None
        probabilities, scores = self.session.run([self.output_name, self.score_name], {self.input_name: pixels})
        return probabilities, scores


class TorchRuntime:
    """The network rebuilt in PyTorch from the bundle's weights and manifest.

    Args:
        bundle: the opened bundle.
        threads: torch's CPU threads (a process-wide setting); ``None`` leaves torch's default.
        device: ``auto`` (CUDA, then Apple MPS, then CPU), ``cpu``, ``cuda`` or ``mps``.
        trust_code: allow rebuilding a network defined by a ``.py`` file the manifest names
            (that runs the file); without it such a bundle raises
            :class:`~shoal.errors.CodeNotAllowedError` before anything is imported.

    Attributes:
        model: the :class:`~shoal.networks.normalized.NormalizedNet` (pixels in, logits out), in
            eval mode on :attr:`device`.
    """

    name = "torch"

    def __init__(self, bundle: Bundle, *, threads: int | None = None, device: str = "auto",
                 trust_code: bool = False) -> None:
        check_bundle_code(bundle.manifest, str(bundle.path), trust_code=trust_code)
        try:
            import torch
            from safetensors.torch import load as load_safetensors

            from shoal.networks.normalized import rebuild
        except ImportError as exc:
            raise ConfigError(f"runtime='torch' needs PyTorch ({exc.name} is missing): pip install 'shoal[train]', "
                              "or use the default runtime='onnx'") from exc
        if threads is not None:
            torch.set_num_threads(threads)
        self.device = torch_device(device)
        card = bundle.card
        self.model = rebuild(card.architecture, len(card.labels), channels=card.input.channels,
                             mean_shape=card.normalization.mean_shape)
        try:
            self.model.load_state_dict(load_safetensors(bundle.read(WEIGHTS_FILE)))
        except RuntimeError as exc:
            raise BundleError(f"the weights of bundle {str(bundle.path)!r} do not fit the network its manifest "
                              f"describes: {str(exc).splitlines()[0]}") from exc
        self.model.eval().to(self.device)
        self._bundle = bundle

    @functools.cached_property
    def detector(self) -> Unfamiliar | None:
        """The bundle's unfamiliar detector (``None`` without one), read from its graph on first use
        (heat-maps and layers never need it, nor the parse of ``model.onnx``).

        Raises:
            BundleError: the manifest names a threshold but the graph has no embedding bank.
        """
        return _detector(self._bundle)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            logits = self.model(torch.from_numpy(pixels).to(self.device))
            return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def run(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities, and the unfamiliar scores where the bundle has a detector."""
        if self.detector is None:
            return self(pixels), None
        import torch

        from shoal.networks import classifier_head, feature_extractor

        with torch.inference_mode():
            x = torch.from_numpy(pixels).to(self.device)
            features = feature_extractor(self.model.net)(self.model.normalize(x)).flatten(1)
            logits = classifier_head(self.model.net)(features)
            probabilities = torch.softmax(logits.float(), dim=1).cpu().numpy()
        return probabilities, self.detector.scores(features.float().cpu().numpy())


def _detector(bundle: Bundle) -> Unfamiliar | None:
    """The bundle's unfamiliar detector, its bank read from the ONNX graph (where the one copy lives)."""
    spec = UnfamiliarSpec.from_manifest(bundle.manifest, str(bundle.path))
    if spec.threshold is None or spec.k is None:
        return None
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_model_from_string(bundle.read(ONNX_FILE)).graph
    bank = next((numpy_helper.to_array(t) for t in graph.initializer if t.name == BANK), None)
    if bank is None:
        raise BundleError(f"bundle {str(bundle.path)!r} names an unfamiliar threshold but its graph has no "
                          "embedding bank; re-export it (shoal export MODEL --out ...)")
    return Unfamiliar(np.ascontiguousarray(bank.T), spec.k, spec.threshold)
