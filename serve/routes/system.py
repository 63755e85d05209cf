"""The server itself: its status (what a page or a load balancer asks first) and the web page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, JSONResponse

from ... import __version__
from ...landmarks.images import MAX_IMAGE_PIXELS
from ..errors import ApiError
from ..security import SESSION_COOKIE, SESSION_PATH, bearer_matches, session_value
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
            "runs_on": serve.pool.pack.active_providers(),  # per face model: onnxruntime's providers, or OpenVINO
            "writes_need_token": serve.config.token is not None, "reads_need_token": serve.config.token_reads,
            "rate_limit": {"per_second": serve.config.rate_limit, "burst": serve.config.rate_burst}
            if serve.config.rate_limit else None,
            "limits": {"max_upload_bytes": serve.config.max_upload_bytes, "max_image_pixels": MAX_IMAGE_PIXELS}}


@router.post(SESSION_PATH, summary="Trade the token for a session cookie (the page's sign-in, with --token-reads)")
def sign_in(request: Request, token: Annotated[str, Form(description="the server's token")]) -> JSONResponse:
    expected = state(request).config.token
    if expected is None:
        raise ApiError(400, "this server has no token: there is nothing to sign in to", type_name="ConfigError")
    if not bearer_matches(f"Bearer {token}", expected):
        raise ApiError(401, "wrong token", type_name="AuthenticationError", headers={"WWW-Authenticate": "Bearer"})
    answer = JSONResponse({"signed_in": True, "reads_need_token": state(request).config.token_reads})
    # HttpOnly: no script reads it; SameSite=Strict: no other site's page sends it; a session cookie: gone with
    # the browser. Reads only: changes still need the bearer header.
    answer.set_cookie(SESSION_COOKIE, session_value(expected), httponly=True, samesite="strict", path="/api/")
    return answer


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")
