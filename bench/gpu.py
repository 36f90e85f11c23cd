"""End-to-end training speed on one GPU: EfficientNet-Lite0 and AlexNet, with and without AMP.

Makes its own synthetic dataset (coloured shapes on noise, ``--images`` PNGs in 4 classes at
``--size``), then trains each network with ``shoal.training.train`` for ``--epochs`` epochs,
once in float32 and once with AMP (``--precision auto``: bf16 where the GPU has it, else fp16
with a GradScaler), and prints the training images/s of the last epoch (the first one includes
cuDNN's kernel search). Random initial weights: nothing is downloaded. Under 5 minutes on a
recent GPU with the defaults.

Usage:
    PYTHONPATH=src python3 bench/gpu.py                                   # on the GPU machine
    PYTHONPATH=src python3 bench/gpu.py --device cpu --images 24 --size 64 --epochs 1   # a dry run
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

NETWORKS = ("efficientnet_lite0", "alexnet")


def make_folder(root: Path, count: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    for i in range(count):
        cls = i % 4
        (root / f"c{cls}").mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(rng.integers(0, 80, (size, size, 3), dtype=np.uint8))
        side = int(rng.integers(size // 3, size - 4))
        x, y = (int(v) for v in rng.integers(0, size - side, 2))
        draw = ImageDraw.Draw(img)
        (draw.ellipse if cls % 2 else draw.rectangle)([x, y, x + side, y + side], fill=(60 * cls, 200 - 40 * cls, 90))
        img.save(root / f"c{cls}" / f"{i:05d}.png", compress_level=1)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2048, help="images in the synthetic dataset (default 2048)")
    parser.add_argument("--size", type=int, default=224, help="image side; the networks' input (default 224)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run; the last is timed (default 2)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu for a dry run")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS))
    opts = parser.parse_args()

    import torch

    from shoal import datasets
    from shoal.data.config import DataConfig
    from shoal.store import Store
    from shoal.training import TrainConfig, train

    gpu = torch.cuda.get_device_name(torch.device(opts.device)) if opts.device.startswith("cuda") else "no GPU"
    print(f"torch {torch.__version__}, device {opts.device} ({gpu}); "
          f"bf16: {torch.cuda.is_bf16_supported() if torch.cuda.is_available() else 'n/a'}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="shoal-gpu-bench-") as tmp:
        store = Store(Path(tmp) / "home")
        clock = time.perf_counter()
        folder = make_folder(Path(tmp) / "images", opts.images, opts.size)
        datasets.create(folder, "synthetic", DataConfig(size=(opts.size, opts.size)), store=store)
        print(f"dataset: {opts.images} images at {opts.size}x{opts.size} in {time.perf_counter() - clock:.1f} s", flush=True)
        for network in opts.networks:
            rates = {}
            for precision in ("float32", "auto"):
                events: list[dict] = []
                clock = time.perf_counter()
                train(TrainConfig(dataset="synthetic", network=network, name=f"{network}-{precision}",
                                  epochs=opts.epochs, batch_size=opts.batch_size, device=opts.device,
                                  precision=precision, crop=0), store=store, on_event=events.append)
                start = next(e for e in events if e["type"] == "start")
                last = [e for e in events if e["type"] == "epoch"][-1]
                rates[precision] = last["images_per_s"]
                print(f"  {network:20s} {start.get('precision', precision):8s} {last['images_per_s']:9,.0f} images/s "
                      f"(run {time.perf_counter() - clock:.0f} s, val accuracy {last.get('val_accuracy', float('nan')):.2f})",
                      flush=True)
            print(f"  {network:20s} AMP / float32: {rates['auto'] / rates['float32']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
