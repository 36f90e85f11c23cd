"""What this machine offers: the CPU cores this process may use and the torch device to run on.

Torch-free to import (the dataset builder and the ONNX path count cores without torch);
:func:`torch_device` imports torch when called.
"""

from __future__ import annotations

import difflib
import os

from shoal.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")  # and cuda:N, one GPU of several


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_device(name: str) -> None:
    """Refuse a device name that is none of :data:`DEVICES` nor ``cuda:N`` (torch-free: no GPU is asked about)."""
    if isinstance(name, str) and (name in DEVICES or gpu_index(name) is not None):
        return
    close = difflib.get_close_matches(str(name), DEVICES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"device must be one of auto, cpu, cuda, cuda:N (the GPU numbered N), mps, got {name!r}{hint}",
                      options=("device",))


def gpu_index(name: str) -> int | None:
    """The N of ``cuda:N`` (a whole number), else None."""
    kind, _, index = name.partition(":")
    return int(index) if kind == "cuda" and index.isdigit() else None


def torch_device(name: str) -> str:
    """Return the torch device ``name`` means here: ``auto`` is CUDA, else Apple's Metal, else the CPU;
    ``cuda:N`` is that GPU.

    Raises:
        ConfigError: an unknown name, or a device this machine does not have (naming the fix).
    """
    import torch

    check_device(name)
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    index = gpu_index(name)
    if index is not None:
        count = torch.cuda.device_count() if cuda else 0
        if index >= count:
            raise ConfigError(f"device {name!r} was asked for but torch sees {count} CUDA GPU"
                              f"{'' if count == 1 else 's'}; use " + (f"cuda:0 to cuda:{count - 1}" if count else
                                                                      "device cpu or auto"), options=("device",))
        return name
    if name == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if name == "cuda" and not cuda:
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is visible to torch; use device cpu or auto",
                          options=("device",))
    if name == "mps" and not mps:
        raise ConfigError("device 'mps' was asked for but Apple's Metal backend is not available; use device cpu or "
                          "auto", options=("device",))
    return name
