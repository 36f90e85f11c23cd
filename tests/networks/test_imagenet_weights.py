"""The offline ImageNet weights are loaded right: their ImageNet head recognises real photos.

A wrong mapping of tensors to layers would still load without error; it would not call a
dolphin photo a killer whale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shoal import networks

DOLPHINS = Path(__file__).resolve().parents[3] / "shared" / "data" / "dolphins-and-seahorses" / "dolphin"
KILLER_WHALE = 148
# sharks and rays, whales, dugong, sea lion, and the fish classes: what a dolphin photo resembles
SEA_ANIMALS = {2, 3, 4, 5, 6, 147, 148, 149, 150, *range(389, 398)}


@pytest.mark.parametrize(("name", "size"), [("efficientnet_lite0", 224), ("efficientnet_lite1", 240),
                                            ("efficientnet_lite2", 260)])
def test_packaged_weights_recognise_dolphin_photos(name, size):
    import torch
    from PIL import Image

    if not DOLPHINS.is_dir():
        pytest.skip(f"the reference photos are not at {DOLPHINS}")
    model = networks.create(name, 1000, pretrained=True).eval()
    assert networks.get_spec(name).input_size == (size, size)
    photos = sorted(DOLPHINS.glob("*.jpg"))[:6]
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size)), np.float32) for p in photos])
    with torch.no_grad():
        top3 = model(torch.from_numpy((pixels.transpose(0, 3, 1, 2) - 127.5) / 128)).topk(3).indices.tolist()
    assert sum(top[0] == KILLER_WHALE for top in top3) >= 3, top3
    assert all(SEA_ANIMALS & set(top) for top in top3), top3
