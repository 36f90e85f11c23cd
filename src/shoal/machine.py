"""What this machine offers: the CPU cores this process may use and the torch device to run on.

Torch-free to import (the dataset builder and the ONNX path count cores without torch);
:func:`torch_device` imports torch when called.
"""

from __future__ import annotations

import os

from shoal.config import check_choice
from shoal.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def torch_device(name: str) -> str:
    """Return the torch device ``name`` means here: ``auto`` is CUDA, else Apple's Metal, else the CPU.

    Raises:
        ConfigError: an unknown name, or a device this machine does not have (naming the fix).
    """
    import torch

    check_choice("device", name, DEVICES)
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if name == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if name == "cuda" and not cuda:
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is visible to torch; use device cpu or auto",
                          options=("device",))
    if name == "mps" and not mps:
        raise ConfigError("device 'mps' was asked for but Apple's Metal backend is not available; use device cpu or "
                          "auto", options=("device",))
    return name
