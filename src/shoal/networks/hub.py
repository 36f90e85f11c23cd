"""Where torch's hub cache keeps a downloaded weights file, worked out without importing torch.

So ``shoal networks`` can say whether AlexNet's or a timm model's weights are already
on disk (``pretrained_offline``) in a few milliseconds, not the seconds ``import torch``
takes. The rule is torch's own (``torch.hub.get_dir``); once torch is imported, torch
itself is asked, so ``torch.hub.set_dir`` is honoured too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["hub_cache_path", "hub_dir"]


def hub_dir() -> Path:
    """torch's hub folder: ``$TORCH_HOME/hub``, else ``$XDG_CACHE_HOME/torch/hub``, else ``~/.cache/torch/hub``."""
    hub = sys.modules.get("torch.hub")
    if hub is not None:
        return Path(hub.get_dir())
    cache = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    return Path(os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(cache, "torch")))) / "hub"


def hub_cache_path(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps the file of ``url``."""
    filename = os.path.basename(url.split("?", 1)[0])
    return hub_dir() / "checkpoints" / filename
