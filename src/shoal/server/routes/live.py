"""Live views: the event streams of a model and of the queue (server-sent events), a run's log, the machine."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from shoal import models
from shoal.server import monitor
from shoal.server.deps import RunnerDep, StoreDep

router = APIRouter(tags=["live"])

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
EVENT_STREAM = {200: {"content": {"text/event-stream": {}}, "description": "one JSON object per event"}}


@router.get("/models/{name}/stream", response_class=StreamingResponse, responses=EVENT_STREAM,
            summary="A model's progress events as they happen (server-sent events)")
def model_stream(name: str, request: Request, store: StoreDep,
                 after: Annotated[int | None, Query(ge=0, description="start after this many events")] = None,
                 last_event_id: Annotated[str | None, Header(description="set by the browser on reconnect")] = None,
                 ) -> StreamingResponse:
    """Each event of ``metrics.jsonl`` (from the web app's runs and the CLI's) as a ``data:`` line with
    its number as the ``id:`` (a reconnect with ``Last-Event-ID`` continues after it), and
    ``{"type": "status", ...}`` whenever the status changes. The stream ends once the run has ended;
    a response lasts at most a few tens of seconds, and the browser reconnects by itself."""
    models.status(name, store=store)  # 404 for no such model, before the stream starts
    start = monitor.resume_point(last_event_id, after)
    return StreamingResponse(monitor.model_stream(request, store, name, start), media_type="text/event-stream",
                             headers=STREAM_HEADERS)


@router.get("/jobs/stream", response_class=StreamingResponse, responses=EVENT_STREAM,
            summary="The queue, the models and the datasets whenever they change (server-sent events)")
def jobs_stream(request: Request, store: StoreDep, runner: RunnerDep,
                last_event_id: Annotated[str | None, Header(description="set by the browser on reconnect")] = None,
                ) -> StreamingResponse:
    """``{"type": "jobs", "jobs": [...], "models": [...], "datasets": [...]}`` (as ``GET /api/jobs``,
    ``/api/models`` and ``/api/datasets`` answer) now and at every change."""
    return StreamingResponse(monitor.snapshot_stream(request, lambda: monitor.home_snapshot(store, runner),
                                                     last_event_id),
                             media_type="text/event-stream", headers=STREAM_HEADERS)


@router.get("/models/{name}/log", summary="The run's log (follow it with offset, or read its end with tail)")
def model_log(name: str, store: StoreDep,
              offset: Annotated[int | None, Query(ge=0, description="the 'next' of the previous answer")] = None,
              tail: Annotated[int | None, Query(ge=1, le=monitor.LOG_CHUNK, description="the last bytes")] = None,
              ) -> dict[str, Any]:
    """``{"text", "offset", "next", "size"}``: the log from byte ``offset`` (or its last ``tail`` bytes,
    from a whole line). Every run writes it in the model's folder (``train.log``), from the CLI as from the web."""
    return monitor.read_log(store, name, offset=offset, tail=tail)


@router.get("/system", summary="The machine: CPU, memory, GPUs, disk, versions, and each running job's device")
def system(store: StoreDep, runner: RunnerDep) -> dict[str, Any]:
    return monitor.system(store, runner)
