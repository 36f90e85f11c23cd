"""Fixtures of the web app's tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture()
def roots(tmp_path: Path) -> Path:
    """The one folder the server may read datasets from (``Settings.roots``)."""
    root = tmp_path / "allowed"
    root.mkdir()
    return root
