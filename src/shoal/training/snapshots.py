"""What a run keeps on disk: the resume point, weight snapshots and the best epoch.

The resume point (``state.pt``: weights, optimizer, RNG states, counters and history) is
rewritten after every epoch, through a temporary file and ``os.replace``, so a run killed
at any moment resumes from its last finished epoch. It is read back with
``weights_only=True``: nothing is unpickled. Weight snapshots are safetensors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from shoal.errors import TrainingError

STATE_FILE = "state.pt"


def save_weights(path: Path, model: torch.nn.Module, *, epoch: int) -> None:
    """Write the model's weights (normalisation buffers included) as safetensors, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"epoch": str(epoch)})
    os.replace(tmp, path)


def load_weights(path: Path, model: torch.nn.Module) -> int:
    """Load safetensors weights into ``model``; return the epoch they were saved at."""
    from safetensors import safe_open

    model.load_state_dict(load_file(str(path)))
    with safe_open(str(path), framework="pt") as f:
        return int((f.metadata() or {}).get("epoch", 0))


def has_state(folder: Path) -> bool:
    return (folder / STATE_FILE).exists()


def save_state(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               generator: torch.Generator, state: dict[str, Any]) -> None:
    """Write the resume point atomically."""
    tmp = folder / (STATE_FILE + ".tmp")
    torch.save({
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "state": state,
    }, tmp)
    os.replace(tmp, folder / STATE_FILE)


def load_state(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               generator: torch.Generator) -> dict[str, Any]:
    """Restore model, optimizer and RNGs from the resume point; return the run counters.

    Raises:
        TrainingError: if the saved weights do not fit the model the config builds.
    """
    saved = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(saved["model"])
    except RuntimeError as exc:
        raise TrainingError(f"the saved state in {folder} does not match the network the config builds "
                            f"(was config.json edited?): {str(exc).splitlines()[0]}") from exc
    optimizer.load_state_dict(saved["optimizer"])
    generator.set_state(saved["generator"])
    torch.set_rng_state(saved["torch_rng"])
    return saved["state"]


def load_history(folder: Path) -> list[dict[str, Any]]:
    """Return the validated epochs recorded in the resume point (empty before the first epoch)."""
    if not has_state(folder):
        return []
    saved = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    return [h for h in saved["state"]["history"] if "val_accuracy" in h]
