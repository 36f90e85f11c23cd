"""``shoal dataset ...`` through Typer's CliRunner: output, JSON, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from shoal.cli import _register, app
from waiting import GENEROUS_S

_register()
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_create_prints_the_table_and_where_it_is_stored(shoal_home, image_folder_factory):
    root = image_folder_factory(["cat", "dog"], [8, 5], size=(16, 16))
    (root / "dog" / "broken.jpg").write_bytes(b"")
    result = run("dataset", "create", str(root), "--name", "pets", "--size", "24x16", "--resize", "crop")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "dataset 'pets': 2 classes, 13 images, 24x16 RGB, crop" in out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert lines["cat"] == ["6", "2", "8"] and lines["dog"] == ["4", "1", "5"]
    assert f"{root / 'dog' / 'broken.jpg'}: empty file (0 bytes)" in out
    assert str(shoal_home / "datasets" / "pets") in out


def test_create_json_and_show_json_have_the_documented_keys(shoal_home, image_folder_factory):
    root = image_folder_factory(["a", "b"], 4, size=(10, 10))
    created = run("dataset", "create", str(root), "--name", "ab", "--size", "8", "--grayscale", "--val", "50", "--json")
    assert created.exit_code == 0, created.output
    shown = run("dataset", "show", "ab", "--json")
    data = json.loads(shown.stdout)
    assert data == json.loads(created.stdout)
    assert {"name", "classes", "size", "channels", "splits", "skipped", "mean_image"} <= set(data)
    assert data["classes"] == ["a", "b"] and data["size"] == [8, 8] and data["channels"] == 1
    assert data["splits"] == {"train": {"a": 2, "b": 2}, "val": {"a": 2, "b": 2}, "test": {"a": 0, "b": 0}}
    assert data["skipped"] == [] and Path(data["mean_image"]).is_file()


def test_list_explore_delete(tiny_dataset, tmp_path):
    listed = run("dataset", "list", "--json")
    assert [d["name"] for d in json.loads(listed.stdout)] == ["tiny"]
    human = run("dataset", "list")
    assert human.exit_code == 0 and "tiny" in human.stdout
    sheet = tmp_path / "sheet.png"
    explored = run("dataset", "explore", "tiny", "--out", str(sheet), "--per-class", "2")
    assert explored.exit_code == 0 and explored.stdout.strip() == str(sheet)
    with Image.open(sheet) as img:
        assert img.format == "PNG"
    deleted = run("dataset", "delete", "tiny")
    assert deleted.exit_code == 0 and deleted.stdout.strip() == "Deleted dataset 'tiny'."
    assert json.loads(run("dataset", "list", "--json").stdout) == []


def test_list_file_without_folder(shoal_home, image_folder_factory):
    root = image_folder_factory(["x", "y"], 3, size=(10, 10), name="listed")
    lines = [f"{p.relative_to(root).as_posix()} {p.parent.name}" for p in sorted(root.rglob("*.png"))]
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    result = run("dataset", "create", "--list", str(root / "list.txt"), "--name", "listed", "--size", "8", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["splits"]["train"] == {"x": 3, "y": 3}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dataset", "create", "--name", "x"], "give a FOLDER with one sub-folder of images per class"),
        (["dataset", "create", "/no/such/folder", "--name", "x"], "'/no/such/folder' does not exist"),
        (["dataset", "show", "nothing"], "no dataset named 'nothing'"),
        (["dataset", "delete", "nothing"], "no dataset named 'nothing'"),
    ],
)
def test_errors_are_one_line_and_exit_1(shoal_home, args, message):
    result = run(*args)
    assert result.exit_code == 1
    assert f"Error: {message}" in result.output
    assert "Traceback" not in result.output


def test_bad_options_are_refused_with_the_value(shoal_home, image_folder_factory):
    root = image_folder_factory(["a", "b"], 3, size=(10, 10))
    result = run("dataset", "create", str(root), "--name", "x", "--val", "120")
    assert result.exit_code == 1
    assert "Error: --val must be a number from 0 to 90, got 120\n" in result.output
    result = run("dataset", "create", str(root), "--name", "x", "--val", "10", "--val-folder", str(root))
    assert "Error: --val 10 does not apply with --val-folder" in result.output
    single = image_folder_factory(["cats"], 3, size=(10, 10), name="photos")
    result = run("dataset", "create", f"{single}/", "--name", "x")
    assert f"Error: '{single}/' has 1 class folder ('cats'); need at least 2 — add one subfolder per label" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (("--size", "²"), "--size must be one number or WxH, each side from 1 to 4096 pixels (for example 256 or "
                      "'320x240'), got '²'"),
    (("--val", "60", "--test", "40"), "--val + --test must be at most 90 so that images are left for training, "
                                      "got 60 + 40 = 100"),
    (("--max-per-class", "1"), "--max-per-class (1) must be at least --min-per-class (2): raise the maximum or "
                               "lower the minimum"),
    (("--seed", str(10**23)), "--seed must be an int from 0 to 4294967295, got 100000000000000000000000"),
    (("--val", "nan"), "--val must be a number from 0 to 90, got nan"),
])
def test_option_errors_name_the_flag_typed(shoal_home, image_folder_factory, args, message):
    root = image_folder_factory(["a", "b"], 3, size=(10, 10))
    result = run("dataset", "create", str(root), "--name", "x", *args)
    assert result.exit_code == 1
    assert result.output == f"Error: {message}\n"


def test_create_help_comes_from_the_config_fields():
    from shoal.config import field_docs
    from shoal.data.config import DataConfig

    result = run("dataset", "create", "--help")
    text = " ".join(result.output.replace("│", " ").split())
    docs = field_docs(DataConfig)
    assert "Percent of each class held out for validation" not in text  # the old hand-written help
    assert f"{docs['val_pct']} (default: 25.0)" in text
    assert f"{docs['min_per_class'][:1].upper()}{docs['min_per_class'][1:]} (default: 2)" in text


def test_duplicate_name(tiny_dataset, image_folder_factory):
    result = run("dataset", "create", str(image_folder_factory(size=(10, 10))), "--name", "tiny")
    assert result.exit_code == 1
    assert "Error: a dataset named 'tiny' already exists" in result.output


def test_help_shows_examples():
    for command in ("create", "show", "list", "delete", "explore", "sample"):
        result = run("dataset", command, "--help")
        assert result.exit_code == 0
        assert f"shoal dataset {command}" in result.output


def test_sample_builds_the_digits_once(shoal_home):
    first = run("dataset", "sample", "--json")
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)
    assert data["name"] == "digits" and data["classes"] == [str(d) for d in range(10)]
    assert data["size"] == [32, 32] and data["channels"] == 3
    assert sum(sum(c.values()) for c in data["splits"].values()) == 1797
    assert data["splits"]["val"]["0"] == 44  # floor(178 * 25%)
    assert len(list((shoal_home / "samples" / "digits" / "0").glob("*.png"))) == 178
    again = run("dataset", "sample", "--json")
    assert json.loads(again.stdout)["created"] == data["created"]  # reused, not rebuilt


def test_dataset_create_command_imports_nothing_heavy(tmp_path, image_folder_factory):
    root = image_folder_factory(["a", "b"], 3, size=(10, 10))
    code = (
        "import sys\n"
        "from shoal.cli import main\n"
        f"sys.argv = ['shoal', 'dataset', 'create', {str(root)!r}, '--name', 'x', '--size', '8']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "heavy = ('torch', 'torchvision', 'timm', 'sklearn', 'scipy', 'onnx', 'onnxruntime')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)), file=sys.stderr)\n"
    )
    env = {**os.environ, "SHOAL_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=GENEROUS_S, env=env, check=True)
    assert out.stderr.strip().splitlines()[-1] == "[]"
    assert "dataset 'x': 2 classes, 6 images" in out.stdout
