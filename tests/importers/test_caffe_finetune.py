"""Fine-tuning an imported Caffe model (issue 10, item 4): its layer-list network, its weights, a new head."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from caffe_encoder import Layer, caffemodel, prototxt  # noqa: E402

from shoal.cli import app  # noqa: E402
from shoal.importers.caffe import import_caffe  # noqa: E402

SIZE = 32  # the tiny dataset's size (tests/conftest.py)


def _caffe_net(root: Path, classes: int = 5) -> Path:
    """A DIGITS-style deploy net (conv, ReLU, Caffe max pooling, InnerProduct, Softmax) at 32×32 RGB, 5 outputs."""
    rng = np.random.default_rng(3)
    pooled = (SIZE - 2) // 2
    layers = [
        Layer("conv1", "Convolution", ["data"], ["conv1"], "convolution_param { num_output: 6 kernel_size: 3 }",
              [rng.standard_normal((6, 3, 3, 3)).astype(np.float32) * 0.05, rng.uniform(0, 1, 6).astype(np.float32)]),
        Layer("relu1", "ReLU", ["conv1"], ["conv1"]),
        Layer("pool1", "Pooling", ["conv1"], ["pool1"], "pooling_param { pool: MAX kernel_size: 2 stride: 2 }"),
        Layer("fc", "InnerProduct", ["pool1"], ["fc"], f"inner_product_param {{ num_output: {classes} }}",
              [rng.standard_normal((classes, 6 * pooled * pooled)).astype(np.float32) * 0.01,
               np.zeros(classes, np.float32)]),
        Layer("prob", "Softmax", ["fc"], ["prob"]),
    ]
    root.mkdir(parents=True, exist_ok=True)
    (root / "deploy.prototxt").write_text(prototxt("tiny-caffe", (1, 3, SIZE, SIZE), layers))
    (root / "weights.caffemodel").write_bytes(caffemodel(layers))
    return root / "deploy.prototxt"


@pytest.fixture()
def imported(tmp_path: Path, tiny_dataset) -> str:
    import_caffe(_caffe_net(tmp_path / "caffe"), name="caffe-net", mean="104,117,123")
    return "caffe-net"


def _train(*args: str) -> dict:
    result = CliRunner().invoke(app, ["train", "--dataset", "tiny", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def _classifies(name: str) -> None:
    import shoal
    from shoal import datasets

    dataset = datasets.load("tiny")
    model = shoal.load(name)
    assert model.labels == ["circle", "square", "triangle"]
    images, truth = dataset.images("val"), dataset.labels("val")
    predicted = [model.labels.index(model.predict(np.asarray(image)).label) for image in images]
    assert np.mean(np.asarray(predicted) == truth) >= 0.8


def test_finetune_an_imported_model_by_name(imported: str, shoal_home: Path) -> None:
    """--weights MODEL: the layers: network and its weights; the 5-output Caffe head becomes 3 fitted classes."""
    from shoal.models import ModelFolder

    out = _train("--weights", imported, "--name", "ft")
    assert out["status"] == "done"
    card = ModelFolder.of("ft").read_card()
    source = ModelFolder.of(imported).read_card()
    assert card is not None and source is not None
    assert card.architecture == source.architecture and card.architecture.startswith("layers:")
    assert card.labels == ("circle", "square", "triangle")
    manifest = json.loads((Path(out["bundle"]) / "shoal.json").read_text())
    assert manifest["training"]["head"] == "fit"
    _classifies("ft")
    # the backbone kept the imported weights: conv1 is the Caffe model's, the head is new
    from safetensors.numpy import load_file

    mine = load_file(str(Path(out["bundle"]) / "model.safetensors"))
    theirs = load_file(str(ModelFolder.of(imported).bundle_path / "model.safetensors"))
    assert np.array_equal(mine["net.layers.conv1.weight"], theirs["net.layers.conv1.weight"])
    assert mine["net.layers.fc.weight"].shape[0] == 3 and theirs["net.layers.fc.weight"].shape[0] == 5


def test_finetune_an_imported_bundle_with_the_loop(imported: str, shoal_home: Path, tmp_path: Path) -> None:
    """--weights BUNDLE.shoal --head sgd: the training loop on the imported network, end to end (--freeze none)."""
    from shoal.bundle import export

    file = export(imported, out=tmp_path / "caffe-net.shoal")
    out = _train("--weights", str(file), "--head", "sgd", "--freeze", "none", "--epochs", "10", "--lr", "0.003",
                 "--name", "ft-loop")
    assert out["status"] == "done"
    _classifies("ft-loop")


def test_weights_refusals(imported: str, shoal_home: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--dataset", "tiny", "--weights", "no-such-model"])
    assert result.exit_code == 1
    assert "neither a weights file" in result.output and "shoal model list" in result.output
    result = CliRunner().invoke(app, ["train", "--dataset", "tiny", "--weights", imported, "--network", "lenet"])
    assert result.exit_code == 1
    assert "tiny-caffe (imported)" in result.output and "drop --network" in result.output
