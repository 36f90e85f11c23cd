"""Seeing inside a model: Grad-CAM heat-maps and per-layer statistics (needs torch).

* :func:`grad_cam` weights the last spatial feature map (``shoal.networks.target_layer``)
  by the gradient of a class score and keeps the positive part: where the network looked
  to decide on that class. :func:`overlay` paints it over the image.
* :func:`layer_stats` runs one image and reports, for every layer, its output shape, mean,
  standard deviation, histogram and parameter count, with an image of its activations (and
  of the first convolution's weights) — what DIGITS showed under "visualizations and
  statistics"; :func:`write_layers_html` makes a page of it.

Both work on any network from :func:`shoal.networks.create` wrapped in the trained
:class:`~shoal.networks.normalized.NormalizedNet` (pixels 0..255 in, logits out).
"""

from __future__ import annotations

import html
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shoal.data.imageops import png_uri
from shoal.errors import NetworkError

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from torch import nn

HIST_BINS = 24
MAX_TILES = 16  # activation channels (or first-conv filters) shown per layer


def grad_cam(model: nn.Module, pixels: np.ndarray, class_index: int | None = None,
             layer: nn.Module | None = None) -> tuple[np.ndarray, int, np.ndarray]:
    """Grad-CAM of one image for one class.

    Args:
        model: a :class:`NormalizedNet` (pixels in, logits out).
        pixels: float32 ``1×C×H×W`` network input, 0..255.
        class_index: the class to explain; ``None`` = the top class.
        layer: the module whose output is explained; default ``networks.target_layer(model.net)``.

    Returns:
        ``(heat, class_index, probabilities)``: ``heat`` is float32 ``H×W`` in 0..1 at the
        input's size (all zeros when no location raises the class score).
    """
    import torch
    import torch.nn.functional as F

    from shoal import networks

    target = layer if layer is not None else networks.target_layer(getattr(model, "net", model))
    captured: dict[str, torch.Tensor] = {}

    def keep(_module: nn.Module, _inputs: Any, output: Any) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else output
        captured["activation"] = out
        out.register_hook(lambda grad: captured.__setitem__("gradient", grad))

    was_training = model.training
    model.eval()
    handle = target.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            x = torch.from_numpy(np.ascontiguousarray(pixels)).to(next(model.parameters()).device).requires_grad_(True)
            logits = model(x)
            logits = logits[0] if isinstance(logits, (tuple, list)) else logits
            probs = torch.softmax(logits.detach().float(), 1)[0].cpu().numpy()
            index = int(probs.argmax()) if class_index is None else int(class_index)
            model.zero_grad(set_to_none=True)
            logits[0, index].backward()
    finally:
        handle.remove()
        model.train(was_training)
    activation, gradient = captured["activation"].detach(), captured["gradient"].detach()
    if activation.dim() != 4:
        raise NetworkError(f"the Grad-CAM layer {type(target).__name__} gives a {activation.dim()}-D output; "
                         "it needs a spatial map (N×C×H×W)")
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=pixels.shape[2:], mode="bilinear", align_corners=False)[0, 0]
    peak = float(cam.max())
    heat = (cam / peak if peak > 0 else torch.zeros_like(cam)).cpu().numpy().astype(np.float32)
    return heat, index, probs


def colormap(values: np.ndarray) -> np.ndarray:
    """Map 0..1 values to uint8 RGB with a blue → cyan → yellow → red scale (``H×W×3``)."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    stops = np.array([0.0, 0.35, 0.65, 1.0])
    colours = np.array([[20, 30, 140], [40, 200, 220], [250, 230, 40], [220, 30, 20]], np.float32)
    out = np.zeros((*values.shape, 3), np.float32)
    for i in range(3):
        lo, hi = stops[i], stops[i + 1]
        t = np.clip((v - lo) / (hi - lo), 0.0, 1.0)
        mask = (v >= lo) & (v <= hi)
        out = np.where(mask, colours[i] + t * (colours[i + 1] - colours[i]), out)
    return out.round().astype(np.uint8)


def overlay(pixels: np.ndarray, heat: np.ndarray, *, alpha: float = 0.45) -> Image.Image:
    """The image (uint8 ``H×W×C``) with the heat-map (``H×W``, 0..1) painted over it."""
    from PIL import Image

    base = pixels.astype(np.float32)
    if base.ndim == 2 or base.shape[2] == 1:
        base = np.repeat(base.reshape(base.shape[0], base.shape[1], 1), 3, axis=2)
    weight = alpha * np.clip(heat, 0, 1)[..., None] ** 0.5
    mixed = base * (1 - weight) + colormap(heat).astype(np.float32) * weight
    return Image.fromarray(mixed.round().clip(0, 255).astype(np.uint8))


# -- layers ----------------------------------------------------------------------------------------
@dataclass
class LayerStat:
    """One layer's output on one image."""

    name: str
    kind: str  # the module's class name
    shape: list[int]  # output shape
    mean: float
    std: float
    histogram: list[int]
    edges: list[float]
    parameters: int  # the layer's own parameters
    image: bytes | None = field(default=None, repr=False)  # PNG of its activations, for spatial outputs

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "shape": self.shape, "mean": self.mean, "std": self.std,
                "histogram": self.histogram, "edges": self.edges, "parameters": self.parameters}


@dataclass
class LayerReport:
    """Every layer's statistics for one image, the first convolution's weights, the totals."""

    source: str
    architecture: str
    layers: list[LayerStat]
    total_parameters: int
    first_conv: str | None
    first_conv_weights: bytes | None = field(default=None, repr=False)
    predictions: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "architecture": self.architecture, "total_parameters": self.total_parameters,
                "first_conv": self.first_conv, "layers": [layer.to_dict() for layer in self.layers],
                "predictions": [{"label": label, "probability": p} for label, p in self.predictions]}


def layer_stats(model: nn.Module, pixels: np.ndarray, *, source: str = "", architecture: str = "",
                labels: list[str] | None = None) -> LayerReport:
    """Run one image and collect every leaf layer's output statistics.

    Args:
        model: a :class:`NormalizedNet`.
        pixels: float32 ``1×C×H×W`` network input, 0..255.
        source: the image's name, for the report.
        architecture: the network's name, for the report.
        labels: class names, to report the top classes.
    """
    import torch
    from torch import nn

    stats: list[LayerStat] = []
    names = {module: name for name, module in model.named_modules()}

    def record(module: nn.Module, _inputs: Any, output: Any) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else output
        if not isinstance(out, torch.Tensor):
            return
        values = out.detach().float().cpu()
        array = values.numpy().ravel()
        counts, edges = np.histogram(array, bins=HIST_BINS) if array.size else (np.zeros(HIST_BINS, int), np.zeros(HIST_BINS + 1))
        stats.append(LayerStat(
            name=names.get(module, type(module).__name__), kind=type(module).__name__, shape=list(values.shape),
            mean=float(array.mean()) if array.size else 0.0, std=float(array.std()) if array.size else 0.0,
            histogram=counts.tolist(), edges=[float(e) for e in edges],
            parameters=sum(p.numel() for p in module.parameters(recurse=False)),
            image=_tiles_png(values[0].numpy()) if values.dim() == 4 else None))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(record) for m in leaves]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(pixels)).to(next(model.parameters()).device)
            logits = model(x)
            logits = logits[0] if isinstance(logits, (tuple, list)) else logits
            probs = torch.softmax(logits.float(), 1)[0].cpu().numpy()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    first = next(((name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    weights = _filters_png(first[1].weight.detach().float().cpu().numpy()) if first is not None else None
    ranked = [(labels[i], float(probs[i])) for i in np.argsort(-probs)[:5]] if labels else []
    return LayerReport(source=source, architecture=architecture, layers=stats,
                       total_parameters=sum(p.numel() for p in model.parameters()),
                       first_conv=first[0] if first else None, first_conv_weights=weights, predictions=ranked)


def _normalise(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return np.zeros_like(a, np.uint8) if hi <= lo else ((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _grid(tiles: list[np.ndarray], channels: int) -> np.ndarray:
    """Lay equal-size tiles (``h×w`` or ``h×w×3``) out in a near-square grid with 1-px gaps."""
    h, w = tiles[0].shape[:2]
    cols = int(np.ceil(np.sqrt(len(tiles))))
    rows = int(np.ceil(len(tiles) / cols))
    shape = (rows * (h + 1) - 1, cols * (w + 1) - 1) + ((3,) if channels == 3 else ())
    canvas = np.full(shape, 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = tile
    return canvas


def _png(array: np.ndarray, min_side: int = 96, max_side: int = 320) -> bytes:
    from PIL import Image

    img = Image.fromarray(array)
    if max(img.size) < min_side:  # blow tiny maps up, pixels kept sharp
        factor = int(np.ceil(min_side / max(img.size)))
        img = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    elif max(img.size) > max_side:  # keep the page light: a 112×112 map of 16 channels is plenty at 320 px
        img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _tiles_png(activation: np.ndarray) -> bytes:
    """PNG of up to ``MAX_TILES`` channels of a ``C×H×W`` activation, each scaled to its own range."""
    return _png(_grid([_normalise(c) for c in activation[:MAX_TILES]], 1))


def _filters_png(weights: np.ndarray) -> bytes:
    """PNG of the first convolution's filters (``out×in×kh×kw``): colour when it reads RGB."""
    tiles = []
    for f in weights[:MAX_TILES * 2]:
        tiles.append(_normalise(f.transpose(1, 2, 0)) if f.shape[0] == 3 else _normalise(f.mean(0)))
    return _png(_grid(tiles, 3 if weights.shape[1] == 3 else 1), min_side=192)


def write_layers_html(report: LayerReport, path: str | os.PathLike[str]) -> Path:
    """Write the layer report as one self-contained HTML page.

    Returns:
        The written path.
    """
    esc = html.escape

    def uri(png: bytes | None) -> str:
        return f'<img src="{png_uri(png)}">' if png else ""

    def bars(layer: LayerStat) -> str:
        peak = max(layer.histogram) or 1
        width = 4
        rects = "".join(f'<rect x="{i * width}" y="{40 - 40 * n / peak:.1f}" width="{width - 1}" height="{40 * n / peak:.1f}"/>'
                        for i, n in enumerate(layer.histogram))
        return (f'<svg width="{width * len(layer.histogram)}" height="40" fill="#4a7bd0"><title>{layer.edges[0]:.3g} .. '
                f'{layer.edges[-1]:.3g}</title>{rects}</svg>')

    rows = "".join(
        f"<tr><td>{esc(layer.name)}</td><td>{esc(layer.kind)}</td><td>{'×'.join(map(str, layer.shape))}</td>"
        f"<td>{layer.mean:.4g}</td><td>{layer.std:.4g}</td><td>{bars(layer)}</td><td>{layer.parameters:,}</td>"
        f"<td>{uri(layer.image)}</td></tr>" for layer in report.layers)
    ranked = ", ".join(f"{esc(label)} {p:.2%}" for label, p in report.predictions)
    page = f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>shoal layers: {esc(report.source)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222 }}
table {{ border-collapse: collapse }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; vertical-align: middle; text-align: right }}
td:first-child, td:nth-child(2) {{ text-align: left }} img {{ image-rendering: pixelated; max-width: 240px }}
</style></head><body>
<h1>{esc(report.architecture)}: layers on {esc(report.source)}</h1>
<p>Total parameters: <b>{report.total_parameters:,}</b>. Top classes: {ranked}.</p>
{f'<h2>Weights of the first convolution ({esc(report.first_conv)})</h2>{uri(report.first_conv_weights)}' if report.first_conv else ''}
<h2>Layers</h2>
<table><tr><th>layer</th><th>type</th><th>output</th><th>mean</th><th>std</th><th>histogram</th><th>parameters</th><th>activations</th></tr>
{rows}</table>
</body></html>
"""
    out = Path(path)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out
