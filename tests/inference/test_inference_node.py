"""The Node.js example (examples/node) classifies like Python does, through onnxruntime-node.

Runs when ``node`` is installed and ``examples/node/node_modules`` exists
(``cd examples/node && npm install --ignore-scripts``); skipped otherwise, with the reason.
The photo tests also need the dolphins-and-seahorses photos in ``shared/data`` beside the repository.

Node decodes with libvips (wasm-vips) and re-implements Pillow's resize, so its network input is
the same bytes as Python's, and its probabilities equal Python's: on real photos, EXIF-rotated and
large (reduced-scale decoded) JPEGs, PNGs, in the squash and crop resize modes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import shoal
from inference_fixtures import ToyModel
from shoal.data.imageops import prepare
from waiting import GENEROUS_S

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed"),
    pytest.mark.skipif(not (EXAMPLE / "node_modules").is_dir(),
                       reason="examples/node/node_modules is missing: run 'npm install --ignore-scripts' there"),
]


PHOTOS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "dolphins-and-seahorses"
UNFAMILIAR = "UNFAMILIAR (like none of the training images)"


def _node(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NODE, str(EXAMPLE / "classify.js"), *args], capture_output=True, text=True, timeout=GENEROUS_S,
                          cwd=EXAMPLE)


def _node_json(bundle: Path, images: list[Path]) -> list[dict[str, Any]]:
    done = _node(str(bundle), *map(str, images), "--json", "--top", "99")
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert [g["source"] for g in got] == [str(image) for image in images]
    return got


def _max_difference(bundle: Path, images: list[Path], labels: tuple[str, ...] | list[str]) -> float:
    """The largest |p_node - p_python| over the images and classes."""
    got = _node_json(bundle, images)
    worst = 0.0
    for js, py in zip(got, shoal.load(bundle).predict_iter(images, None)):
        probs = {p["label"]: p["probability"] for p in js["predictions"]}
        assert set(probs) == set(labels)
        worst = max(worst, *(abs(probs[label] - p) for label, p in py.predictions))
    return worst


def _compare(toy: ToyModel, image: Path, atol: float) -> None:
    assert _max_difference(toy.bundle, [image], toy.labels) <= atol


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
    assert parts[0] == str(image) and [p.split(" ")[0] for p in parts[1:3]] == [label for label, _ in want.predictions]


def test_node_errors_are_clear(rgb, tmp_path):
    done = _node(str(tmp_path), str(next(rgb.images.glob("circle/*.png"))))
    assert done.returncode == 1 and "is not a bundle folder (no shoal.json)" in done.stderr
    text = tmp_path / "a.jpg"
    text.write_text("hello")
    good = next(rgb.images.glob("circle/*.png"))
    done = _node(str(rgb.bundle), str(text), str(tmp_path / "missing.png"), str(good))
    assert done.returncode == 1  # like `shoal classify`: the others are still classified, the exit says some failed
    assert f"cannot read image {text}: this example reads JPEG and PNG files only" in done.stderr
    assert f"cannot read image {tmp_path / 'missing.png'}: file not found" in done.stderr
    assert done.stdout.startswith(str(good))


# -- real photos, a fitted EfficientNet-Lite0 head ---------------------------------------------------
@pytest.fixture(scope="module")
def photo_models(tmp_path_factory):
    """Two fitted-head bundles trained on 16 photos per class, resized with 'squash' and with 'crop', and
    images neither saw: held-out photos, EXIF-rotated JPEGs (one large enough for reduced-scale decoding),
    PNGs and a picture of neither class."""
    if not PHOTOS.is_dir():
        pytest.skip(f"the dolphins-and-seahorses photos are not at {PHOTOS.resolve()} (shared/data beside the repository)")
    from shoal import datasets
    from shoal.store import Store
    from shoal.training import TrainConfig, train

    root = tmp_path_factory.mktemp("node-photos")
    store = Store(root / "home")
    labels = ("dolphin", "seahorse")
    held_out: list[Path] = []
    for label in labels:
        photos = sorted((PHOTOS / label).glob("*.jpg"))
        (root / "train" / label).mkdir(parents=True)
        for photo in photos[:16]:
            shutil.copy(photo, root / "train" / label / photo.name)
        for photo in photos[16:20]:
            held_out.append(Path(shutil.copy(photo, root / f"{label}-{photo.name}")))
    base = Image.open(held_out[0])
    rotated = root / "rotated6.jpg"  # stored sideways, upright by its EXIF orientation (90° clockwise)
    exif = base.getexif()
    exif[0x0112] = 6
    base.transpose(Image.Transpose.ROTATE_90).save(rotated, exif=exif, quality=90)
    large = root / "large-rotated8.jpg"  # 4× the dataset size and more: Pillow decodes it at reduced scale
    exif[0x0112] = 8
    base.resize((1203, 997), Image.Resampling.BICUBIC).save(large, exif=exif, quality=90)
    png = root / "photo.png"
    Image.open(held_out[-1]).save(png)
    rgba = root / "photo-alpha.png"
    alpha = np.asarray(Image.open(held_out[-2]).convert("RGBA")).copy()
    alpha[: alpha.shape[0] // 3, :, 3] = 60
    Image.fromarray(alpha).save(rgba)
    neither = root / "checkerboard.png"
    board = (np.indices((240, 320)).sum(0) // 20) % 2 * 255
    Image.fromarray(np.stack([board, 255 - board, board // 2], -1).astype(np.uint8)).save(neither)

    bundles = {}
    for mode in ("squash", "crop"):
        datasets.create(root / "train", f"photos-{mode}", store=store, size=224, resize_mode=mode)
        result = train(TrainConfig(dataset=f"photos-{mode}", name=f"photos-{mode}", pretrained=True), store=store)
        bundles[mode] = result.bundle
    return bundles, labels, [*held_out, rotated, large, png, rgba, neither]


@pytest.mark.parametrize("mode", ["squash", "crop"])
def test_node_gives_pythons_pixels_and_probabilities_on_photos(photo_models, mode):
    bundles, labels, images = photo_models
    bundle = bundles[mode]
    assert json.loads((bundle / "shoal.json").read_text())["input"]["resize_mode"] == mode
    # the network input: the same bytes as shoal.data.imageops.prepare (decode, draft, EXIF, resize)
    script = ("const c = require('./classify.js'); (async () => { for (const f of process.argv.slice(1)) {"
              "const d = await c.decode(f, [224, 224]);"
              f"process.stdout.write(Buffer.from(c.resizeMode(c.toChannels(d, 3), 224, 224, '{mode}').pixels)); }} }})()")
    done = subprocess.run([NODE, "-e", script, *map(str, images)], capture_output=True, timeout=GENEROUS_S, cwd=EXAMPLE)
    assert done.returncode == 0, done.stderr.decode()
    got = np.frombuffer(done.stdout, np.uint8).reshape(len(images), 224, 224, 3)
    for image, pixels in zip(images, got):
        want = prepare(image, (224, 224), mode, 3)
        assert np.array_equal(pixels, want), (f"{image.name}: {int((pixels != want).sum())} values differ "
                                              "(classify.js resizes in Pillow 13's pass order)")
    # and so the probabilities (issue 15: within 0.005; both runtimes run the same graph on the same input)
    assert _max_difference(bundle, images, labels) <= 1e-4


def test_node_gives_the_unfamiliar_verdict_like_shoal_classify(photo_models, tmp_path):
    bundles, labels, images = photo_models
    bundle = bundles["crop"]
    want = list(shoal.load(bundle).predict_iter(images, 1))
    assert want[-1].unfamiliar and not all(r.unfamiliar for r in want)  # the checkerboard is like no photo
    for js, py in zip(_node_json(bundle, images), want):
        assert js["unfamiliar"] is py.unfamiliar and "unfamiliar_reason" not in js
        assert js["unfamiliar_score"] == pytest.approx(py.unfamiliar_score, abs=1e-4)
    done = _node(str(bundle), *map(str, images), "--top", "1")
    assert done.returncode == 0 and done.stderr == ""
    lines = done.stdout.splitlines()
    assert [line.endswith("  " + UNFAMILIAR) for line in lines] == [r.unfamiliar for r in want]
    assert lines[-1] == f"{images[-1]}  {want[-1].predictions[0][0]} {want[-1].predictions[0][1] * 100:.2f}%  {UNFAMILIAR}"

    # a bundle without a detector: null, and the manifest's reason, as Python says it
    plain = tmp_path / "plain"
    shutil.copytree(bundle, plain)
    manifest = json.loads((plain / "shoal.json").read_text())
    manifest["unfamiliar"] = {"reason": "the network file has no embedding"}
    (plain / "shoal.json").write_text(json.dumps(manifest))
    py = shoal.load(plain).predict(images[0], top=1)
    (js,) = _node_json(plain, images[:1])
    assert js["unfamiliar"] is None and js["unfamiliar_score"] is None
    assert js["unfamiliar_reason"] == py.unfamiliar_reason == "the model cannot tell: the network file has no embedding"
    done = _node(str(plain), str(images[0]))
    assert done.returncode == 0 and done.stderr == "No unfamiliar verdict: the network file has no embedding\n"
    assert UNFAMILIAR not in done.stdout


def test_node_classifies_an_imported_caffe_model(tmp_path, monkeypatch):
    """An imported DIGITS model's bundle (issue 10): its graph takes RGB and swaps to BGR inside, subtracts the
    mean image, so Node feeds it as any bundle; its probabilities are Python's, and it has no unfamiliar verdict."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "importers"))
    from test_caffe_finetune import _caffe_net

    from shoal.importers.caffe import import_caffe

    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "home"))
    done = import_caffe(_caffe_net(tmp_path / "caffe"), name="caffe", mean="104,117,123")
    rng = np.random.default_rng(0)
    image = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (45, 50, 3), dtype=np.uint8)).save(image)  # resized (squash) to 32x32
    assert _max_difference(done.bundle, [image], done.card.labels) <= 1e-4
    (got,) = _node_json(done.bundle, [image])
    assert got["unfamiliar"] is None and "imported from Caffe" in got["unfamiliar_reason"]


def test_node_prints_percentages_as_shoal_classify_does():
    from shoal.cli.classify import _percent

    probabilities = [0.9997, 0.5, 0.12345, 0.00005, 0.00004, 0.0]
    script = ("const c = require('./classify.js'); const ps = JSON.parse(process.argv[1]);"
              "console.log(c.formatLine({source: 'x', predictions: ps.map((p, i) => ({label: 'c' + i, probability: p}))}));")
    done = subprocess.run([NODE, "-e", script, json.dumps(probabilities)], capture_output=True, text=True,
                          timeout=GENEROUS_S, cwd=EXAMPLE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "  ".join(["x", *(f"c{i} {_percent(p)}" for i, p in enumerate(probabilities))])
    assert done.stdout.strip().endswith("c4 <0.01%  c5 <0.01%")  # a true zero too, as Python prints it
