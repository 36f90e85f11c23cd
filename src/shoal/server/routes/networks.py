"""``/api/networks`` and ``/api/pretrained``: architectures, uploaded network files and weights."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile, status
from starlette.concurrency import run_in_threadpool

from shoal import assets
from shoal.server import services
from shoal.server.deps import CatalogDep, SettingsDep, StoreDep
from shoal.server.schemas import NetworkFileOut, NetworksOut, PretrainedOut
from shoal.server.security import network_uploads_allowed, read_upload, save_upload

router = APIRouter(tags=["networks"])

NETWORK_FILE_LIMIT = 1024 * 1024  # a network definition is source code: 1 MB is plenty


@router.get("/networks", response_model=NetworksOut,
            summary="Standard and pretrained networks, uploaded network files and uploaded weights")
async def list_networks(store: StoreDep, catalog: CatalogDep) -> dict[str, Any]:
    specs = await run_in_threadpool(catalog.specs)
    return {"networks": specs, "files": assets.list_network_files(store),
            "pretrained": assets.list_pretrained(store)}


@router.post("/networks/files", status_code=status.HTTP_201_CREATED, response_model=NetworkFileOut,
             dependencies=[Depends(network_uploads_allowed)],
             summary="Upload a network definition (.py defining create_network(num_classes, channels)); "
                     "needs 'shoal serve --allow-code'")
async def upload_network_file(store: StoreDep,
                              file: Annotated[UploadFile, File(description="a .py file")]) -> dict[str, Any]:
    data = await read_upload(file, limit=NETWORK_FILE_LIMIT, what="network file")
    return services.save_network_file(store, file.filename or "network.py", data)


@router.get("/pretrained", response_model=list[PretrainedOut], summary="Uploaded pretrained weights")
def list_pretrained(store: StoreDep) -> list[dict[str, Any]]:
    return assets.list_pretrained(store)


@router.post("/pretrained", status_code=status.HTTP_201_CREATED, response_model=PretrainedOut,
             summary="Upload pretrained weights (.safetensors or .pth) for an architecture, with optional labels")
async def upload_pretrained(store: StoreDep, settings: SettingsDep,
                            name: Annotated[str, Form(description="a name for these weights")],
                            architecture: Annotated[str, Form(description="the network they belong to")],
                            file: Annotated[UploadFile, File(description=".safetensors, .pth or .pt")],
                            labels: Annotated[str | None, Form(description="class names, one per line")] = None,
                            ) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=services.upload_dir(store)) as tmp:
        path = Path(tmp) / "weights.upload"
        await save_upload(file, path, limit=settings.max_zip_bytes, what="weights file")
        return await run_in_threadpool(services.save_pretrained, store, settings, name=name.strip(),
                                       architecture=architecture.strip(), upload=path,
                                       filename=file.filename or "weights", labels=labels)


@router.delete("/pretrained/{name}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete uploaded weights")
def delete_pretrained(name: str, store: StoreDep) -> Response:
    assets.delete_pretrained(store, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
