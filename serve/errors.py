"""Every refusal as one JSON answer: `{"error": {"code", "type", "message"}}` with a 4xx status.

`code` is the CLI's exit code for a castkeep error (castkeep/errors.py), so scripts can treat the CLI and the
server alike; `type` is the error class. A bug is a 500 with code 70 and no traceback in the answer (the
server log has it). Messages never name the server's temporary files: each request's uploads are
named by the client's file name (`Uploads.redact`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    CastkeepError,
    ConfigError,
    DuplicateCharacterError,
    FaceIndexError,
    ImageError,
    ImpostorReferenceError,
    InvalidNameError,
    MissingDependencyError,
    ModelNotFoundError,
    MultipleFacesError,
    NoFaceError,
    NoStoreError,
    ReferenceQualityError,
    StoreError,
    UnknownCharacterError,
    UnknownSpaceError,
)

log = logging.getLogger("castkeep.serve")

# The HTTP status of each castkeep error class (the nearest class in its MRO decides).
STATUS: dict[type[CastkeepError], int] = {
    UnknownCharacterError: 404,
    NoStoreError: 404,
    DuplicateCharacterError: 409,
    UnknownSpaceError: 409,
    InvalidNameError: 400,
    StoreError: 409,          # busy, read-only, of another model pack, or the change refused
    ImageError: 422,          # upload checks raise their own 400/413/415 first (serve/uploads.py)
    NoFaceError: 422,
    MultipleFacesError: 422,
    FaceIndexError: 422,
    ImpostorReferenceError: 422,
    ReferenceQualityError: 422,
    ConfigError: 400,
    ModelNotFoundError: 503,  # the server's own set-up, not the request
    MissingDependencyError: 503,
    CastkeepError: 400,
}

INTERNAL_CODE = 70
USAGE_CODE = 2  # click's code for bad command-line usage; the same for a malformed request


class ApiError(Exception):
    """A refusal with its HTTP status: a castkeep error at another status than STATUS gives, or a refusal
    of the server's own (authentication, an unknown route)."""

    def __init__(self, status: int, message: str, *, type_name: str = "CastkeepError", code: int = 1,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type_name, self.code, self.headers = status, message, type_name, code, headers

    @classmethod
    def of(cls, status: int, error: CastkeepError) -> ApiError:
        return cls(status, str(error), type_name=type(error).__name__, code=error.exit_code)


def status_of(error: CastkeepError) -> int:
    for kind in type(error).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 400


def error_response(status: int, type_name: str, code: int, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "type": type_name, "message": message}}, status_code=status,
                        headers=headers)


def _redacted(request: Request, message: str) -> str:
    redact: Callable[[str], str] | None = getattr(request.state, "redact", None)
    return redact(message) if redact is not None else message


def install_handlers(app: FastAPI) -> None:
    """castkeep errors, the server's own refusals, FastAPI's request validation, HTTP errors (unknown
    route, wrong method) and bugs: all as the one JSON shape."""

    @app.exception_handler(CastkeepError)
    async def castkeep_error(request: Request, exc: CastkeepError) -> JSONResponse:
        return error_response(status_of(exc), type(exc).__name__, exc.exit_code, _redacted(request, str(exc)))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.type_name, exc.code, _redacted(request, exc.message), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for problem in exc.errors():
            where = ".".join(str(part) for part in problem.get("loc", ()) if part not in ("body", "query", "path"))
            problems.append(f"{where}: {problem.get('msg', 'invalid')}" if where else str(problem.get("msg")))
        return error_response(422, "RequestValidationError", USAGE_CODE, "; ".join(problems) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        names = {404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge"}
        return error_response(exc.status_code, names.get(exc.status_code, "HTTPError"), 1, str(exc.detail),
                              getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, "InternalError", INTERNAL_CODE,
                              f"internal error ({type(exc).__name__}); the server log has the traceback")


def json_error_schema() -> dict[str, Any]:
    """The OpenAPI description of the error answer (shown at /docs)."""
    return {"description": "refused: `{\"error\": {\"code\": CLI exit code, \"type\": error class, \"message\": text}}`",
            "content": {"application/json": {"example": {"error": {"code": 4, "type": "NoFaceError",
                                                                  "message": "photo.jpg: no face found"}}}}}
