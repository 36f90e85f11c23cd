"""The web app: ``shoal serve``. A thin front over the library, like the CLI.

Build it with :func:`create_app` (FastAPI); :mod:`shoal.server.routes` holds one router per
area, :mod:`shoal.server.services` the actions they call, :mod:`shoal.server.jobs` the
worker processes that build datasets and train models outside the request path.

The names load on first use, so a worker process (``python -m shoal.server.worker``)
does not import the web stack.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Settings", "create_app", "get_settings"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from shoal.server.app import create_app

        return create_app
    if name in ("Settings", "get_settings"):
        from shoal.server import config

        return getattr(config, name)
    raise AttributeError(f"module 'shoal.server' has no attribute {name!r}")
