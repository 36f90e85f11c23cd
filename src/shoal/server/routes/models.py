"""``/api/models``: train (one model or a sweep), follow, abort, resume, download and delete models."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile, status
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from shoal.server import services
from shoal.server.routes import accepted
from shoal.server.deps import CatalogDep, ClassifiersDep, RunnerDep, SettingsDep, StoreDep
from shoal.server.security import save_upload
from shoal.server.services.downloads import export_download
from shoal.server.services.imports import import_upload
from shoal.server.schemas import EventsOut, ExportOut, JobAccepted, ModelCreate, ModelOut, ModelResume, ModelsAccepted, ModelSummary

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=list[ModelSummary], summary="List models (trained, training and queued)")
def list_models(store: StoreDep, runner: RunnerDep) -> list[dict[str, Any]]:
    return services.list_models(store, runner)


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=ModelsAccepted,
             summary="Train a model, or one per combination of several lr / batch_size values")
def create_models(body: ModelCreate, request: Request, store: StoreDep, runner: RunnerDep, settings: SettingsDep,
                  catalog: CatalogDep) -> dict[str, Any]:
    """Checks every option, queues the training(s) and answers at once. One training runs per
    device at a time; the others wait in order. Follow each with ``GET /api/models/{name}``."""
    jobs = services.submit_models(
        store, runner, settings, catalog, dataset=body.dataset, name=body.name, network=body.network,
        network_file=body.network_file, pretrained=body.pretrained, weights=body.weights, previous=body.previous,
        previous_epoch=body.previous_epoch, options=body.options.model_dump(), processes=body.processes)
    return {"models": [accepted(request, runner, job, "model_page") for job in jobs]}


@router.post("/import", status_code=status.HTTP_201_CREATED,
             summary="Import a Caffe or DIGITS model from an uploaded archive (zip or tar.gz)")
async def import_model(request: Request, store: StoreDep, settings: SettingsDep,
                       name: Annotated[str, Form(description="the model's name")],
                       file: Annotated[UploadFile, File(description="a DIGITS 'Download Model' archive, or a zip of "
                                                        "the deploy .prototxt, the .caffemodel and their files")],
                       mean: Annotated[str, Form(description="a plain Caffe model's mean: B,G,R or 'none' "
                                                 "(DIGITS archives say it themselves)")] = "",
                       scale: Annotated[float | None, Form(description="the factor after the mean")] = None,
                       ) -> dict[str, Any]:
    """Under the dataset uploads' limits and archive guards; the model is in the store with its bundle when this answers."""
    with tempfile.TemporaryDirectory(dir=services.upload_dir(store)) as tmp:
        archive = Path(tmp) / "upload"
        await save_upload(file, archive, limit=settings.max_zip_bytes, what="archive")
        done = await run_in_threadpool(import_upload, store, settings, name=name, archive=archive,
                                       mean=mean.strip() or None, scale=scale)
    return {**done, "url": str(request.url_for("model_page", name=done["name"]).path)}


@router.get("/{name}", response_model=ModelOut, summary="A model: status, configuration and metric history")
def get_model(name: str, store: StoreDep, runner: RunnerDep) -> dict[str, Any]:
    return services.model_view(store, runner, name)


@router.get("/{name}/events", response_model=EventsOut, summary="Live progress events of the run")
def get_events(name: str, store: StoreDep, runner: RunnerDep,
               after: Annotated[int, Query(ge=0, description="the 'next' of the previous answer")] = 0,
               ) -> dict[str, Any]:
    out = services.model_events(store, name, after)
    out["status"] = services.model_view(store, runner, name)["status"]
    return out


@router.post("/{name}/abort", response_model=ModelOut, summary="Stop a queued or running training")
def abort_model(name: str, store: StoreDep, runner: RunnerDep) -> dict[str, Any]:
    """A queued training never starts; a running one stops after its current step and keeps its saved epochs."""
    return services.abort_model(store, runner, name)


@router.post("/{name}/resume", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted,
             summary="Continue an interrupted, aborted or failed training from its last saved epoch")
def resume_model(name: str, request: Request, store: StoreDep, runner: RunnerDep, settings: SettingsDep,
                 body: ModelResume | None = None) -> dict[str, Any]:
    job = services.resume_model(store, runner, settings, name, epochs=body.epochs if body else None,
                                processes=body.processes if body else None)
    return accepted(request, runner, job, "model_page")


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a model and its files")
def delete_model(name: str, store: StoreDep, classifiers: ClassifiersDep) -> Response:
    services.delete_model(store, classifiers, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{name}/export", status_code=status.HTTP_202_ACCEPTED, response_model=ExportOut,
             responses={200: {"description": "The file is ready: download it at url"}},
             summary="Export the model at an epoch for download (a queued job), unless its file is ready")
def export(name: str, request: Request, response: Response, store: StoreDep, runner: RunnerDep,
           settings: SettingsDep,
           epoch: Annotated[str, Query(description="best, last, or a kept snapshot's epoch")] = "best",
           ) -> dict[str, Any]:
    """The best epoch's written bundle is ready at once; any other epoch is exported by a job (one per model
    and epoch: asking again gives the same job). Follow it at ``/api/jobs/{id}``, then GET ``url``."""
    epoch = epoch.strip().lower()
    job = export_download(store, runner, settings, name, epoch)
    if job is None:
        response.status_code = status.HTTP_200_OK
    url = f"{request.url_for('download', name=name).path}?epoch={epoch}"
    return {"job": services.job_view(runner, job) if job else None, "name": name, "epoch": epoch, "url": url}


@router.get("/{name}/download", response_class=FileResponse,
            responses={200: {"content": {"application/zip": {}}}},
            summary="Download the model bundle (.shoal) of the best epoch, or of an exported epoch")
def download(name: str, store: StoreDep,
             epoch: Annotated[str, Query(description="best, last, or a kept snapshot's epoch")] = "best",
             ) -> FileResponse:
    """The best epoch's bundle; any other epoch once ``POST .../export`` has written it (409 before)."""
    path = services.download_file(store, name, epoch.strip().lower())
    return FileResponse(path, media_type="application/zip", filename=path.name)
