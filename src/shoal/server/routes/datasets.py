"""``/api/datasets``: build, list, show, explore and delete datasets."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile, status
from fastapi.responses import FileResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from shoal.errors import ConfigError
from shoal.server import services
from shoal.server.routes import accepted
from shoal.server.deps import RunnerDep, SettingsDep, StoreDep
from shoal.server.schemas import (DataOptions, DatasetCreate, DatasetImageOut, DatasetOut, DatasetSummary, ImagePage,
                                  JobAccepted)
from shoal.server.security import save_upload

router = APIRouter(prefix="/datasets", tags=["datasets"])


@router.get("", response_model=list[DatasetSummary], summary="List datasets (stored and being built)")
def list_datasets(store: StoreDep, runner: RunnerDep) -> list[dict[str, Any]]:
    return services.list_datasets(store, runner)


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted,
             summary="Build a dataset from a server-side folder or the built-in sample")
def create_dataset(body: DatasetCreate, request: Request, store: StoreDep, runner: RunnerDep,
                   settings: SettingsDep) -> dict[str, Any]:
    """Queues the build and answers at once; follow it with ``GET /api/datasets/{name}``."""
    job = services.submit_dataset(store, runner, settings, name=body.name, folder=body.folder, sample=body.sample,
                                  options=body.options.model_dump())
    return accepted(request, runner, job, "dataset_page")


@router.post("/upload", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted,
             summary="Build a dataset from an uploaded zip of class folders")
async def upload_dataset(request: Request, store: StoreDep, runner: RunnerDep, settings: SettingsDep,
                         name: Annotated[str, Form(description="dataset name")],
                         file: Annotated[UploadFile, File(description="a .zip with one folder of images per class")],
                         options: Annotated[str, Form(description="DataOptions as a JSON object")] = "{}",
                         ) -> dict[str, Any]:
    try:
        parsed = DataOptions.model_validate(json.loads(options or "{}"))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ConfigError(f"options must be a JSON object of dataset options: {_first_error(exc)}") from None
    with tempfile.TemporaryDirectory(dir=_ensure(store.home / "uploads")) as tmp:
        archive = Path(tmp) / "upload.zip"
        await save_upload(file, archive, limit=settings.max_zip_bytes, what="zip")
        job = await run_in_threadpool(services.submit_dataset_zip, store, runner, settings, name=name,
                                      archive=archive, options=parsed.model_dump())
    return accepted(request, runner, job, "dataset_page")


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    return str(exc)


@router.get("/{name}", response_model=DatasetOut, summary="A dataset: classes, counts per split, skipped files")
def get_dataset(name: str, store: StoreDep, runner: RunnerDep) -> dict[str, Any]:
    return services.dataset_view(store, runner, name)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a dataset")
def delete_dataset(name: str, store: StoreDep) -> Response:
    services.delete_dataset(store, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{name}/images", response_model=ImagePage, summary="One page of a split's images, by class")
def list_images(name: str, store: StoreDep, split: str = "train", label: str | None = None,
                page: Annotated[int, Query(ge=0)] = 0,
                per_page: Annotated[int, Query(ge=1, le=500)] = 48) -> dict[str, Any]:
    return services.dataset_images(store, name, split=split, label=label or None, page=page, per_page=per_page)


@router.get("/{name}/images/{split}/{index}.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}}, summary="One stored image (resized) as PNG")
def image_png(name: str, split: str, index: int, store: StoreDep) -> Response:
    return Response(services.dataset_image_png(store, name, split, index), media_type="image/png",
                    headers={"Cache-Control": "private, max-age=300"})


@router.get("/{name}/images/{split}/{index}", response_model=DatasetImageOut,
            summary="One stored image: its class and source path, and whether the source can be shown")
def image_info(name: str, split: str, index: int, store: StoreDep, settings: SettingsDep) -> dict[str, Any]:
    return services.dataset_image(store, settings, name, split, index)


@router.get("/{name}/images/{split}/{index}/source.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}},
            summary="The source file of a stored image at full size, as PNG (inside the allowed folders only)")
def source_png(name: str, split: str, index: int, store: StoreDep, settings: SettingsDep) -> Response:
    return Response(services.dataset_source_png(store, settings, name, split, index), media_type="image/png",
                    headers={"Cache-Control": "private, max-age=300"})


@router.get("/{name}/mean.png", response_class=FileResponse, summary="The mean training image as PNG")
def mean_png(name: str, store: StoreDep) -> FileResponse:
    return FileResponse(services.dataset_mean_path(store, name), media_type="image/png")
