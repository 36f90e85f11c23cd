"""The HTML pages. Each renders what it shows from the same services as the API, and its
script (``/static/*.js``) keeps it live by polling the JSON API."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from shoal import __version__, assets
from shoal.server import forms, monitor, services
from shoal.server.deps import CatalogDep, RunnerDep, SettingsDep, StoreDep, TemplatesDep
from shoal.server.security import CSRF_COOKIE, new_csrf_token

router = APIRouter(tags=["pages"], include_in_schema=False)


def render(request: Request, templates: Any, template: str, context: dict[str, Any], *,
           status_code: int = 200) -> HTMLResponse:
    """Render a page with the CSRF token its scripts send back (double-submit cookie)."""
    token = request.cookies.get(CSRF_COOKIE) or new_csrf_token()
    response = templates.TemplateResponse(request, template, {"csrf_token": token, "version": __version__, **context},
                                          status_code=status_code)
    if request.cookies.get(CSRF_COOKIE) != token:
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", path="/")
    return response


@router.get("/", response_class=HTMLResponse, name="home_page")
async def home(request: Request, store: StoreDep, runner: RunnerDep, catalog: CatalogDep,
               templates: TemplatesDep) -> HTMLResponse:
    networks = await run_in_threadpool(catalog.specs)
    return render(request, templates, "home.html", {
        "page": "home", "title": "Home",
        "datasets": services.list_datasets(store, runner), "models": services.list_models(store, runner),
        "networks": networks, "jobs": services.list_jobs(store, runner),
        "pretrained": assets.list_pretrained(store),
    })


@router.get("/datasets/new", response_class=HTMLResponse, name="new_dataset_page")
def new_dataset(request: Request, store: StoreDep, runner: RunnerDep, settings: SettingsDep,
                templates: TemplatesDep, clone: str | None = None) -> HTMLResponse:
    values: dict[str, Any] = {}
    source: dict[str, Any] = {}
    if clone:
        info = services.dataset_view(store, runner, clone)
        values = dict(info.get("config", {}))
        if isinstance(values.get("size"), list):
            values["size"] = "x".join(str(v) for v in values["size"])
        source = services.clone_source(store, info.get("source") or "")
    return render(request, templates, "dataset_new.html", {
        "page": "dataset-new", "title": "New dataset", "fields": forms.data_fields(), "values": values,
        "source": source, "clone": clone, "roots": [str(r) for r in settings.roots],
        "max_zip_mb": settings.max_zip_bytes // (1024 * 1024),
    })


@router.get("/datasets/{name}", response_class=HTMLResponse, name="dataset_page")
def dataset(name: str, request: Request, store: StoreDep, runner: RunnerDep, templates: TemplatesDep) -> HTMLResponse:
    info = services.dataset_view(store, runner, name)
    return render(request, templates, "dataset.html", {"page": "dataset", "title": f"Dataset {name}", "ds": info})


@router.get("/models/new", response_class=HTMLResponse, name="new_model_page")
async def new_model(request: Request, store: StoreDep, runner: RunnerDep, catalog: CatalogDep,
                    settings: SettingsDep, templates: TemplatesDep, clone: str | None = None, dataset: str | None = None) -> HTMLResponse:
    networks = await run_in_threadpool(catalog.specs)
    values: dict[str, Any] = {}
    if clone:
        values = dict(services.model_view(store, runner, clone)["config"])
        values.pop("name", None)
        if isinstance(values.get("step_values"), list):
            values["step_values"] = ", ".join(f"{v:g}" for v in values["step_values"])
    datasets = [d for d in services.list_datasets(store, runner) if d["status"] == "done"]
    previous = [m for m in services.list_models(store, runner) if m["status"] in ("done", "aborted", "interrupted")]
    chosen_dataset = dataset or values.get("dataset")
    return render(request, templates, "model_new.html", {
        "page": "model-new", "title": "New model", "sections": forms.train_sections(), "values": values,
        "clone": clone, "datasets": datasets, "dataset": chosen_dataset,
        "networks": networks, "previous": previous, "pretrained": assets.list_pretrained(store),
        "network_files": assets.list_network_files(store), "allow_code": settings.allow_code,
    })


@router.get("/models/import", response_class=HTMLResponse, name="import_model_page")
def import_model(request: Request, settings: SettingsDep, templates: TemplatesDep) -> HTMLResponse:
    return render(request, templates, "import.html", {"page": "model-import", "title": "Import a model",
                                                      "max_bytes": settings.max_zip_bytes})


@router.get("/models/{name}", response_class=HTMLResponse, name="model_page")
def model(name: str, request: Request, store: StoreDep, runner: RunnerDep, templates: TemplatesDep) -> HTMLResponse:
    info = services.model_view(store, runner, name)
    return render(request, templates, "model.html", {"page": "model", "title": f"Model {name}", "model": info,
                                                     "loop_options": forms.LOOP_OPTIONS,
                                                     "splits": monitor.eval_splits(store, info["config"])})


@router.get("/models/{name}/review", response_class=HTMLResponse, name="review_page")
def review(name: str, request: Request, store: StoreDep, runner: RunnerDep, templates: TemplatesDep) -> HTMLResponse:
    """The page only; its script asks ``GET /api/models/{name}/review`` (it takes a few seconds)."""
    info = services.model_view(store, runner, name)
    return render(request, templates, "review.html", {"page": "review", "title": f"Review {name}", "model": info,
                                                      "dataset": info["config"].get("dataset") or ""})


@router.get("/pretrained", response_class=HTMLResponse, name="pretrained_page")
async def pretrained(request: Request, store: StoreDep, catalog: CatalogDep, settings: SettingsDep,
                     templates: TemplatesDep) -> HTMLResponse:
    networks = await run_in_threadpool(catalog.specs)
    return render(request, templates, "pretrained.html", {
        "page": "pretrained", "title": "Pretrained networks", "networks": networks,
        "pretrained": assets.list_pretrained(store), "network_files": assets.list_network_files(store),
        "allow_code": settings.allow_code,
    })
