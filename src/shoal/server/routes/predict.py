"""``/api/models/{name}/...``: classify images with a trained model, and evaluate it."""

from __future__ import annotations

import tempfile
from urllib.parse import quote
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from shoal.errors import InputError
from shoal.server import services
from shoal.server.deps import ClassifiersDep, SettingsDep, StoreDep
from shoal.server.schemas import ClassifyListIn, ClassifyManyOut, ClassifyOut, EvaluationOut, LayersOut
from shoal.server.security import check_image, read_upload, save_upload

router = APIRouter(prefix="/models", tags=["predict"])

TopForm = Annotated[int, Form(ge=1, le=100, description="how many classes to return, most probable first")]


@router.post("/{name}/classify", response_model=ClassifyOut, response_model_exclude_unset=True,
             summary="Classify one image (upload or URL): the same JSON as 'shoal classify --json'")
async def classify(name: str, store: StoreDep, settings: SettingsDep, classifiers: ClassifiersDep,
                   file: Annotated[UploadFile | None, File(description="the image")] = None,
                   url: Annotated[str | None, Form(description="or an http(s) address of the image")] = None,
                   top: TopForm = 5) -> dict[str, Any]:
    """Answers ``{"source", "predictions": [{"label", "probability"}, ...], "unfamiliar", "unfamiliar_score"}``
    (and ``unfamiliar_reason`` when the model cannot tell): the object ``shoal classify MODEL IMAGE --json``
    prints for that image (``source`` is the uploaded file's name, or the URL). The model stays loaded
    between requests."""
    data = await read_upload(file, limit=settings.max_image_bytes) if file is not None else None
    return await run_in_threadpool(services.classify, classifiers, store, settings, name, data=data,
                                   filename=file.filename if file is not None else None, url=url, top=top)


@router.post("/{name}/classify-many", response_model=ClassifyManyOut,
             summary="Classify several images, or a zip of class folders (with accuracy against the folder names)")
async def classify_many(name: str, store: StoreDep, settings: SettingsDep, classifiers: ClassifiersDep,
                        files: Annotated[list[UploadFile] | None, File(description="images")] = None,
                        archive: Annotated[UploadFile | None, File(description="a .zip with one folder per class")] = None,
                        top: TopForm = 5) -> dict[str, Any]:
    images: list[tuple[str, bytes]] = []
    for upload in files or []:
        data = await read_upload(upload, limit=settings.max_image_bytes)
        check_image(data, upload.filename or "upload")
        images.append((upload.filename or f"image {len(images) + 1}", data))
    if archive is None:
        if not images:
            raise InputError("no images to classify: upload image files, or a zip with one folder of images per class")
        return await run_in_threadpool(services.classify_many, classifiers, store, settings, name, files=images,
                                       archive=None, top=top)
    with tempfile.TemporaryDirectory(dir=services.upload_dir(store)) as tmp:
        path = Path(tmp) / "images.zip"
        await save_upload(archive, path, limit=settings.max_zip_bytes, what="zip")
        return await run_in_threadpool(services.classify_many, classifiers, store, settings, name, files=images,
                                       archive=path, top=top)


@router.post("/{name}/classify-list", response_model=ClassifyManyOut,
             summary="Classify the images a server-side list file names (with accuracy when lines give classes)")
async def classify_list(name: str, body: ClassifyListIn, store: StoreDep, settings: SettingsDep,
                        classifiers: ClassifiersDep) -> dict[str, Any]:
    """The list file and every image it names must lie inside the folders the server may read
    (``shoal serve --roots``), as for a dataset build; lines it cannot use come back as rows with an ``error``.
    Answers as ``classify-many``, plus ``list_file``."""
    return await run_in_threadpool(services.classify_list, classifiers, store, settings, name,
                                   list_file=body.list_file, top=body.top)


@router.post("/{name}/heatmap", response_class=Response, responses={200: {"content": {"image/png": {}}}},
             summary="Grad-CAM heat-map: where the network looked to score a class on one image (PNG)")
async def heatmap(name: str, store: StoreDep, settings: SettingsDep, classifiers: ClassifiersDep,
                  file: Annotated[UploadFile | None, File(description="the image")] = None,
                  url: Annotated[str | None, Form(description="or an http(s) address of the image")] = None,
                  target: Annotated[str | None, Form(description="the class to explain; default the top one")] = None,
                  ) -> Response:
    """The overlay of the heat-map on the image as the network sees it; the headers
    ``X-Shoal-Label`` (percent-encoded) and ``X-Shoal-Probability`` name the class explained. Needs torch on the server."""
    data = await read_upload(file, limit=settings.max_image_bytes) if file is not None else None
    png, label, probability = await run_in_threadpool(
        services.heatmap_png, classifiers, store, settings, name, data=data,
        filename=file.filename if file is not None else None, url=url, target=target or None)
    return Response(png, media_type="image/png",
                    headers={"X-Shoal-Label": quote(label, safe=""),
                             "X-Shoal-Probability": f"{probability:.6f}"})


@router.post("/{name}/layers", response_model=LayersOut,
             summary="Layers, as DIGITS showed them: every layer's statistics and activations for one image")
async def layers(name: str, store: StoreDep, settings: SettingsDep, classifiers: ClassifiersDep,
                 file: Annotated[UploadFile | None, File(description="the image")] = None,
                 url: Annotated[str | None, Form(description="or an http(s) address of the image")] = None,
                 ) -> dict[str, Any]:
    """What ``shoal classify MODEL IMAGE --layers`` writes, as JSON: per layer its output shape, mean, std,
    histogram, parameters and its first channels as a PNG ``data:`` URI; the first convolution's filters;
    the top classes. Needs torch on the server (and ``--allow-code`` for a network defined by a ``.py`` file)."""
    data = await read_upload(file, limit=settings.max_image_bytes) if file is not None else None
    return await run_in_threadpool(services.layers_view, classifiers, store, settings, name, data=data,
                                   filename=file.filename if file is not None else None, url=url)


@router.get("/{name}/evaluation", response_model=EvaluationOut,
            summary="Accuracy, confusion matrix, per-class precision/recall, most confidently wrong and surest images")
async def evaluation(name: str, store: StoreDep, classifiers: ClassifiersDep, split: str = "val",
                     wrong: Annotated[int, Query(ge=0, le=100)] = 10,
                     per_class: Annotated[int, Query(ge=0, le=50)] = 6) -> dict[str, Any]:
    """Runs the model over a split of the dataset it was trained on (``shoal.evaluate``)."""
    return await run_in_threadpool(services.evaluation, classifiers, store, name, split=split, wrong=wrong,
                                   per_class=per_class)
