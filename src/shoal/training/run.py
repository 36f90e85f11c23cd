"""``train()`` and ``resume()``: register a run, follow its status, and hand it to its trainer.

Two trainers share this: the loop (:mod:`shoal.training.loop`, torch, epochs of a solver) and
the fitted head (:mod:`shoal.training.fitted`, no torch once the backbone is prepared). This
module imports neither until it knows which one a run needs, so the fitted path starts fast.
Progress goes out as events (dicts) to ``on_event`` and to ``metrics.jsonl``, never as prints.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal import datasets
from shoal.config import from_dict, to_dict
from shoal.errors import NoSpaceError, ShoalError, TrainingError
from shoal.models import ModelFolder
from shoal.store import Store
from shoal.training import distributed
from shoal.training.config import TrainConfig
from shoal.training.start import network_label

EventHandler = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced."""

    name: str
    status: str
    folder: Path
    bundle: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "folder": str(self.folder),
                "bundle": str(self.bundle) if self.bundle else None, "best_epoch": self.best_epoch,
                "history": self.history}


class Aborted(Exception):
    """Raised inside a run when someone asked it to stop (an ``ABORT`` file)."""


class Emitter:
    """Sends each event to the handler, appends it to ``metrics.jsonl`` and writes its line to the log."""

    def __init__(self, path: Path, handler: EventHandler | None, *, append: bool, log: Path | None = None) -> None:
        self.path, self.handler, self.log = path, handler, log
        if not append:
            path.write_text("")
            if log is not None:
                log.write_text("")

    def __call__(self, event: dict[str, Any]) -> None:
        event = {"time": time.time(), **event}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(event, default=str) + "\n")
        self.write_log(log_line(event))
        if self.handler is not None:
            self.handler(event)

    def write_log(self, text: str) -> None:
        if self.log is None:
            return
        with contextlib.suppress(OSError), self.log.open("a", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")


def log_line(event: dict[str, Any]) -> str:
    """One event as a line of the run's log: its time, its type, then its values."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.get("time", time.time())))
    kind = event.get("type", "?")
    if kind == "prepare":
        return f"{stamp}  {event.get('message', '')}"
    parts = []
    for key, value in event.items():
        if key in ("time", "type") or isinstance(value, (list, dict)):
            continue
        if isinstance(value, float):
            value = f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
        parts.append(f"{key}={value}")
    return f"{stamp}  {kind:<10} " + " ".join(parts)


def train(config: TrainConfig, *, store: Store | None = None, on_event: EventHandler | None = None) -> TrainResult:
    """Train a new model as ``config`` says and write its bundle.

    Args:
        config: what to train and how; path-dependent defaults are filled in and recorded.
        store: where datasets and models live; default ``SHOAL_HOME``.
        on_event: called with each progress event (``prepare``, ``start``, ``fit``, ``iteration``,
            ``epoch``, ``done``...).

    Returns:
        The run's :class:`TrainResult` (the bundle, and the metric history).

    Raises:
        NotFoundError: the dataset does not exist.
        AlreadyExistsError: a model of that name exists (delete it, or resume it).
        ConfigError, NetworkError, TrainingError: for options that cannot work.
    """
    store = store or Store()
    config = config.resolved()
    # Check what can be checked before a model is registered, so a typo leaves nothing behind.
    dataset = datasets.load(config.dataset, store=store)
    distributed.check(config, distributed.world().size)
    if config.head == "fit":
        from shoal.training import fitted

        if not distributed.world().main:  # rank 0 prepares the backbone, registers the run, then sends the others it
            return fitted.follow(store)
        fitted.check(config, dataset, store=store, on_event=on_event)
    else:
        from shoal.training import loop

        loop.check(config)
        if not distributed.world().main:  # rank 0 registers the run and sends the others its configuration
            return loop.follow(store)
    entry = store.reserve("model", config.name, status="queued",
                          summary={"dataset": config.dataset, "network": network_label(config.network),
                                   "pretrained": config.finetune})
    folder = ModelFolder(entry.path)
    folder.write_config(to_dict(config))
    return _run(config, folder, store, on_event, resume=False, dataset=dataset)


def resume(name: str, *, store: Store | None = None, on_event: EventHandler | None = None,
           epochs: int | None = None) -> TrainResult:
    """Continue a stopped, interrupted or killed run from its last saved epoch.

    Args:
        name: the model.
        epochs: a new total number of epochs (to train longer than first planned).

    Raises:
        TrainingError: the model has nothing to resume (no finished epoch, or a fitted head), or
            ``epochs`` is fewer than it has already trained.
    """
    store = store or Store()
    if not distributed.world().main:  # rank 0 reads the model's folder and sends what the others need
        from shoal.training.loop import follow

        return follow(store)
    config = check_resume(name, epochs=epochs, store=store)
    folder = ModelFolder.of(name, store=store)
    if epochs is not None:
        folder.write_config(to_dict(config))
    return _run(config, folder, store, on_event, resume=True)


def check_resume(name: str, *, epochs: int | None = None, store: Store | None = None) -> TrainConfig:
    """The configuration model ``name`` resumes with (``epochs`` as its new total), checked before
    anything is written or queued (the CLI, its launcher of processes and the web app all call it).

    Raises:
        NotFoundError: no such model.
        TrainingError: it has nothing to resume (no saved epoch, or a fitted head), or ``epochs`` is
            fewer than it has trained (or as many, when the last was not validated).
    """
    folder = ModelFolder.of(name, store=store)
    config = from_dict(TrainConfig, folder.read_config())
    if config.head == "fit":
        raise TrainingError(f"model {name!r} has a fitted head: it has no epochs to resume; train it anew "
                            f"('shoal model delete {name}', then 'shoal train ...'), or train the head with "
                            "the loop (--head sgd) to get epochs")
    if not folder.has_state():
        raise TrainingError(f"model {name!r} has no saved epoch to resume from; train it anew "
                            f"('shoal model delete {name}', then 'shoal train ...')")
    from shoal.training.snapshots import trained

    done, validated = trained(folder)  # a damaged resume point is refused here too
    total = config.epochs if epochs is None else epochs
    if total < done or (total == done and not validated):
        least = done if validated else done + 1
        unvalidated = "" if validated else f", the last one not validated (it validates every {config.val_every})"
        raise TrainingError(f"model {name!r} has trained {done} epochs{unvalidated}; epochs is the total, "
                            f"not the number to add: give {least} or more")
    if epochs is None:
        return config
    return TrainConfig(**{**to_dict(config), "epochs": epochs, "step_values": config.step_values})


def _run(config: TrainConfig, folder: ModelFolder, store: Store, on_event: EventHandler | None, *,
         resume: bool, dataset: Any = None) -> TrainResult:
    emit = Emitter(folder.metrics_path, on_event, append=resume, log=folder.log_path)
    emit.write_log(f"{'resuming' if resume else 'training'} {config.name} (process {os.getpid()})")
    folder.abort_path.unlink(missing_ok=True)
    store.update("model", config.name, status="running", summary={"pid": os.getpid()})
    try:
        if config.head == "fit":
            from shoal.training.fitted import fit_run

            result = fit_run(config, folder, store, emit, dataset=dataset)
        else:
            from shoal.training.loop import loop_run

            result = loop_run(config, folder, store, emit, resume=resume, dataset=dataset)
    except KeyboardInterrupt:
        store.update("model", config.name, status="interrupted")
        emit({"type": "stopped", "status": "interrupted"})
        raise
    except distributed.RankLost as exc:  # another process of the run died: resumable, like Ctrl-C
        store.update("model", config.name, status="interrupted", summary={"error": str(exc)})
        emit({"type": "stopped", "status": "interrupted", "error": str(exc)})
        raise
    except Aborted:
        store.update("model", config.name, status="aborted")
        emit({"type": "stopped", "status": "aborted"})
        return TrainResult(config.name, "aborted", folder.path, None, folder.history())
    except BaseException as exc:
        if _disk_full(exc):
            raise _interrupted_by_full_disk(config.name, folder, store, emit) from None
        store.update("model", config.name, status="failed", summary={"error": str(exc)})
        emit({"type": "stopped", "status": "failed", "error": str(exc)})
        if not isinstance(exc, ShoalError):  # a bug, not a user's mistake: keep where it happened
            import traceback

            emit.write_log("".join(traceback.format_exception(exc)))
        raise
    store.update("model", config.name, status="done", summary={"bundle": str(result.bundle)})
    return result


def _disk_full(exc: BaseException) -> bool:
    return isinstance(exc, NoSpaceError) or (isinstance(exc, OSError) and exc.errno == errno.ENOSPC)


def _interrupted_by_full_disk(name: str, folder: ModelFolder, store: Store, emit: Emitter) -> NoSpaceError:
    """Mark a run the full disk stopped as interrupted (it resumes from its last saved epoch once there is room).

    The disk is full, so these writes may fail too; then the entry still says ``running`` and
    :func:`shoal.models.status` reads it as interrupted once this process has ended.
    """
    message = (f"no space left on {folder.path}: model {name!r} stopped and is interrupted at its last saved "
               f"epoch; free some space, then resume it with 'shoal train --resume {name}'")
    with contextlib.suppress(ShoalError, OSError):
        store.update("model", name, status="interrupted", summary={"error": message})
    with contextlib.suppress(OSError):
        emit({"type": "stopped", "status": "interrupted", "error": message})
    return NoSpaceError(message)
