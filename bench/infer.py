"""How fast does a shoal model classify, from the command line and warm in a process?

Three comparisons on one bundle and one image, each against a plain PyTorch baseline
measured in the same run, on the same CPU threads:

1. **Cold process.** ``shoal classify BUNDLE IMAGE`` as a whole new process (Python start,
   imports, model load, decode, inference, output), median of ``--runs`` runs, against two
   scripts run alternately with it: the floor, a bare script that imports only NumPy,
   Pillow and ONNX Runtime and runs the bundle's ``model.onnx`` on the same image (what any
   ONNX classifier pays; the difference is shoal's own start-up), and a plain script that
   imports torch and timm, rebuilds the same network from the bundle's safetensors weights
   and classifies the same image with Pillow preprocessing. The load average is printed
   with them: on a shared machine, compare within one run.
2. **Warm single-image latency.** One image through ONNX Runtime (shoal's default runtime)
   against torch eager, both on the prepared network input; plus ``Classifier.predict`` on
   the image file, decode and resize included.
3. **Batch throughput.** Batches of ``--batch`` images, images per second, ONNX Runtime
   against torch eager.

Usage:
    python bench/infer.py BUNDLE IMAGE [--runs 5] [--threads N] [--batch 32] [--iters 30]

Targets (2-core CPU, EfficientNet-Lite0 at 224 px): cold classify <= 0.4 s (issue 8); warm
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

# Both scripts stand alone (each pays only for what it imports); they read the bundle alike.
READ_BUNDLE = '''def read(name):
    if bundle.endswith(".shoal"):
        with zipfile.ZipFile(bundle) as z:
            return z.read(name)
    return open(f"{bundle}/{name}", "rb").read()
manifest = json.loads(read("shoal.json"))
'''

BASELINE_SCRIPT = '''
import json, sys, zipfile
import torch, timm  # noqa: F401 - what a plain PyTorch script pays for at start
from PIL import Image
from safetensors.torch import load as load_safetensors
from shoal.networks.normalized import rebuild

bundle, image = sys.argv[1], sys.argv[2]
{READ_BUNDLE}model = rebuild(manifest["architecture"], len(manifest["labels"]), channels=manifest["input"]["channels"],
                mean_shape=manifest["normalization"]["mean_shape"])
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
'''.replace("{READ_BUNDLE}", READ_BUNDLE)

FLOOR_SCRIPT = '''
import json, sys, zipfile
import numpy as np, onnxruntime as ort
from PIL import Image

bundle, image, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
{READ_BUNDLE}options = ort.SessionOptions()
options.intra_op_num_threads = threads
session = ort.InferenceSession(read("model.onnx"), options, providers=["CPUExecutionProvider"])
spec = manifest["input"]
img = Image.open(image).convert("RGB" if spec["channels"] == 3 else "L")
x = np.asarray(img.resize(tuple(spec["dataset_size"]), Image.Resampling.BILINEAR), dtype=np.float32)
x = x.reshape(x.shape[0], x.shape[1], -1).transpose(2, 0, 1)[None]
if spec["crop"]:
    w, h = spec["size"]
    top, left = (x.shape[2] - h) // 2, (x.shape[3] - w) // 2
    x = x[:, :, top:top + h, left:left + w]
p = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x)})[0][0]
best = int(p.argmax())
print(f"{image}  {manifest['labels'][best]} {float(p[best]) * 100:.2f}%")
'''.replace("{READ_BUNDLE}", READ_BUNDLE)


def median_times(commands: dict[str, tuple[list[str], dict[str, str]]], runs: int) -> dict[str, tuple[float, str]]:
    """Median wall time of ``runs`` runs of each command, the commands taking turns.

    One untimed warm-up run each fills the file cache; taking turns spreads the machine's
    changing load over all of them alike.
    """
    for command, env in commands.values():
        subprocess.run(command, env=env, capture_output=True, check=True)
    times: dict[str, list[float]] = {name: [] for name in commands}
    outs = {name: "" for name in commands}
    for _ in range(runs):
        for name, (command, env) in commands.items():
            start = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            times[name].append(time.perf_counter() - start)
            outs[name] = done.stdout.strip()
    return {name: (statistics.median(times[name]), outs[name]) for name in commands}


def load_average() -> str:
    """The 1-minute load average and the core count, e.g. ``load 3.1 on 2 cores``."""
    try:
        load = f"{os.getloadavg()[0]:.1f}"
    except OSError:
        load = "unknown"
    return f"load {load} on {os.cpu_count()} cores"


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
        scripts = {}
        for name, text in (("floor", FLOOR_SCRIPT), ("torch", BASELINE_SCRIPT)):
            with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
                f.write(text)
            scripts[name] = f.name
        try:
            env_torch = {**env, "OMP_NUM_THREADS": str(threads)}
            load_before = load_average()
            cold = median_times({
                "shoal": (shoal_cmd, env),
                "floor": ([sys.executable, scripts["floor"], str(args.bundle), str(args.image), str(threads)], env),
                "torch": ([sys.executable, scripts["torch"], str(args.bundle), str(args.image)], env_torch),
            }, args.runs)
            load_after = load_average()
        finally:
            for path in scripts.values():
                os.unlink(path)
        (cold_shoal, out_shoal), (cold_floor, out_floor), (cold_torch, out_torch) = (
            cold["shoal"], cold["floor"], cold["torch"])
        print(f"cold process, median of {args.runs} ({load_before} before, {load_after} after):")
        print(f"  shoal classify (ONNX Runtime)   {cold_shoal:6.3f} s   -> {out_shoal}")
        print(f"  floor: bare ONNX Runtime script {cold_floor:6.3f} s   -> {out_floor}")
        print(f"  plain torch + timm script       {cold_torch:6.3f} s   -> {out_torch}")
        print(f"  shoal over the floor            {cold_shoal - cold_floor:6.3f} s   (CLI, bundle checks, output)")
        print(f"  ratio torch / shoal             {cold_torch / cold_shoal:6.1f}x   (target: shoal <= 0.4 s)\n")

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
