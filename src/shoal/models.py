"""Trained models in the store: list, describe, delete. Torch-free (reads the run's JSON files)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from shoal.store import Entry, Store


def list(*, store: Store | None = None) -> list[Entry]:  # noqa: A001 - the public name mirrors datasets.list
    """Return the models in the store, oldest first."""
    return (store or Store()).list("model")


def delete(name: str, *, store: Store | None = None) -> None:
    """Delete a model and all its files.

    Raises:
        NotFoundError: no such model.
    """
    (store or Store()).delete("model", name)


def abort(name: str, *, store: Store | None = None) -> None:
    """Ask a running training to stop: it finishes its current step, then marks itself aborted.

    Works across processes (the run checks for an ``ABORT`` file in its folder every step).
    A model that is queued and not yet running is marked aborted at once.

    Raises:
        NotFoundError: no such model.
    """
    store = store or Store()
    entry = store.get("model", name)
    (entry.path / "ABORT").touch()
    if entry.status == "queued":
        store.update("model", name, status="aborted")


def is_alive(entry: Entry) -> bool:
    """Whether the process recorded as running a model's training is still alive on this machine."""
    return pid_alive(entry.summary.get("pid"))


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


def snapshot_path(folder: Path, epoch: int) -> Path:
    """Return where the weight snapshot of ``epoch`` is kept in a model's folder."""
    return folder / "snapshots" / f"epoch-{epoch:04d}.safetensors"


def list_snapshots(folder: Path) -> dict[int, Path]:
    """Return ``{epoch: path}`` of the weight snapshots kept for a model."""
    return {int(p.stem.split("-")[1]): p for p in sorted((folder / "snapshots").glob("epoch-*.safetensors"))}


def events(folder: Path) -> list[dict[str, Any]]:
    """Return the progress events a run wrote to ``metrics.jsonl`` (empty before it starts)."""
    path = folder / "metrics.jsonl"
    if not path.exists():
        return []
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
    return found


def history(folder: Path) -> list[dict[str, Any]]:
    """Return one record per validated epoch (the latest record wins after a resume)."""
    by_epoch = {e["epoch"]: e for e in events(folder) if e.get("type") == "epoch" and "val_accuracy" in e}
    return [{k: v for k, v in by_epoch[n].items() if k not in ("type", "time")} for n in sorted(by_epoch)]


def describe(name: str, *, store: Store | None = None) -> dict[str, Any]:
    """Return a model's status, configuration, metric history, snapshots and bundle path.

    Raises:
        NotFoundError: no such model.
    """
    entry = (store or Store()).get("model", name)
    folder = entry.path
    config_path = folder / "config.json"
    card_path = folder / "model.json"
    bundle = folder / "bundle"
    return {
        **entry.to_dict(),
        "config": json.loads(config_path.read_text()) if config_path.exists() else {},
        "card": json.loads(card_path.read_text()) if card_path.exists() else {},
        "history": history(folder),
        "snapshots": sorted(list_snapshots(folder)),
        "bundle": str(bundle) if (bundle / "shoal.json").exists() else None,
    }
