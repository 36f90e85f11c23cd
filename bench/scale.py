"""Does shoal scale to datasets larger than memory, and what does data parallelism buy here?

1. Generates a synthetic folder of ``--images`` PNGs (default 200,000 at 64×64, 10 classes;
   coloured shapes on noise), once, into a cache folder reused afterwards (``--folder``).
2. Builds a dataset of it with ``shoal dataset create`` and prints its throughput and the
   peak memory of the build.
3. Trains LeNet for one epoch with ``shoal train`` in 1, 2 and 4 processes (``--nproc``,
   gloo on a CPU), the single process first as the baseline, and prints training images/s
   (the epoch event's own figure) and the peak memory of each run.

Every command runs as a subprocess in a throw-away store; its process tree's memory is
sampled every 50 ms from /proc. Two peaks are printed: **resident** (Rss summed over the tree:
it includes the pages of the memory-mapped arrays a process has touched, file pages the kernel
drops under memory pressure, counted once per process that maps them) and **anonymous**
(Pss_Anon summed: the heap, which is what must fit in memory; a page a forked worker still shares
with its parent counts once, not once per process). Bounded memory means the anonymous peak does
not grow with the pixels: what grows with the number of images is the per-image index (each
file's path, class and row), about 1 KB an image against the 12 KB of its 64×64 pixels.

On a machine with 2 cores, 2 or 4 processes share those 2 cores and add a gradient exchange per
step: expect no gain, or a loss. The ratio is what data parallelism buys on *this* machine.

Usage:
    .venv/bin/python bench/scale.py                        # 200,000 images: long on a laptop
    .venv/bin/python bench/scale.py --images 20000 --procs 1 2 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = tuple(f"class{i}" for i in range(10))
SIZE = 64


def _write_images(args: tuple[Path, int, int, int]) -> int:
    """Write images ``start..stop`` (class = index mod 10) into ``folder``; skip those present."""
    folder, start, stop, seed = args
    written = 0
    for i in range(start, stop):
        cls = i % len(CLASSES)
        path = folder / CLASSES[cls] / f"{i:07d}.png"
        if path.exists():
            continue
        rng = np.random.default_rng(seed + i)
        img = Image.fromarray(rng.integers(0, 80, (SIZE, SIZE, 3), dtype=np.uint8))
        side = int(rng.integers(SIZE // 3, SIZE - 4))
        x, y = (int(v) for v in rng.integers(0, SIZE - side, 2))
        colour = tuple(int(60 + 19 * cls + v) % 256 for v in rng.integers(0, 30, 3))
        draw = ImageDraw.Draw(img)
        (draw.ellipse if cls % 2 else draw.rectangle)([x, y, x + side, y + side], fill=colour)
        tmp = path.with_name(path.name + ".tmp")
        img.save(tmp, "PNG", compress_level=1)
        os.replace(tmp, path)
        written += 1
    return written


def ensure_folder(folder: Path, count: int) -> float:
    """Make ``count`` images under ``folder`` (kept between runs); return the seconds it took."""
    for cls in CLASSES:
        (folder / cls).mkdir(parents=True, exist_ok=True)
    clock = time.perf_counter()
    step = 2000
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        written = sum(pool.map(_write_images, [(folder, s, min(s + step, count), 0) for s in range(0, count, step)]))
    took = time.perf_counter() - clock
    if written:
        print(f"generated {written:,} images of {SIZE}x{SIZE} in {took:.0f} s into {folder}", flush=True)
    return took


class TreeMemory:
    """Peak memory of a process and its descendants, sampled from /proc."""

    def __init__(self, pid: int, every_s: float = 0.05) -> None:
        self.pid, self.every_s = pid, every_s
        self.peak_rss = self.peak_anon = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _tree(self) -> list[int]:
        pids, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as f:
                        todo.extend(int(c) for c in f.read().split())
            except OSError:
                pass
        return pids

    def _watch(self) -> None:
        while not self._done.is_set():
            rss = anon = 0
            for pid in self._tree():
                try:
                    with open(f"/proc/{pid}/smaps_rollup") as f:
                        for line in f:
                            if line.startswith("Rss:"):
                                rss += int(line.split()[1]) * 1024
                            elif line.startswith("Pss_Anon:"):
                                anon += int(line.split()[1]) * 1024
                except OSError:
                    pass
            self.peak_rss, self.peak_anon = max(self.peak_rss, rss), max(self.peak_anon, anon)
            self._done.wait(self.every_s)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def run(args: list[str], env: dict[str, str]) -> tuple[float, TreeMemory, str]:
    """Run ``python -m shoal ARGS``; return its wall time, its memory peaks and its stdout."""
    clock = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "shoal", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    memory = TreeMemory(proc.pid)
    out, err = proc.communicate()
    memory.stop()
    took = time.perf_counter() - clock
    if proc.returncode != 0:
        sys.exit(f"'shoal {' '.join(args)}' failed (exit {proc.returncode}):\n{err[-3000:]}")
    return took, memory, out


def mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200_000, help="images to generate (default 200,000)")
    parser.add_argument("--folder", type=Path, default=None,
                        help="where the images are kept between runs (default /tmp/shoal-scale-N)")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2, 4], help="process counts (1 first: the baseline)")
    parser.add_argument("--batch-size", type=int, default=256, help="the global batch (default 256)")
    parser.add_argument("--network", default="lenet", help="network trained for one epoch (default lenet)")
    opts = parser.parse_args()
    procs = [1] + [p for p in opts.procs if p != 1]
    folder = opts.folder or Path(tempfile.gettempdir()) / f"shoal-scale-{opts.images}"
    src = str(Path(__file__).resolve().parents[1] / "src")

    print(f"machine: {os.cpu_count()} cores; load average at start {os.getloadavg()[0]:.1f}", flush=True)
    ensure_folder(folder, opts.images)
    with tempfile.TemporaryDirectory(prefix="shoal-scale-home-") as home:
        env = {**os.environ, "SHOAL_HOME": home, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
        load = os.getloadavg()[0]
        took, memory, _ = run(["dataset", "create", str(folder), "--name", "scale", "--size", str(SIZE),
                               "--val", "10"], env)
        stored = sum(p.stat().st_size for p in (Path(home) / "datasets" / "scale").glob("*_images.npy"))
        print(f"\nbuild: {opts.images:,} images in {took:.1f} s = {opts.images / took:,.0f} images/s "
              f"(load average {load:.1f}); arrays {mb(stored)}; peak resident {mb(memory.peak_rss)}, "
              f"peak anonymous {mb(memory.peak_anon)}", flush=True)

        print(f"\ntraining {opts.network}, one epoch, global batch {opts.batch_size}:")
        baseline = None
        for n in procs:
            name = f"scale-{n}"
            load = os.getloadavg()[0]
            took, memory, _ = run(["train", "--dataset", "scale", "--network", opts.network, "--epochs", "1",
                                   "--batch-size", str(opts.batch_size), "--name", name, "--nproc", str(n)], env)
            events = [json.loads(line) for line in (Path(home) / "models" / name / "metrics.jsonl").open()]
            epoch = next(e for e in events if e.get("type") == "epoch")
            rate = epoch["images_per_s"]
            baseline = baseline or rate
            print(f"  {n} process{'es' if n > 1 else '  '}: {rate:8,.0f} images/s ({rate / baseline:.2f}x the single "
                  f"process), epoch {epoch['elapsed_s']:.1f} s, command {took:.1f} s; peak resident "
                  f"{mb(memory.peak_rss)}, peak anonymous {mb(memory.peak_anon)} (load average {load:.1f})",
                  flush=True)
    if (os.cpu_count() or 1) <= 2:
        print("\nThis machine has 2 cores: more processes share them and add a gradient exchange per step, so "
              "data parallelism buys little or nothing here; the gain is on machines with many cores or GPUs.")


if __name__ == "__main__":
    main()
