"""Uploaded networks and pretrained weights (kept by :mod:`shoal.assets`), and the uploads folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shoal import assets
from shoal.server.config import Settings
from shoal.server.security import require_code_allowed
from shoal.store import Store
from shoal.trust import is_network_file


def upload_dir(store: Store) -> Path:
    return store.assets("upload")


def save_network_file(store: Store, filename: str, data: bytes) -> dict[str, Any]:
    """Keep an uploaded network definition under a safe name (checked, not run: a training imports it)."""
    from shoal.server.security import safe_filename

    return assets.save_network_file(store, safe_filename(filename, "network.py"), data)


def save_pretrained(store: Store, settings: Settings, *, name: str, architecture: str,
                    upload: Path, filename: str, labels: str | None) -> dict[str, Any]:
    """Keep uploaded weights for an architecture; a network file's weights only on a server that allows code."""
    if is_network_file(architecture):  # checking it would import the file
        require_code_allowed(settings, f"weights for the network file {architecture!r}")
    return assets.save_pretrained(store, name=name, architecture=architecture, upload=upload, filename=filename,
                                  labels=[line.strip() for line in (labels or "").splitlines() if line.strip()])
