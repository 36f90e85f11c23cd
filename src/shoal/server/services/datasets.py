"""Dataset actions: queue a build (folder, list file, uploaded zip, sample), show, page through, delete."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from shoal.config import to_dict
from shoal.errors import AlreadyExistsError, ConfigError, InputError, NotFoundError, TrainingError
from shoal.server.config import Settings
from shoal.server.jobs import DATA_LANE, Runner
from shoal.server.security import confine, safe_extract
from shoal.server.services.assets import upload_dir
from shoal.server.services.jobs import active_job, job_view
from shoal.store import Job, Store, check_name


def _check_new_dataset(store: Store, name: str) -> None:
    check_name(name, "dataset")
    if store.exists("dataset", name) or active_job(store, name, ("dataset",)):
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
    dest = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=upload_dir(store)))
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

    if active_job(store, name, ("dataset",)):
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


def dataset_image(store: Store, settings: Settings, name: str, split: str, index: int) -> dict[str, Any]:
    """One stored image: its class, its source path, and whether the source can be shown at full size.

    The source is shown only when it still exists inside the folders this server may read
    (the allowed roots, or the store's built-in sample); ``original_reason`` says why not.
    """
    from shoal import datasets

    ds = datasets.load(name, store=store)
    image = ds.image(split, index)  # checks the split and the index
    source = ds.sources(split)[index]
    out = {"split": split, "index": index, "label": ds.classes[int(ds.labels(split)[index])], "source": source,
           "stored_size": list(image.size), "original": True, "original_reason": None}
    try:
        _readable_source(store, settings, source)
    except InputError as exc:
        out.update(original=False, original_reason=str(exc))
    return out


def dataset_source_png(store: Store, settings: Settings, name: str, split: str, index: int) -> bytes:
    """The source file of a stored image at full size, decoded safely and sent as PNG.

    Raises:
        InputError: the source is gone, or lies outside the folders this server may read.
        ImageError: it no longer decodes.
    """
    import io

    from shoal import datasets
    from shoal.data.imageops import open_image

    ds = datasets.load(name, store=store)
    ds.image(split, index)  # checks the split and the index
    path = _readable_source(store, settings, ds.sources(split)[index])
    buffer = io.BytesIO()
    open_image(path).save(buffer, format="PNG")
    return buffer.getvalue()


def _readable_source(store: Store, settings: Settings, source: str) -> Path:
    """``source`` resolved, if it is a file inside the allowed roots or the store's built-in sample."""
    from shoal.data.sample import sample_folder

    roots = (*settings.roots, sample_folder(store).resolve())
    path = confine(source, roots, what="source image")
    if not path.is_file():
        raise InputError(f"source image {source!r} is not a file")
    return path


def dataset_mean_path(store: Store, name: str) -> Path:
    from shoal import datasets

    path = datasets.load(name, store=store).mean_image_path
    if not path.exists():
        raise NotFoundError(f"dataset {name!r} has no mean image file; rebuild it")
    return path
