"""Server-side folders: browsing inside the allowed roots, where a cloned dataset's images are."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from shoal.errors import InputError
from shoal.server.config import Settings
from shoal.server.security import confine
from shoal.store import Store


def clone_source(store: Store, source: str) -> dict[str, Any]:
    """Where a cloned dataset's images come from: its folder, or ``uploaded`` when it was built from
    an uploaded zip (extracted into a temporary folder that is gone once the build ends)."""
    if source and Path(source).is_relative_to(store.home / "uploads"):
        return {"folder": "", "uploaded": True}
    return {"folder": source}


def list_folders(settings: Settings, path: str | None) -> dict[str, Any]:
    """The sub-folders of a folder inside the allowed roots (to pick a dataset folder on the server).

    A path on the way to a root (``/`` or ``/home`` for the root ``/home/me/photos``) answers the
    roots below it, so suggestions work while the first letters are typed.
    """
    roots = [str(r) for r in settings.roots]
    if not path:
        return {"path": None, "parent": None, "roots": roots, "folders": roots}
    typed = Path(path.strip()).expanduser() if "\x00" not in path else Path("\x00")
    typed = Path(os.path.normpath(typed if typed.is_absolute() or not settings.roots else settings.roots[0] / typed))
    if typed.is_absolute() and not any(typed.is_relative_to(r) for r in settings.roots):
        below = [r for r in roots if Path(r).is_relative_to(typed)]
        if below:
            return {"path": str(typed), "parent": None, "roots": roots, "folders": below}
    folder = confine(path, settings.roots)
    if not folder.is_dir():
        raise InputError(f"{path!r} is not a folder")
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))[:500]
    except OSError as exc:
        raise InputError(f"folder {path!r} cannot be read: {exc.strerror}") from None
    parent = folder.parent if any(folder != r and folder.is_relative_to(r) for r in settings.roots) else None
    return {"path": str(folder), "parent": str(parent) if parent else None, "roots": roots,
            "folders": [str(c) for c in children]}
