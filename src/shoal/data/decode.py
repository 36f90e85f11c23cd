"""Decoding a dataset's images in parallel, straight into preallocated memory-mapped arrays.

:func:`decode` gives every image its row of its split's ``<split>_images.npy`` (made by
:func:`allocate`, disk blocks reserved) in worker processes (forked) or threads, and records
why each image that could not be used failed. :mod:`shoal.data.dataset` builds with it.
"""

from __future__ import annotations

import errno
import math
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shoal.data.config import DataConfig
from shoal.data.imageops import ImageError, prepare
from shoal.data.scan import SPLITS
from shoal.machine import usable_cores

if TYPE_CHECKING:
    from shoal.data.dataset import _Item

_IN_PROCESS_BELOW = 48  # fewer images than this are decoded without starting processes


# -- decoding in parallel -----------------------------------------------------------------------
_Job = tuple[int, str, int, str]  # (item index, split, row, path)
_Spec = tuple[dict[str, str], tuple[int, int], str, int]  # (array paths by split, size, resize mode, channels)
_OPEN_ARRAYS: dict[str, np.ndarray] = {}  # per process: the memory-mapped split arrays being written


def decode(items: Sequence[_Item], build: Path, cfg: DataConfig,
           progress: Callable[[int, int], None] | None) -> None:
    """Decode every item into its row of a preallocated memory-mapped array; record failures."""
    width, height = cfg.size
    arrays = {s: str(build / f"{s}_images.npy") for s in SPLITS}
    for s in SPLITS:
        rows = sum(1 for it in items if it.split == s)
        allocate(Path(arrays[s]), (rows, height, width, cfg.channels))
    spec: _Spec = (arrays, cfg.size, cfg.resize_mode, cfg.channels)
    jobs: list[_Job] = [(i, it.split, it.slot, str(it.path)) for i, it in enumerate(items)]
    workers = _workers(cfg.workers, len(jobs))
    size = max(4, min(64, math.ceil(len(jobs) / (workers * 6))))
    chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
    total, done = len(jobs), 0
    if progress is not None:
        progress(0, total)

    def record(results: list[tuple[int, str | None]]) -> None:
        nonlocal done
        for index, reason in results:
            items[index].reason = reason
        done += len(results)
        if progress is not None:
            progress(done, total)

    try:
        if workers == 1:
            for chunk in chunks:
                record(_decode_chunk(spec, chunk))
        else:
            _decode_in_parallel(spec, chunks, workers, record)
    finally:
        _release(arrays)


def _decode_in_parallel(
    spec: _Spec, chunks: Sequence[list[_Job]], workers: int, record: Callable[[list[tuple[int, str | None]]], None]
) -> None:
    """Decode chunks in worker processes (forked), or threads where forking is unsafe.

    Pillow releases the GIL while it decodes and resizes, so threads also run in
    parallel; they are used when this process already runs other threads (a web
    server, say), where forking could deadlock. If the process pool breaks (a worker
    killed by the system), the chunks it had not finished are decoded in threads.
    """
    executor: Executor = (
        ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                            initializer=_die_with_parent, initargs=(os.getpid(),))
        if _fork_is_safe()
        else ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shoal-decode")
    )
    unfinished: list[list[_Job]] = []
    try:
        futures = {executor.submit(_decode_chunk, spec, chunk): chunk for chunk in chunks}
        for future in as_completed(futures):
            try:
                results = future.result()
            except BrokenExecutor:
                unfinished.append(futures[future])
                continue
            record(results)
    except BaseException:
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    executor.shutdown(wait=True)
    if unfinished:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shoal-decode") as threads:
            for results in threads.map(lambda chunk: _decode_chunk(spec, chunk), unfinished):
                record(results)


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent(parent: int) -> None:
    """Make this worker process end when the process that started it dies (even by ``kill -9``).

    On Linux the kernel sends the worker SIGKILL when its parent exits (``PR_SET_PDEATHSIG``);
    a parent already gone by then (it died while the worker started) is noticed here.
    """
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the parent check below still runs
            pass
    if os.getppid() != parent:
        os._exit(1)


def _decode_chunk(spec: _Spec, jobs: Sequence[_Job]) -> list[tuple[int, str | None]]:
    """Decode a batch of files into their rows (runs in a worker process)."""
    arrays, size, resize_mode, channels = spec
    results: list[tuple[int, str | None]] = []
    for index, split_name, row, path in jobs:
        target = _OPEN_ARRAYS.get(arrays[split_name])
        if target is None:  # (threads may race here; both maps are of the same file)
            target = _OPEN_ARRAYS.setdefault(arrays[split_name], np.load(arrays[split_name], mmap_mode="r+"))
        try:
            target[row] = prepare(path, size, resize_mode, channels)
            results.append((index, None))
        except ImageError as exc:
            results.append((index, exc.reason))
        except Exception as exc:  # one bad file must never stop the build; say what happened
            results.append((index, f"unexpected error while decoding ({type(exc).__name__}: {exc})"))
    return results


def _release(arrays: dict[str, str]) -> None:
    """Forget this process's maps of the arrays (their pages stay in the file)."""
    for path in arrays.values():
        _OPEN_ARRAYS.pop(path, None)


def _workers(requested: int | None, jobs: int) -> int:
    if jobs < _IN_PROCESS_BELOW:
        return 1
    available = requested or usable_cores()
    return max(1, min(available, math.ceil(jobs / 8)))


def _fork_is_safe() -> bool:
    """Whether worker processes can be forked: on Linux, from a process running one thread."""
    return (
        sys.platform.startswith("linux")
        and "fork" in multiprocessing.get_all_start_methods()
        and threading.active_count() == 1
    )


# -- preallocated arrays -----------------------------------------------------------------------
def allocate(path: Path, shape: tuple[int, ...]) -> None:
    """Create an empty uint8 ``.npy`` array of ``shape``, its disk blocks reserved.

    Workers write it through memory maps; a write to a map of a sparse file on a full disk
    kills the process with SIGBUS, so the blocks are reserved here, where a full disk is an
    ordinary ``OSError`` (``ENOSPC``).
    """
    mapped = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    del mapped
    with open(path, "r+b") as f:
        _reserve_blocks(f.fileno(), os.fstat(f.fileno()).st_size)


def _reserve_blocks(fd: int, length: int) -> None:
    """Reserve ``length`` bytes of disk for the open file ``fd`` (raises ``OSError`` ENOSPC when full)."""
    if length <= 0 or not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, 0, length)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # a file system that cannot: write as before
            return
        raise
