"""``shoal.bundle.ModelCard``: the typed model card reads today's ``model.json``/``shoal.json`` and checks it."""

from __future__ import annotations

import copy
import json

import pytest

from shoal.bundle import InputSpec, ModelCard, Normalization
from shoal.errors import BundleError

# A model.json exactly as shoal 0.x wrote it before the card was typed (LeNet, 28×28 crop of 32×30 images).
TODAY = {
    "architecture": "lenet",
    "labels": ["circle", "square", "triangle"],
    "input": {"size": [28, 26], "channels": 3, "channel_order": "RGB", "resize_mode": "squash",
              "dataset_size": [32, 30], "crop": True, "layout": "NCHW", "dtype": "float32", "range": [0, 255]},
    "normalization": {"mean": "image", "mean_shape": [3, 26, 28], "values": None,
                      "scale": [1.0, 1.0, 1.0]},
}


def test_todays_card_is_read_with_named_sides_and_written_back_unchanged():
    card = ModelCard.from_dict(TODAY, "model.json")
    assert card.architecture == "lenet" and card.labels == ("circle", "square", "triangle")
    assert (card.input.width, card.input.height) == (28, 26)
    assert (card.input.dataset_width, card.input.dataset_height) == (32, 30)
    assert card.input.dataset_wh == (32, 30)  # what imageops.prepare takes
    assert card.input.crop_hw == (26, 28)  # what preprocess.centre_crop takes
    assert card.input.channel_order == "RGB"
    assert card.normalization == Normalization(mean="image", mean_shape=(3, 26, 28), values=None, scale=(1.0,) * 3)
    assert card.to_dict() == TODAY
    assert ModelCard.from_dict(json.loads(json.dumps(card.to_dict())), "again") == card


def test_a_bundle_manifest_is_read_ignoring_its_other_keys():
    manifest = {"format": 1, "name": "m", "epoch": 3, "training": {"lr": 0.01}, **TODAY}
    assert ModelCard.from_dict(manifest, "shoal.json") == ModelCard.from_dict(TODAY, "model.json")


def test_old_manifests_without_optional_input_fields_get_their_defaults():
    section = {"size": [28, 28], "channels": 1}
    spec = InputSpec.from_dict(section, "old")
    assert spec == InputSpec(width=28, height=28, channels=1, resize_mode="squash", dataset_width=28,
                             dataset_height=28, crop=False)
    assert spec.crop_hw is None and spec.channel_order == "L"


def _broken(change) -> dict:
    data = copy.deepcopy(TODAY)
    change(data)
    return data


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["input"].pop("size"), r"the manifest of 'x' lacks input\.size; re-export the bundle"),
    (lambda d: d.pop("input"), r"the manifest of 'x' lacks 'input'"),
    (lambda d: d["input"].update(resize_mode="stretch"),
     r"the manifest of 'x' has an unusable input section: resize_mode must be one of"),
    (lambda d: d["input"].update(channels=2), r"unusable input section: channels must be 1 \(grayscale\) or 3"),
    (lambda d: d["input"].update(dataset_size=[20, 20]),
     r"the manifest of 'x' crops 28x26 out of smaller images 20x20; the bundle is damaged"),
    (lambda d: d.update(labels=[]), r"the manifest of 'x' has labels \[\]; expected a list of class names"),
    (lambda d: d.update(architecture=""), r"has architecture ''; expected a network name"),
    (lambda d: d["normalization"].update(mean="median"),
     r"has normalization\.mean 'median'; expected one of image, pixel, network, none"),
    (lambda d: d["normalization"].update(mean_shape=[1, 26, 28]),
     r"has normalization\.mean_shape \[1, 26, 28\]; expected \[3, height, width\] for 3 channel\(s\)"),
    (lambda d: d["normalization"].update(scale=[1.0]), r"has normalization\.scale \[1\.0\]; expected 3 number\(s\)"),
    (lambda d: d["normalization"].pop("mean_shape"), r"lacks normalization\.mean_shape"),
])
def test_a_damaged_card_is_refused_naming_the_field(change, message):
    with pytest.raises(BundleError, match=message):
        ModelCard.from_dict(_broken(change), "x")


def test_the_card_is_frozen():
    card = ModelCard.from_dict(TODAY, "model.json")
    with pytest.raises(AttributeError):
        card.input.width = 10  # type: ignore[misc]


def test_the_unfamiliar_section_is_read_once_and_checked():
    from shoal.bundle.card import UnfamiliarSpec

    found = UnfamiliarSpec.from_manifest({"unfamiliar": {"method": "knn_cosine", "k": 3, "threshold": 0.25}}, "x")
    assert found == UnfamiliarSpec(threshold=0.25, k=3, reason=None)
    assert UnfamiliarSpec.from_manifest({"unfamiliar": {"reason": "imported"}}, "x") == UnfamiliarSpec(None, None, "imported")
    old = UnfamiliarSpec.from_manifest({}, "x")  # a bundle written before the verdict
    assert old.threshold is None and "written before shoal had the verdict" in old.reason
    for section, message in [
        ({"k": 3, "threshold": None}, r"the manifest of 'x' has unfamiliar\.threshold None; expected a number"),
        ({"k": 3, "threshold": "0.2"}, r"has unfamiliar\.threshold '0\.2'; expected a number"),
        ({"k": 3, "threshold": True}, r"has unfamiliar\.threshold True; expected a number"),
        ({"threshold": 0.2}, r"has unfamiliar\.k None; expected an int >= 1"),
        ({"k": 0, "threshold": 0.2}, r"has unfamiliar\.k 0; expected an int >= 1"),
        ([], r"has unfamiliar \[\]; expected an object"),
    ]:
        with pytest.raises(BundleError, match=message) as caught:
            UnfamiliarSpec.from_manifest({"unfamiliar": section}, "x")
        assert "\n" not in str(caught.value)
