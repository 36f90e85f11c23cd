"""A model's bundle and its ``.shoal`` downloads (the best epoch zipped, any other exported)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from shoal import models
from shoal.config import whole_number
from shoal.errors import BundleError, NotFoundError
from shoal.server.config import Settings
from shoal.server.services.models import require_code_for
from shoal.store import Store

EXPORT_TIMEOUT_S = 600


def bundle_path(store: Store, name: str) -> Path:
    """The bundle of a model's best epoch (written when training ends)."""
    folder = models.ModelFolder.of(name, store=store)
    if not folder.has_bundle():
        raise BundleError(f"model {name!r} has no bundle yet (status {models.status(name, store=store).status}): "
                          "it is written when training ends; download a snapshot instead, or wait")
    return folder.bundle_path


def download_file(store: Store, settings: Settings, name: str, epoch: str) -> Path:
    """A ``.shoal`` file of the model at ``epoch`` (best, last, or a kept snapshot), cached in its folder.

    The written bundle of the best epoch is only zipped; any other epoch is exported, which
    rebuilds the network (running a network file only on a server that allows code).
    """
    from shoal.bundle import MANIFEST, zip_bundle

    folder = models.ModelFolder.of(name, store=store)
    downloads = folder.downloads_path
    downloads.mkdir(exist_ok=True)
    if epoch == "best" and folder.has_bundle():
        out = downloads / f"{name}.shoal"
        with _one_writer(out):  # parallel downloads: one zips, the others wait and send the same file
            if not out.exists() or out.stat().st_mtime < (folder.bundle_path / MANIFEST).stat().st_mtime:
                zip_bundle(folder.bundle_path, out)  # a temporary file of its own, renamed when complete
        return out
    if epoch not in ("best", "last"):
        snapshots = folder.snapshots()
        if whole_number(epoch) not in snapshots:
            kept = ", ".join(str(e) for e in snapshots) or "none yet"
            raise NotFoundError(f"model {name!r} has no snapshot of epoch {epoch!r}; choose best, last or a kept "
                                f"snapshot ({kept})")
    if not folder.card_path.exists():
        raise BundleError(f"model {name!r} has not started training yet; nothing to download")
    out = downloads / f"{name}-{epoch if epoch in ('best', 'last') else 'epoch-' + epoch}.shoal"
    source = folder.state_path

    def fresh() -> bool:
        return out.exists() and (not source.exists() or out.stat().st_mtime >= source.stat().st_mtime
                                 or epoch.isdigit())

    if fresh():
        return out
    require_code_for(store, settings, name, "exporting model")
    with _one_writer(out):  # one export per (model, epoch) at a time; the others then find it written
        if not fresh():
            _export_in_worker(store, name, epoch, out)
    return out


_WRITERS: dict[Path, threading.Lock] = {}
_WRITERS_LOCK = threading.Lock()


def _one_writer(path: Path) -> threading.Lock:
    """The lock of one download file: held while it is checked and (re)written, so each is written once."""
    with _WRITERS_LOCK:
        return _WRITERS.setdefault(path, threading.Lock())


def _export_in_worker(store: Store, name: str, epoch: str, out: Path) -> None:
    """Write a bundle with :func:`shoal.bundle.export` in a worker process (it needs torch and ONNX)."""
    command = [sys.executable, "-m", "shoal.server.worker", "--home", str(store.home), "--export", name,
               "--epoch", epoch, "--out", str(out)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S,
                              env={**os.environ, "SHOAL_HOME": str(store.home)})
    except subprocess.TimeoutExpired:
        raise BundleError(f"exporting model {name!r} took more than {EXPORT_TIMEOUT_S} s; try 'shoal export'") from None
    if done.returncode != 0:
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        raise BundleError(lines[-1].removeprefix("failed: ") if lines else f"exporting model {name!r} failed")
