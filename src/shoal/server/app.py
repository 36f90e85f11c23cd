"""The web app's composition root: :func:`create_app` builds a configured FastAPI app.

It adds the guard middleware (access token, upload size), the error handlers (a clear
message as JSON under ``/api`` or as a page elsewhere, never a stack trace), the static
files (plotly.js comes from the installed ``plotly`` package, so nothing loads from the
internet), the JSON API under ``/api`` and the pages. The job runner starts and stops with
the app (its lifespan).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from swagger_ui_bundle import swagger_ui_path

from shoal import __version__
from shoal.errors import (
    AlreadyExistsError,
    BundleError,
    CodeNotAllowedError,
    NotFoundError,
    NotTrainedError,
    ShoalError,
    TrainingError,
)
from shoal.server.config import Settings, get_settings
from shoal.server.jobs import Runner
from shoal.server.routes import pages
from shoal.server.routes.api import api_router
from shoal.server.security import GuardMiddleware
from shoal.server.services import Classifiers, NetworkCatalog
from shoal.store import Store

logger = logging.getLogger("shoal.server")

HERE = Path(__file__).parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"

STATUS_OF: tuple[tuple[type[ShoalError], int], ...] = (
    (CodeNotAllowedError, 403),
    (NotFoundError, 404),
    (AlreadyExistsError, 409),
    (TrainingError, 409),
    (BundleError, 409),
    (NotTrainedError, 409),
    (ShoalError, 400),
)

DESCRIPTION = """
The JSON API of **shoal**: build datasets, train and fine-tune image classifiers, follow
their training, classify images and download model bundles. The web pages use this same API.

State-changing requests need the header `X-Shoal-CSRF` (any value) unless they carry the
access token as `Authorization: Bearer TOKEN`; a server started with a token refuses every
request without it. Requests must name the server in their `Host` header (loopback, or a name
given with `--allowed-host`), and a page of another site may not change anything. Uploading
network files (`.py`) and training with them need a server started with `--allow-code`.
Errors answer `{"detail": "what is wrong and what to do"}`.
"""


def plotly_js_path() -> Path:
    """plotly.js as bundled inside the installed ``plotly`` Python package (works offline)."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the web app.

    Args:
        settings: what to serve and how; default :func:`get_settings` (the environment).
            Given settings also answer the ``get_settings`` dependency of every route.
    """
    explicit = settings is not None
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runner: Runner = app.state.runner
        if settings.run_jobs:
            runner.start()
            # Read the network list (it imports torch) now rather than on the first page view.
            threading.Thread(target=app.state.catalog.specs, name="shoal-warm-up", daemon=True).start()
        else:
            runner.recover()
        try:
            yield
        finally:
            if settings.run_jobs:
                runner.stop()

    app = FastAPI(title="shoal", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.state.settings = settings
    app.state.runner = Runner(Store(settings.home), poll_s=settings.poll_s)
    app.state.classifiers = Classifiers(trust_code=settings.allow_code)
    app.state.catalog = NetworkCatalog()
    app.state.templates = _templates()
    if explicit:
        app.dependency_overrides[get_settings] = lambda: settings

    app.add_middleware(GuardMiddleware, settings=settings)
    _add_error_handlers(app)

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        return FileResponse(plotly_js_path(), media_type="text/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        # FastAPI's default page loads Swagger UI from a CDN; serve the copy the
        # swagger-ui-bundle package ships, so the API docs work offline too.
        return get_swagger_ui_html(openapi_url="/openapi.json", title="shoal API",
                                   swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger/swagger-ui.css",
                                   swagger_favicon_url="/favicon.ico")

    app.mount("/static/swagger", StaticFiles(directory=swagger_ui_path), name="swagger")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(api_router)
    app.include_router(pages.router)
    return app


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    env = templates.env
    env.filters["pct"] = lambda v: "–" if v is None else f"{100 * float(v):.1f} %"
    env.filters["num"] = lambda v: "–" if v is None else f"{v:,}"
    env.filters["datetime"] = _datetime
    env.filters["show"] = _show
    return templates


def _show(value: Any) -> str:
    """A config value as a page shows it."""
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_show(v) for v in value) or "–"
    return str(value)


def _datetime(ts: Any) -> str:
    """A time stamp (seconds, or ISO 8601 text) as local ``YYYY-MM-DD HH:MM``."""
    import datetime
    import time

    if isinstance(ts, str):
        try:
            ts = datetime.datetime.fromisoformat(ts).timestamp()
        except ValueError:
            return ts
    if not isinstance(ts, (int, float)):
        return "–"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _option_names() -> list[str]:
    from shoal.data.config import DataConfig
    from shoal.server.schemas import DatasetCreate, ModelCreate
    from shoal.training import TrainConfig

    names = {f.name for cls in (DataConfig, TrainConfig) for f in dataclasses.fields(cls)}
    return sorted(names | set(DatasetCreate.model_fields) | set(ModelCreate.model_fields))


# -- errors --------------------------------------------------------------------------------------
def _wants_json(request: Request) -> bool:
    path = request.url.path
    return path.startswith(("/api", "/static", "/openapi")) or "text/html" not in request.headers.get("accept", "")


def _answer(request: Request, status_code: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    if _wants_json(request):
        return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)
    templates: Jinja2Templates = request.app.state.templates
    titles = {400: "That did not work", 401: "Access token needed", 403: "Not allowed", 404: "Not found",
              409: "Not possible right now", 413: "Upload too large", 422: "Check the form"}
    return templates.TemplateResponse(request, "error.html", {
        "page": "error", "title": titles.get(status_code, "Something went wrong"), "status_code": status_code,
        "detail": detail, "version": __version__, "csrf_token": "",
    }, status_code=status_code, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ShoalError)
    async def shoal_error(request: Request, exc: ShoalError) -> Response:
        status_code = next(code for cls, code in STATUS_OF if isinstance(exc, cls))
        return _answer(request, status_code, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"there is nothing at {request.url.path}; start from the home page"
        if exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}; see /docs for the API"
        return _answer(request, exc.status_code, detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "form"))
            message = err.get("msg", "invalid")
            if err.get("type") == "extra_forbidden":
                close = difflib.get_close_matches(str(err["loc"][-1]), _option_names(), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else " (see /docs for the options)"
                message = f"is not an option{hint}"
            problems.append(f"{where or 'request'}: {message}")
        return _answer(request, 422, "; ".join(problems))

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> Response:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return _answer(request, 500, "the server met an unexpected error; the details are in its log")
