"""shoal export --format triton: the Triton model repository's layout and config against the ONNX graph."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import onnx
import pytest
from typer.testing import CliRunner

from shoal.bundle import MANIFEST, ONNX_FILE, open_bundle
from shoal.bundle.triton import write_repository
from shoal.cli import _register, app

_register()
runner = CliRunner()

TRITON_TYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.BOOL: "TYPE_BOOL"}


def parse_pbtxt(text: str) -> dict[str, Any]:
    """The protobuf text format subset config.pbtxt uses: ``key: value``, ``key [ ... ]``, ``key { ... }``;
    a repeated message is a list, a scalar list too."""
    tokens = re.findall(r'"[^"]*"|[\[\]{}:,]|[^\s\[\]{}:,"]+', text)
    pos = 0

    def value() -> Any:
        nonlocal pos
        token = tokens[pos]
        pos += 1
        if token == "{":
            return message("}")
        if token == "[":
            items = []
            while tokens[pos] != "]":
                items.append(value())
                if tokens[pos] == ",":
                    pos += 1
            pos += 1
            return items
        if token.startswith('"'):
            return token[1:-1]
        return int(token) if re.fullmatch(r"-?\d+", token) else token

    def message(end: str | None) -> dict[str, Any]:
        nonlocal pos
        fields: dict[str, Any] = {}
        while pos < len(tokens) and tokens[pos] != end:
            key = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            fields[key] = value()
        pos += 1
        return fields

    return message(None)


def graph_shapes(path: Path) -> dict[str, tuple[str, list[int | str]]]:
    """name -> (Triton type, shape with the symbolic axes by name), read with onnx (not ONNX Runtime)."""
    graph = onnx.load(str(path)).graph
    shapes = {}
    for v in [*graph.input, *graph.output]:
        t = v.type.tensor_type
        shapes[v.name] = (TRITON_TYPES[t.elem_type], [d.dim_param or d.dim_value for d in t.shape.dim])
    return shapes


def check_against_graph(model_dir: Path, labels: list[str]) -> dict[str, Any]:
    assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*")) == [
        "1", "1/model.onnx", "config.pbtxt", "labels.txt"]
    config = parse_pbtxt((model_dir / "config.pbtxt").read_text())
    assert config["name"] == model_dir.name
    assert config["platform"] == "onnxruntime_onnx" and config["max_batch_size"] == 64
    assert "dynamic_batching" in config
    graph = graph_shapes(model_dir / "1" / "model.onnx")
    served = {t["name"]: t for t in [*config["input"], *config["output"]]}
    assert set(served) == set(graph)
    for name, (dtype, shape) in graph.items():
        assert shape[0] == "batch"  # every tensor batched: the batch axis is Triton's, left out of dims
        assert served[name]["data_type"] == dtype, name
        if shape[1:]:
            assert served[name]["dims"] == shape[1:], name
            assert "reshape" not in served[name]
        else:  # a [batch] tensor
            assert served[name]["dims"] == [1] and served[name]["reshape"] == {"shape": []}, name
    assert [t["name"] for t in config["input"]] == ["pixels"]
    assert served["probabilities"]["label_filename"] == "labels.txt"
    assert (model_dir / "labels.txt").read_text().splitlines() == labels
    return config


def test_cli_writes_a_triton_model_that_matches_the_graph(rgb, monkeypatch, tmp_path):
    monkeypatch.setenv("SHOAL_HOME", str(rgb.home))
    (tmp_path / "repo" / "other").mkdir(parents=True)  # a repository with another model: kept
    result = runner.invoke(app, ["export", rgb.name, "--format", "triton", "--out", str(tmp_path / "repo")])
    assert result.exit_code == 0, result.output
    model_dir = tmp_path / "repo" / rgb.name
    assert result.stdout.strip() == str(model_dir)
    assert (tmp_path / "repo" / "other").is_dir()
    config = check_against_graph(model_dir, list(rgb.labels))
    served = {t["name"]: t for t in config["output"]}
    assert served["probabilities"]["dims"] == [len(rgb.labels)]
    assert config["input"][0]["dims"] == [3, 28, 28]  # LeNet's crop of the 32×32 dataset
    manifest = json.loads((rgb.bundle / MANIFEST).read_text())
    assert manifest["unfamiliar"]["threshold"] is not None  # so the graph has the verdict's outputs
    assert list(served) == ["probabilities", "unfamiliar_score", "unfamiliar"]
    assert served["unfamiliar"]["data_type"] == "TYPE_BOOL"
    assert served["unfamiliar_score"]["data_type"] == "TYPE_FP32"

    again = runner.invoke(app, ["export", rgb.name, "--format", "triton", "--out", str(tmp_path / "repo")])
    assert again.exit_code == 0, again.output  # written again over itself, whole
    check_against_graph(model_dir, list(rgb.labels))

    # --out naming a folder that holds a folder of the model's name, of the user's own files: refused, kept.
    (tmp_path / "home" / rgb.name).mkdir(parents=True)
    (tmp_path / "home" / rgb.name / "notes.txt").write_text("mine")
    refused = runner.invoke(app, ["export", rgb.name, "--format", "triton", "--out", str(tmp_path / "home")])
    assert refused.exit_code == 1
    assert "exists and is not a Triton model (it has no config.pbtxt)" in refused.stderr
    assert [p.name for p in (tmp_path / "home" / rgb.name).iterdir()] == ["notes.txt"]


def test_a_graph_of_probabilities_only(rgb, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(rgb.bundle, bundle)
    model = onnx.load(str(bundle / ONNX_FILE))
    kept = [o for o in model.graph.output if o.name == "probabilities"]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    onnx.save(model, str(bundle / ONNX_FILE))
    model_dir = write_repository(open_bundle(bundle), tmp_path / "repo", name="probs")
    config = check_against_graph(model_dir, list(rgb.labels))
    assert [t["name"] for t in config["output"]] == ["probabilities"]


def test_a_model_named_like_a_bundle_file_is_still_a_folder(rgb, tmp_path):
    """A model name may end in .shoal: its Triton model is a folder all the same (not a zipped bundle),
    and nothing else is left in the repository."""
    model_dir = write_repository(open_bundle(rgb.bundle), tmp_path / "repo", name="m.shoal")
    assert model_dir.is_dir() and (model_dir / "1" / ONNX_FILE).is_file()
    assert [p.name for p in (tmp_path / "repo").iterdir()] == ["m.shoal"]
    check_against_graph(model_dir, list(rgb.labels))


def test_a_shoal_file_is_refused_as_a_repository(rgb, monkeypatch, tmp_path):
    monkeypatch.setenv("SHOAL_HOME", str(rgb.home))
    result = runner.invoke(app, ["export", rgb.name, "--format", "triton", "--out", str(tmp_path / "m.shoal")])
    assert result.exit_code == 1
    assert "a Triton model repository is a folder, not a .shoal file" in result.output
    bad = runner.invoke(app, ["export", rgb.name, "--format", "trition", "--out", str(tmp_path / "repo")])
    assert bad.exit_code == 1
    assert "format must be one of bundle, triton, got 'trition' (did you mean 'triton'?)" in bad.output


def test_fixed_batch_graphs_are_served_unbatched(rgb, tmp_path):
    from shoal.bundle.triton import Tensor, model_config

    text = model_config("fixed", [Tensor("pixels", "TYPE_FP32", (1, 3, 8, 8), batched=False)],
                        [Tensor("probabilities", "TYPE_FP32", (1, 2), batched=False)], labels_output=None)
    config = parse_pbtxt(text)
    assert config["max_batch_size"] == 0 and "dynamic_batching" not in config
    assert config["input"][0]["dims"] == [1, 3, 8, 8] and config["output"][0]["dims"] == [1, 2]
