"""``/api/models/{name}/review``: the suspects of a model's dataset; apply the chosen changes as a new
dataset version; retrain with the same options on it (the Review page's actions)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from shoal.server.deps import RunnerDep, SettingsDep, StoreDep
from shoal.server.routes import accepted
from shoal.server.schemas import JobAccepted
from shoal.server.services import improve

router = APIRouter(prefix="/models", tags=["review"])


class ReviewApply(BaseModel):
    """The changes chosen on the Review page; images are named by their path as the review lists them."""

    model_config = ConfigDict(extra="forbid")
    relabel: dict[str, str] = Field(default_factory=dict, description="image path → its new class")
    exclude: list[str] = Field(default_factory=list, description="image paths to leave out")


class VersionOut(BaseModel):
    dataset: str = Field(description="the new dataset version (NAME@N)")
    parent: str
    relabelled: int
    excluded: int
    counts: dict[str, int]
    dataset_url: str


class Retrain(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: str = Field(description="the dataset to train on, e.g. the version the review made")


@router.get("/{name}/review", summary="The images whose label is probably wrong, ambiguous, duplicated or odd")
async def get_review(name: str, store: StoreDep,
                     top: Annotated[int, Query(ge=1, le=1000, description="at most this many, worst first")] = 100,
                     ) -> dict[str, Any]:
    """``shoal review`` (needs the ``[review]`` extra). It embeds every image and cross-validates a
    head, a few seconds for a small set; the request waits for it."""
    return await run_in_threadpool(improve.review_view, store, name, top=top)


@router.post("/{name}/review/apply", status_code=status.HTTP_201_CREATED, response_model=VersionOut,
             summary="Store the next version of the model's dataset with these images relabelled or left out")
def apply_review(name: str, body: ReviewApply, store: StoreDep) -> dict[str, Any]:
    return improve.apply_review(store, name, relabel=body.relabel, exclude=body.exclude)


@router.post("/{name}/retrain", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted,
             summary="Train again with this model's options on another dataset (its new version)")
def retrain(name: str, body: Retrain, request: Request, store: StoreDep, runner: RunnerDep,
            settings: SettingsDep) -> dict[str, Any]:
    job = improve.retrain(store, runner, settings, name, dataset=body.dataset)
    return accepted(request, runner, job, "model_page")
