"""How fast does a shoal model classify, from the command line and warm in a process?

Three comparisons on one bundle and one image, each against a plain PyTorch baseline
measured in the same run, on the same CPU threads:

1. **Cold process.** ``shoal classify BUNDLE IMAGE`` as a whole new process (Python start,
   imports, model load, decode, inference, output), median of ``--runs`` runs, against a
   plain script that imports torch and timm, rebuilds the same network from the bundle's
   safetensors weights and classifies the same image with Pillow preprocessing.
2. **Warm single-image latency.** One image through ONNX Runtime (shoal's default runtime)
   against torch eager, both on the prepared network input; plus ``Classifier.predict`` on
   the image file, decode and resize included.
3. **Batch throughput.** Batches of ``--batch`` images, images per second, ONNX Runtime
   against torch eager.

Usage:
    python bench/infer.py BUNDLE IMAGE [--runs 5] [--threads N] [--batch 32] [--iters 30]

BRIEF targets (2-core CPU, EfficientNet-Lite0 at 224 px): cold classify <= 0.7 s; warm
latency <= 10 ms; ONNX batch throughput >= 1.5x torch eager.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

BASELINE_SCRIPT = '''
import json, sys, zipfile
import torch, timm  # noqa: F401 - what a plain PyTorch script pays for at start
from PIL import Image
from safetensors.torch import load as load_safetensors
from shoal.bundle.writer import rebuild

bundle, image = sys.argv[1], sys.argv[2]
def read(name):
    if bundle.endswith(".shoal"):
        with zipfile.ZipFile(bundle) as z:
            return z.read(name)
    return open(f"{bundle}/{name}", "rb").read()
manifest = json.loads(read("shoal.json"))
model = rebuild(manifest)
model.load_state_dict(load_safetensors(read("model.safetensors")))
model.eval()
spec = manifest["input"]
img = Image.open(image).convert("RGB" if spec["channels"] == 3 else "L")
img = img.resize(tuple(spec["dataset_size"]), Image.Resampling.BILINEAR)
x = torch.from_numpy(__import__("numpy").asarray(img, dtype="float32").copy())
x = x.reshape(x.shape[0], x.shape[1], -1).permute(2, 0, 1)[None]
if spec["crop"]:
    w, h = spec["size"]
    top, left = (x.shape[2] - h) // 2, (x.shape[3] - w) // 2
    x = x[:, :, top:top + h, left:left + w]
with torch.inference_mode():
    p = torch.softmax(model(x), 1)[0]
best = int(p.argmax())
print(f"{image}  {manifest['labels'][best]} {float(p[best]) * 100:.2f}%")
'''


def median_time(command: list[str], runs: int, env: dict[str, str]) -> tuple[float, str]:
    """Median wall time of ``runs`` runs of a command (after one untimed warm-up of the file cache)."""
    subprocess.run(command, env=env, capture_output=True, check=True)
    times, out = [], ""
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - start)
        out = done.stdout.strip()
    return statistics.median(times), out


def timed(fn: Callable[[], object], iters: int, warmup: int = 3) -> float:
    """Median seconds per call of ``fn``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("image", type=Path)
    parser.add_argument("--runs", type=int, default=5, help="cold process runs (median)")
    parser.add_argument("--iters", type=int, default=30, help="warm single-image runs (median)")
    parser.add_argument("--batch", type=int, default=32, help="batch size of the throughput test")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for both engines (default: all cores)")
    parser.add_argument("--skip-cold", action="store_true", help="only the warm figures")
    args = parser.parse_args()

    import shoal
    from shoal.machine import usable_cores

    threads = args.threads or usable_cores()
    print(f"machine: {platform.processor() or platform.machine()}, {usable_cores()} usable cores, "
          f"Python {platform.python_version()}; threads used: {threads}")
    print(f"bundle: {args.bundle}   image: {args.image}\n")

    # -- 1. cold process ----------------------------------------------------------------------
    if not args.skip_cold:
        env = dict(os.environ)
        script = Path(sys.executable).with_name("shoal")  # the console script, as a user runs it
        entry = [str(script)] if script.exists() else [sys.executable, "-c", "from shoal.cli import main; main()"]
        shoal_cmd = [*entry, "classify", str(args.bundle), str(args.image), "--top", "1", "--threads", str(threads)]
        cold_shoal, out_shoal = median_time(shoal_cmd, args.runs, env)
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(BASELINE_SCRIPT)
        try:
            env_torch = {**env, "OMP_NUM_THREADS": str(threads)}
            cold_torch, out_torch = median_time([sys.executable, f.name, str(args.bundle), str(args.image)],
                                                args.runs, env_torch)
        finally:
            os.unlink(f.name)
        print(f"cold process, median of {args.runs}:")
        print(f"  shoal classify (ONNX Runtime)   {cold_shoal:6.3f} s   -> {out_shoal}")
        print(f"  plain torch + timm script       {cold_torch:6.3f} s   -> {out_torch}")
        print(f"  ratio torch / shoal             {cold_torch / cold_shoal:6.1f}x   (target: shoal <= 0.7 s)\n")

    # -- 2./3. warm -----------------------------------------------------------------------------
    import torch

    torch.set_num_threads(threads)
    onnx_model = shoal.load(args.bundle, threads=threads)
    torch_model = shoal.load(args.bundle, runtime="torch", threads=threads, device="cpu")
    x1 = onnx_model.network_input([onnx_model.prepare(args.image)])
    xb = np.ascontiguousarray(np.repeat(x1, args.batch, axis=0))
    diff = float(np.abs(onnx_model.runtime(xb[:4]) - torch_model.runtime(xb[:4])).max())

    onnx_1 = timed(lambda: onnx_model.runtime(x1), args.iters)
    torch_1 = timed(lambda: torch_model.runtime(x1), args.iters)
    predict_1 = timed(lambda: onnx_model.predict(args.image, top=1), args.iters)
    onnx_b = timed(lambda: onnx_model.runtime(xb), max(3, args.iters // 10), warmup=1)
    torch_b = timed(lambda: torch_model.runtime(xb), max(3, args.iters // 10), warmup=1)

    print(f"warm single image ({'x'.join(str(v) for v in x1.shape)}), median of {args.iters}:")
    print(f"  ONNX Runtime                    {onnx_1 * 1000:7.2f} ms   (target <= 10 ms)")
    print(f"  torch eager                     {torch_1 * 1000:7.2f} ms")
    print(f"  ratio torch / ONNX              {torch_1 / onnx_1:7.2f}x")
    print(f"  Classifier.predict(file)        {predict_1 * 1000:7.2f} ms   (decode + resize + ONNX)\n")
    print(f"batch of {args.batch}, images per second:")
    print(f"  ONNX Runtime                    {args.batch / onnx_b:7.1f}")
    print(f"  torch eager                     {args.batch / torch_b:7.1f}")
    print(f"  ratio ONNX / torch              {torch_b / onnx_b:7.2f}x   (target >= 1.5x)")
    print(f"\nlargest |p_onnx - p_torch| on the test input: {diff:.1e}")


if __name__ == "__main__":
    main()
