"""Who may do what: the bearer token for writes, the request size limit, and what keeps a server without a
token to this machine (the Host check against DNS rebinding, the Origin check against other sites' forms).

Reads (the gallery, identify, score, compare, exports) are open to whoever reaches the server; changes to
the store (register, add references, remove, import) need `Authorization: Bearer TOKEN` when the server has
a token. Without a token the server listens on this machine only (config.check_bind) and answers only
requests addressed to it by a local name, so a web page elsewhere cannot reach it through a rebound DNS
name, and refuses writes a page of another origin posts.
"""

from __future__ import annotations

import hmac
import json
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import is_local_host
from .errors import ApiError

# The page loads only its own files: no script, style or image from anywhere else (uploads show as blob: URLs).
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
                           "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")

# A run's report.html (written by the storyboard runner) styles itself inline and embeds thumbnails as data:
# URLs; it runs no script, so it is served sandboxed with a policy of its own.
RUN_FILE_POLICY = ("default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; frame-ancestors 'none'; "
                   "base-uri 'none'; form-action 'none'; sandbox allow-popups")


class BodyTooLarge(HTTPException):
    """Raised from inside the body stream once it passes the limit (FastAPI re-raises HTTP exceptions as
    they are, where any other error while reading a form becomes a generic 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body too large (over {limit / 2**20:.0f} MiB)")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


async def _send_error(send: Send, status: int, type_name: str, message: str) -> None:
    body = json.dumps({"error": {"code": 1, "type": type_name, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: refuses bodies over `max_bytes` (from Content-Length before reading, and while
    streaming for chunked bodies), requests to a non-local Host when `local_only`, and adds the page's
    security headers to every answer."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, local_only: bool) -> None:
        self.app, self.max_bytes, self.local_only = app, max_bytes, local_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if self.local_only and host is not None and not is_local_host(urlsplit(f"//{host}").hostname or ""):
            await _send_error(send, 421, "MisdirectedRequest", f"this server answers only requests to this machine "
                              f"(localhost, 127.0.0.1, [::1]), not to {host!r}; start it with a token to serve others")
            return
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _send_error(send, 413, "PayloadTooLarge",
                              f"request body too large ({int(length) / 2**20:.1f} MiB; limit {self.max_bytes / 2**20:.0f} MiB)")
            return
        received = 0
        path = str(scope.get("path", ""))
        docs = path.startswith(("/docs", "/redoc"))
        run_file = path.startswith("/api/runs/") and "/files/" in path

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                if run_file:
                    headers.append((b"content-security-policy", RUN_FILE_POLICY.encode()))
                elif not docs:  # FastAPI's /docs page loads Swagger UI from its CDN; castkeep's own page loads nothing
                    headers.append((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, counted, with_headers)


def require_writer(request: Request) -> None:
    """FastAPI dependency of every route that changes the store."""
    token: str | None = request.app.state.castkeep.config.token
    if token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise ApiError(401, "this change needs the server's token: send `Authorization: Bearer TOKEN`",
                           type_name="AuthenticationError", headers={"WWW-Authenticate": "Bearer"})
        return
    origin = request.headers.get("origin")
    # "null" too: a sandboxed frame of any site posts with that origin.
    if origin is not None and (origin == "null" or urlsplit(origin).netloc != request.headers.get("host")):
        raise ApiError(403, f"a page from {origin} may not change this store", type_name="ForbiddenOrigin")


def writer_responses() -> dict[int | str, dict[str, Any]]:
    return {401: {"description": "the server has a token and the request did not send it"},
            403: {"description": "a page of another origin tried to change a store that has no token"}}
