"""Fixtures shared by the whole suite: a private store, synthetic image folders, a tiny dataset.

Nothing here touches ``~/.shoal``: ``shoal_home`` points ``SHOAL_HOME`` at a temporary
folder, and every fixture that stores something depends on it.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Callable, Sequence
from pathlib import Path

# One OpenMP thread for torch, here and in the workers and commands the tests start (set before torch is
# imported; an explicit OMP_NUM_THREADS wins). The tests' networks and batches are tiny, and on a loaded
# machine torch's threads spin waiting for each other: at load 4.5 on 2 cores three training tests took
# 106 s with two threads and 16 s with one.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

ImageFolderFactory = Callable[..., Path]

_SHAPES = ("ellipse", "rectangle", "triangle")


@pytest.fixture()
def shoal_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty store folder; ``SHOAL_HOME`` points at it for the test."""
    home = tmp_path / "shoal-home"
    monkeypatch.setenv("SHOAL_HOME", str(home))
    return home


def class_colour(index: int, count: int) -> tuple[int, int, int]:
    """A saturated colour per class, hues evenly spread (class 0 is red)."""
    r, g, b = colorsys.hsv_to_rgb(index / max(count, 1), 0.9, 0.9)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_class_image(
    index: int, count: int, size: tuple[int, int], rng: np.random.Generator
) -> Image.Image:
    """One image of class ``index``: its colour and shape on a dark noisy background.

    Classes differ by colour and by shape (ellipse, rectangle, triangle in turn), and each
    image by position, size and noise, so a tiny network can learn them but no two
    images are equal.
    """
    w, h = size
    background = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
    img = Image.fromarray(background)
    draw = ImageDraw.Draw(img)
    colour = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in class_colour(index, count))
    side = int(min(w, h) * rng.uniform(0.45, 0.7))
    x0 = int(rng.integers(0, max(1, w - side)))
    y0 = int(rng.integers(0, max(1, h - side)))
    box = [x0, y0, x0 + side, y0 + side]
    shape = _SHAPES[index % len(_SHAPES)]
    if shape == "ellipse":
        draw.ellipse(box, fill=colour)
    elif shape == "rectangle":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(x0 + side // 2, y0), (x0, y0 + side), (x0 + side, y0 + side)], fill=colour)
    return img


@pytest.fixture()
def image_folder_factory(tmp_path: Path) -> ImageFolderFactory:
    """Make folder-per-class trees of small synthetic images.

    Call it as ``make(classes=3, per_class=12, size=(40, 32), name="images", fmt="png", seed=0)``:
    ``classes`` is a count (folders ``class_0``...) or a list of names, ``per_class`` one
    count or one per class. Returns the root folder (under the test's ``tmp_path``).
    """
    return _image_folders_under(tmp_path)


@pytest.fixture(scope="module")
def module_image_folder_factory(tmp_path_factory: pytest.TempPathFactory) -> ImageFolderFactory:
    """Like ``image_folder_factory``, for fixtures that one module's tests share (say, a model that is slow to train)."""
    return _image_folders_under(tmp_path_factory.mktemp("images"))


def _image_folders_under(base: Path) -> ImageFolderFactory:
    counter = iter(range(1_000_000))

    def make(
        classes: int | Sequence[str] = 3,
        per_class: int | Sequence[int] = 12,
        size: tuple[int, int] = (40, 32),
        *,
        name: str | None = None,
        fmt: str = "png",
        seed: int = 0,
    ) -> Path:
        names = [f"class_{i}" for i in range(classes)] if isinstance(classes, int) else list(classes)
        counts = [per_class] * len(names) if isinstance(per_class, int) else list(per_class)
        if len(counts) != len(names):
            raise ValueError(f"per_class has {len(counts)} counts for {len(names)} classes")
        root = base / (name or f"images-{next(counter)}")
        rng = np.random.default_rng(seed)
        for index, (cls, n) in enumerate(zip(names, counts)):
            (root / cls).mkdir(parents=True, exist_ok=True)
            for k in range(n):
                img = draw_class_image(index, len(names), size, rng)
                img.save(root / cls / f"{cls}_{k:03d}.{fmt}")
        return root

    return make


@pytest.fixture()
def tiny_dataset(shoal_home: Path, image_folder_factory: ImageFolderFactory):
    """A stored dataset 'tiny': 3 classes (red ellipses, green rectangles, blue triangles),
    12 images each, stored at 32×32 RGB — 9 train and 3 validation images per class."""
    from shoal import datasets

    folder = image_folder_factory(["circle", "square", "triangle"], 12, size=(40, 32), name="tiny-src")
    return datasets.create(folder, "tiny", size=32)


@pytest.fixture(scope="session")
def rgb(tmp_path_factory: pytest.TempPathFactory):
    """A small trained RGB model bundle and its images (see tests/inference_fixtures.py), built once."""
    from inference_fixtures import toy_model

    return toy_model("rgb", tmp_path_factory)


@pytest.fixture(scope="session")
def gray(tmp_path_factory: pytest.TempPathFactory):
    """Like ``rgb``, for a grayscale model."""
    from inference_fixtures import toy_model

    return toy_model("gray", tmp_path_factory)
