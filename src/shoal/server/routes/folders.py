"""``/api/folders``: browse the server-side folders a dataset may be built from (the allowed roots)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from shoal.server import services
from shoal.server.deps import SettingsDep
from shoal.server.schemas import FoldersOut

router = APIRouter(prefix="/folders", tags=["datasets"])


@router.get("", response_model=FoldersOut, summary="Sub-folders of a folder inside the allowed roots")
def list_folders(settings: SettingsDep, path: str | None = None) -> dict[str, Any]:
    return services.list_folders(settings, path)
