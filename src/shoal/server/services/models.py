"""Model actions: queue trainings (one, or a sweep), show, resume, abort, delete, progress events."""

from __future__ import annotations

from typing import Any

from shoal import assets, models
from shoal.config import to_dict
from shoal.errors import AlreadyExistsError, ConfigError, TrainingError
from shoal.server.config import Settings
from shoal.server.jobs import Runner, device_lane
from shoal.server.security import require_code_allowed
from shoal.server.services.caches import Classifiers, NetworkCatalog
from shoal.server.services.jobs import active_job, job_view
from shoal.store import Job, Store
from shoal.training.start import model_start
from shoal.trust import is_network_file

RESUMABLE = ("interrupted", "aborted", "failed")


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


def starting_point(store: Store, *, network: str, pretrained: bool, weights: str | None) -> tuple[str, bool | str]:
    """The network and the weights a form's training starts from: the network's own pretrained weights
    (``True``), an uploaded weights file (its path; its architecture when the network is ``auto``), or none."""
    if not weights:
        return network, bool(pretrained)
    info = assets.pretrained_info(store, weights)
    return (info["architecture"] if network == "auto" else network), info["path"]


def submit_models(store: Store, runner: Runner, settings: Settings, catalog: NetworkCatalog, *, dataset: str,
                  name: str | None, network: str, network_file: str | None, pretrained: bool, weights: str | None,
                  previous: str | None, previous_epoch: str, options: dict[str, Any], processes: int = 1) -> list[Job]:
    """Queue one training, or one per combination of the listed learning rates and batch sizes (a sweep),
    each in ``processes`` data-parallel processes (``shoal train --nproc``: on CUDA it waits for as many GPUs).

    Every configuration is checked before anything is queued, so a bad value queues nothing.
    """
    from shoal.training import distributed
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
    network, start = starting_point(store, network=network, pretrained=pretrained, weights=weights)
    if previous:  # a model trained here or imported (its layers: network): its network, its weights, a new head
        begin = model_start(previous, previous_epoch, store=store)
        network, start = begin.network_for(network) or network, str(begin.weights)
    if is_network_file(network):  # a previous model's or uploaded weights' own network file
        require_code_allowed(settings, f"training the network {network!r}")
    configs = sweep(dataset=dataset, network=network, pretrained=start, name=name, **options)
    for config in configs:
        distributed.check(config, processes)
        if store.exists("model", config.name or "") or active_job(store, config.name or "", models.TRAIN_KINDS):
            raise AlreadyExistsError(f"a model named {config.name!r} already exists or is queued: choose another "
                                     "name, or delete it first")
    return [runner.submit("train", c.name or "", lane=device_lane(c.device, nproc=processes),
                          params={"config": to_dict(c), **_processes(processes)}) for c in configs]


def _processes(count: int) -> dict[str, int]:
    """A training job's ``nproc`` parameter (left out for one process)."""
    return {"nproc": count} if count > 1 else {}


def resume_model(store: Store, runner: Runner, settings: Settings, name: str, *, epochs: int | None,
                 processes: int | None = None) -> Job:
    """Queue the continuation of an interrupted, aborted or failed model from its last saved epoch, in
    ``processes`` data-parallel processes (default: as many as it last used); a training aborted while it
    waited starts as it was asked for. A batch that does not split over the processes is refused here."""
    from shoal.training import check_resume, distributed

    found = models.status(name, store=store)
    if found.entry is None and found.job is not None and models.never_started(found.job):
        network = found.job.params.get("config", {}).get("network")
        if is_network_file(network):
            require_code_allowed(settings, f"starting model {name!r} (its network is {network!r})")
        return runner.submit("train", name, lane=found.job.lane, params=found.job.params)
    folder = models.ModelFolder.of(name, store=store)
    require_code_for(store, settings, name, "resuming model")
    if found.active_job is not None or found.busy:
        raise TrainingError(f"model {name!r} is already training or queued")
    if found.status not in RESUMABLE and not (found.status == "done" and epochs):
        raise TrainingError(f"model {name!r} is {found.status}; only interrupted, aborted or failed models can be "
                            "resumed (or a finished one with more epochs)")
    if epochs is not None:
        from shoal.config import check_int

        check_int("epochs", epochs, minimum=1, maximum=100_000)
    config = check_resume(name, epochs=epochs, store=store)
    if processes is None:
        processes = int(found.entry.summary.get("world_size", 1)) if found.entry is not None else 1
    distributed.check(config, processes)
    job = runner.submit("resume", name, lane=device_lane(config.device, nproc=processes),
                        params={"epochs": epochs, **_processes(processes)})
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


def require_code_for(store: Store, settings: Settings, name: str, action: str) -> None:
    """Refuse ``action`` on a model whose network is a ``.py`` file, unless the server allows code."""
    folder = models.ModelFolder.of(name, store=store)
    try:
        network = folder.read_config().get("network")
    except (OSError, ValueError, AttributeError):
        return  # no readable config: the action fails on its own with its own message
    if is_network_file(network):
        require_code_allowed(settings, f"{action} {name!r} (its network is {network!r})")
