"""How honest are shoal's default fine-tunes? Accuracy, log-loss, calibration and unfamiliar rates.

    .venv/bin/python bench/quality.py ../shared/data/dolphins-and-seahorses [--networks efficientnet_lite0 efficientnet_lite2]

For each network (fitted head, defaults) it trains on
- the reference split (75 % train) for seeds 0, 1, 2;
- a hard split: 15 % train (about 10 photos per class), 85 % held out for validation;
- the built-in digits sample;
and prints validation accuracy, log-loss, expected calibration error and the share of answers
given with more than 99.9 % confidence. The unfamiliar verdict is measured both ways: the photo model on the
digits' validation images, the digits model on the photo model's validation photos, and each
model on its own validation images (the ordinary rate). Nothing here is tuned on these splits:
the head's strength is chosen by cross-validation on each training split alone.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="folder-per-class photos")
    parser.add_argument("--networks", nargs="+", default=["efficientnet_lite0"])
    args = parser.parse_args()
    os.environ["SHOAL_HOME"] = tempfile.mkdtemp(prefix="shoal-bench-quality-")

    import shoal
    from shoal import datasets
    from shoal.data.sample import build_sample
    from shoal.evaluate import calibration
    from shoal.training import TrainConfig, train

    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    splits = {f"reference, seed {s}": dict(seed=s) for s in (0, 1, 2)}
    splits["hard: 15 % train"] = dict(seed=0, val_pct=85)
    for name, options in splits.items():
        datasets.create(args.folder, _slug(name), **options)
    build_sample("digits")
    splits["digits sample"] = {}

    print(f"{'network':<20} {'split':<20} {'train':>5} {'val':>4} {'accuracy':>8} {'log-loss':>8} {'ECE':>6} "
          f"{'p>0.999':>7} {'unfamiliar':>10} {'time':>6}")
    for network in args.networks:
        models = {}
        for split in splits:
            dataset = datasets.load(_slug(split))
            started = time.perf_counter()
            result = train(TrainConfig(dataset=dataset.name, network=network, pretrained=True,
                                       name=f"{network}-{dataset.name}"))
            elapsed = time.perf_counter() - started
            model = shoal.load(result.bundle)
            probs, scores = _run(model, dataset.images("val"))
            truth = dataset.labels("val")
            record = result.history[0]
            print(f"{network:<20} {split:<20} {dataset.count('train'):>5} {len(truth):>4} "
                  f"{record['val_accuracy']:>8.1%} {record['val_loss']:>8.4f} {calibration(probs, truth).ece:>6.3f} "
                  f"{np.mean(probs.max(1) > 0.999):>7.0%} {np.mean(scores > model.unfamiliar_threshold):>10.1%} {elapsed:>5.1f}s")
            models[split] = (model, dataset)
        photos, digits = models["reference, seed 0"], models["digits sample"]
        for (model, _), (_, other), what in [(photos, digits, "photo model on digits"),
                                             (digits, photos, "digits model on photos")]:
            _, scores = _run(model, other.images("val"))
            print(f"{network:<20} unfamiliar rate, {what}: {np.mean(scores > model.unfamiliar_threshold):.1%} "
                  f"of {len(scores)}")


def _run(model, stored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and unfamiliar scores of stored images, prepared for ``model`` from their pixels."""
    from PIL import Image

    images = [model.prepare(Image.fromarray(np.asarray(x).squeeze())) for x in stored]
    probs, scores = model.runtime.run(model.network_input(images))
    return probs, scores


def _slug(split: str) -> str:
    return {"hard: 15 % train": "hard", "digits sample": "digits"}.get(split, split.replace("reference, seed ", "ref-"))


if __name__ == "__main__":
    main()
