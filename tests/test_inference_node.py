"""The Node.js example (examples/node) classifies like Python does, through onnxruntime-node.

Runs when ``node`` is installed and ``examples/node/node_modules`` exists
(``cd examples/node && npm install --ignore-scripts``); skipped otherwise, with the reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import shoal
from inference_fixtures import ToyModel
from waiting import GENEROUS_S

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "node"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed"),
    pytest.mark.skipif(not (EXAMPLE / "node_modules").is_dir(),
                       reason="examples/node/node_modules is missing: run 'npm install --ignore-scripts' there"),
]




def _node(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NODE, str(EXAMPLE / "classify.js"), *args], capture_output=True, text=True, timeout=GENEROUS_S,
                          cwd=EXAMPLE)


def _compare(toy: ToyModel, image: Path, atol: float) -> None:
    done = _node(str(toy.bundle), str(image), "--json", "--top", str(len(toy.labels)))
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["source"] == str(image)
    want = shoal.load(toy.bundle).predict(image, top=None)
    js = {p["label"]: p["probability"] for p in got["predictions"]}
    assert set(js) == set(toy.labels)
    py = dict(want.predictions)
    np.testing.assert_allclose([js[label] for label in toy.labels], [py[label] for label in toy.labels], atol=atol)


def test_node_matches_python_on_png_photos(rgb, tmp_path):
    for label in rgb.labels:
        _compare(rgb, next(rgb.images.glob(f"{label}/*.png")), atol=1e-3)
    # an RGBA PNG: alpha composited on white, as Pillow does
    rgba = Image.open(next(rgb.images.glob("circle/*.png"))).convert("RGBA")
    alpha = np.asarray(rgba).copy()
    alpha[:, : alpha.shape[1] // 2, 3] = 90
    Image.fromarray(alpha).save(tmp_path / "alpha.png")
    _compare(rgb, tmp_path / "alpha.png", atol=1e-3)


def test_node_matches_python_on_jpegs_and_in_grayscale(rgb, gray):
    _compare(rgb, next(rgb.images.glob("square/*.jpg")), atol=1e-3)
    png = next(gray.images.glob("square/*.png"))  # the gray model resizes with 'fill': refused in JS
    done = _node(str(gray.bundle), str(png))
    assert done.returncode == 1 and "resize mode 'fill' is not implemented in this example" in done.stderr


def test_node_prints_one_line_like_the_cli(rgb):
    image = next(rgb.images.glob("triangle/*.png"))
    done = _node(str(rgb.bundle), str(image), "--top", "2")
    assert done.returncode == 0, done.stderr
    parts = done.stdout.strip().split("  ")
    want = shoal.load(rgb.bundle).predict(image, top=2)
    assert parts[0] == str(image) and [p.split(" ")[0] for p in parts[1:]] == [label for label, _ in want.predictions]


def test_node_errors_are_clear(rgb, tmp_path):
    done = _node(str(tmp_path), str(next(rgb.images.glob("circle/*.png"))))
    assert done.returncode == 1 and "is not a bundle folder (no shoal.json)" in done.stderr
    text = tmp_path / "a.jpg"
    text.write_text("hello")
    done = _node(str(rgb.bundle), str(text))
    assert done.returncode == 1 and "reads JPEG and PNG files only" in done.stderr
