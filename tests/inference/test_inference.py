"""shoal.load / Classifier: preprocessing parity with training, every input kind, runtimes, errors."""

from __future__ import annotations

import functools
import http.server
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import shoal
from inference_fixtures import ToyModel, toy_model
from shoal.bundle import zip_bundle
from shoal.errors import BundleError, ConfigError, InputError
from shoal.inference import Classifier, Result, download
from waiting import GENEROUS_S




@pytest.fixture(scope="session")
def model(rgb: ToyModel) -> Classifier:
    return shoal.load(rgb.bundle)


def _image(toy: ToyModel, label: str = "circle", k: int = 0) -> Path:
    return next(toy.images.glob(f"{label}/{label}_{k:02d}.*"))


def _probs(result: Result, labels: list[str]) -> np.ndarray:
    found = dict(result.predictions)
    return np.array([found[label] for label in labels])


# -- preprocessing parity with training --------------------------------------------------------
@pytest.mark.parametrize("kind", ["rgb", "gray"])
def test_predict_gives_the_probabilities_of_the_training_validation_path(kind, tmp_path_factory):
    """The validation images, through the training code (stored pixels → PixelBatches → torch),
    and their source files, through predict (decode → resize → crop → ONNX), agree."""
    import torch

    from shoal import datasets
    from shoal.models import ModelFolder
    from shoal.networks.normalized import rebuild
    from shoal.networks.weights import load_weights
    from shoal.store import Store
    from shoal.training.batches import PixelBatches

    toy = toy_model(kind, tmp_path_factory)
    store = Store(toy.home)
    ds = datasets.load(toy.dataset, store=store)
    folder = ModelFolder.of(toy.name, store=store)
    card = folder.read_card()
    net = rebuild(card.architecture, len(card.labels), channels=card.input.channels,
                  mean_shape=card.normalization.mean_shape)
    load_weights(folder.best_path, net)
    net.eval()
    crop = card.input.crop_hw
    with torch.no_grad():
        want = torch.cat([torch.softmax(net(x), 1) for x, _ in
                          PixelBatches(ds.images("val"), ds.labels("val"), batch_size=5, crop=crop, train=False)])

    classifier = shoal.load(toy.bundle)
    results = classifier.predict(ds.sources("val"), top=None)
    assert [r.source for r in results] == ds.sources("val")
    got = np.stack([_probs(r, classifier.labels) for r in results])
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
    np.testing.assert_allclose(classifier.predict_proba(ds.sources("val")), want.numpy(), atol=1e-5)
    # and the stored pixels are what prepare() makes of the source files
    assert np.array_equal(np.stack([classifier.prepare(s) for s in ds.sources("val")]), ds.images("val"))


def test_manifest_input_is_read(model, rgb):
    assert model.labels == list(rgb.labels)
    assert model.input.dataset_wh == (32, 32) and (model.input.width, model.input.height) == (28, 28)
    assert model.input.crop and model.card.input is model.input and model.card.architecture == "lenet"
    assert model.input.crop_hw == (28, 28) and model.input.channels == 3 and model.input.resize_mode == "squash"
    assert model.manifest["architecture"] == "lenet"
    assert model.runtime.name == "onnx"
    assert "lenet" in repr(model)


# -- input kinds -----------------------------------------------------------------------------------
def test_every_input_kind_gives_the_same_answer(model, rgb):
    path = _image(rgb, "square", 1)
    pil = Image.open(path).convert("RGB")
    rgb_array = np.asarray(pil)
    want = model.predict(path, top=None)
    assert isinstance(want, Result) and want.ok and want.source == str(path)
    assert [p for _, p in want.predictions] == sorted((p for _, p in want.predictions), reverse=True)
    assert sum(p for _, p in want.predictions) == pytest.approx(1.0, abs=1e-5)
    for given, source in [(str(path), str(path)), (path.read_bytes(), "<bytes>"), (pil, "<PIL image>"),
                          (rgb_array, "<array>")]:
        got = model.predict(given, top=None)
        assert got.source == source
        np.testing.assert_allclose(_probs(got, model.labels), _probs(want, model.labels), atol=1e-6)
    bgr = model.predict(np.ascontiguousarray(rgb_array[:, :, ::-1]), top=None, bgr=True)
    np.testing.assert_allclose(_probs(bgr, model.labels), _probs(want, model.labels), atol=1e-6)
    swapped = model.predict(np.ascontiguousarray(rgb_array[:, :, ::-1]), top=None)  # BGR read as RGB: another image
    assert not np.allclose(_probs(swapped, model.labels), _probs(want, model.labels), atol=1e-6)


def test_grayscale_and_rgba_arrays_are_accepted(model, rgb):
    gray = np.asarray(Image.open(_image(rgb)).convert("L"))
    assert gray.ndim == 2
    result = model.predict(gray)
    assert result.ok and result.label in rgb.labels
    rgba = np.dstack([np.asarray(Image.open(_image(rgb)).convert("RGB")), np.full(gray.shape, 255, np.uint8)])
    np.testing.assert_allclose(_probs(model.predict(rgba, top=None), model.labels),
                               _probs(model.predict(_image(rgb), top=None), model.labels), atol=1e-6)


def test_lists_batches_and_top(model, rgb):
    paths = [_image(rgb, label, k) for label in rgb.labels for k in range(3)]
    one_by_one = [model.predict(p, top=None) for p in paths]
    for batch_size in (1, 4, 32):
        results = model.predict(paths, top=None, batch_size=batch_size)
        assert [r.source for r in results] == [str(p) for p in paths]
        for got, want in zip(results, one_by_one):
            np.testing.assert_allclose(_probs(got, model.labels), _probs(want, model.labels), atol=1e-6)
    top1 = model.predict(paths, top=1)
    assert all(len(r.predictions) == 1 and r.label == w.label for r, w in zip(top1, one_by_one))
    assert len(model.predict(paths[0], top=99).predictions) == len(rgb.labels)
    stacked = np.stack([np.asarray(Image.open(p).convert("RGB").resize((40, 30))) for p in paths[:3]])
    batch = model.predict(stacked)
    assert isinstance(batch, list) and [r.source for r in batch] == ["<array 0>", "<array 1>", "<array 2>"]
    proba = model.predict_proba(paths)
    assert proba.shape == (len(paths), len(rgb.labels)) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    assert model.predict_proba([]).shape == (0, len(rgb.labels))


@pytest.mark.parametrize("top", [0, -1, 1.5, "3", True])
def test_bad_top_is_refused(model, rgb, top):
    with pytest.raises(ConfigError, match=r"top must be an int >= 1 \(or None for all 3 classes\), got"):
        model.predict(_image(rgb), top=top)


def test_bad_batch_size_is_refused(model, rgb):
    with pytest.raises(ConfigError, match="batch_size must be an int >= 1, got 0"):
        model.predict([_image(rgb)], batch_size=0)


def test_a_folder_is_classified_recursively_in_sorted_order(model, rgb, tmp_path):
    folder = tmp_path / "photos"
    (folder / "b").mkdir(parents=True)
    (folder / "a" / "deep").mkdir(parents=True)
    for target in (folder / "z.png", folder / "b" / "x.PNG", folder / "a" / "deep" / "y.jpg", folder / ".hidden.png"):
        Image.open(_image(rgb)).convert("RGB").save(target, "PNG" if target.suffix.lower() == ".png" else "JPEG")
    (folder / "notes.txt").write_text("not an image")
    results = model.predict(folder)
    assert [Path(r.source).relative_to(folder).as_posix() for r in results] == ["a/deep/y.jpg", "b/x.PNG", "z.png"]
    assert all(r.ok for r in results)
    (folder / "loop").symlink_to(folder, target_is_directory=True)  # a link loop ends, never repeats
    assert len(model.predict(folder)) == 3


def test_an_empty_folder_is_an_error(model, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="the folder has no image files"):
        model.predict(tmp_path / "empty")
    [result] = model.predict([tmp_path / "empty"])
    assert not result.ok and "no image files" in result.error


# -- bad inputs ------------------------------------------------------------------------------------
def test_a_bad_item_in_a_list_gets_an_error_result_and_the_others_run(model, rgb, tmp_path):
    text = tmp_path / "fake.jpg"
    text.write_text("this is not a JPEG")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    good = _image(rgb)
    results = model.predict([good, text, tmp_path / "missing.png", empty, b"\x89PNG\r\n", good, 42])
    assert [r.ok for r in results] == [True, False, False, False, False, True, False]
    assert results[1].error.startswith(f"cannot read image {text}: not an image")
    assert "file not found" in results[2].error
    assert "empty file (0 bytes)" in results[3].error
    assert results[4].source == "<bytes 4>" and results[4].error.startswith("cannot read image <bytes 4>:")
    assert results[6].source == "<int 6>" and "cannot classify a int" in results[6].error
    assert results[1].predictions == [] and results[1].label is None and results[1].probability is None
    assert results[1].to_dict() == {"source": str(text), "predictions": [], "error": results[1].error}
    np.testing.assert_allclose(_probs(results[0], model.labels), _probs(results[5], model.labels))
    with pytest.raises(InputError, match="not an image"):
        model.predict_proba([good, text])


def test_a_single_bad_input_raises(model, tmp_path):
    with pytest.raises(InputError, match=r"cannot read image .*missing\.png: file not found"):
        model.predict(tmp_path / "missing.png")
    with pytest.raises(InputError, match=r"cannot classify a dict: give a path, folder, http\(s\) URL, bytes, binary file"):
        model.predict({"a": 1})
    with pytest.raises(InputError, match=r"only http:// and https:// URLs can be fetched, got ftp://"):
        model.predict("ftp://example.com/a.jpg")
    with pytest.raises(InputError, match="float array"):
        model.predict(np.zeros((8, 8, 3), np.float32))


def test_to_dict_is_json_ready(model, rgb):
    result = model.predict(_image(rgb), top=2)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["source"] == str(_image(rgb))
    assert [set(p) for p in data["predictions"]] == [{"label", "probability"}] * 2
    assert data["predictions"][0]["label"] == result.label


# -- URLs --------------------------------------------------------------------------------------
class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:
        if self.path == "/stream.png":  # no Content-Length: the size limit must stop the reading itself
            data = (Path(self.directory) / "big.png").read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(data)
            return
        if self.path == "/page.html":
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(b"<html>hello</html>")
            return
        super().do_GET()


@pytest.fixture()
def web(tmp_path: Path, rgb: ToyModel) -> Iterator[tuple[str, Path]]:
    """A local HTTP server on a free port of 127.0.0.1 serving ``tmp_path/www``; stopped after the test."""
    root = tmp_path / "www"
    root.mkdir()
    Image.open(_image(rgb)).save(root / "img.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)).save(root / "big.png")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_urls_are_downloaded_and_classified(model, rgb, web):
    base, root = web
    got = model.predict(f"{base}/img.png", top=None)
    assert got.source == f"{base}/img.png"
    np.testing.assert_allclose(_probs(got, model.labels), _probs(model.predict(root / "img.png", top=None),
                                                                 model.labels), atol=1e-6)
    results = model.predict([f"{base}/img.png", f"{base}/missing.png", f"{base}/page.html"])
    assert [r.ok for r in results] == [True, False, False]
    assert "the server answered HTTP 404" in results[1].error
    assert "the server sent text/html, not an image" in results[2].error


def test_downloads_are_size_limited(web):
    base, root = web
    size = (root / "big.png").stat().st_size
    assert download(f"{base}/big.png") == (root / "big.png").read_bytes()
    with pytest.raises(InputError, match=r"more than the limit of 0 MiB; download it and pass the file instead"):
        download(f"{base}/big.png", max_bytes=size - 1)
    with pytest.raises(InputError, match=r"larger than the limit of 0 MiB"):
        download(f"{base}/stream.png", max_bytes=size // 2)


def test_unreachable_urls_fail_clearly():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InputError, match=r"cannot connect .*check the address and your connection"):
        download(f"http://127.0.0.1:{port}/a.jpg", timeout=2)


# -- bundles and runtimes ------------------------------------------------------------------------
def test_a_shoal_file_gives_the_same_answers_as_its_folder(rgb, tmp_path):
    zipped = zip_bundle(rgb.bundle, tmp_path / "toy.shoal")
    paths = [_image(rgb, label) for label in rgb.labels]
    from_zip = shoal.load(zipped).predict_proba(paths)
    from_dir = shoal.load(rgb.bundle).predict_proba(paths)
    np.testing.assert_array_equal(from_zip, from_dir)


def test_the_torch_runtime_matches_onnx(rgb, gray):
    for toy in (rgb, gray):
        paths = sorted(p for p in toy.images.rglob("*") if p.is_file())[:10]
        torch_model = shoal.load(toy.bundle, runtime="torch", device="cpu")
        assert torch_model.runtime.name == "torch" and torch_model.runtime.device == "cpu"
        np.testing.assert_allclose(torch_model.predict_proba(paths), shoal.load(toy.bundle).predict_proba(paths),
                                   atol=1e-4)


def test_a_model_name_in_the_store_finds_its_bundle(rgb, monkeypatch):
    monkeypatch.setenv("SHOAL_HOME", str(rgb.home))
    assert shoal.load(rgb.name).path == rgb.bundle
    with pytest.raises(BundleError, match=r"no model bundle at 'nope' and no model of that name in .* "
                                          r"\(trained models: rgb-lenet\)"):
        shoal.load("nope")


def test_bad_bundles_and_options_are_refused(rgb, tmp_path):
    with pytest.raises(BundleError, match="no model bundle at"):
        shoal.load(tmp_path / "missing-dir" / "x")
    with pytest.raises(ConfigError, match=r"runtime must be 'onnx' \(fast, no torch\) or 'torch' \(GPUs, heat-maps\), got 'tf'"):
        shoal.load(rgb.bundle, runtime="tf")
    with pytest.raises(ConfigError, match="threads must be an int >= 1"):
        shoal.load(rgb.bundle, threads=0)
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in rgb.bundle.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    manifest = json.loads((broken / "shoal.json").read_text())
    manifest["input"]["resize_mode"] = "stretch"
    (broken / "shoal.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="has an unusable input section: resize_mode must be one of"):
        shoal.load(broken)
    del manifest["input"]["size"]
    (broken / "shoal.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="lacks input.size"):
        shoal.load(broken)
    manifest = json.loads((rgb.bundle / "shoal.json").read_text())
    (broken / "shoal.json").write_text(json.dumps(manifest))
    (broken / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(BundleError, match="the ONNX graph of bundle .* cannot be loaded"):
        shoal.load(broken)


def test_a_null_unfamiliar_threshold_is_a_one_line_bundle_error(rgb, tmp_path):
    broken = tmp_path / "null-threshold"
    broken.mkdir()
    for f in rgb.bundle.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    manifest = json.loads((broken / "shoal.json").read_text())
    manifest["unfamiliar"]["threshold"] = None
    (broken / "shoal.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"has unfamiliar\.threshold None; expected a number") as caught:
        shoal.load(broken)
    assert "\n" not in str(caught.value)
    from shoal.cli import _register, app
    from typer.testing import CliRunner

    _register()
    result = CliRunner().invoke(app, ["classify", str(broken), str(_image(rgb))])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("Error: the manifest of ") and len(result.stderr.strip().splitlines()) == 1


def test_loading_and_predicting_never_import_torch(rgb):
    """The default runtime is torch-free: a fresh process loads and classifies with NumPy, Pillow and
    ONNX Runtime only (what ``shoal[runtime]`` installs) — no torch, no CLI or web framework."""
    code = (
        "import sys, shoal\n"
        "assert 'shoal.inference' not in sys.modules, 'import shoal must stay cheap'\n"
        f"model = shoal.load({str(rgb.bundle)!r})\n"
        f"r = model.predict({str(_image(rgb))!r})\n"
        f"model.predict([{str(rgb.images)!r}], top=1)\n"
        "print(r.label)\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'timm', 'safetensors', 'cv2', 'sklearn', 'scipy', "
        "'fastapi', 'typer', 'rich') if m in sys.modules)\n"
        "print('heavy:', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=GENEROUS_S,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "heavy: []"
    assert done.stdout.splitlines()[0] in rgb.labels


# -- video ---------------------------------------------------------------------------------------
def _write_video(path: Path, frames: list[np.ndarray]) -> None:
    cv2 = pytest.importorskip("cv2", reason="OpenCV (shoal[video]) is not installed")
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    for frame in frames:
        writer.write(frame)
    writer.release()


def test_video_frames_are_classified_every_nth(model, rgb, tmp_path):
    cv2 = pytest.importorskip("cv2", reason="OpenCV (shoal[video]) is not installed")
    frames = [np.ascontiguousarray(np.asarray(Image.open(_image(rgb, label, k)).convert("RGB").resize((48, 40)))[:, :, ::-1])
              for k in range(3) for label in rgb.labels]
    video = tmp_path / "clip.avi"
    _write_video(video, frames)
    capture = cv2.VideoCapture(str(video))
    decoded = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        decoded.append(frame)
    capture.release()
    assert len(decoded) == len(frames)

    results = list(model.predict_video(video, top=None, every=2, batch_size=2))
    assert [r.frame for r in results] == [0, 2, 4, 6, 8]
    assert [r.time_s for r in results] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert {r.source for r in results} == {str(video)}
    for result in results:
        want = model.predict(decoded[result.frame], top=None, bgr=True)
        np.testing.assert_allclose(_probs(result, model.labels), _probs(want, model.labels), atol=1e-6)
    assert results[0].to_dict()["frame"] == 0 and results[0].to_dict()["time_s"] == 0.0


def test_video_errors_are_clear(model, tmp_path, monkeypatch):
    from shoal.inference import VideoError

    with pytest.raises(VideoError, match="cannot open video .*nope.mp4: no such file"):
        list(model.predict_video(tmp_path / "nope.mp4"))
    with pytest.raises(ConfigError, match="every must be an int >= 1"):
        list(model.predict_video(tmp_path / "nope.mp4", every=0))
    monkeypatch.setitem(sys.modules, "cv2", None)  # as if OpenCV were not installed
    with pytest.raises(VideoError, match=r"classifying video needs OpenCV, which is not installed: "
                                         r"pip install 'shoal\[video\]'"):
        list(model.predict_video(0))


def test_pil_images_are_not_modified(model, rgb):
    pil = Image.open(_image(rgb)).convert("RGB")
    before = pil.tobytes()
    model.predict(pil)
    assert pil.tobytes() == before and pil.size == Image.open(_image(rgb)).size


def test_bytearrays_and_open_files_are_accepted(model, rgb):
    data = _image(rgb).read_bytes()
    want = _probs(model.predict(_image(rgb), top=None), model.labels)
    np.testing.assert_allclose(_probs(model.predict(bytearray(data), top=None), model.labels), want, atol=1e-6)
    result = model.predict(io.BytesIO(data), top=None)
    assert result.source == "<file>"
    np.testing.assert_allclose(_probs(result, model.labels), want, atol=1e-6)
    with open(_image(rgb), "rb") as f:
        assert model.predict(f).source == str(_image(rgb))
