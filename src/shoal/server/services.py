"""The service layer between routes and the library: each function is one action of the app.

Routes parse the request, call one function here, and format what it returns. These
functions call :mod:`shoal.datasets`, :mod:`shoal.training`, :mod:`shoal.models`,
:mod:`shoal.bundle` and :mod:`shoal.inference`; they hold no training or inference logic,
only the web app's bookkeeping (jobs, sweeps, caches, uploads). Library errors
(:class:`~shoal.errors.ShoalError`) pass through; the app turns them into answers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from shoal import assets, models
from shoal.config import to_dict, whole_number
from shoal.errors import (
    AlreadyExistsError,
    BundleError,
    ConfigError,
    InputError,
    NotFoundError,
    TrainingError,
)
from shoal.server.config import Settings
from shoal.server import monitor
from shoal.server.jobs import DATA_LANE, Runner, device_lane
from shoal.server.security import confine, fetch_image, require_code_allowed, safe_extract
from shoal.store import Job, Store, check_name
from shoal.trust import is_network_file

RESUMABLE = ("interrupted", "aborted", "failed")
EXPORT_TIMEOUT_S = 600


# -- caches on app.state ----------------------------------------------------------------------------
class Classifiers:
    """Loaded classifiers, kept between requests (loading a bundle takes far longer than a prediction).

    Keyed by bundle path, runtime and the manifest's modification time, so a re-exported
    bundle is loaded afresh; the least recently used is dropped past ``size``. ``trust_code``
    (the server's ``--allow-code``) lets heat-maps rebuild a network defined by a ``.py`` file.
    """

    def __init__(self, size: int = 6, *, trust_code: bool = False) -> None:
        self.size = size
        self.trust_code = trust_code
        self._items: OrderedDict[tuple[str, str, float, bool], Any] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str, float, bool], threading.Lock] = {}
        self.torch_lock = threading.Lock()

    def get(self, bundle: Path, runtime: str = "onnx", *, bulk: bool = False) -> Any:
        """The loaded classifier of a bundle.

        Single images (``bulk=False``) get a one-thread engine: the server runs requests side by
        side, so parallelism comes from the requests, and one engine per request keeps the cores
        from being oversubscribed (measured: more requests/s and a lower p99 under load).
        Many images at once (``bulk=True``: classify-many, evaluation) get all cores.
        """
        from shoal.bundle import MANIFEST
        from shoal.inference import load

        manifest = bundle / MANIFEST if bundle.is_dir() else bundle
        try:
            key = (str(bundle), runtime, manifest.stat().st_mtime, bulk)
        except OSError:
            raise BundleError(f"the bundle {str(bundle)!r} is missing; train or export the model again") from None
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one load per bundle, even when many requests arrive at once
            with self._lock:
                if key in self._items:
                    return self._items[key]
            classifier = load(bundle, runtime=runtime, threads=None if bulk else 1, trust_code=self.trust_code)
            with self._lock:
                self._items[key] = classifier
                self._loading.pop(key, None)
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
            return classifier

    def forget(self, bundle_prefix: Path) -> None:
        with self._lock:
            for key in [k for k in self._items if k[0].startswith(str(bundle_prefix))]:
                del self._items[key]


class NetworkCatalog:
    """The pretrained-network list (``shoal.networks.list_networks``), read once: it imports torch."""

    def __init__(self) -> None:
        self._specs: list[dict[str, Any]] | None = None
        self._lock = threading.Lock()

    def specs(self) -> list[dict[str, Any]]:
        with self._lock:
            if self._specs is None:
                try:
                    from shoal.networks import list_networks
                except ImportError:  # the web app without shoal[train]: it can still classify with bundles
                    self._specs = []
                    return self._specs
                self._specs = [{
                    "name": s.name, "description": s.description, "family": s.family,
                    "input_size": list(s.input_size), "pretrained": s.pretrained,
                    "pretrained_offline": s.pretrained_offline,
                } for s in list_networks()]
            return self._specs

    def names(self) -> list[str]:
        return [s["name"] for s in self.specs()]


# -- jobs -----------------------------------------------------------------------------------------
def job_view(runner: Runner, job: Job) -> dict[str, Any]:
    """A job as the API shows it (with its place in the queue while it waits)."""
    out = job.to_dict()
    out.pop("params", None)
    out["queue_position"] = runner.position(job) if job.status == "queued" else None
    out["eta_s"] = monitor.eta_s(job)
    return out


def list_jobs(store: Store, runner: Runner, *, recent: int = 20) -> list[dict[str, Any]]:
    """Running and queued jobs, then the most recent finished ones."""
    active = store.list_jobs(status=("running", "queued"))
    done = [j for j in store.list_jobs(limit=recent) if j.status not in ("running", "queued")]
    return [job_view(runner, j) for j in active + sorted(done, key=lambda j: -j.id)]


def abort_job(store: Store, runner: Runner, job_id: int) -> dict[str, Any]:
    job = store.get_job(job_id)
    if job.status not in ("queued", "running"):
        raise TrainingError(f"job {job_id} is {job.status}; only queued or running jobs can be aborted")
    return job_view(runner, runner.abort(job))


def _active_job(store: Store, target: str, kinds: tuple[str, ...]) -> Job | None:
    jobs = store.list_jobs(status=("queued", "running"), kind=kinds, target=target)
    return jobs[-1] if jobs else None


# -- datasets -------------------------------------------------------------------------------------
def _check_new_dataset(store: Store, name: str) -> None:
    check_name(name, "dataset")
    if store.exists("dataset", name) or _active_job(store, name, ("dataset",)):
        raise AlreadyExistsError(f"a dataset named {name!r} already exists or is being built: choose another name, "
                                 "or delete the existing one first")


def _dataset_options(settings: Settings, options: dict[str, Any]) -> dict[str, Any]:
    """Check the options now (a bad value fails the request, not the job later); confine paths."""
    from shoal.data.config import DataConfig, normalise_options
    from shoal.data.scan import scan_list

    options = normalise_options({k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
    checked = to_dict(DataConfig().replace(**options))  # raises ConfigError naming the option
    options = {k: checked[k] for k in options}  # as the config reads them: size "64x48" becomes [64, 48]
    for key in ("val_folder", "list_file"):
        if options.get(key):
            options[key] = str(confine(options[key], settings.roots, what="folder" if key == "val_folder" else "file"))
    if options.get("list_file"):
        for files in scan_list(options["list_file"]).files.values():
            for path in files:
                confine(str(path), settings.roots, what="image listed in the list file")
    return options


def submit_dataset(store: Store, runner: Runner, settings: Settings, *, name: str, folder: str | None,
                   sample: bool, options: dict[str, Any]) -> Job:
    """Queue the build of a dataset from a server-side folder (inside the roots) or the built-in sample."""
    _check_new_dataset(store, name)
    options = _dataset_options(settings, options)
    if sample:
        from shoal.data.sample import SAMPLE_SIZE, ensure_sample

        source = str(ensure_sample(store))
        options.setdefault("size", SAMPLE_SIZE)
    elif folder:
        source = str(confine(folder, settings.roots))
    elif options.get("list_file"):
        source = None
    else:
        raise InputError("say where the images are: a server-side folder, a list file, an uploaded zip, "
                         "or the built-in sample")
    # The worker reads only images inside the roots, links resolved (a link in a root may point anywhere).
    return runner.submit("dataset", name, lane=DATA_LANE, params={"source": source, "options": options,
                                                                  "within": [str(r) for r in settings.roots]})


def submit_dataset_zip(store: Store, runner: Runner, settings: Settings, *, name: str, archive: Path,
                       options: dict[str, Any]) -> Job:
    """Queue the build of a dataset from an uploaded zip of class folders (extracted safely first)."""
    _check_new_dataset(store, name)
    options = _dataset_options(settings, {k: v for k, v in options.items() if k not in ("val_folder", "list_file")})
    uploads = store.home / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    dest = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=uploads))
    dest.rmdir()
    root = safe_extract(archive, dest, settings)
    return runner.submit("dataset", name, lane=DATA_LANE,
                         params={"source": str(root), "options": options, "cleanup": str(dest)})


def dataset_view(store: Store, runner: Runner, name: str) -> dict[str, Any]:
    """A stored dataset (``Dataset.to_dict()``), or the job building it."""
    from shoal import datasets

    jobs = store.list_jobs(kind="dataset", target=name)
    if store.exists("dataset", name):
        info = datasets.load(name, store=store).to_dict()
        info["status"] = "done"
        info["job"] = job_view(runner, jobs[-1]) if jobs else None
        info["models"] = [e.name for e in store.list("model") if e.summary.get("dataset") == name]
        return info
    if not jobs:
        store.get("dataset", name)  # raises NotFoundError listing the datasets there are
    job = jobs[-1]
    return {"name": name, "status": job.status, "error": job.error, "job": job_view(runner, job)}


def list_datasets(store: Store, runner: Runner) -> list[dict[str, Any]]:
    """Stored datasets, then the ones being built (or whose build failed last)."""
    out = []
    for entry in store.list("dataset"):
        s = entry.summary
        out.append({"name": entry.name, "status": entry.status, "created": entry.created,
                    "classes": len(s.get("classes", [])), "size": s.get("size"), "channels": s.get("channels"),
                    "counts": s.get("counts", {}), "skipped": s.get("skipped", 0)})
    stored = {d["name"] for d in out}
    latest: dict[str, Job] = {}
    for job in store.list_jobs(kind="dataset"):
        latest[job.target] = job
    for target, job in latest.items():
        if target not in stored and job.status in ("queued", "running", "failed"):
            out.append({"name": target, "status": job.status, "created": job.created, "error": job.error,
                        "job": job_view(runner, job), "progress": job.progress})
    return out


def delete_dataset(store: Store, name: str) -> None:
    from shoal import datasets

    if _active_job(store, name, ("dataset",)):
        raise TrainingError(f"dataset {name!r} is being built; abort its job first")
    if store.exists("dataset", name):
        datasets.delete(name, store=store)
    elif not store.list_jobs(kind="dataset", target=name):
        store.get("dataset", name)
    store.forget_jobs(name, ("dataset",))


def dataset_images(store: Store, name: str, *, split: str, label: str | None, page: int,
                   per_page: int) -> dict[str, Any]:
    """One page of a split's images (optionally of one class): indices, labels, file names."""
    import numpy as np

    from shoal import datasets

    ds = datasets.load(name, store=store)
    if split not in ds.splits:
        raise ConfigError(f"split must be one of {', '.join(ds.splits)}, got {split!r}")
    if label is not None and label not in ds.classes:
        raise ConfigError(f"class {label!r} is not in dataset {name!r} (classes: {', '.join(ds.classes)})")
    if ds.count(split) == 0:
        return {"split": split, "label": label, "page": 0, "pages": 0, "total": 0, "items": []}
    labels = ds.labels(split)
    if label is not None:
        indices = np.flatnonzero(labels == ds.classes.index(label))
    else:  # every class in turn (the first image of each class, then the second...), not class after class
        rank = np.zeros(len(labels), dtype=np.int64)
        for cls in np.unique(labels):
            members = np.flatnonzero(labels == cls)
            rank[members] = np.arange(len(members))
        indices = np.lexsort((labels, rank))
    pages = max(1, -(-len(indices) // per_page))
    page = min(max(page, 0), pages - 1)
    chosen = indices[page * per_page:(page + 1) * per_page]
    sources = ds.sources(split)
    return {
        "split": split, "label": label, "page": page, "pages": pages, "total": int(len(indices)),
        "items": [{"index": int(i), "label": ds.classes[int(labels[i])], "file": os.path.basename(sources[i])}
                  for i in chosen],
    }


def dataset_image_png(store: Store, name: str, split: str, index: int) -> bytes:
    import io

    from shoal import datasets

    image = datasets.load(name, store=store).image(split, index)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def dataset_mean_path(store: Store, name: str) -> Path:
    from shoal import datasets

    path = datasets.load(name, store=store).mean_image_path
    if not path.exists():
        raise NotFoundError(f"dataset {name!r} has no mean image file; rebuild it")
    return path


# -- models ---------------------------------------------------------------------------------------
def model_view(store: Store, runner: Runner, name: str) -> dict[str, Any]:
    """A model: status, configuration, metric history, the fit of a fitted head, snapshots, bundle, its job, what can be done."""
    found = models.status(name, store=store)
    folder = models.ModelFolder(found.entry.path) if found.entry is not None else None
    if folder is not None:
        info = models.describe(name, store=store)
    else:  # a training whose job has not created the model yet
        config = found.job.params.get("config", {}) if found.job is not None else {}
        info = {"name": name, "kind": "model", "config": config, "card": {}, "history": [], "fit": None,
                "snapshots": [], "bundle": None, "summary": {}}
    info["status"], info["error"] = found.status, found.error
    info["job"] = job_view(runner, found.job) if found.job is not None else None
    info["can_abort"] = found.busy
    info["can_resume"] = found.status in RESUMABLE and found.active_job is None and (
        (folder is not None and folder.has_state()) or (folder is None and found.job is not None
                                                         and models.never_started(found.job)))
    info["epochs"] = info["config"].get("epochs")
    return info


def list_models(store: Store, runner: Runner) -> list[dict[str, Any]]:
    """Models in the store (trained from the CLI or the app), then trainings still waiting to start."""
    out = []
    for found in models.statuses(store=store):
        job, entry = found.active_job, found.entry
        if entry is not None:
            s = entry.summary
            out.append({"name": found.name, "status": found.status, "created": entry.created,
                        "updated": entry.updated, "dataset": s.get("dataset"), "network": s.get("network"),
                        "pretrained": s.get("pretrained"), "val_accuracy": s.get("val_accuracy"),
                        "best_epoch": s.get("best_epoch"), "progress": job.progress if job is not None else {}})
        elif found.job is not None:  # waiting to start, or aborted before it started
            job = found.job
            config = job.params.get("config", {})
            out.append({"name": found.name, "status": found.status, "created": job.created, "updated": job.created,
                        "dataset": config.get("dataset"), "network": config.get("network"),
                        "pretrained": config.get("pretrained") not in (False, None), "val_accuracy": None,
                        "best_epoch": None, "progress": job.progress,
                        "queue_position": runner.position(job) if job.status == "queued" else None})
    return out


def submit_models(store: Store, runner: Runner, settings: Settings, catalog: NetworkCatalog, *, dataset: str,
                  name: str | None, network: str, network_file: str | None, pretrained: bool, weights: str | None,
                  previous: str | None, previous_epoch: str, options: dict[str, Any]) -> list[Job]:
    """Queue one training, or one per combination of the listed learning rates and batch sizes (a sweep).

    Every configuration is checked before anything is queued, so a bad value queues nothing.
    """
    from shoal.training.sweep import sweep

    if not store.exists("dataset", dataset):
        store.get("dataset", dataset)  # NotFoundError naming the datasets there are
    options = {k: v for k, v in options.items() if v is not None}
    if "step_values" in options:
        options["step_values"] = tuple(options["step_values"])
    sources = [bool(pretrained), bool(weights), bool(previous)]
    if sum(sources) > 1:
        raise ConfigError("choose one starting point: the network's pretrained weights, uploaded weights, "
                          "or a previous model (not several)")
    if network_file:
        require_code_allowed(settings, f"training with the network file {network_file!r}")
        network = str(assets.network_file(store, network_file))
    elif is_network_file(network):
        raise ConfigError("a network file must be uploaded first (POST /api/networks/files) and named with "
                          "network_file; server-side .py paths are not accepted")
    start: bool | str = bool(pretrained)
    if weights:
        info = assets.pretrained_info(store, weights)
        start = info["path"]
        if network == "auto":
            network = info["architecture"]
    if previous:
        prev = models.ModelFolder.of(previous, store=store)
        if network == "auto":
            network = prev.read_config().get("network", "auto")
        start = str(_previous_weights(prev, previous, previous_epoch))
    if is_network_file(network):  # a previous model's or uploaded weights' own network file
        require_code_allowed(settings, f"training the network {network!r}")
    configs = sweep(dataset=dataset, network=network, pretrained=start, name=name, **options)
    names = [c.name for c in configs]
    for model_name in names:
        if store.exists("model", model_name) or _active_job(store, model_name, models.TRAIN_KINDS):
            raise AlreadyExistsError(f"a model named {model_name!r} already exists or is queued: choose another "
                                     "name, or delete it first")
    return [runner.submit("train", c.name or "", lane=device_lane(c.device), params={"config": to_dict(c)})
            for c in configs]


def _previous_weights(folder: models.ModelFolder, name: str, epoch: str) -> Path:
    if epoch in ("best", ""):
        path = folder.best_path
    else:
        snapshots = folder.snapshots()
        number = whole_number(epoch)  # ASCII digits only: "²" is a digit to str.isdigit, not to int()
        if number is None or number not in snapshots:
            kept = ", ".join(str(e) for e in snapshots) or "none"
            raise ConfigError(f"model {name!r} has no snapshot of epoch {epoch!r} (kept: {kept}; or 'best')")
        path = snapshots[number]
    if not path.exists():
        raise TrainingError(f"model {name!r} has no trained weights yet; wait for its first validation")
    return path


def resume_model(store: Store, runner: Runner, settings: Settings, name: str, *, epochs: int | None) -> Job:
    """Queue the continuation of an interrupted, aborted or failed model from its last saved epoch
    (a training aborted while it waited starts as it was asked for)."""
    found = models.status(name, store=store)
    if found.entry is None and found.job is not None and models.never_started(found.job):
        network = found.job.params.get("config", {}).get("network")
        if is_network_file(network):
            require_code_allowed(settings, f"starting model {name!r} (its network is {network!r})")
        return runner.submit("train", name, lane=found.job.lane, params=found.job.params)
    folder = models.ModelFolder.of(name, store=store)
    _require_code_for(store, settings, name, "resuming model")
    found = models.status(name, store=store)
    if found.active_job is not None or found.busy:
        raise TrainingError(f"model {name!r} is already training or queued")
    if found.status not in RESUMABLE and not (found.status == "done" and epochs):
        raise TrainingError(f"model {name!r} is {found.status}; only interrupted, aborted or failed models can be "
                            "resumed (or a finished one with more epochs)")
    if not folder.has_state():
        raise TrainingError(f"model {name!r} has no saved epoch to resume from; train it anew")
    if epochs is not None:
        from shoal.config import check_int

        check_int("epochs", epochs, minimum=1, maximum=100_000)
    job = runner.submit("resume", name, lane=device_lane(folder.read_config().get("device", "auto")),
                        params={"epochs": epochs})
    folder.abort_path.unlink(missing_ok=True)
    store.update("model", name, status="queued")
    return job


def abort_model(store: Store, runner: Runner, name: str) -> dict[str, Any]:
    found = models.status(name, store=store)
    if found.active_job is not None:
        runner.abort(found.active_job)
    elif found.busy:
        models.abort(name, store=store)  # a training started from the CLI
    else:
        raise TrainingError(f"model {name!r} is {found.status}; only queued or running models can be aborted")
    return model_view(store, runner, name)


def delete_model(store: Store, classifiers: Classifiers, name: str) -> None:
    found = models.status(name, store=store)
    if found.busy or found.active_job is not None:
        raise TrainingError(f"model {name!r} is queued or training; abort it first")
    if found.entry is not None:
        classifiers.forget(found.entry.path)
        models.delete(name, store=store)
    store.forget_jobs(name, models.TRAIN_KINDS)


def model_events(store: Store, name: str, after: int) -> dict[str, Any]:
    """The run's progress events from index ``after`` on (the page polls with the last ``next``)."""
    if not store.exists("model", name):
        return {"events": [], "next": 0}
    events = models.ModelFolder.of(name, store=store).events()
    after = max(0, min(after, len(events)))
    return {"events": events[after:], "next": len(events)}


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
    _require_code_for(store, settings, name, "exporting model")
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


def _require_code_for(store: Store, settings: Settings, name: str, action: str) -> None:
    """Refuse ``action`` on a model whose network is a ``.py`` file, unless the server allows code."""
    folder = models.ModelFolder.of(name, store=store)
    try:
        network = folder.read_config().get("network")
    except (OSError, ValueError, AttributeError):
        return  # no readable config: the action fails on its own with its own message
    if is_network_file(network):
        require_code_allowed(settings, f"{action} {name!r} (its network is {network!r})")


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


# -- classification ------------------------------------------------------------------------------
def classify(classifiers: Classifiers, store: Store, settings: Settings, name: str, *, data: bytes | None,
             filename: str | None, url: str | None, top: int) -> dict[str, Any]:
    """Top classes of one image: the same JSON object ``shoal classify --json`` prints for it."""
    if url and data is not None:
        raise InputError("send one image: either a file in the 'file' field or an address in the 'url' field")
    if not url and data is None:
        raise InputError("send an image: a file in the 'file' field, or an http(s) address in the 'url' field")
    classifier = classifiers.get(bundle_path(store, name))
    source = url or filename or "upload"
    try:
        result = classifier.predict(fetch_image(url, settings) if url else data, top=top)
    except InputError as exc:
        raise InputError(str(exc).replace("<bytes>", source, 1)) from None
    out = result.to_dict()
    out["source"] = source
    return out


def classify_many(classifiers: Classifiers, store: Store, settings: Settings, name: str, *,
                  files: list[tuple[str, bytes]], archive: Path | None, top: int) -> dict[str, Any]:
    """Classify several uploaded images, or a zip of class folders whose names are the ground truth.

    Returns one row per image (top classes; with ground truth, whether the true class is first
    and among the top 5), top-1/top-5 accuracy and accuracy per class when there is ground truth.
    """
    from shoal.inference.sources import list_images

    classifier = classifiers.get(bundle_path(store, name), bulk=True)
    items: list[tuple[str, Any, str | None]] = []  # (shown name, payload, true class)
    workdir = None
    try:
        if archive is not None:
            workdir = Path(tempfile.mkdtemp(prefix="classify-", dir=_uploads(store)))
            root = safe_extract(archive, workdir / "x", settings)
            for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX"))):
                for path in list_images(folder):
                    items.append((path.relative_to(root).as_posix(), path, folder.name))
            for path in sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")):
                items.append((path.name, path, None))
        for filename, data in files:
            items.append((filename, data, None))
        if not items:
            raise InputError("no images to classify: upload image files, or a zip with one folder of images per class")
        results = classifier.predict([payload for _, payload, _ in items], top=max(top, 5))
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    rows, per_class = [], {}
    labels = set(classifier.labels)
    for (shown, _, truth), result in zip(items, results):
        found = result.to_dict()
        ranked = [p["label"] for p in found["predictions"]]
        row: dict[str, Any] = {"source": shown, "truth": truth, "error": result.error,
                               "predictions": found["predictions"][:top]}
        for key in ("unfamiliar", "unfamiliar_score", "unfamiliar_reason"):  # as 'shoal classify --json' has them
            if key in found:
                row[key] = found[key]
        if truth is not None and result.error is None:
            row["top1"] = bool(ranked and ranked[0] == truth)
            row["top5"] = truth in ranked[:5]
            stats = per_class.setdefault(truth, {"images": 0, "top1": 0, "top5": 0, "known": truth in labels})
            stats["images"] += 1
            stats["top1"] += row["top1"]
            stats["top5"] += row["top5"]
        rows.append(row)
    judged = [r for r in rows if "top1" in r]
    summary: dict[str, Any] = {"images": len(rows), "errors": sum(1 for r in rows if r["error"]),
                               "with_truth": len(judged), "unfamiliar": None}
    if classifier.unfamiliar_threshold is None:
        summary["unfamiliar_reason"] = classifier.unfamiliar_reason
    else:
        summary["unfamiliar"] = sum(1 for r in rows if r.get("unfamiliar"))
    if judged:
        summary["top1_accuracy"] = sum(r["top1"] for r in judged) / len(judged)
        summary["top5_accuracy"] = sum(r["top5"] for r in judged) / len(judged)
    classes = [{"label": c, "images": s["images"], "top1_accuracy": s["top1"] / s["images"],
                "top5_accuracy": s["top5"] / s["images"], "known": s["known"]} for c, s in sorted(per_class.items())]
    return {"model": name, "summary": summary, "per_class": classes, "results": rows}


def heatmap_png(classifiers: Classifiers, store: Store, settings: Settings, name: str, *, data: bytes | None,
                filename: str | None, url: str | None, target: str | None) -> tuple[bytes, str, float]:
    """Grad-CAM overlay of one image (PNG bytes), the class it explains and its probability."""
    import io

    if bool(url) == (data is not None):
        raise InputError("send one image: either a file in the 'file' field or an address in the 'url' field")
    classifier = classifiers.get(bundle_path(store, name))
    if is_network_file(classifier.manifest.get("architecture")):
        require_code_allowed(settings, f"a heat-map of model {name!r} (its network is "
                                       f"{classifier.manifest['architecture']!r})")
    source = url or filename or "upload"
    with classifiers.torch_lock:  # Grad-CAM hooks the shared torch model: one image at a time
        try:
            heat = classifier.heatmap(fetch_image(url, settings) if url else data, target)
        except InputError as exc:
            raise InputError(str(exc).replace("<bytes>", source, 1)) from None
    buffer = io.BytesIO()
    image = heat.image
    if max(image.size) < 224:  # small inputs (LeNet's 28 px) are enlarged to be seen
        factor = -(-224 // max(image.size))
        image = image.resize((image.width * factor, image.height * factor), resample=0)
    image.save(buffer, format="PNG")
    return buffer.getvalue(), heat.label, heat.probability


def evaluation(classifiers: Classifiers, store: Store, name: str, *, split: str, wrong: int,
               per_class: int) -> dict[str, Any]:
    """Scores of a model on a split of the dataset it was trained on (:func:`shoal.evaluate.evaluate`), with thumbnails."""
    from shoal.evaluate import evaluate, thumbnail_uri

    result = evaluate(classifiers.get(bundle_path(store, name), bulk=True), split=split, wrong=wrong,
                      top_per_class=per_class, store=store)

    def item(j: Any) -> dict[str, Any]:
        out = {"source": os.path.basename(j.source), "truth": j.true, "predicted": j.predicted,
               "probability": j.probability, "true_probability": j.true_probability,
               "unfamiliar": j.unfamiliar, "unfamiliar_score": j.unfamiliar_score}
        if result.pixels is not None:
            out["image"] = thumbnail_uri(result.pixels(j.index))
        return out

    return {
        "model": name, "dataset": result.dataset, "split": split, "on": result.on, "images": result.count,
        "accuracy": result.accuracy, "top5_accuracy": result.top5, "log_loss": result.log_loss,
        "calibration": result.calibration.to_dict(), "labels": result.labels,
        "confusion_matrix": result.confusion, "per_class": result.per_class,
        "confidently_wrong": [item(j) for j in result.wrong],
        "most_confident": {label: [item(j) for j in items] for label, items in result.top_per_class.items()},
        "unfamiliar_count": result.unfamiliar_count, "unfamiliar_rate": result.unfamiliar_rate,
        "unfamiliar": [item(j) for j in result.unfamiliar], "unfamiliar_reason": result.unfamiliar_reason,
        "skipped": result.skipped,
    }


def _uploads(store: Store) -> Path:
    return store.assets("upload")


# -- uploaded networks and pretrained weights (kept by shoal.assets) --------------------------------
def save_network_file(store: Store, filename: str, data: bytes) -> dict[str, Any]:
    """Keep an uploaded network definition under a safe name (checked, not run: a training imports it)."""
    from shoal.server.security import safe_filename

    return assets.save_network_file(store, safe_filename(filename, "network.py"), data)


def save_pretrained(store: Store, settings: Settings, *, name: str, architecture: str,
                    upload: Path, filename: str, labels: str | None) -> dict[str, Any]:
    """Keep uploaded weights for an architecture; a network file's weights only on a server that allows code."""
    if is_network_file(architecture):  # checking it would import the file
        require_code_allowed(settings, f"weights for the network file {architecture!r}")
    return assets.save_pretrained(store, name=name, architecture=architecture, upload=upload, filename=filename,
                                  labels=[line.strip() for line in (labels or "").splitlines() if line.strip()])


# -- folders --------------------------------------------------------------------------------------
def clone_source(store: Store, source: str) -> dict[str, Any]:
    """Where a cloned dataset's images come from: its folder, or ``uploaded`` when it was built from
    an uploaded zip (extracted into a temporary folder that is gone once the build ends)."""
    if source and Path(source).is_relative_to(store.home / "uploads"):
        return {"folder": "", "uploaded": True}
    return {"folder": source}


def list_folders(settings: Settings, path: str | None) -> dict[str, Any]:
    """The sub-folders of a folder inside the allowed roots (to pick a dataset folder on the server).

    A path on the way to a root (``/`` or ``/home`` for the root ``/home/me/photos``) answers the
    roots below it, so suggestions work while the first letters are typed.
    """
    roots = [str(r) for r in settings.roots]
    if not path:
        return {"path": None, "parent": None, "roots": roots, "folders": roots}
    typed = Path(path.strip()).expanduser() if "\x00" not in path else Path("\x00")
    typed = Path(os.path.normpath(typed if typed.is_absolute() or not settings.roots else settings.roots[0] / typed))
    if typed.is_absolute() and not any(typed.is_relative_to(r) for r in settings.roots):
        below = [r for r in roots if Path(r).is_relative_to(typed)]
        if below:
            return {"path": str(typed), "parent": None, "roots": roots, "folders": below}
    folder = confine(path, settings.roots)
    if not folder.is_dir():
        raise InputError(f"{path!r} is not a folder")
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))[:500]
    except OSError as exc:
        raise InputError(f"folder {path!r} cannot be read: {exc.strerror}") from None
    parent = folder.parent if any(folder != r and folder.is_relative_to(r) for r in settings.roots) else None
    return {"path": str(folder), "parent": str(parent) if parent else None, "roots": roots,
            "folders": [str(c) for c in children]}
