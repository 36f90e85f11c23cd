"""Tiny trained models for the inference, classify-CLI and evaluation tests, built once per session.

Each kind is trained once (LeNet, a few seconds on CPU) into its own store under pytest's
session temporary folder; test modules wrap :func:`toy_model` in a session fixture. The
store is passed explicitly, so building never touches ``SHOAL_HOME``. Building fails unless the
exported model classifies its own validation images well above chance (``LEARNED``), so the tests
that use it check a model that has learned something, not one that guesses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

COLOURS = ((220, 40, 40), (40, 200, 60), (50, 70, 230))


@dataclass(frozen=True)
class ToyModel:
    """A trained model, its bundle and the images it was trained on."""

    home: Path  # the store folder
    name: str  # the model's name in the store
    dataset: str  # the dataset's name in the store
    bundle: Path  # the bundle folder
    images: Path  # the source folder, one sub-folder per class
    labels: tuple[str, ...]


def draw(index: int, size: tuple[int, int], rng: np.random.Generator, mode: str = "RGB") -> Image.Image:
    """A noisy image of class ``index``: a coloured ellipse, rectangle or triangle."""
    w, h = size
    img = Image.fromarray(rng.integers(0, 60, (h, w, 3), dtype=np.uint8))
    pen = ImageDraw.Draw(img)
    side = int(min(w, h) * rng.uniform(0.5, 0.75))
    x0, y0 = int(rng.integers(0, max(1, w - side))), int(rng.integers(0, max(1, h - side)))
    box = [x0, y0, x0 + side, y0 + side]
    colour = COLOURS[index % len(COLOURS)]
    if index % 3 == 0:
        pen.ellipse(box, fill=colour)
    elif index % 3 == 1:
        pen.rectangle(box, fill=colour)
    else:
        pen.polygon([(x0 + side // 2, y0), (x0, y0 + side), (x0 + side, y0 + side)], fill=colour)
    return img.convert(mode)


def _image_folder(root: Path, labels: tuple[str, ...], per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for index, label in enumerate(labels):
        (root / label).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            size = (int(rng.integers(36, 60)), int(rng.integers(28, 48)))  # mixed sizes and aspect ratios
            fmt = "jpg" if k % 4 == 3 else "png"
            draw(index, size, rng).save(root / label / f"{label}_{k:02d}.{fmt}")
    return root


# Adam at 0.003 for 8 epochs: both kinds classify every validation image right from the third epoch
# on (SGD at 0.01 for 2-3 epochs, as they were trained before, stayed at chance).
_LEARN = {"epochs": 8, "solver": "adam", "lr": 0.003}
_KINDS = {
    # RGB, squash to 32×32, LeNet's 28×28 random crops: the centre crop is part of inference.
    "rgb": {"labels": ("circle", "square", "triangle"), "data": {"size": 32}, "train": _LEARN},
    # Grayscale, 'fill' resize (noise borders), whole image (no crop), two classes.
    "gray": {"labels": ("circle", "square"), "data": {"size": 28, "channels": 1, "resize_mode": "fill"},
             "train": {**_LEARN, "crop": 0}},
}
LEARNED = 0.8  # the least accuracy on its own validation images a toy model must reach (chance: 1/3 and 1/2)
_BUILT: dict[str, ToyModel] = {}


def toy_model(kind: str, factory: pytest.TempPathFactory) -> ToyModel:
    """Train (once per session) and return the toy model ``kind`` ("rgb" or "gray")."""
    if kind not in _BUILT:
        from shoal import datasets
        from shoal.store import Store
        from shoal.training import TrainConfig, train

        spec = _KINDS[kind]
        root = factory.mktemp(f"toy-{kind}")
        store = Store(root / "home")
        images = _image_folder(root / "images", spec["labels"], 12, seed=len(kind))
        datasets.create(images, kind, store=store, val_pct=25, **spec["data"])
        result = train(TrainConfig(dataset=kind, network="lenet", name=f"{kind}-lenet", batch_size=8, seed=0,
                                   **spec["train"]), store=store)
        assert result.bundle is not None, f"training the {kind} toy model wrote no bundle"
        _check_learned(kind, result.bundle, store)
        _BUILT[kind] = ToyModel(store.home, f"{kind}-lenet", kind, result.bundle, images, spec["labels"])
    return _BUILT[kind]


def _check_learned(kind: str, bundle: Path, store: object) -> None:
    """Fail unless the exported toy model classifies its own validation images well above chance."""
    from shoal.evaluate import evaluate

    scored = evaluate(bundle, dataset=kind, split="val", store=store)
    chance = 1 / len(scored.labels)
    assert scored.accuracy >= LEARNED, (f"the {kind} toy model has not learned: {scored.accuracy:.0%} of its "
                                        f"{scored.count} validation images right (chance {chance:.0%})")
