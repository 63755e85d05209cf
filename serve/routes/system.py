"""The server itself: its status (what a page or a load balancer asks first) and the web page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from ... import __version__
from ...landmarks.images import MAX_IMAGE_PIXELS
from ..state import state
from .views import API

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(tags=["system"])


@router.get(f"{API}/status", summary="Version, models, store size, limits, whether writes need a token")
def status(request: Request) -> dict[str, Any]:
    serve = state(request)
    with serve.store() as store:
        characters, read_only = len(store), store.read_only
    return {"version": __version__, "models": serve.pool.fingerprint, "store": serve.store_name,
            "characters": characters, "read_only": read_only, "workers": len(serve.pool.workers),
            "writes_need_token": serve.config.token is not None,
            "limits": {"max_upload_bytes": serve.config.max_upload_bytes, "max_image_pixels": MAX_IMAGE_PIXELS}}


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")
