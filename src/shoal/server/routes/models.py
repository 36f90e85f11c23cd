"""``/api/models``: train (one model or a sweep), follow, abort, resume, download and delete models."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import FileResponse

from shoal.server import services
from shoal.server.deps import CatalogDep, ClassifiersDep, RunnerDep, SettingsDep, StoreDep
from shoal.server.schemas import EventsOut, JobAccepted, ModelCreate, ModelOut, ModelResume, ModelsAccepted, ModelSummary

router = APIRouter(prefix="/models", tags=["models"])


def _accepted(request: Request, runner: Any, job: Any) -> dict[str, Any]:
    return {"job": services.job_view(runner, job), "name": job.target,
            "url": str(request.url_for("model_page", name=job.target).path)}


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
        previous_epoch=body.previous_epoch, options=body.options.model_dump())
    return {"models": [_accepted(request, runner, job) for job in jobs]}


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
    job = services.resume_model(store, runner, settings, name, epochs=body.epochs if body else None)
    return _accepted(request, runner, job)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a model and its files")
def delete_model(name: str, store: StoreDep, classifiers: ClassifiersDep) -> Response:
    services.delete_model(store, classifiers, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{name}/download", response_class=FileResponse,
            responses={200: {"content": {"application/zip": {}}}},
            summary="Download the model bundle (.shoal) of the best epoch, the last, or a snapshot")
def download(name: str, store: StoreDep, settings: SettingsDep,
             epoch: Annotated[str, Query(description="best, last, or a kept snapshot's epoch")] = "best",
             ) -> FileResponse:
    path = services.download_file(store, settings, name, epoch.strip().lower())
    return FileResponse(path, media_type="application/zip", filename=path.name)
