"""Watching runs and the machine: live event streams, a run's log, time remaining, and ``/api/system``.

The streams are server-sent events (``text/event-stream``): one JSON object per ``data:`` line.
A model's stream numbers its events by their line in ``metrics.jsonl`` (the ``id:`` line), so a
dropped connection resumes where it stopped (the browser sends ``Last-Event-ID``); the run may
have been started from the web app or from the CLI, it writes the same file. Every response
lasts at most :data:`STREAM_S` (the browser reconnects by itself), so a server that stops is
never held open by a page.

Nothing here imports torch: the versions come from the packages' metadata.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from shoal import models
from shoal.errors import ConfigError
from shoal.models import ACTIVE
from shoal.store import Job, Store

STREAM_S = 25.0  # how long one response of a stream lasts; the browser then reconnects with Last-Event-ID
TICK_S = 0.5  # how often a stream looks for news
RETRY_MS = 1000  # how long the browser waits before reconnecting
LOG_CHUNK = 256 * 1024  # the most of a log one answer carries


# -- server-sent events ---------------------------------------------------------------------------
def sse(data: dict[str, Any], *, event_id: str | None = None) -> str:
    """One server-sent event: an optional ``id:`` line and one ``data:`` line of JSON."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}data: {json.dumps(data, default=str, separators=(',', ':'))}\n\n"


def resume_point(last_event_id: str | None, after: int | None) -> int:
    """Where a model's stream starts: after the ``Last-Event-ID`` the browser sends, else ``after``, else 0."""
    if last_event_id is not None and last_event_id.strip().isascii() and last_event_id.strip().isdigit():
        return min(int(last_event_id.strip()), 2**62)
    return after or 0


class _Tail:
    """A model's events, read again only when ``metrics.jsonl`` changed."""

    def __init__(self, store: Store, name: str) -> None:
        self.store, self.name = store, name
        self.key: tuple[int, int] | None = None
        self.events: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        if not self.store.exists("model", self.name):
            return []
        folder = models.ModelFolder(self.store.folder("model", self.name))
        try:
            st = folder.metrics_path.stat()
        except OSError:
            return []
        if (st.st_size, st.st_mtime_ns) != self.key:
            self.key = (st.st_size, st.st_mtime_ns)
            self.events = folder.events()
        return self.events


def model_state(store: Store, name: str) -> dict[str, Any]:
    """What the model page watches besides the events: the status, its job's, and what the folder holds."""
    found = models.status(name, store=store)
    folder = models.ModelFolder(found.entry.path) if found.entry is not None else None
    return {"type": "status", "status": found.status, "job": found.job.status if found.job is not None else None,
            "bundle": bool(folder and folder.has_bundle()), "resumable": bool(folder and folder.has_state())}


def settled(state: dict[str, Any]) -> bool:
    """Whether nothing more will happen: neither the model nor its job waits or runs."""
    return state["status"] not in ACTIVE and state["job"] not in ACTIVE


async def model_stream(request: Request, store: Store, name: str, after: int) -> AsyncIterator[str]:
    """A model's events from index ``after`` on (``id`` = index + 1), then a ``status`` object whenever it
    changes; it ends once the run has settled (or after :data:`STREAM_S`)."""
    yield f"retry: {RETRY_MS}\n\n"
    tail = _Tail(store, name)
    deadline = time.monotonic() + STREAM_S
    sent, last = after, None

    def look() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        return tail.read(), model_state(store, name)

    while True:
        events, state = await run_in_threadpool(look)
        for index in range(sent, len(events)):
            yield sse(events[index], event_id=str(index + 1))
        sent = max(sent, len(events))
        if state != last:
            yield sse(state)
            last = state
        if settled(state) or time.monotonic() > deadline or await request.is_disconnected():
            return
        await asyncio.sleep(TICK_S)


async def snapshot_stream(request: Request, snapshot: Callable[[], dict[str, Any]],
                          last_event_id: str | None) -> AsyncIterator[str]:
    """``snapshot()`` whenever it changes; its ``id`` is a digest of it, so a reconnect that already has the
    latest one gets nothing until the next change."""
    yield f"retry: {RETRY_MS}\n\n"
    deadline = time.monotonic() + STREAM_S
    previous = (last_event_id or "").strip()
    while True:
        data = await run_in_threadpool(snapshot)
        digest = hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]
        if digest != previous:
            yield sse(data, event_id=digest)
            previous = digest
        if time.monotonic() > deadline or await request.is_disconnected():
            return
        await asyncio.sleep(TICK_S)


def home_snapshot(store: Store, runner: Any) -> dict[str, Any]:
    """What the home page shows live: the jobs (the queue), the models and the datasets."""
    from shoal.server import services

    return {"type": "jobs", "jobs": services.list_jobs(store, runner), "models": services.list_models(store, runner),
            "datasets": services.list_datasets(store, runner)}


# -- time remaining -------------------------------------------------------------------------------
def fraction_done(job: Job) -> float | None:
    """How much of a running job is done (0..1) from its progress, when it says. A resumed training counts
    from the epoch it started at (``first_epoch``), not from 0."""
    p = {k: v for k, v in (job.progress or {}).items() if isinstance(v, (int, float))}
    for done, total in (("done", "total"), ("epoch", "epochs"), ("done_steps", "total_steps")):
        if done in p and total in p:
            first = p.get("first_epoch", 0) if done == "epoch" else 0
            if p[total] > first:
                return max(0.0, min(1.0, (p[done] - first) / (p[total] - first)))
    return None


def eta_s(job: Job, *, now: float | None = None) -> float | None:
    """Seconds left for a running job, from the time it took so far and the share done; ``None`` before it can tell."""
    if job.status != "running" or job.started is None:
        return None
    fraction = fraction_done(job)
    if fraction is None or fraction < 0.01:
        return None
    elapsed = (now or time.time()) - job.started
    return max(0.0, elapsed * (1 - fraction) / fraction)


# -- the run's log --------------------------------------------------------------------------------
def read_log(store: Store, name: str, *, offset: int | None, tail: int | None) -> dict[str, Any]:
    """A part of a model's log: from byte ``offset`` (to follow it, pass the previous ``next``), or its last
    ``tail`` bytes; at most :data:`LOG_CHUNK` bytes an answer."""
    if offset is not None and tail is not None:
        raise ConfigError("give offset (to follow the log) or tail (its last bytes), not both")
    if not store.exists("model", name):  # a training still waiting to start: no log yet (404 for no such model)
        models.status(name, store=store)
        return {"text": "", "offset": 0, "next": 0, "size": 0}
    path = models.ModelFolder.of(name, store=store).log_path
    size = path.stat().st_size if path.exists() else 0
    start = max(0, size - tail) if tail is not None else min(offset or 0, size)
    with (path.open("rb") if path.exists() else _empty()) as f:
        f.seek(start)
        data = f.read(LOG_CHUNK)
    if tail is not None and start > 0 and b"\n" in data:
        cut = data.index(b"\n") + 1  # begin at a whole line
        data, start = data[cut:], start + cut
    return {"text": data.decode("utf-8", errors="replace"), "offset": start, "next": start + len(data), "size": size}


def _empty() -> Any:
    import io

    return io.BytesIO(b"")


# -- the machine ----------------------------------------------------------------------------------
PACKAGES = ("shoal", "torch", "torchvision", "timm", "onnxruntime", "onnxruntime-gpu", "numpy", "fastapi")


def versions() -> dict[str, str | None]:
    """Installed versions of the packages that matter, from their metadata (nothing is imported)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def cuda_version() -> str | None:
    """The CUDA runtime torch was built with, read from the installed ``nvidia-cuda-runtime`` wheel's
    metadata (torch's own wheels depend on it); ``None`` without one."""
    for dist in ("nvidia-cuda-runtime-cu13", "nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime-cu11",
                 "nvidia-cuda-runtime"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def gpus() -> list[dict[str, Any]]:
    """Each NVIDIA GPU's name, utilisation and memory (``nvidia-ml-py``, when installed and a driver answers)."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver, no GPU: nothing to show
        return []
    out = []
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            util = pynvml.nvmlDeviceGetUtilizationRates(handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            out.append({"index": i, "name": name.decode() if isinstance(name, bytes) else str(name),
                        "utilization": util.gpu / 100, "memory_used": int(mem.used), "memory_total": int(mem.total)})
    finally:
        pynvml.nvmlShutdown()
    return out


def system(store: Store, runner: Any) -> dict[str, Any]:
    """The machine the server runs on: CPU and memory use, GPUs, the store's disk, versions, and the
    device each running job uses."""
    from shoal.server.jobs import device_lane

    cpu: dict[str, Any] = {"cores": os.cpu_count(), "utilization": None, "load": None}
    memory: dict[str, Any] = {"used": None, "total": None}
    try:
        import psutil

        cpu["utilization"] = psutil.cpu_percent(interval=None) / 100
        vm = psutil.virtual_memory()
        memory = {"used": int(vm.total - vm.available), "total": int(vm.total)}
    except ImportError:  # the [web] extra brings psutil; without it, what the OS says directly
        pass
    if hasattr(os, "getloadavg"):
        cpu["load"] = list(os.getloadavg())
    disk = shutil.disk_usage(store.home if store.home.exists() else Path.cwd())
    jobs = []
    for job in store.list_jobs(status="running"):
        jobs.append({"id": job.id, "kind": job.kind, "target": job.target, "lane": job.lane,
                     "device": (job.progress or {}).get("device") or (job.lane if job.kind != "dataset" else "cpu"),
                     "eta_s": eta_s(job)})
    return {"cpu": cpu, "memory": memory, "gpus": gpus(), "default_device": device_lane("auto"),
            "disk": {"used": disk.used, "total": disk.total, "free": disk.free, "path": str(store.home)},
            "versions": versions(), "cuda": cuda_version(), "jobs": jobs}


# -- pages ----------------------------------------------------------------------------------------
def eval_splits(store: Store, config: dict[str, Any]) -> list[str]:
    """The splits of the model's dataset that hold images (the evaluation offers only those)."""
    from shoal import datasets

    name = config.get("dataset")
    try:
        ds = datasets.load(name, store=store) if name else None
    except Exception:  # noqa: BLE001 - a deleted or damaged dataset: the evaluation says why when asked
        ds = None
    if ds is None:
        return ["val"]
    return [s for s in ("val", "test", "train") if sum(ds.splits.get(s, {}).values()) > 0] or ["val"]
