"""How fast does the web app classify? A bounded load run against ``POST /api/models/{name}/classify``.

Starts ``shoal serve`` on 127.0.0.1 (a separate process, as a user runs it), sends a fixed
number of requests from N concurrent clients (default 8) that each upload one image, and
prints requests per second, latency percentiles (p50, p90, p99) and errors. The baseline in
the same run is the library call the endpoint wraps — ``shoal.load(bundle).predict(image)``
in one thread, without HTTP — so the figures show what the web layer adds.

The model stays loaded in the server between requests (the first request loads it; a
warm-up round runs before the measured one).

By default a throw-away store is made: the dolphins/seahorses photos fine-tuned on the
bundled EfficientNet-Lite0 (224×224, the brief's reference model), or with
``--network lenet`` the built-in digits sample and a LeNet (32×32, much faster per image).
``--home DIR --model NAME`` benchmarks a model already trained there instead.

Usage:
    python bench/serve.py [--network efficientnet_lite0|lenet] [--clients 8] [--requests 400]
                          [--home DIR --model NAME] [--image PATH]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dolphins-and-seahorses"


def build_model(home: Path, network: str) -> tuple[str, Path]:
    """Train a model for the run in a private store; return its name and an image to classify."""
    from shoal import datasets
    from shoal.data.sample import ensure_sample
    from shoal.store import Store
    from shoal.training import TrainConfig, train

    store = Store(home)
    started = time.perf_counter()
    if network == "lenet":
        datasets.build_sample(store=store)
        train(TrainConfig(dataset="digits", network="lenet", name="bench", epochs=2, lr=0.1), store=store)
        image = sorted((ensure_sample(store) / "7").glob("*.png"))[0]
    else:
        if not PHOTOS.is_dir():
            sys.exit(f"no photos at {PHOTOS}; give --network lenet, or --home and --model of a trained model")
        datasets.create(PHOTOS, "photos", store=store)
        train(TrainConfig(dataset="photos", network=network, pretrained=True, name="bench", epochs=3), store=store)
        image = sorted((PHOTOS / "dolphin").iterdir())[0]
    print(f"trained {network} for the run in {time.perf_counter() - started:.1f} s", flush=True)
    return "bench", image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(home: Path, port: int) -> subprocess.Popen[bytes]:
    shoal = Path(sys.executable).with_name("shoal")
    command = [str(shoal), "serve", "--port", str(port)] if shoal.exists() else \
        [sys.executable, "-c", "from shoal.cli import main; main()", "serve", "--port", str(port)]
    env = {**os.environ, "SHOAL_HOME": str(home)}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"shoal serve exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/jobs")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    sys.exit("shoal serve did not answer within 60 s")


def multipart(image: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{image.name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + image.read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def load_run(port: int, path: str, body: bytes, content_type: str, *, clients: int,
             requests: int) -> tuple[float, list[float], list[str]]:
    """Send ``requests`` requests from ``clients`` threads (keep-alive connections); return
    wall seconds, per-request latencies and error descriptions."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    remaining = [requests]
    headers = {"Content-Type": content_type, "X-Shoal-CSRF": "1", "Content-Length": str(len(body))}

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                if remaining[0] == 0:
                    break
                remaining[0] -= 1
            start = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                ok = response.status == 200 and json.loads(data)["predictions"]
                problem = None if ok else f"HTTP {response.status}: {data[:120]!r}"
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                if problem:
                    errors.append(problem)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started, latencies, errors


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", default="efficientnet_lite0", help="network of the throw-away model")
    parser.add_argument("--home", type=Path, help="an existing store (with --model)")
    parser.add_argument("--model", help="a trained model in --home")
    parser.add_argument("--image", type=Path, help="the image every request uploads")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--requests", type=int, default=400, help="measured requests (default 400)")
    args = parser.parse_args()

    scratch = None
    if args.home and args.model:
        home, name = args.home, args.model
        image = args.image
        if image is None:
            sys.exit("give --image with --home and --model")
    else:
        scratch = Path(tempfile.mkdtemp(prefix="shoal-bench-serve-"))
        home = scratch / "home"
        name, image = build_model(home, args.network)
        image = args.image or image

    import shoal
    from shoal.store import Store

    bundle = Path(Store(home).get("model", name).summary.get("bundle") or Store(home).folder("model", name) / "bundle")
    print(f"model {name} ({shoal.load(bundle).manifest['architecture']}), image {image.name} "
          f"({image.stat().st_size / 1024:.0f} KB); {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)

    # Baseline: the library call the endpoint makes, one image at a time, no HTTP.
    classifier = shoal.load(bundle)
    data = image.read_bytes()
    for _ in range(5):
        classifier.predict(data)
    times = []
    baseline_started = time.perf_counter()
    for _ in range(min(args.requests, 200)):
        t = time.perf_counter()
        classifier.predict(data)
        times.append(time.perf_counter() - t)
    baseline_wall = time.perf_counter() - baseline_started
    del classifier

    port = free_port()
    server = start_server(home, port)
    try:
        body, content_type = multipart(image)
        path = f"/api/models/{name}/classify"
        load_run(port, path, body, content_type, clients=args.clients, requests=4 * args.clients)  # warm-up
        wall, latencies, errors = load_run(port, path, body, content_type, clients=args.clients,
                                           requests=args.requests)
    finally:
        server.terminate()
        server.wait(timeout=30)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)

    print(f"\nbaseline  shoal.load().predict(), 1 thread, no HTTP: {len(times) / baseline_wall:7.1f} images/s   "
          f"p50 {1000 * statistics.median(times):6.1f} ms")
    print(f"web app   {args.clients} clients, {len(latencies)} requests:             {len(latencies) / wall:7.1f} requests/s "
          f"p50 {1000 * percentile(latencies, 50):6.1f} ms   p90 {1000 * percentile(latencies, 90):6.1f} ms   "
          f"p99 {1000 * percentile(latencies, 99):6.1f} ms   errors {len(errors)}")
    for problem in sorted(set(errors))[:5]:
        print(f"  error: {problem}")
    print(f"targets: >= 30 requests/s, p99 < 500 ms, no errors -> "
          f"{'met' if len(latencies) / wall >= 30 and percentile(latencies, 99) < 0.5 and not errors else 'NOT met'}")


if __name__ == "__main__":
    main()
