"""The bundle of an imported model: safetensors, ONNX (checked against torch) and the manifest (torch)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shoal import networks
from shoal.bundle import LABELS_FILE, MANIFEST, ONNX_FILE, WEIGHTS_FILE, manifest, staged
from shoal.bundle.card import ModelCard
from shoal.bundle.compose import INPUT, PROBABILITIES
from shoal.errors import NetworkError
from shoal.importers.caffe.errors import CaffeError
from shoal.networks.normalized import NormalizedNet, Probabilities
from shoal.networks.weights import save_weights

OPSET = 17
ONNX_TOLERANCE = 1e-4
CHECK_IMAGES = 4


def build(card: ModelCard, tensors: dict[str, np.ndarray], mean_rgb: np.ndarray) -> NormalizedNet:
    """The imported network with its Caffe weights loaded (strictly) and the normalisation built in, in eval mode.

    Raises:
        CaffeError: the weights do not fit the layer list (a bug: the converter checked them).
    """
    net = networks.create(card.architecture, len(card.labels), channels=card.input.channels)
    state = net.state_dict()
    missing = [k for k in state if k not in tensors]
    extra = [k for k in tensors if k not in state]
    if missing or extra:
        raise CaffeError(f"the converted weights do not fit the layer list (missing {missing[:3]}, extra {extra[:3]}); "
                         "please report this with the prototxt")
    net.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v, np.float32)).reshape(state[k].shape)
                         for k, v in tensors.items()})
    scale = torch.tensor(card.normalization.scale, dtype=torch.float32).reshape(-1, 1, 1)
    return NormalizedNet(net, torch.from_numpy(np.ascontiguousarray(mean_rgb, np.float32)), scale).eval()


def write_bundle(out: Path, name: str, card: ModelCard, tensors: dict[str, np.ndarray], mean_rgb: np.ndarray,
                 config: dict[str, Any]) -> float:
    """Write the bundle of an imported model into ``out``; return the ONNX-vs-torch difference.

    Raises:
        CaffeError: the ONNX graph disagrees with torch beyond 1e-4.
    """
    model = build(card, tensors, mean_rgb)
    spec = card.input
    pixels = np.random.default_rng(0).uniform(0, 255, (CHECK_IMAGES, spec.channels, spec.height, spec.width)
                                              ).astype(np.float32)
    with staged(out) as staging:
        save_weights(staging / WEIGHTS_FILE, model, epoch=0)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(Probabilities(model).eval(), (torch.from_numpy(pixels[:1]),), str(staging / ONNX_FILE),
                              opset_version=OPSET, input_names=[INPUT], output_names=[PROBABILITIES],
                              dynamic_axes={INPUT: {0: "batch"}, PROBABILITIES: {0: "batch"}}, dynamo=False)
        diff = _compare(model, staging / ONNX_FILE, pixels)
        (staging / LABELS_FILE).write_text("\n".join(card.labels) + "\n", encoding="utf-8")
        document = manifest(name, card, epoch=0, history=[], training=config,
                            onnx={"opset": OPSET, "input": INPUT, "outputs": [PROBABILITIES],
                                  "check": {"against": "torch", "images": len(pixels), "max_abs_diff": diff}},
                            unfamiliar={"reason": _reason()}, versions={"torch": torch.__version__})
        document["source"] = config.get("imported")
        (staging / MANIFEST).write_text(json.dumps(document, indent=2), encoding="utf-8")
    return diff


def _reason() -> str:
    from shoal.importers.caffe import NO_UNFAMILIAR

    return NO_UNFAMILIAR


def _compare(model: NormalizedNet, path: Path, pixels: np.ndarray) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run([PROBABILITIES], {INPUT: pixels})
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(pixels)), dim=1).numpy()
    diff = float(np.abs(got - want).max())
    if not np.isfinite(got).all() or diff > ONNX_TOLERANCE:
        raise CaffeError(f"the exported ONNX graph differs from the torch model by {diff:.2e} (allowed "
                         f"{ONNX_TOLERANCE:.0e}); please report this with the prototxt")
    return diff


__all__ = ["NetworkError", "build", "write_bundle"]
