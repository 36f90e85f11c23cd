"""A bundle is data: its network's Python file runs only with ``trust_code`` / ``--trust-code``.

The bundles here are copies of the session's toy LeNet bundle whose ``shoal.json`` names a
network file instead. The file builds the same LeNet (so the weights fit) and, as an attack
would, leaves a marker file behind when it is imported: the marker shows whether code ran.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import shoal
from inference_fixtures import ToyModel
from shoal.cli import _register, app
from shoal.errors import CodeNotAllowedError
from shoal.trust import check_bundle_code, is_network_file

_register()
runner = CliRunner()

NETWORK_FILE = """\
import pathlib
pathlib.Path({marker!r}).write_text("the bundle's code ran")

from shoal import networks


def create_network(num_classes, channels):
    return networks.create("lenet", num_classes, channels=channels)
"""


def code_bundle(toy: ToyModel, folder: Path, architecture: str | None = None) -> tuple[Path, Path]:
    """A copy of ``toy``'s bundle naming a network file (``file:<abs path>`` unless given); and the marker path."""
    marker = folder / "code-ran.txt"
    network = folder / "evil_net.py"
    network.write_text(NETWORK_FILE.format(marker=str(marker)))
    bundle = folder / "bundle"
    shutil.copytree(toy.bundle, bundle)
    manifest = json.loads((bundle / "shoal.json").read_text())
    manifest["architecture"] = architecture or f"file:{network}"
    (bundle / "shoal.json").write_text(json.dumps(manifest))
    return bundle, marker


def an_image(toy: ToyModel) -> Path:
    return next(toy.images.glob(f"{toy.labels[0]}/*.png"))


def test_network_file_names_are_recognised() -> None:
    assert is_network_file("file:/abs/net.py") and is_network_file("net.py") and is_network_file("file:net")
    assert not any(is_network_file(n) for n in ("lenet", "timm:resnet18", "efficientnet_lite0", None, 3))
    check_bundle_code({"architecture": "lenet"}, "b", trust_code=False)  # built-in networks need no trust


@pytest.mark.parametrize("form", ["file:", "absolute", "relative"])
def test_the_torch_runtime_refuses_a_bundle_naming_a_python_file(rgb: ToyModel, tmp_path: Path, form: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # 'evil_net.py' then resolves next to the bundle
    architecture = {"file:": None, "absolute": str(tmp_path / "evil_net.py"), "relative": "evil_net.py"}[form]
    bundle, marker = code_bundle(rgb, tmp_path, architecture)
    with pytest.raises(CodeNotAllowedError) as refused:
        shoal.load(bundle, runtime="torch")
    message = str(refused.value)
    assert "\n" not in message and "trust_code=True" in message and "--trust-code" in message
    assert "names a Python file as its network" in message and "runtime='onnx', which runs no code" in message
    assert not marker.exists()


def test_onnx_needs_no_code_and_heatmaps_and_layers_need_trust(rgb: ToyModel, tmp_path: Path) -> None:
    bundle, marker = code_bundle(rgb, tmp_path)
    model = shoal.load(bundle)
    image = an_image(rgb)
    assert model.predict(image, top=1).label == shoal.load(rgb.bundle).predict(image, top=1).label
    with pytest.raises(CodeNotAllowedError, match="pass trust_code=True"):
        model.heatmap(image)
    with pytest.raises(CodeNotAllowedError, match="pass trust_code=True"):
        model.layers(image)
    assert not marker.exists()


@pytest.mark.slow
def test_trust_code_runs_the_file_and_the_network_works(rgb: ToyModel, tmp_path: Path) -> None:
    bundle, marker = code_bundle(rgb, tmp_path)
    model = shoal.load(bundle, runtime="torch", trust_code=True)
    assert marker.read_text() == "the bundle's code ran"
    image = an_image(rgb)
    expected = shoal.load(rgb.bundle).predict_proba(image)
    np.testing.assert_allclose(model.predict_proba(image), expected, atol=1e-4)
    assert shoal.load(bundle, trust_code=True).heatmap(image).label == rgb.labels[int(expected.argmax())]


@pytest.mark.slow
def test_classify_heatmap_needs_trust_code(rgb: ToyModel, tmp_path: Path) -> None:
    bundle, marker = code_bundle(rgb, tmp_path)
    out = tmp_path / "heat.png"
    image = str(an_image(rgb))
    refused = runner.invoke(app, ["classify", str(bundle), image, "--heatmap", str(out)])
    assert refused.exit_code == 1
    assert "--trust-code" in refused.output and refused.stdout == ""  # refused before classifying
    assert not marker.exists() and not out.exists()
    refused = runner.invoke(app, ["classify", str(bundle), image, "--runtime", "torch"])
    assert refused.exit_code == 1 and "--trust-code" in refused.output and not marker.exists()
    trusted = runner.invoke(app, ["classify", str(bundle), image, "--heatmap", str(out), "--trust-code"])
    assert trusted.exit_code == 0, trusted.output
    assert out.exists() and marker.exists()
