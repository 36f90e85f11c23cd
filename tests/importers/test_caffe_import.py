"""Reading Caffe files (wire, text), importing a DIGITS model end to end, and every refusal, one per kind."""

from __future__ import annotations

import io
import json
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from caffe_encoder import Layer, blob, caffemodel, length, prototxt, vint  # noqa: E402

from shoal.importers.caffe import CaffeError, import_caffe  # noqa: E402
from shoal.importers.caffe.net import caffe_pool_size, convert  # noqa: E402
from shoal.importers.caffe.sources import unpack  # noqa: E402
from shoal.importers.caffe.text import Ident, parse_prototxt  # noqa: E402
from shoal.importers.caffe.wire import parse_blob, parse_caffemodel  # noqa: E402


def _net(rng: np.random.Generator, channels: int = 3, size: int = 12, classes: int = 3) -> list[Layer]:
    return [
        Layer("conv1", "Convolution", ["data"], ["conv1"], "convolution_param { num_output: 4 kernel_size: 3 }",
              [rng.standard_normal((4, channels, 3, 3)).astype(np.float32) * 0.1, np.zeros(4, np.float32)]),
        Layer("relu1", "ReLU", ["conv1"], ["conv1"]),
        Layer("pool1", "Pooling", ["conv1"], ["pool1"], "pooling_param { pool: MAX kernel_size: 2 stride: 2 }"),
        Layer("fc", "InnerProduct", ["pool1"], ["fc"], f"inner_product_param {{ num_output: {classes} }}",
              [rng.standard_normal((classes, 4 * ((size - 2) // 2) ** 2)).astype(np.float32) * 0.01,
               np.zeros(classes, np.float32)]),
        Layer("prob", "Softmax", ["fc"], ["prob"]),
    ]


# -- the wire format ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["data", "legacy", "unpacked", "double", "raw32", "raw16"])
def test_blob_encodings_decode_to_the_same_values(mode: str) -> None:
    values = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 8
    decoded = parse_blob(blob(values, mode))
    assert decoded.data.size == 24
    assert np.array_equal(decoded.data.reshape(values.shape), values)
    assert decoded.shape == ((1, 2, 3, 4) if mode == "legacy" else (2, 3, 4))


def test_caffemodel_v1_v2_and_nvcaffe_fields() -> None:
    rng = np.random.default_rng(0)
    layers = _net(rng)
    v2 = parse_caffemodel(caffemodel(layers, nvcaffe=True, mode="raw16"))
    v1 = parse_caffemodel(caffemodel([layer for layer in layers if layer.type != "Softmax"], v1=True))
    for found in (v1, v2):
        assert found["conv1"].type == "Convolution"
        np.testing.assert_allclose(found["conv1"].blobs[0].data, layers[0].blobs[0].ravel(), atol=1e-3)
    assert v2["conv1"].blobs[0].source == "raw_data FLOAT16"
    assert v1["fc"].blobs[1].shape == (1, 1, 1, 3)  # legacy dims, right-aligned


def test_negative_int32_is_a_ten_byte_varint() -> None:
    from shoal.importers.caffe.wire import read_varint, signed

    value, end = read_varint(memoryview(b"\xff" * 9 + b"\x01"), 0)
    assert (signed(value), end) == (-1, 10)
    text = prototxt("n", (1, 3, 8, 8), [Layer("flat", "Flatten", ["data"], ["flat"], "flatten_param { axis: -3 }")])
    assert convert(parse_prototxt(text), {}).spec["layers"][0]["axis"] == 1


def test_caffe_pool_rounding() -> None:
    assert caffe_pool_size(112, 3, 2, 0, ceil=True) == 56  # GoogLeNet pool1; floor gives 55
    assert caffe_pool_size(112, 3, 2, 0, ceil=False) == 55
    assert caffe_pool_size(7, 2, 2, 1, ceil=True) == 4  # the clip: a 5th window would start in the padding


# -- the text format ----------------------------------------------------------------------------------
def test_prototxt_syntax() -> None:
    text = ("\ufeff# comment\r\nname: 'a' \"b\"  # joined\nlayer < name: \"c\\td\" type: \"Pooling\" >;\n"
            "input_shape: { dim: [1, 3, 0x10, 010] }\nx: - 2.5e-1f y: .5 z: inf w: MAX v: true, u: 1e3\n")
    net = parse_prototxt(text)
    assert net.text("name") == "ab"
    assert net.message("layer").text("name") == "c\td"
    assert net.message("input_shape").integers("dim") == [1, 3, 16, 8]
    assert net.number("x") == -0.25 and net.number("y") == 0.5 and net.number("z") == float("inf")
    assert net.one("w") == Ident("MAX") and net.flag("v", False) is True and net.number("u") == 1000.0


def test_prototxt_errors_name_the_line() -> None:
    with pytest.raises(CaffeError, match="line 2"):
        parse_prototxt('name: "a"\nlayer { name: }\n')
    with pytest.raises(CaffeError, match="extension"):
        parse_prototxt("[ext.x]: 1")


@pytest.mark.parametrize("text", ["dim: inf", "dim: nan", "dim: -inf", "dim: 2.5"])
def test_integers_refuse_non_integers_with_a_caffe_error(text: str) -> None:
    with pytest.raises(CaffeError, match="should hold integers"):
        parse_prototxt(text).integers("dim")


def test_lrn_k_follows_caffe_formula() -> None:
    """Caffe: x·(k + α/n·Σx²)^−β. (OpenCV 4.x ignores k, so the oracle tests keep k = 1.)"""
    torch = pytest.importorskip("torch")
    from shoal.networks.layers import _AcrossLRN, _WithinLRN

    x = np.random.default_rng(0).uniform(-2, 2, (1, 5, 4, 4)).astype(np.float32)
    sq = np.pad(x[0] ** 2, ((1, 1), (0, 0), (0, 0)))
    want = np.stack([x[0, c] * (2.0 + 0.3 / 3 * sq[c:c + 3].sum(0)) ** -0.75 for c in range(5)])
    got = _AcrossLRN(3, 0.3, 0.75, 2.0)(torch.from_numpy(x)).numpy()[0]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    sq2 = np.pad(x[0] ** 2, ((0, 0), (1, 1), (1, 1)))
    mean = np.stack([[[sq2[c, i:i + 3, j:j + 3].mean() for j in range(4)] for i in range(4)] for c in range(5)])
    np.testing.assert_allclose(_WithinLRN(3, 0.3, 0.75)(torch.from_numpy(x)).numpy()[0],
                               x[0] * (1 + 0.3 * mean) ** -0.75, rtol=1e-5)


def test_nvcaffe_batchnorm_layouts_match_bvlc() -> None:
    """NVCaffe 0.15 [scale, bias, mean, var, count] and 0.16 [mean, var, 1, scale, bias] = BVLC BatchNorm + Scale."""
    rng = np.random.default_rng(0)
    c = 4
    mean, var = rng.standard_normal(c).astype(np.float32), rng.uniform(0.5, 2, c).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 1.5, c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    one = np.ones(1, np.float32)
    conv = Layer("conv", "Convolution", ["data"], ["conv"], "convolution_param { num_output: 4 kernel_size: 1 }",
                 [rng.standard_normal((4, 3, 1, 1)).astype(np.float32), np.zeros(4, np.float32)])
    fc = Layer("fc", "InnerProduct", ["conv"], ["fc"], "inner_product_param { num_output: 2 }",
               [rng.standard_normal((2, 4 * 4 * 4)).astype(np.float32), np.zeros(2, np.float32)])
    nets = {
        "bvlc": [conv, Layer("bn", "BatchNorm", ["conv"], ["conv"], "", [mean * 2, var * 2, 2 * one]),
                 Layer("sc", "Scale", ["conv"], ["conv"], "scale_param { bias_term: true }", [gamma, beta]), fc],
        "nv015": [conv, Layer("bn", "BatchNorm", ["conv"], ["conv"], "", [gamma, beta, mean, var, 7 * one]), fc],
        "nv016": [conv, Layer("bn", "BatchNorm", ["conv"], ["conv"], "", [mean, var, one, gamma, beta]), fc],
    }
    torch = pytest.importorskip("torch")
    from shoal.networks.layers import LayerNet

    x = torch.from_numpy(rng.uniform(0, 1, (2, 3, 4, 4)).astype(np.float32))
    outs = {}
    for name, layers in nets.items():
        converted = convert(parse_prototxt(prototxt(name, (1, 3, 4, 4), layers)), parse_caffemodel(caffemodel(layers)))
        net = LayerNet(converted.spec, 2, 3).eval()
        net.load_state_dict({k: torch.from_numpy(v) for k, v in converted.tensors.items()})
        with torch.no_grad():
            outs[name] = net(x).numpy()
    np.testing.assert_allclose(outs["nv015"], outs["bvlc"], atol=1e-5)
    np.testing.assert_allclose(outs["nv016"], outs["bvlc"], atol=1e-5)


# -- a DIGITS model, end to end -----------------------------------------------------------------------
def _digits_folder(root: Path, rng: np.random.Generator) -> tuple[Path, list[Layer], np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    layers = _net(rng, 3, 12, 3)
    (root / "deploy.prototxt").write_text(prototxt("digits-net", (1, 3, 12, 12), layers, legacy_input=True))
    (root / "snapshot_iter_90.caffemodel").write_bytes(caffemodel(layers, nvcaffe=True, mode="raw32"))
    (root / "snapshot_iter_30.caffemodel").write_bytes(b"older")
    mean = rng.uniform(0, 255, (3, 12, 12)).astype(np.float32)  # BGR, as DIGITS stores it
    (root / "mean.binaryproto").write_bytes(blob(mean[None], "legacy"))
    (root / "labels.txt").write_text("cat\ndog\nfish\n")
    (root / "train_val.prototxt").write_text(
        'layer { name: "val-data" type: "Data" top: "data" top: "label" include { phase: TEST }\n'
        '  transform_param { mean_file: "/home/digits/jobs/x/mean.binaryproto" } data_param { batch_size: 2 } }\n')
    (root / "info.json").write_text(json.dumps({"framework": "caffe", "image resize mode": "squash",
                                                "image dimensions": [12, 12, 3], "snapshot file": "snapshot_iter_90.caffemodel"}))
    return root, layers, mean


def test_digits_archive_imports_and_classifies_like_caffe(tmp_path: Path, shoal_home: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    folder, _layers, mean = _digits_folder(tmp_path / "job", rng)
    archive = tmp_path / "job_epoch_30.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for path in sorted(folder.iterdir()):
            tf.add(path, arcname=path.name)
    done = import_caffe(archive, name="digits-net")
    assert done.card.labels == ("cat", "dog", "fish")
    assert done.card.normalization.mean == "image" and done.card.input.channels == 3
    assert done.onnx_diff <= 1e-4
    manifest = json.loads((done.bundle / "shoal.json").read_text())
    assert manifest["unfamiliar"]["reason"].startswith("it was imported from Caffe")
    assert manifest["source"]["channel_order"] == "BGR"

    import shoal

    model = shoal.load("digits-net")
    image = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)  # RGB, at the network size
    got = model.predict_proba(image)
    oracle = cv2.dnn.readNetFromCaffe(str(folder / "deploy.prototxt"), str(folder / "snapshot_iter_90.caffemodel"))
    oracle.enableWinograd(False)
    oracle.setInput((image[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) - mean[None]))
    want = oracle.forward("prob")
    assert np.abs(got - want).max() <= 1e-4
    result = model.predict(image)
    assert result.unfamiliar is None and "imported from Caffe" in (result.unfamiliar_reason or "")
    torch_model = shoal.load("digits-net", runtime="torch")
    assert np.abs(torch_model.predict_proba(image) - want).max() <= 1e-4


def test_cli_import_with_mean_pixel(tmp_path: Path, shoal_home: Path) -> None:
    from typer.testing import CliRunner

    from shoal.cli import app

    rng = np.random.default_rng(1)
    folder = tmp_path / "plain"
    folder.mkdir()
    layers = _net(rng, 1, 10, 2)
    (folder / "deploy.prototxt").write_text(prototxt("gray", (1, 1, 10, 10), layers))
    (folder / "weights.caffemodel").write_bytes(caffemodel(layers))
    result = CliRunner().invoke(app, ["import", "caffe", str(folder / "deploy.prototxt"), "--name", "gray",
                                      "--mean", "120", "--scale", "0.5", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["labels"] == ["class_0", "class_1"]
    assert out["normalization"] == {"mean": "pixel", "mean_shape": [1, 1, 1], "values": [120.0], "scale": [0.5]}
    again = CliRunner().invoke(app, ["import", "caffe", str(folder), "--name", "gray"])
    assert again.exit_code == 1 and "already exists" in again.output


# -- refusals, one per kind ---------------------------------------------------------------------------
def _plain(tmp_path: Path, layers: list[Layer], *, weights: list[Layer] | None = None, text: str | None = None) -> Path:
    folder = tmp_path / "m"
    folder.mkdir(exist_ok=True)
    (folder / "deploy.prototxt").write_text(text or prototxt("n", (1, 3, 12, 12), layers))
    (folder / "w.caffemodel").write_bytes(caffemodel(weights if weights is not None else layers))
    return folder / "deploy.prototxt"


def _refused(path: Path, pattern: str) -> None:
    with pytest.raises(CaffeError, match=pattern) as info:
        import_caffe(path, name="refused")
    assert "\n" not in str(info.value)


def test_refuses_python_layers(tmp_path: Path, shoal_home: Path) -> None:
    layers = _net(np.random.default_rng(0))
    layers.insert(1, Layer("py", "Python", ["conv1"], ["conv1"], 'python_param { module: "evil" layer: "X" }'))
    _refused(_plain(tmp_path, layers), r"layer 'py' is a Python layer")


def test_refuses_detectnet_and_custom_layers(tmp_path: Path, shoal_home: Path) -> None:
    layers = _net(np.random.default_rng(0))
    layers.insert(1, Layer("cluster", "DetectNetTransformation", ["conv1"], ["conv1"]))
    _refused(_plain(tmp_path, layers), r"DetectNetTransformation layer .* image classifiers only")
    layers[1] = Layer("odd", "Swish", ["conv1"], ["conv1"])
    (tmp_path / "m" / "deploy.prototxt").write_text(prototxt("n", (1, 3, 12, 12), layers))
    _refused(tmp_path / "m" / "deploy.prototxt", r"type 'Swish', which shoal cannot import")


def test_refuses_v0_nets(tmp_path: Path, shoal_home: Path) -> None:
    layers = _net(np.random.default_rng(0))
    v0 = 'name: "old" input: "data" input_dim: 1 input_dim: 3 input_dim: 12 input_dim: 12\n' \
         'layers { layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 } bottom: "data" top: "conv1" }\n'
    _refused(_plain(tmp_path, layers, text=v0), "V0 net")
    with pytest.raises(CaffeError, match="V0 net"):
        parse_caffemodel(length(2, length(1, length(1, b"conv1"))))


def test_refuses_missing_blobs(tmp_path: Path, shoal_home: Path) -> None:
    layers = _net(np.random.default_rng(0))
    _refused(_plain(tmp_path, layers, weights=[layers[0]]), r"layer 'fc' \(InnerProduct\) has no weights")


def test_refuses_mismatched_blobs(tmp_path: Path, shoal_home: Path) -> None:
    layers = _net(np.random.default_rng(0))
    other = _net(np.random.default_rng(0), classes=5)
    _refused(_plain(tmp_path, layers, weights=other), r"layer 'fc' \(InnerProduct\) has blobs of \[500, 5\]")


def test_refuses_hdf5_weights(tmp_path: Path, shoal_home: Path) -> None:
    path = _plain(tmp_path, _net(np.random.default_rng(0)))
    (path.parent / "w.caffemodel").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    _refused(path, "HDF5 weights")


def test_refuses_other_frameworks_and_unknown_mean_mode(tmp_path: Path, shoal_home: Path) -> None:
    folder, _, _ = _digits_folder(tmp_path / "job", np.random.default_rng(0))
    (folder / "train_val.prototxt").unlink()
    _refused(folder, "no train_val.prototxt saying how it was used")
    (folder / "info.json").write_text(json.dumps({"framework": "torch"}))
    _refused(folder, "trained with 'torch', not Caffe")


@pytest.mark.parametrize("member", ["../evil.txt", "/etc/evil", "a/b/c/deploy.prototxt"])
def test_refuses_unsafe_archive_members(tmp_path: Path, member: str) -> None:
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo(member)
        info.size = 4
        tf.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(CaffeError, match="unsafe member|nested member"):
        unpack(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_refuses_links_in_archives(tmp_path: Path) -> None:
    archive = tmp_path / "model.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("deploy.prototxt")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(CaffeError, match="a link or device"):
        unpack(archive, tmp_path / "out")
    zipped = tmp_path / "model.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        info = zipfile.ZipInfo("deploy.prototxt")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(CaffeError, match="a link or device"):  # one message for both kinds of archive
        unpack(zipped, tmp_path / "out2")


def test_refuses_unfaithful_parameters(tmp_path: Path, shoal_home: Path) -> None:
    layers = _net(np.random.default_rng(0))
    layers[2] = Layer("pool1", "Pooling", ["conv1"], ["pool1"], "pooling_param { pool: STOCHASTIC kernel_size: 2 stride: 2 }")
    _refused(_plain(tmp_path, layers), "STOCHASTIC pooling")
    layers[2] = Layer("pool1", "Pooling", ["conv1"], ["pool1"], "pooling_param { pool: MAX kernel_size: 1 stride: 4 }")
    (tmp_path / "m" / "deploy.prototxt").write_text(prototxt("n", (1, 3, 12, 12), layers))
    _refused(tmp_path / "m" / "deploy.prototxt", "wholly outside the input")


@pytest.mark.parametrize(("text", "scale"), [
    # exclude { phase: TRAIN } is the TEST-phase layer, though the TRAIN one comes first
    ('layer { name: "t" type: "Data" include { phase: TRAIN } transform_param { scale: 2 } }\n'
     'layer { name: "v" type: "Data" exclude { phase: TRAIN } transform_param { scale: 3 } }\n', 3.0),
    # a V1 net names its types by enum
    ('layers { name: "t" type: DATA include { phase: TRAIN } transform_param { scale: 2 } }\n'
     'layers { name: "v" type: IMAGE_DATA include { phase: TEST } transform_param { scale: 3 } }\n', 3.0),
    # no TEST-phase data layer: the first one there is
    ('layer { name: "t" type: "Data" include { phase: TRAIN } transform_param { scale: 2 } }\n', 2.0),
])
def test_train_val_transform_is_the_test_phase_data_layers(tmp_path: Path, text: str, scale: float) -> None:
    from shoal.importers.caffe import _transform
    from shoal.importers.caffe.sources import ModelFiles

    (tmp_path / "train_val.prototxt").write_text(text)
    files = ModelFiles(tmp_path / "deploy.prototxt", tmp_path / "w.caffemodel", train_val=tmp_path / "train_val.prototxt")
    transform = _transform(files)
    assert transform is not None and transform.number("scale") == scale


def test_an_onnx_graph_that_disagrees_with_torch_is_a_caffe_error(tmp_path: Path, shoal_home: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    import shoal.bundle.writer

    folder, _layers, _mean = _digits_folder(tmp_path / "job", np.random.default_rng(0))
    monkeypatch.setattr(shoal.bundle.writer, "ONNX_TOLERANCE", -1.0)  # any difference is too much
    with pytest.raises(CaffeError, match="differs from the torch model"):
        import_caffe(folder, name="disagrees")
