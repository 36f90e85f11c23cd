"""The improvement loop in the web app: review a model's labels, apply the changes as a dataset
version, retrain with the same options, and find a learning rate.

Each function is one action of the Review page or the new-model page's "Find" button and
calls one library function: :func:`shoal.review.review`, :func:`shoal.data.versions.edit`,
:func:`shoal.training.train` (queued) and :func:`shoal.training.lr_find.lr_find` (queued: it
trains for a short while, so it runs in a worker in the device's lane, never in the request).
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import quote

from shoal import models
from shoal.config import to_dict
from shoal.errors import AlreadyExistsError, ConfigError
from shoal.server.config import Settings
from shoal.server.jobs import Runner, device_lane
from shoal.server.security import require_code_allowed
from shoal.server.services import models as models_service
from shoal.server.services.jobs import active_job
from shoal.store import Job, Store
from shoal.trust import is_network_file

LR_FIND_KIND = "lr_find"


def review_view(store: Store, name: str, *, top: int) -> dict[str, Any]:
    """The suspects of a model's dataset (``shoal review``), each with its thumbnail's URL, and the
    classes a suspect can be relabelled as."""
    from shoal import datasets
    from shoal.review import review
    from shoal.server.services.downloads import bundle_path

    result = review(str(bundle_path(store, name)), top=top, store=store)
    out = result.to_dict()
    out["model"] = name
    out["classes"] = list(datasets.load(result.dataset, store=store).classes)
    where = f"/api/datasets/{quote(result.dataset, safe='@')}/images"
    for row in out["suspects"]:
        row["thumbnail"] = f"{where}/{row['split']}/{row['index']}.png"
    return out


def apply_review(store: Store, name: str, *, relabel: dict[str, str], exclude: list[str]) -> dict[str, Any]:
    """Store the next version of the model's dataset with the chosen changes (``shoal dataset edit``)."""
    from shoal.data.versions import edit, version_info

    dataset = models.ModelFolder.of(name, store=store).read_config().get("dataset")
    if not isinstance(dataset, str):
        raise ConfigError(f"model {name!r} does not record the dataset it was trained on")
    new = edit(dataset, relabel=relabel, exclude=exclude, store=store)
    info = version_info(new)
    return {"dataset": new.name, "parent": dataset, "relabelled": len(info["relabelled"]),
            "excluded": len(info["excluded"]), "counts": {s: new.count(s) for s in ("train", "val", "test")},
            "dataset_url": f"/datasets/{quote(new.name, safe='@')}"}


def retrain(store: Store, runner: Runner, settings: Settings, name: str, *, dataset: str) -> Job:
    """Queue a training with ``name``'s options (its resolved config) on another dataset, e.g. its new version;
    the new model takes the default name, ``<dataset>-<network>``."""
    from shoal.config import from_dict
    from shoal.training import TrainConfig

    store.get("dataset", dataset)  # NotFoundError naming the datasets there are
    old = from_dict(TrainConfig, models.ModelFolder.of(name, store=store).read_config())
    if is_network_file(old.network):
        require_code_allowed(settings, f"retraining the network {old.network!r}")
    config = dataclasses.replace(old, dataset=dataset, name=None).resolved()
    if store.exists("model", config.name or "") or active_job(store, config.name or "", models.TRAIN_KINDS):
        raise AlreadyExistsError(f"a model named {config.name!r} already exists or is queued: open it, or delete it "
                                 "first to train it again")
    return runner.submit("train", config.name or "", lane=device_lane(config.device), params={"config": to_dict(config)})


def submit_lr_find(store: Store, runner: Runner, *, dataset: str, network: str, pretrained: bool,
                   weights: str | None, options: dict[str, Any]) -> Job:
    """Queue the learning-rate range test for the training the new-model form describes.

    The job's progress counts the steps; when it is done, its ``progress.finding`` holds the curve
    and the suggestion (:meth:`~shoal.training.lr_find.LRFinding.to_dict`).
    """
    from shoal.training import TrainConfig

    store.get("dataset", dataset)
    options = {k: v for k, v in options.items() if v is not None and k != "lr"}
    for key, value in options.items():
        if isinstance(value, list) and key != "step_values":
            raise ConfigError(f"the learning-rate finder tries one configuration: give one {key}, got {value}")
    if "step_values" in options:
        options["step_values"] = tuple(options["step_values"])
    network, start = models_service.starting_point(store, network=network, pretrained=pretrained, weights=weights)
    config = TrainConfig(dataset=dataset, network=network, pretrained=start, **options)
    if config.resolved().head == "fit":
        raise ConfigError("a fitted head has no learning rate to find (its strength is cross-validated); "
                          "choose head sgd, or freeze none, to train with the loop")
    return runner.submit(LR_FIND_KIND, dataset, lane=device_lane(config.device), params={"config": to_dict(config)})
