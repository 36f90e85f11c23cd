"""Trained models in the store: their folders, list, describe, delete, abort. Torch-free.

:class:`ModelFolder` is the one owner of a model's folder: every file name in it is
spelled here, and everyone else asks it for paths, the configuration, the model card,
the metric history and the kept snapshots.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from shoal.bundle import MANIFEST
from shoal.bundle.card import ModelCard
from shoal.errors import StoreError, TrainingError
from shoal.store import Entry, Job, Store

TRAIN_KINDS = ("train", "resume")
"""The kinds of job (in the store's job queue) that train a model."""

ACTIVE = ("queued", "running")
"""Statuses of a model whose training is waiting or under way."""


class _Inside:
    """A file or folder of a model's folder, read as an attribute of :class:`ModelFolder`: ``folder.path / name``."""

    def __init__(self, name: str, doc: str) -> None:
        self.name = name
        self.__doc__ = f"``{name}``: {doc}."

    @overload
    def __get__(self, folder: None, owner: type) -> _Inside: ...

    @overload
    def __get__(self, folder: ModelFolder, owner: type) -> Path: ...

    def __get__(self, folder: ModelFolder | None, owner: type) -> Path | _Inside:
        return self if folder is None else folder.path / self.name


@dataclass(frozen=True)
class ModelFolder:
    """A model's folder (``$SHOAL_HOME/models/<name>/``) and the files a run keeps in it.

    Args:
        path: the folder.

    Example:
        >>> folder = ModelFolder(Path("/tmp/m"))
        >>> folder.snapshot(3).name
        'epoch-0003.safetensors'
    """

    path: Path

    CONFIG = "config.json"
    CARD = "model.json"
    METRICS = "metrics.jsonl"
    LOG = "train.log"
    STATE = "state.pt"
    BEST = "best.safetensors"
    SNAPSHOTS = "snapshots"
    BUNDLE = "bundle"
    DOWNLOADS = "downloads"
    ABORT = "ABORT"

    @classmethod
    def of(cls, name: str, *, store: Store | None = None) -> ModelFolder:
        """The folder of the model ``name`` in the store.

        Raises:
            NotFoundError: no such model.
        """
        return cls((store or Store()).get("model", name).path)

    # -- paths ------------------------------------------------------------------------------------
    config_path = _Inside(CONFIG, "the resolved training configuration")
    card_path = _Inside(CARD, "the model card")
    metrics_path = _Inside(METRICS, "the run's progress events, one JSON object a line")
    state_path = _Inside(STATE, "the resume point, rewritten after every epoch")
    best_path = _Inside(BEST, "the weights of the best validated epoch")
    bundle_path = _Inside(BUNDLE, "the bundle of the best epoch, written when training ends")
    downloads_path = _Inside(DOWNLOADS, "the web app's ``.shoal`` files of this model, kept between requests")
    log_path = _Inside(LOG, "the run's log, a line per event and any error's traceback (the CLI's runs and the web's)")
    abort_path = _Inside(ABORT, "present while an abort is asked for")

    def snapshot(self, epoch: int) -> Path:
        """Where the weight snapshot of ``epoch`` is kept."""
        return self.path / self.SNAPSHOTS / f"epoch-{epoch:04d}.safetensors"

    # -- reading ----------------------------------------------------------------------------------
    def snapshots(self) -> dict[int, Path]:
        """Return ``{epoch: path}`` of the weight snapshots kept, in epoch order."""
        found = (self.path / self.SNAPSHOTS).glob("epoch-*.safetensors")
        return dict(sorted((int(p.stem.split("-")[1]), p) for p in found))

    def has_state(self) -> bool:
        """Whether a finished epoch can be resumed from."""
        return self.state_path.exists()

    def has_bundle(self) -> bool:
        """Whether the bundle of the best epoch has been written."""
        return (self.bundle_path / MANIFEST).exists()

    def read_config(self) -> dict[str, Any]:
        """Return ``config.json`` as a dict (empty before it is written).

        Raises:
            StoreError: the file is not a JSON object (naming it and the repair).
        """
        return self._read_json(self.config_path) if self.config_path.exists() else {}

    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``config.json``."""
        _write_json(self.config_path, config)

    def read_card(self) -> ModelCard | None:
        """Return the model card (``None`` before training has built the network).

        Raises:
            BundleError: ``model.json`` is damaged.
        """
        if not self.card_path.exists():
            return None
        return ModelCard.from_dict(self._read_json(self.card_path), str(self.card_path))

    def _read_json(self, path: Path) -> dict[str, Any]:
        """A JSON object the run wrote, or :class:`StoreError` saying the file is damaged and what to do."""
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(value, dict):
                raise ValueError(f"it holds {type(value).__name__}, not a JSON object")
        except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            name = self.path.name
            raise StoreError(f"model {name!r} is damaged ({path} cannot be read: {exc}); delete it with "
                             f"'shoal model delete {name}' and train it again") from None
        return value

    def write_card(self, card: ModelCard) -> None:
        """Write ``model.json``."""
        _write_json(self.card_path, card.to_dict())

    def events(self) -> list[dict[str, Any]]:
        """Return the progress events the run wrote to ``metrics.jsonl`` (empty before it starts)."""
        if not self.metrics_path.exists():
            return []
        found = []
        for line in self.metrics_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:  # a line cut short by a kill, or damaged
                continue
            if isinstance(event, dict) and isinstance(event.get("type"), str):
                found.append(event)
        return found

    def history(self) -> list[dict[str, Any]]:
        """Return one record per validated epoch, in epoch order (the latest record wins after a resume)."""
        by_epoch = {e["epoch"]: e for e in self.events() if e["type"] == "epoch" and "val_accuracy" in e
                    and isinstance(e.get("epoch"), int) and not isinstance(e["epoch"], bool)}
        return [{k: v for k, v in by_epoch[n].items() if k not in ("type", "time")} for n in sorted(by_epoch)]

    def fit(self) -> dict[str, Any] | None:
        """Return what fitting the head did: ``method``, ``strength`` (the chosen C), ``folds`` and the
        cross-validation ``curve`` ([{``C``, ``log_loss``, ``accuracy``}]); ``None`` for a head the loop trains,
        or before the fit."""
        fits = [e for e in self.events() if e.get("type") == "fit"]
        return {k: v for k, v in fits[-1].items() if k not in ("type", "time")} if fits else None

    def abort_requested(self) -> bool:
        """Whether someone asked the run to stop."""
        return self.abort_path.exists()


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Write a JSON file whole or not at all: a page or command reading it meanwhile never sees it half-written."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def list(*, store: Store | None = None) -> list[Entry]:  # noqa: A001 - the public name mirrors datasets.list
    """Return the models in the store, oldest first."""
    return (store or Store()).list("model")


def delete(name: str, *, store: Store | None = None) -> None:
    """Delete a model and all its files, unless a training of it waits or runs (here or in the web app).

    Raises:
        NotFoundError: no such model.
        TrainingError: it is queued or training; abort it first.
    """
    store = store or Store()
    found = status(name, store=store)
    if found.busy or found.active_job is not None:
        raise TrainingError(f"model {name!r} is {found.status}: a training of it waits or runs (in the web app or "
                            "another shell); abort it first (the web app's Abort button, or Ctrl-C where it runs), "
                            "then delete it")
    if found.job is not None and found.job.status in ACTIVE:  # a CLI training killed outright: no server reaps it
        store.update_job(found.job.id, status="interrupted", finished=time.time(), only_if=ACTIVE,
                         error=f"the shoal command (pid {found.job.pid}) ended without finishing")
    store.delete("model", name)


def training_on(dataset: str, *, store: Store | None = None) -> list[str]:
    """The models whose training waits or runs on ``dataset`` (a dataset in use must not be deleted).

    Args:
        dataset: the dataset's name.
        store: the store; default ``SHOAL_HOME``.

    Returns:
        Their names, oldest first.
    """
    names = []
    for found in statuses(store=store or Store()):
        if not (found.busy or found.active_job is not None):
            continue
        used = found.entry.summary.get("dataset") if found.entry is not None else None
        if used is None and found.job is not None:
            used = (found.job.params.get("config") or {}).get("dataset")
        if used is None and found.entry is not None:
            used = _configured_dataset(found.entry.path)
        if used == dataset:
            names.append(found.name)
    return names


def _configured_dataset(path: Path) -> str | None:
    try:
        value = ModelFolder(path).read_config().get("dataset")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def abort(name: str, *, store: Store | None = None) -> None:
    """Ask a running training to stop: it finishes its current step, then marks itself aborted.

    Works across processes (the run checks for an ``ABORT`` file in its folder every step).
    A model that is queued and not yet running is marked aborted at once.

    Raises:
        NotFoundError: no such model.
    """
    store = store or Store()
    entry = store.get("model", name)
    ModelFolder(entry.path).abort_path.touch()
    if entry.status == "queued":
        store.update("model", name, status="aborted")


def pid_alive(pid: object) -> bool:
    """Whether a process with this id exists on this machine (``None`` or junk: no)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def job_active(job: Job | None) -> bool:
    """Whether a training job waits or runs: the one liveness rule for a model's job.

    A job is active while its row says ``queued`` or ``running``, except a command-line training
    whose process is gone: killed outright, it leaves its row ``running`` and no web server reaps it.
    (A web job's row is settled by the job runner, and its worker may not have a pid yet.)
    """
    if job is None or job.status not in ACTIVE:
        return False
    return not (job.params.get("cli") and not pid_alive(job.pid))


@dataclass(frozen=True)
class Status:
    """A model's status: its store entry, its latest training job and its process, merged.

    Attributes:
        name: the model.
        status: ``queued``, ``running``, ``done``, ``failed``, ``aborted`` or ``interrupted``.
        entry: the store entry (``None`` while its first training job waits to start).
        job: the latest training job of the web app's queue for it, if any.
        error: why it failed or was interrupted, when known.
    """

    name: str
    status: str
    entry: Entry | None
    job: Job | None
    error: str | None

    @property
    def active_job(self) -> Job | None:
        """The training job that waits or runs for this model, if any (:func:`job_active`)."""
        return self.job if job_active(self.job) else None

    @property
    def busy(self) -> bool:
        """Whether a training of this model waits or runs (abort it before deleting or resuming)."""
        return self.status in ACTIVE


def status(name: str, *, store: Store | None = None) -> Status:
    """Return a model's status, from its entry, its latest training job and its process.

    An entry left ``running`` or ``queued`` by a process that is gone, with no job waiting or
    running for it, is ``interrupted`` (the run resumes from its last saved epoch); a model
    whose training job waits shows ``queued``; a model known only by its job shows the job's.

    Args:
        name: the model.
        store: the store; default ``SHOAL_HOME``.

    Returns:
        The merged :class:`Status`.

    Raises:
        NotFoundError: no model and no training job of that name.
    """
    store = store or Store()
    entry = store.get("model", name) if store.exists("model", name) else None
    jobs = store.list_jobs(kind=TRAIN_KINDS, target=name)
    if entry is None and not jobs:
        store.get("model", name)  # raises NotFoundError listing the models there are
    return _merge(name, entry, jobs[-1] if jobs else None)


def statuses(*, store: Store | None = None) -> list[Status]:
    """Return the status of every model in the store (oldest first), then of trainings waiting to start.

    Args:
        store: the store; default ``SHOAL_HOME``.

    Returns:
        One :class:`Status` per model, merged as :func:`status` does.
    """
    store = store or Store()
    latest = {job.target: job for job in store.list_jobs(kind=TRAIN_KINDS)}  # oldest first: the last one wins
    found = [_merge(entry.name, entry, latest.get(entry.name)) for entry in store.list("model")]
    stored = {s.name for s in found}
    return found + [_merge(target, None, job) for target, job in latest.items()
                    if target not in stored and (job_active(job) or never_started(job))]


def never_started(job: Job) -> bool:
    """Whether a training job was aborted while it waited: its model has no folder, only the job's config."""
    return job.status == "aborted" and job.started is None and job.kind == "train"


def settle(name: str, *, store: Store | None = None) -> Status:
    """Return :func:`status`, and record ``interrupted`` in the store entry when the run's process is gone.

    The job runner calls this when a worker ends or the server restarts, so that every reader
    (the CLI too) sees the same status.

    Args:
        name: the model.
        store: the store; default ``SHOAL_HOME``.

    Returns:
        The merged :class:`Status`.

    Raises:
        NotFoundError: no model and no training job of that name.
    """
    store = store or Store()
    found = status(name, store=store)
    if found.entry is not None and found.status == "interrupted" and found.entry.status != "interrupted":
        store.update("model", name, status="interrupted")
    return found


def _merge(name: str, entry: Entry | None, job: Job | None) -> Status:
    """The one place where an entry, its latest job and the liveness of its process make a status."""
    active = job_active(job)
    if entry is None:
        if job is None:
            raise ValueError(f"model {name!r} has neither an entry nor a job")
        if job.status in ACTIVE and not active:  # a CLI training killed before it made its entry
            return Status(name, "interrupted", None, job, job.error)
        return Status(name, job.status, None, job, job.error)
    state = entry.status
    if active and job is not None and job.status == "queued":
        state = "queued"
    elif state in ACTIVE and not active and not pid_alive(entry.summary.get("pid")):
        state = "interrupted"  # the process that ran it is gone (killed, or the machine restarted)
    error = entry.summary.get("error") if state == "failed" else None
    if job is not None and job.status in ("failed", "interrupted") and state == job.status:
        error = error or job.error
    return Status(name, state, entry, job, error)


def describe(name: str, *, store: Store | None = None) -> dict[str, Any]:
    """Return a model's status, configuration, metric history, snapshots and bundle path.

    Args:
        name: the model.
        store: the store; default ``SHOAL_HOME``.

    Returns:
        The entry's fields (``status`` as :func:`status` merges it, and ``error``), ``config``,
        ``card``, ``history``, ``fit`` (:meth:`ModelFolder.fit`), ``snapshots`` and ``bundle``.

    Raises:
        NotFoundError: no such model.
    """
    store = store or Store()
    entry = store.get("model", name)
    merged = status(name, store=store)
    folder = ModelFolder(entry.path)
    card = folder.read_card()
    return {
        **entry.to_dict(),
        "status": merged.status,
        "error": merged.error,
        "config": folder.read_config(),
        "card": card.to_dict() if card is not None else {},
        "history": folder.history(),
        "fit": folder.fit(),
        "snapshots": sorted(folder.snapshots()),
        "bundle": str(folder.bundle_path) if folder.has_bundle() else None,
    }


def trained_on(dataset: str, *, store: Store | None = None) -> list[str]:
    """Return the names of the models trained on ``dataset``, oldest first.

    Such models keep their bundles without it, but can no longer be resumed, exported again
    (the ONNX check reads its images) or evaluated on it by default.

    Args:
        dataset: the dataset's name.
        store: the store; default ``SHOAL_HOME``.
    """
    names = []
    for entry in (store or Store()).list("model"):
        used = entry.summary.get("dataset")
        if used is None:
            try:
                used = ModelFolder(entry.path).read_config().get("dataset")
            except (OSError, ValueError, AttributeError):
                used = None
        if used == dataset:
            names.append(entry.name)
    return names
