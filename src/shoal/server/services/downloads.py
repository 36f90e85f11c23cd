"""A model's bundle and its ``.shoal`` downloads (the best epoch zipped, any other exported by a queued job).

The written bundle of the best epoch is only zipped, in the request. Any other epoch (the last,
a kept snapshot, or the best before its bundle is written) is exported: the network is rebuilt
and converted to ONNX, which takes a while, so :func:`export_download` queues it as an
``export`` job (its stages are the job's progress) and the file downloads once it is written.
There is one export per (model, epoch) at a time: asking again while it waits or runs gives
the same job, and a written file is sent until the model saves a newer epoch.
"""

from __future__ import annotations

import threading
from pathlib import Path

from shoal import models
from shoal.config import whole_number
from shoal.errors import BundleError, NotFoundError
from shoal.server.config import Settings
from shoal.server.jobs import Runner
from shoal.server.services.models import require_code_for
from shoal.store import Job, Store

EXPORT_KIND = "export"
EXPORT_LANE = "export"  # exports run one at a time, beside dataset builds and trainings


def bundle_path(store: Store, name: str) -> Path:
    """The bundle of a model's best epoch (written when training ends)."""
    folder = models.ModelFolder.of(name, store=store)
    if not folder.has_bundle():
        raise BundleError(f"model {name!r} has no bundle yet (status {models.status(name, store=store).status}): "
                          "it is written when training ends; download a snapshot instead, or wait")
    return folder.bundle_path


def download_file(store: Store, name: str, epoch: str) -> Path:
    """The ``.shoal`` file of the model at ``epoch`` (best, last, or a kept snapshot), kept in its folder.

    The best epoch's written bundle is zipped here; any other epoch must have been exported by
    :func:`export_download` first.

    Raises:
        NotFoundError: no such model or snapshot. BundleError: nothing to download yet, or the
        epoch is not exported yet (the message says how to export it).
    """
    from shoal.bundle import MANIFEST, zip_bundle

    folder = models.ModelFolder.of(name, store=store)
    if epoch == "best" and folder.has_bundle():
        out = folder.downloads_path / f"{name}.shoal"
        with _one_writer(out):  # parallel downloads: one zips, the others wait and send the same file
            if not out.exists() or out.stat().st_mtime < (folder.bundle_path / MANIFEST).stat().st_mtime:
                folder.downloads_path.mkdir(exist_ok=True)
                zip_bundle(folder.bundle_path, out)  # a temporary file of its own, renamed when complete
        return out
    out = _exported(store, name, epoch)
    if not _fresh(store, name, epoch, out):
        raise BundleError(f"model {name!r} at epoch {epoch!r} is not exported yet: POST "
                          f"/api/models/{name}/export?epoch={epoch} queues its export (the model page's Download "
                          "button does), then download it")
    return out


def export_download(store: Store, runner: Runner, settings: Settings, name: str, epoch: str) -> Job | None:
    """Queue the export of the model at ``epoch`` for download; None when its file is ready to download.

    While an export of the same (model, epoch) is queued or running, that job is returned instead
    of a second one.

    Raises:
        NotFoundError: no such model or snapshot. BundleError: the model has not started training.
        TrainingError: the model's network is a file and this server does not run code.
    """
    folder = models.ModelFolder.of(name, store=store)
    if epoch == "best" and folder.has_bundle():
        return None  # zipped when downloaded
    out = _exported(store, name, epoch)
    with _one_writer(out):
        if _fresh(store, name, epoch, out):
            return None
        for job in store.list_jobs(status=("queued", "running"), kind=EXPORT_KIND, target=name):
            if job.params.get("epoch") == epoch:
                return job
        require_code_for(store, settings, name, "exporting model")
        return runner.submit(EXPORT_KIND, name, lane=EXPORT_LANE, params={"epoch": epoch, "out": str(out)})


def _exported(store: Store, name: str, epoch: str) -> Path:
    """Where the export of ``epoch`` is written, once the model and the epoch are checked."""
    folder = models.ModelFolder.of(name, store=store)
    if epoch not in ("best", "last"):
        snapshots = folder.snapshots()
        if whole_number(epoch) not in snapshots:
            kept = ", ".join(str(e) for e in snapshots) or "none yet"
            raise NotFoundError(f"model {name!r} has no snapshot of epoch {epoch!r}; choose best, last or a kept "
                                f"snapshot ({kept})")
    if not folder.card_path.exists():
        raise BundleError(f"model {name!r} has not started training yet; nothing to download")
    return folder.downloads_path / f"{name}-{epoch if epoch in ('best', 'last') else 'epoch-' + epoch}.shoal"


def _fresh(store: Store, name: str, epoch: str, out: Path) -> bool:
    """Whether the exported file is there and its weights were not saved again since (a snapshot is,
    when a resumed run trains its epoch again after a kill)."""
    folder = models.ModelFolder.of(name, store=store)
    source = folder.snapshot(int(epoch)) if epoch.isdigit() else folder.state_path
    return out.exists() and (not source.exists() or out.stat().st_mtime >= source.stat().st_mtime)


_WRITERS: dict[Path, threading.Lock] = {}
_WRITERS_LOCK = threading.Lock()


def _one_writer(path: Path) -> threading.Lock:
    """The lock of one download file: held while it is checked and zipped or queued, so each is made once."""
    with _WRITERS_LOCK:
        return _WRITERS.setdefault(path, threading.Lock())
