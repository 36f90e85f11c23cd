"""How fast does ``shoal.datasets.create`` turn image folders into datasets?

Compares shoal against the plain baseline — a single-process Pillow loop that opens,
converts and resizes every file of the same folder — on:

1. the folder given on the command line (default: the dolphins/seahorses photos), and
2. a generated folder of 3,000 JPEGs of 640×480 in 3 classes, written once into a
   cache folder (``/tmp/shoal-bench-3000``, or ``--big DIR``) and reused afterwards.

Both runs go to a throw-away store (a temporary ``SHOAL_HOME``); the figures are images
per second, and the ratio shoal / baseline.

Wall-clock figures depend on what else runs on the machine, so the load average is
printed too, and images per CPU-second (which other programs do not change much).

Usage:
    python bench/dataset.py [FOLDER] [--size 256] [--workers N] [--big DIR] [--count 3000] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DEFAULT_FOLDER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dolphins-and-seahorses"
BIG_DEFAULT = Path(tempfile.gettempdir()) / "shoal-bench-3000"
BIG_CLASSES = ("alpha", "beta", "gamma")


def _make_jpeg(args: tuple[Path, int]) -> None:
    """Write one 640×480 photo-like JPEG (gradient, noise, ellipses) from a seed."""
    path, seed = args
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
    base = np.stack(
        [(xx * rng.uniform(0.1, 0.4) + yy * rng.uniform(0.0, 0.3) + rng.uniform(0, 100)) % 256 for _ in range(3)], -1
    )
    pixels = np.clip(base + rng.normal(0.0, 12.0, base.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels)
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, 560)), int(rng.integers(0, 400))
        box = [x0, y0, x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 200))]
        draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    tmp = path.with_suffix(".tmp")
    img.save(tmp, "JPEG", quality=90)
    os.replace(tmp, path)


def ensure_big_folder(folder: Path, count: int) -> Path:
    """Generate ``count`` 640×480 JPEGs in 3 class folders under ``folder`` unless present."""
    jobs: list[tuple[Path, int]] = []
    for i in range(count):
        path = folder / BIG_CLASSES[i % len(BIG_CLASSES)] / f"img_{i:05d}.jpg"
        if not path.exists():
            jobs.append((path, i))
    if jobs:
        for name in BIG_CLASSES:
            (folder / name).mkdir(parents=True, exist_ok=True)
        print(f"generating {len(jobs)} JPEGs of 640x480 in {folder} (once) ...", file=sys.stderr)
        with ProcessPoolExecutor() as pool:
            list(pool.map(_make_jpeg, jobs, chunksize=32))
    return folder


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (decoding workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def naive(files: list[Path], size: tuple[int, int]) -> tuple[float, float]:
    """The baseline: one process, Pillow open + convert + resize per file.

    Returns:
        (wall seconds, CPU seconds).
    """
    start, cpu = time.perf_counter(), _cpu_seconds()
    out = np.empty((len(files), size[1], size[0], 3), np.uint8)
    for i, path in enumerate(files):
        with Image.open(path) as img:
            out[i] = np.asarray(img.convert("RGB").resize(size, Image.Resampling.BILINEAR))
    return time.perf_counter() - start, _cpu_seconds() - cpu


def shoal_create(folder: Path, size: tuple[int, int], workers: int | None) -> tuple[float, float, int]:
    """Build a dataset with shoal into a throw-away store.

    Returns:
        (wall seconds, CPU seconds including the decoding processes, images stored).
    """
    from shoal import datasets
    from shoal.store import Store

    with tempfile.TemporaryDirectory(prefix="shoal-bench-home-") as home:
        start, cpu = time.perf_counter(), _cpu_seconds()
        ds = datasets.create(folder, "bench", store=Store(home), size=size, workers=workers)
        seconds, cpu_seconds = time.perf_counter() - start, _cpu_seconds() - cpu
        stored = ds.count()
    return seconds, cpu_seconds, stored


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def report(label: str, folder: Path, size: tuple[int, int], workers: int | None, repeat: int) -> None:
    """Time both on ``folder`` (best of ``repeat`` runs each, alternating) and print the figures."""
    files = _files(folder)
    naive(files[:8], size)  # warm the page cache and the imports
    base, base_cpu, seconds, cpu, stored = float("inf"), 0.0, float("inf"), 0.0, 0
    for _ in range(repeat):
        wall, used = naive(files, size)
        if wall < base:
            base, base_cpu = wall, used
        wall, used, stored = shoal_create(folder, size, workers)
        if wall < seconds:
            seconds, cpu = wall, used
    base_rate, rate = len(files) / base, stored / seconds
    load = os.getloadavg()[0]
    print(
        f"{label}: {len(files)} files -> {size[0]}x{size[1]} (best of {repeat}; load average {load:.1f})\n"
        f"  naive Pillow loop (1 process): {base:7.3f} s  {base_rate:8.1f} images/s  "
        f"({len(files) / max(base_cpu, 1e-9):6.1f} images per CPU-second)\n"
        f"  shoal.datasets.create:         {seconds:7.3f} s  {rate:8.1f} images/s  "
        f"({stored / max(cpu, 1e-9):6.1f} images per CPU-second, {stored} stored)\n"
        f"  ratio shoal / naive:           {rate / base_rate:7.2f}x"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER, help="a folder-per-class tree")
    parser.add_argument("--size", type=int, default=256, help="target side in pixels (default 256)")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")
    parser.add_argument("--big", type=Path, default=BIG_DEFAULT, help=f"cache folder of generated JPEGs ({BIG_DEFAULT})")
    parser.add_argument("--count", type=int, default=3000, help="how many JPEGs to generate (default 3000)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each, best one counts (default 1)")
    args = parser.parse_args(argv)
    size = (args.size, args.size)
    print(f"cores: {os.cpu_count()}  workers: {args.workers or 'default'}")
    report(str(args.folder), args.folder, size, args.workers, max(3, args.repeat))
    big = ensure_big_folder(args.big, args.count)
    report(f"generated {args.count} JPEGs 640x480", big, size, args.workers, args.repeat)


if __name__ == "__main__":
    main()
