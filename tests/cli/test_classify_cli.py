"""``shoal classify``: line and JSON formats, errors per input, exit codes, video, no torch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import shoal
from inference_fixtures import ToyModel
from shoal.cli import _register, app
from waiting import GENEROUS_S

_register()
runner = CliRunner()
LINE = re.compile(r"^(?P<source>\S+)((  (?P<label>\w+) (?P<pct>\d+\.\d\d%|<0\.01%))+)$")



def _images(toy: ToyModel, n: int = 3) -> list[str]:
    return [str(next(toy.images.glob(f"{label}/{label}_00.*"))) for label in toy.labels][:n]


def test_one_line_per_image_with_ranked_percentages(rgb):
    images = _images(rgb)
    result = runner.invoke(app, ["classify", str(rgb.bundle), *images])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == len(images)
    model = shoal.load(rgb.bundle)
    for line, image in zip(lines, images):
        match = LINE.match(line)
        assert match, line
        parts = line.split("  ")
        assert parts[0] == image and len(parts) == 1 + len(rgb.labels)
        want = model.predict(image)
        assert parts[1:] == [f"{label} {p * 100:.2f}%" if p * 100 >= 0.005 else f"{label} <0.01%"
                             for label, p in want.predictions]
    assert result.stderr == ""


def test_top_limits_the_classes(rgb):
    result = runner.invoke(app, ["classify", str(rgb.bundle), _images(rgb)[0], "--top", "1"])
    assert result.exit_code == 0
    assert len(result.stdout.strip().split("  ")) == 2
    bad = runner.invoke(app, ["classify", str(rgb.bundle), _images(rgb)[0], "--top", "0"])
    assert bad.exit_code == 2 and "--top" in bad.output


def test_json_is_one_list_of_sources_and_ranked_predictions(rgb):
    images = _images(rgb)
    result = runner.invoke(app, ["classify", str(rgb.bundle), *images, "--json", "--top", "2"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert [d["source"] for d in data] == images
    want = shoal.load(rgb.bundle).predict(images, top=2)
    assert data == [w.to_dict() for w in want]
    for d in data:
        assert [set(p) for p in d["predictions"]] == [{"label", "probability"}] * 2
        assert d["predictions"][0]["probability"] >= d["predictions"][1]["probability"]


def test_folders_and_model_names(rgb, monkeypatch):
    monkeypatch.setenv("SHOAL_HOME", str(rgb.home))
    result = runner.invoke(app, ["classify", rgb.name, str(rgb.images / "square"), "--top", "1"])
    assert result.exit_code == 0, result.output
    sources = [line.split("  ")[0] for line in result.stdout.splitlines()]
    assert sources == sorted(str(p) for p in (rgb.images / "square").iterdir())


def test_unreadable_inputs_get_an_error_line_and_exit_code_1(rgb, tmp_path):
    fake = tmp_path / "fake.jpg"
    fake.write_text("not a JPEG")
    good = _images(rgb)[0]
    result = runner.invoke(app, ["classify", str(rgb.bundle), good, str(fake), str(tmp_path / "gone.png"), good])
    assert result.exit_code == 1
    assert [line.split("  ")[0] for line in result.stdout.splitlines()] == [good, good]
    errors = result.stderr.splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"Error: cannot read image {fake}: not an image")
    assert errors[1] == f"Error: cannot read image {tmp_path / 'gone.png'}: file not found (or a broken symbolic link)"

    as_json = runner.invoke(app, ["classify", str(rgb.bundle), good, str(fake), "--json"])
    assert as_json.exit_code == 1
    data = json.loads(as_json.stdout)
    assert [("error" in d) for d in data] == [False, True] and data[1]["predictions"] == []


def test_usage_errors(rgb, tmp_path):
    result = runner.invoke(app, ["classify", str(rgb.bundle)])
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: give at least one image, folder or URL to classify (or --video FILE|CAMERA)"
    missing = runner.invoke(app, ["classify", str(tmp_path / "nothing"), _images(rgb)[0]])
    assert missing.exit_code == 1 and missing.stderr.startswith("Error: no model bundle at")
    both = runner.invoke(app, ["classify", str(rgb.bundle), _images(rgb)[0], "--video", "0"])
    assert both.exit_code == 1 and "--video classifies one video" in both.stderr


def test_video_prints_every_nth_frame(rgb, tmp_path):
    cv2 = pytest.importorskip("cv2", reason="OpenCV (shoal[video]) is not installed")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (48, 40))
    for image in _images(rgb) * 2:
        writer.write(np.ascontiguousarray(np.asarray(Image.open(image).convert("RGB").resize((48, 40)))[:, :, ::-1]))
    writer.release()
    result = runner.invoke(app, ["classify", str(rgb.bundle), "--video", str(video), "--every", "2", "--top", "1"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split("  ")[0] for line in lines] == [f"{video} frame 0 (0.00 s)", f"{video} frame 2 (0.40 s)",
                                                       f"{video} frame 4 (0.80 s)"]
    as_json = runner.invoke(app, ["classify", str(rgb.bundle), "--video", str(video), "--every", "3", "--json"])
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [r["frame"] for r in records] == [0, 3] and all(r["source"] == str(video) for r in records)
    missing = runner.invoke(app, ["classify", str(rgb.bundle), "--video", str(tmp_path / "none.mp4")])
    assert missing.exit_code == 1 and "Error: cannot open video" in missing.stderr


# What a cold ``shoal classify`` of a local file must not import: torch, the other commands,
# the training, network and dataset-store stages, and the network stack URLs need.
NOT_ON_THE_CLASSIFY_PATH = ("torch", "timm", "torchvision", "shoal.cli.dataset", "shoal.cli.train",
                            "shoal.cli.evaluate", "shoal.cli.serve", "shoal.cli.store", "shoal.training",
                            "shoal.networks", "shoal.data.dataset", "shoal.store", "ssl", "http.client")


def test_the_classify_command_never_imports_torch(rgb):
    """A whole ``shoal classify`` process: the answer, and nothing it does not need imported."""
    code = (
        "import sys\n"
        "from shoal.cli import main\n"
        f"sys.argv = ['shoal', 'classify', {str(rgb.bundle)!r}, {_images(rgb)[0]!r}, '--top', '1']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        f"print('heavy:', sorted(m for m in {NOT_ON_THE_CLASSIFY_PATH!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=GENEROUS_S,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    first, last = done.stdout.splitlines()[0], done.stdout.splitlines()[-1]
    assert first.startswith(_images(rgb)[0] + "  ")
    assert last == "heavy: []"


def test_help_shows_examples():
    result = runner.invoke(app, ["classify", "--help"])
    assert result.exit_code == 0
    assert "shoal classify dolphins.shoal photo.jpg" in result.stdout
    assert "--video" in result.stdout and "--json" in result.stdout


def test_bundle_paths_with_spaces(rgb, tmp_path):
    spaced = tmp_path / "my models" / "toy bundle"
    spaced.mkdir(parents=True)
    for f in Path(rgb.bundle).iterdir():
        (spaced / f.name).write_bytes(f.read_bytes())
    result = runner.invoke(app, ["classify", str(spaced), _images(rgb)[0], "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)[0]["source"] == _images(rgb)[0]
