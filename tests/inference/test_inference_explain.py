"""Grad-CAM heat-maps and layer statistics: every registered network, the Classifier API, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import shoal
from inference_fixtures import ToyModel
from shoal.cli import _register, app
from shoal.errors import ConfigError, InputError

torch = pytest.importorskip("torch")

_register()
runner = CliRunner()




def _image(toy: ToyModel, label: str = "circle") -> str:
    return str(next(toy.images.glob(f"{label}/*.png")))


def _reference_cam(model, layer, pixels: np.ndarray, index: int) -> np.ndarray:
    """Grad-CAM computed directly with torch.autograd.grad, to check the hook-based version."""
    import torch.nn.functional as F

    store = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: store.__setitem__("a", out))
    model.eval()
    with torch.enable_grad():
        logits = model(torch.from_numpy(pixels).requires_grad_(True))
        logits = logits[0] if isinstance(logits, tuple) else logits
        (grad,) = torch.autograd.grad(logits[0, index], store["a"])
    handle.remove()
    cam = F.relu((grad.mean((2, 3), keepdim=True) * store["a"].detach()).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=pixels.shape[2:], mode="bilinear", align_corners=False)[0, 0]
    return (cam / cam.max()).numpy() if float(cam.max()) > 0 else cam.numpy()


@pytest.mark.parametrize("name", [spec.name for spec in __import__("shoal.networks", fromlist=["x"]).list_networks()])
def test_grad_cam_works_for_every_registered_network(name):
    from shoal import networks
    from shoal.inference.explain import grad_cam
    from shoal.networks.normalized import NormalizedNet

    torch.manual_seed(0)
    net = networks.create(name, 3, pretrained=None, channels=3)
    model = NormalizedNet(net, torch.full((3, 1, 1), 127.5), torch.full((3, 1, 1), 1 / 64))
    h, w = networks.get_spec(name).input_size
    pixels = np.random.default_rng(0).uniform(0, 255, (1, 3, h, w)).astype(np.float32)
    heat, index, probs = grad_cam(model, pixels)
    assert heat.shape == (h, w) and heat.dtype == np.float32
    assert 0.0 <= heat.min() and heat.max() <= 1.0
    assert index == int(probs.argmax()) and probs.sum() == pytest.approx(1.0, abs=1e-5)
    want = _reference_cam(model, networks.target_layer(net), pixels, index)
    np.testing.assert_allclose(heat, want, atol=1e-4)
    assert not model.training


def test_classifier_heatmap_explains_a_class(rgb, tmp_path):
    model = shoal.load(rgb.bundle)
    top = model.heatmap(_image(rgb, "square"))
    assert top.label == model.predict(_image(rgb, "square")).label
    assert top.heat.shape == (28, 28) and top.pixels.shape == (28, 28, 3) and top.image.size == (28, 28)
    assert top.pixels.dtype == np.uint8
    np.testing.assert_array_equal(top.pixels, model.prepare(_image(rgb, "square"))[2:30, 2:30])
    other = model.heatmap(_image(rgb, "square"), "triangle")
    assert other.label == "triangle"
    assert other.probability == pytest.approx(dict(model.predict(_image(rgb, "square"), top=None).predictions)["triangle"],
                                              abs=1e-5)
    by_index = model.heatmap(_image(rgb, "square"), 2)
    np.testing.assert_allclose(by_index.heat, other.heat, atol=1e-6)
    assert "detector" not in vars(model._torch)  # a heat-map never reads the unfamiliar bank out of model.onnx
    path = top.save(tmp_path / "heat.png")
    assert Image.open(path).size == (28, 28)
    with pytest.raises(ConfigError, match=r"target must be one of the model's classes \(circle, square, triangle\) "
                                          r"or an index 0..2, got 'zebra'"):
        model.heatmap(_image(rgb), "zebra")
    with pytest.raises(InputError, match="give one image here"):
        model.heatmap([_image(rgb)])


def test_grayscale_models_get_heatmaps_and_layers(gray):
    model = shoal.load(gray.bundle)
    found = model.heatmap(_image(gray))
    assert found.heat.shape == (28, 28) and found.image.mode == "RGB"
    report = model.layers(_image(gray))
    assert report.first_conv is not None and report.first_conv_weights.startswith(b"\x89PNG")
    assert model._torch_runtime().model.get_submodule(report.first_conv).in_channels == 1
    assert report.layers[0].shape[0] == 1


def test_layers_report_shapes_statistics_and_parameters(rgb, tmp_path):
    from shoal.inference.explain import write_layers_html

    model = shoal.load(rgb.bundle)
    report = model.layers(_image(rgb))
    torch_model = model._torch_runtime().model
    assert report.total_parameters == sum(p.numel() for p in torch_model.parameters())
    assert sum(layer.parameters for layer in report.layers) == report.total_parameters
    first = report.layers[0]
    x = torch.from_numpy(model.network_input([model.prepare(_image(rgb))]))
    with torch.no_grad():
        out = torch_model.get_submodule(first.name)(torch_model.normalize(x))
    assert first.shape == list(out.shape)
    assert first.mean == pytest.approx(float(out.mean()), rel=1e-4, abs=1e-5)
    assert first.std == pytest.approx(float(out.std(unbiased=False)), rel=1e-4, abs=1e-5)
    assert sum(first.histogram) == out.numel() and len(first.edges) == len(first.histogram) + 1
    assert first.image is not None and first.image.startswith(b"\x89PNG")
    assert report.layers[-1].shape == [1, 3]
    assert report.first_conv_weights is not None and report.predictions[0][0] == model.predict(_image(rgb)).label
    page = write_layers_html(report, tmp_path / "layers.html").read_text(encoding="utf-8")
    assert f"Total parameters: <b>{report.total_parameters:,}</b>" in page
    assert page.count("<tr>") == len(report.layers) + 1
    assert json.loads(json.dumps(report.to_dict()))["total_parameters"] == report.total_parameters


def test_cli_heatmap_and_layers(rgb, tmp_path):
    result = runner.invoke(app, ["classify", str(rgb.bundle), _image(rgb), "--heatmap", str(tmp_path / "h.png"),
                                 "--layers", str(tmp_path / "l.html")])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(_image(rgb) + "  ")
    assert "Heat-map of" in result.stderr and "Layers (" in result.stderr
    assert Image.open(tmp_path / "h.png").size == (28, 28) and (tmp_path / "l.html").stat().st_size > 0
    chosen = runner.invoke(app, ["classify", str(rgb.bundle), _image(rgb), "--heatmap", str(tmp_path / "t.png"),
                                 "--class", "triangle"])
    assert chosen.exit_code == 0 and "Heat-map of triangle" in chosen.stderr
    many = runner.invoke(app, ["classify", str(rgb.bundle), _image(rgb), _image(rgb), "--heatmap", str(tmp_path / "x.png")])
    assert many.exit_code == 1 and "explain one image" in many.stderr
    lonely = runner.invoke(app, ["classify", str(rgb.bundle), _image(rgb), "--class", "triangle"])
    assert lonely.exit_code == 1 and "add --heatmap" in lonely.stderr
