"""The bundle of an imported model: safetensors, ONNX (checked against torch) and the manifest (torch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shoal import networks
from shoal.bundle import LABELS_FILE, MANIFEST, ONNX_FILE, WEIGHTS_FILE, manifest, staged
from shoal.bundle.card import ModelCard
from shoal.bundle.compose import INPUT
from shoal.bundle.writer import OPSET, _compare_onnx, _export_onnx
from shoal.errors import BundleError
from shoal.importers.caffe.errors import CaffeError
from shoal.networks.normalized import NormalizedNet
from shoal.networks.weights import save_weights

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
        CaffeError: the ONNX graph disagrees with torch beyond the bundle writer's tolerance (1e-4).
    """
    model = build(card, tensors, mean_rgb)
    spec = card.input
    pixels = np.random.default_rng(0).uniform(0, 255, (CHECK_IMAGES, spec.channels, spec.height, spec.width)
                                              ).astype(np.float32)
    with staged(out) as staging:
        save_weights(staging / WEIGHTS_FILE, model, epoch=0)
        # The bundle writer's export and check, as for a trained model without an unfamiliar detector.
        outputs = _export_onnx(model, staging / ONNX_FILE, pixels[:1], None)
        try:
            diff = _compare_onnx(model, staging / ONNX_FILE, pixels, None)
        except BundleError as exc:
            raise CaffeError(str(exc)) from None
        (staging / LABELS_FILE).write_text("\n".join(card.labels) + "\n", encoding="utf-8")
        document = manifest(name, card, epoch=0, history=[], training=config,
                            onnx={"opset": OPSET, "input": INPUT, "outputs": outputs,
                                  "check": {"against": "torch", "images": len(pixels), "max_abs_diff": diff}},
                            unfamiliar={"reason": _reason()}, versions={"torch": torch.__version__})
        document["source"] = config.get("imported")
        (staging / MANIFEST).write_text(json.dumps(document, indent=2), encoding="utf-8")
    return diff


def _reason() -> str:
    from shoal.importers.caffe import NO_UNFAMILIAR

    return NO_UNFAMILIAR


__all__ = ["build", "write_bundle"]
