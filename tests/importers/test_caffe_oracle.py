"""Imported Caffe nets against OpenCV's Caffe importer (an independent implementation), on random inputs.

Each net is written by the tests' own encoder (``caffe_encoder.py``); shoal's layer list must give
OpenCV's class scores within 1e-4 (before the softmax, where differences are not squashed).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")
if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromCaffe"):
    pytest.skip("this OpenCV has no Caffe importer (it was removed in OpenCV 5)", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).parent))
from caffe_encoder import Layer, caffemodel, prototxt  # noqa: E402

from shoal.importers.caffe.net import convert  # noqa: E402
from shoal.importers.caffe.text import parse_prototxt  # noqa: E402
from shoal.importers.caffe.wire import parse_caffemodel  # noqa: E402
from shoal.networks.layers import LayerNet  # noqa: E402

TOLERANCE = 1e-4
MEASURED: dict[str, float] = {}


def _w(rng: np.random.Generator, *shape: int, fan_in: int | None = None) -> np.ndarray:
    fan = fan_in or int(np.prod(shape[1:])) or 1
    return (rng.standard_normal(shape) / np.sqrt(fan)).astype(np.float32)


def _compare(tmp_path: Path, name: str, shape: tuple[int, ...], layers: list[Layer], *, output: str,
             v1: bool = False, mode: str = "data", nvcaffe: bool = False, scale: float = 1 / 255) -> float:
    text = prototxt(name, shape, layers, v1=v1)
    model = caffemodel(layers, v1=v1, mode=mode, nvcaffe=nvcaffe)
    (tmp_path / "deploy.prototxt").write_text(text)
    (tmp_path / "net.caffemodel").write_bytes(model)
    converted = convert(parse_prototxt(text), parse_caffemodel(model))
    assert converted.spec["output"] == output
    net = LayerNet(converted.spec, converted.num_outputs, shape[1]).eval()
    net.load_state_dict({k: torch.from_numpy(v).reshape(net.state_dict()[k].shape)
                         for k, v in converted.tensors.items()})
    rng = np.random.default_rng(1)
    x = (rng.uniform(0, 255, (3, *shape[1:])) * scale).astype(np.float32)  # BGR, as Caffe takes it
    oracle = cv2.dnn.readNetFromCaffe(str(tmp_path / "deploy.prototxt"), str(tmp_path / "net.caffemodel"))
    oracle.enableWinograd(False)
    oracle.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    oracle.setInput(x)
    want = oracle.forward(output).reshape(len(x), -1)
    rgb = x[:, ::-1].copy() if shape[1] == 3 else x  # shoal's network takes RGB and swaps it itself
    with torch.no_grad():
        got = net(torch.from_numpy(rgb)).numpy()
    assert got.shape == want.shape
    assert np.abs(want).max() > 0.05  # scores that say something, not all zeros
    diff = float(np.abs(got - want).max())
    MEASURED[name] = diff
    print(f"{name}: max |shoal - OpenCV| = {diff:.2e}")
    assert diff <= TOLERANCE, f"{name}: {diff}"
    return diff


def test_lenet_like_v1_legacy_blobs(tmp_path: Path) -> None:
    """V1 'layers' with enum types and legacy 4-D blob dims; grayscale; Power scaling; ceil pooling; TanH, Sigmoid."""
    rng = np.random.default_rng(0)
    layers = [
        Layer("scale", "Power", ["data"], ["scaled"], "power_param { scale: 0.0125 shift: -0.5 }"),
        Layer("conv1", "Convolution", ["scaled"], ["conv1"], "convolution_param { num_output: 6 kernel_size: 5 }",
              [_w(rng, 6, 1, 5, 5), _w(rng, 6, fan_in=4)]),
        Layer("pool1", "Pooling", ["conv1"], ["pool1"], "pooling_param { pool: MAX kernel_size: 3 stride: 2 }"),
        Layer("tanh1", "TanH", ["pool1"], ["pool1"]),
        Layer("conv2", "Convolution", ["pool1"], ["conv2"],
              "convolution_param { num_output: 8 kernel_size: 3 stride: 1 }", [_w(rng, 8, 6, 3, 3), _w(rng, 8, fan_in=4)]),
        Layer("pool2", "Pooling", ["conv2"], ["pool2"], "pooling_param { pool: MAX kernel_size: 2 stride: 2 }"),
        Layer("fc1", "InnerProduct", ["pool2"], ["fc1"], "inner_product_param { num_output: 20 }",
              [_w(rng, 20, 8 * 5 * 5), _w(rng, 20, fan_in=4)]),
        Layer("sig", "Sigmoid", ["fc1"], ["fc1"]),
        Layer("fc", "InnerProduct", ["fc1"], ["fc"], "inner_product_param { num_output: 10 }",
              [_w(rng, 10, 20), _w(rng, 10, fan_in=4)]),
        Layer("prob", "Softmax", ["fc"], ["prob"]),
    ]
    # 27 -> conv 23 -> pool ceil((23-3)/2)+1 = 11 -> conv 9 -> pool ceil(7/2)+1 = 5 (floor would give 4)
    _compare(tmp_path, "lenet_like", (1, 1, 27, 27), layers, output="fc", v1=True, scale=1.0)


def test_alexnet_like_lrn_groups_fp16(tmp_path: Path) -> None:
    """Stride-4 conv, LRN across and within channels, grouped convs, dropout; NVCaffe raw_data FLOAT16 + fields 145-148."""
    rng = np.random.default_rng(0)
    layers = [
        Layer("conv1", "Convolution", ["data"], ["conv1"], "convolution_param { num_output: 16 kernel_size: 11 stride: 4 }",
              [_w(rng, 16, 3, 11, 11), _w(rng, 16, fan_in=4)]),
        Layer("relu1", "ReLU", ["conv1"], ["conv1"]),
        Layer("norm1", "LRN", ["conv1"], ["norm1"], "lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 k: 1 }"),
        Layer("pool1", "Pooling", ["norm1"], ["pool1"], "pooling_param { pool: MAX kernel_size: 3 stride: 2 }"),
        Layer("conv2", "Convolution", ["pool1"], ["conv2"],
              "convolution_param { num_output: 24 pad: 2 kernel_size: 5 group: 2 }",
              [_w(rng, 24, 8, 5, 5), _w(rng, 24, fan_in=4)]),
        Layer("relu2", "ReLU", ["conv2"], ["conv2"], "relu_param { negative_slope: 0.1 }"),
        Layer("norm2", "LRN", ["conv2"], ["norm2"],
              "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL }"),
        Layer("conv3", "Convolution", ["norm2"], ["conv3"],
              "convolution_param { num_output: 16 pad: 2 kernel_size: 3 group: 4 dilation: 2 }",
              [_w(rng, 16, 6, 3, 3), _w(rng, 16, fan_in=4)]),
        Layer("pool3", "Pooling", ["conv3"], ["pool3"], "pooling_param { pool: MAX kernel_size: 3 stride: 2 }"),
        Layer("fc6", "InnerProduct", ["pool3"], ["fc6"], "inner_product_param { num_output: 32 }",
              [_w(rng, 32, 16 * 3 * 3), _w(rng, 32, fan_in=4)]),
        Layer("relu6", "ReLU", ["fc6"], ["fc6"]),
        Layer("drop6", "Dropout", ["fc6"], ["fc6"], "dropout_param { dropout_ratio: 0.5 }"),
        Layer("fc8", "InnerProduct", ["fc6"], ["fc8"], "inner_product_param { num_output: 7 }",
              [_w(rng, 7, 32), _w(rng, 7, fan_in=4)]),
        Layer("prob", "Softmax", ["fc8"], ["prob"]),
    ]
    # 67 -> conv1 15 -> pool1 7 -> conv2 7 -> conv3 (dilated) 7 -> pool3 3
    _compare(tmp_path, "alexnet_like", (1, 3, 67, 67), layers, output="fc8", mode="raw16", nvcaffe=True)


def test_inception_like_concat_eltwise(tmp_path: Path) -> None:
    """An inception block (1x1, 3x3, 5x5, pool branches) joined by Concat; Eltwise SUM with coeff, PROD, MAX;
    PReLU; ceil-rounded padded pools, AVE with Caffe's divisor; global AVE pool; Flatten; raw_data FLOAT."""
    rng = np.random.default_rng(0)

    def conv(name: str, bottom: str, out: int, cin: int, k: int, pad: int = 0, stride: int = 1) -> Layer:
        return Layer(name, "Convolution", [bottom], [name],
                     f"convolution_param {{ num_output: {out} kernel_size: {k} pad: {pad} stride: {stride} }}",
                     [_w(rng, out, cin, k, k), _w(rng, out, fan_in=4)])

    layers = [
        conv("conv1", "data", 8, 3, 3, pad=1, stride=2),
        Layer("prelu1", "PReLU", ["conv1"], ["conv1"], "", [rng.uniform(0, 0.5, 8).astype(np.float32)]),
        Layer("pool1", "Pooling", ["conv1"], ["pool1"], "pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }"),
        conv("b1", "pool1", 4, 8, 1),
        conv("b3r", "pool1", 4, 8, 1),
        Layer("b3r_relu", "ReLU", ["b3r"], ["b3r"]),
        conv("b3", "b3r", 6, 4, 3, pad=1),
        conv("b5r", "pool1", 2, 8, 1),
        conv("b5", "b5r", 4, 2, 5, pad=2),
        Layer("bp", "Pooling", ["pool1"], ["bp"], "pooling_param { pool: MAX kernel_size: 3 stride: 1 pad: 1 }"),
        conv("bpp", "bp", 4, 8, 1),
        Layer("concat", "Concat", ["b1", "b3", "b5", "bpp"], ["concat"]),
        conv("e1", "concat", 18, 18, 1),
        conv("e2", "concat", 18, 18, 3, pad=1),
        Layer("sum", "Eltwise", ["e1", "e2", "concat"], ["sum"], "eltwise_param { operation: SUM coeff: 1 coeff: -0.5 coeff: 2 }"),
        Layer("prod", "Eltwise", ["e1", "e2"], ["prod"], "eltwise_param { operation: PROD }"),
        Layer("max", "Eltwise", ["sum", "prod"], ["max"], "eltwise_param { operation: MAX }"),
        Layer("pool2", "Pooling", ["max"], ["pool2"], "pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }"),
        Layer("gpool", "Pooling", ["pool2"], ["gpool"], "pooling_param { pool: AVE global_pooling: true }"),
        Layer("flat", "Flatten", ["gpool"], ["flat"]),
        Layer("fc", "InnerProduct", ["flat"], ["fc"], "inner_product_param { num_output: 5 }",
              [_w(rng, 5, 18), _w(rng, 5, fan_in=4)]),
        Layer("prob", "Softmax", ["fc"], ["prob"]),
    ]
    # 30 -> conv1 15 -> pool1 ceil((15+2-3)/2)+1 = 8 -> pool2 ceil((8+2-3)/2)+1 = 5 (the last window overhangs)
    _compare(tmp_path, "inception_like", (1, 3, 30, 30), layers, output="fc", mode="raw32", nvcaffe=True)


def test_batchnorm_scale(tmp_path: Path) -> None:
    """BVLC BatchNorm (3 blobs, moving-average factor ≠ 1) then Scale with bias, after a conv and after an
    InnerProduct; double_data and unpacked float blobs."""
    rng = np.random.default_rng(0)
    factor = np.array([3.5], np.float32)

    def bn(name: str, bottom: str, c: int) -> list[Layer]:
        mean = rng.standard_normal(c).astype(np.float32) * factor
        var = rng.uniform(0.5, 2.0, c).astype(np.float32) * factor
        return [Layer(f"{name}_bn", "BatchNorm", [bottom], [bottom], "batch_norm_param { use_global_stats: true eps: 0.001 }",
                      [mean, var, factor]),
                Layer(f"{name}_scale", "Scale", [bottom], [bottom], "scale_param { bias_term: true }",
                      [rng.uniform(0.5, 1.5, c).astype(np.float32), rng.standard_normal(c).astype(np.float32)])]

    layers = [
        Layer("conv1", "Convolution", ["data"], ["conv1"], "convolution_param { num_output: 8 kernel_size: 3 bias_term: false }",
              [_w(rng, 8, 3, 3, 3)]),
        *bn("c1", "conv1", 8),
        Layer("relu1", "ReLU", ["conv1"], ["conv1"]),
        Layer("pool1", "Pooling", ["conv1"], ["pool1"], "pooling_param { pool: AVE kernel_size: 2 stride: 2 }"),
        Layer("fc1", "InnerProduct", ["pool1"], ["fc1"], "inner_product_param { num_output: 12 }",
              [_w(rng, 12, 8 * 7 * 7), _w(rng, 12, fan_in=4)]),
        *bn("f1", "fc1", 12),
        Layer("fc", "InnerProduct", ["fc1"], ["fc"], "inner_product_param { num_output: 4 }",
              [_w(rng, 4, 12), _w(rng, 4, fan_in=4)]),
        Layer("prob", "Softmax", ["fc"], ["prob"]),
    ]
    _compare(tmp_path, "batchnorm_scale", (1, 3, 16, 16), layers, output="fc", mode="data")
    _compare(tmp_path / "unpacked" if (tmp_path / "unpacked").mkdir() is None else tmp_path, "batchnorm_scale_unpacked",
             (1, 3, 16, 16), layers, output="fc", mode="unpacked")
