"""The resume point of a run: weights, optimizer, RNG states, counters and history.

It (``state.pt``, :attr:`shoal.models.ModelFolder.state_path`) is rewritten after every
epoch, through a temporary file and ``os.replace``, so a run killed at any moment resumes
from its last finished epoch. It is read back with ``weights_only=True``: nothing is unpickled.
A new best epoch's weights are staged beside it and become ``best.safetensors`` only once the
resume point that names that epoch is written; a resumed run first settles the folder
(:func:`settle`), so it continues with the best weights its resume point names. Weight snapshots
are safetensors (:func:`shoal.networks.weights.save_weights`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from shoal.errors import TrainingError
from shoal.models import ModelFolder
from shoal.networks.weights import save_weights, weights_epoch


def save_state(folder: ModelFolder, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               generator: torch.Generator, state: dict[str, Any], scaler: Any = None) -> None:
    """Write the resume point atomically.

    Args:
        folder: the model's folder.
        model: the network being trained.
        optimizer: its optimizer.
        generator: the run's data-order generator.
        state: the run counters (epoch, best epoch, history, elapsed time, epochs without improvement).
        scaler: the fp16 run's ``GradScaler``: its loss scale, learned over the epochs, is kept too.
    """
    tmp = folder.state_path.with_name(folder.state_path.name + ".tmp")
    try:
        torch.save({
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "state": state,
            "scaler": scaler.state_dict() if scaler is not None else {},
        }, tmp)
        os.replace(tmp, folder.state_path)
    except BaseException:  # a full disk, say: the previous resume point stays, no half-written file does
        tmp.unlink(missing_ok=True)
        raise
    _settle_best(folder, state.get("best"))


def stage_best(folder: ModelFolder, model: torch.nn.Module, epoch: int) -> None:
    """Keep ``epoch``'s weights as the next best: :func:`save_state` makes them the best once its
    resume point names that epoch."""
    save_weights(_staged_best(folder), model, epoch=epoch)


def _staged_best(folder: ModelFolder) -> Path:
    return folder.best_path.with_name("best.next.safetensors")


def _settle_best(folder: ModelFolder, best: int | None) -> None:
    """Promote the staged best weights if they are of the epoch the resume point calls best; drop
    them if not (a run killed after staging, before its resume point was written)."""
    staged = _staged_best(folder)
    if not staged.exists():
        return
    if best is not None and weights_epoch(staged) == best:
        os.replace(staged, folder.best_path)
    else:
        staged.unlink()


def read_state(folder: ModelFolder, *, mmap: bool = False) -> dict[str, Any]:
    """The resume point as saved (what rank 0 of a data-parallel run sends to the others).

    Args:
        folder: the model's folder.
        mmap: map the tensors rather than read them (to look at the counters alone).

    Raises:
        TrainingError: the file is cut short, garbage, or not a resume point.
    """
    try:
        try:
            saved = torch.load(folder.state_path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError:  # torch maps only its zip format: read the file whole, or say what is wrong with it
            if not mmap:
                raise
            saved = torch.load(folder.state_path, map_location="cpu", weights_only=True)
        if not isinstance(saved, dict) or not {"model", "optimizer", "generator", "torch_rng", "state"} <= set(saved):
            raise ValueError("it lacks the weights, optimizer or counters a resume point holds")
    except Exception as exc:  # cut short, garbage, or not a resume point
        name = folder.path.name
        raise TrainingError(f"model {name!r} cannot be resumed: its resume point {folder.state_path} is damaged "
                            f"({_first_sentence(exc)}); export an epoch "
                            f"that was kept ('shoal export {name} --epoch N'), or delete it with "
                            f"'shoal model delete {name}' and train it again") from None
    return saved


def trained(folder: ModelFolder) -> tuple[int, bool]:
    """How many epochs the resume point holds, and whether the last of them was validated.

    Raises:
        TrainingError: the resume point is damaged.
    """
    state = read_state(folder, mmap=True)["state"]
    return state["epoch"], bool(state["history"]) and "val_accuracy" in state["history"][-1]


def restore(saved: dict[str, Any], folder: ModelFolder, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            generator: torch.Generator, scaler: Any = None) -> dict[str, Any]:
    """Put a resume point read by :func:`read_state` into the model, optimizer, RNGs (and the fp16
    run's ``GradScaler``, where one was saved); return its counters."""
    try:
        model.load_state_dict(saved["model"])
    except RuntimeError as exc:
        raise TrainingError(f"the saved state in {folder.path} does not match the network the config builds "
                            f"(was config.json edited?): {str(exc).splitlines()[0]}") from exc
    optimizer.load_state_dict(saved["optimizer"])
    generator.set_state(saved["generator"])
    torch.set_rng_state(saved["torch_rng"])
    if scaler is not None and saved.get("scaler"):  # resume points before fp16, and float32 runs, have none
        scaler.load_state_dict(saved["scaler"])
    return saved["state"]


def settle(folder: ModelFolder, state: dict[str, Any]) -> None:
    """Bring the model's folder in line with its resume point before a resumed run (rank 0 alone):
    best weights staged for an epoch it names become the best, others are dropped, and so are
    weight snapshots of epochs after it (a kill fell between writing them and the resume point)."""
    _settle_best(folder, state.get("best"))
    for epoch, path in folder.snapshots().items():
        if epoch > state["epoch"]:
            path.unlink()


def _first_sentence(exc: BaseException) -> str:
    """The start of an error's text (torch's explain at length what does not apply to a damaged file)."""
    text = str(exc).strip()
    return text.split("\n")[0].split(". ")[0].rstrip(".") if text else type(exc).__name__
