"""The web app: ``shoal serve``. A thin front over the library, like the CLI.

Build it with :func:`create_app` (FastAPI); :mod:`shoal.server.routes` holds one router per
area, :mod:`shoal.server.services` the actions they call, :mod:`shoal.server.jobs` the
worker processes that build datasets and train models outside the request path.
"""

from shoal.server.app import create_app
from shoal.server.config import Settings, get_settings

__all__ = ["Settings", "create_app", "get_settings"]
