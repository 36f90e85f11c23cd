"""The contact sheet of a stored dataset: one row per class, its name and count, then sample images."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from shoal.config import check_int
from shoal.data.dataset import Dataset, _check_split, _to_pil, load
from shoal.store import Store


def explore(
    dataset: str | Dataset,
    out: str | os.PathLike[str],
    *,
    per_class: int = 8,
    split: str = "train",
    store: Store | None = None,
) -> Path:
    """Write a contact sheet: one row per class, its name and count, then sample images.

    Args:
        dataset: a :class:`Dataset` or the name of a stored one.
        out: the PNG file to write (its folder is created).
        per_class: how many images to show per class (the first ones of the split, which
            are in seeded random order).
        split: which split to sample (``train``, ``val`` or ``test``).
        store: where to find a dataset given by name.

    Returns:
        The path written.

    Raises:
        ConfigError: ``per_class`` is below 1 or ``split`` unknown.
        NotFoundError: no dataset of that name.
    """
    check_int("per_class", per_class, minimum=1)
    ds = dataset if isinstance(dataset, Dataset) else load(dataset, store=store)
    _check_split(split)
    pixels, labels = ds.images(split), ds.labels(split)
    w, h = ds.size
    scale = max(64 / max(w, h), 1.0) if max(w, h) < 64 else min(1.0, 128 / max(w, h))
    cell_w, cell_h = max(1, round(w * scale)), max(1, round(h * scale))
    try:
        font: Any = ImageFont.load_default(size=14)
    except (TypeError, OSError, AttributeError):  # Pillow without FreeType
        font = ImageFont.load_default()
    names = [f"{c} ({ds.splits[split].get(c, 0)})" for c in ds.classes]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(int(probe.textlength(n, font=font)) for n in names) + 16
    pad, title_h = 4, 24
    sheet = Image.new(
        "RGB",
        (label_w + per_class * (cell_w + pad) + pad, title_h + len(ds.classes) * (cell_h + pad) + pad),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 4), f"{ds.name} | {split} | {ds.size[0]}x{ds.size[1]} {ds.resize_mode}", fill=(0, 0, 0), font=font)
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BILINEAR
    for row, (cls_index, name) in enumerate(zip(range(len(ds.classes)), names)):
        top = title_h + row * (cell_h + pad)
        draw.text((pad, top + cell_h // 2 - 8), name, fill=(0, 0, 0), font=font)
        picks = np.flatnonzero(labels == cls_index)[:per_class]
        for col, index in enumerate(picks):
            thumb = _to_pil(np.asarray(pixels[index])).convert("RGB").resize((cell_w, cell_h), resample)
            sheet.paste(thumb, (label_w + col * (cell_w + pad), top))
    target = Path(out).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(target, format="PNG")
    return target
