"""Who may do what: the bearer token for writes (and reads, with --token-reads), the request size limit, and
what keeps a server without a token to this machine (the Host check against DNS rebinding, the Origin check
against other sites' forms).

Reads (the gallery, identify, score, compare, exports) are open to whoever reaches the server unless the server
was started with --token-reads: then every request under /api needs the token, refused before its body is read,
as the bearer header or as the session cookie the page gets for it once (`POST /api/session`; images, run files
and the event stream load through it, since a browser sends no header for them). The cookie is HttpOnly and
SameSite=Strict, and it is a keyed hash of the token, not the token; it never stands in for the header on a
change, so another site cannot make a signed-in browser change the store. The page (/ and /static) and the API
documentation (/docs, /openapi.json) stay open: they hold no data, and the page must load to ask for the token.
Changes to the store (register, add references, remove, import) need `Authorization: Bearer TOKEN` when the
server has a token. Without a token the server listens on this machine only (config.check_bind) and answers only
requests addressed to it by a local name, so a web page elsewhere cannot reach it through a rebound DNS
name, and refuses writes a page of another origin posts.
"""

from __future__ import annotations

import hashlib
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

SESSION_COOKIE = "castkeep_session"
SESSION_PATH = "/api/session"  # where the page trades the token for the cookie: the one /api path open to all

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


async def send_error(send: Send, status: int, type_name: str, message: str,
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """The one JSON error shape, from a middleware (before any route; the body is not read: the connection closes)."""
    body = json.dumps({"error": {"code": 1, "type": type_name, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def session_value(token: str) -> str:
    """The session cookie's value for `token`: a keyed hash, so the cookie jar never holds the token itself."""
    return hmac.new(token.encode(), b"castkeep read session", hashlib.sha256).hexdigest()


def bearer_matches(authorization: str | None, token: str) -> bool:
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _cookie(scope: Scope, name: str) -> str | None:
    from http.cookies import CookieError, SimpleCookie

    raw = _header(scope, b"cookie")
    if not raw:
        return None
    try:
        morsel = SimpleCookie(raw).get(name)
    except CookieError:
        return None
    return None if morsel is None else morsel.value


def may_read(scope: Scope, token: str) -> bool:
    """Whether a request carries the token: as the bearer header, or as the page's session cookie."""
    if bearer_matches(_header(scope, b"authorization"), token):
        return True
    cookie = _cookie(scope, SESSION_COOKIE)
    return cookie is not None and hmac.compare_digest(cookie.encode(), session_value(token).encode())


class Guard:
    """ASGI middleware: refuses bodies over `max_bytes` (from Content-Length before reading, and while
    streaming for chunked bodies), requests to a non-local Host when `local_only`, requests under /api
    without `read_token` when there is one, and adds the page's security headers to every answer."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, local_only: bool, read_token: str | None = None) -> None:
        self.app, self.max_bytes, self.local_only, self.read_token = app, max_bytes, local_only, read_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if self.local_only and host is not None and not is_local_host(urlsplit(f"//{host}").hostname or ""):
            await send_error(send, 421, "MisdirectedRequest", f"this server answers only requests to this machine "
                              f"(localhost, 127.0.0.1, [::1]), not to {host!r}; start it with a token to serve others")
            return
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await send_error(send, 413, "PayloadTooLarge",
                             f"request body too large ({int(length) / 2**20:.1f} MiB; limit {self.max_bytes / 2**20:.0f} MiB)")
            return
        received = 0
        path = str(scope.get("path", ""))
        if (self.read_token is not None and path.startswith("/api/") and path != SESSION_PATH
                and not may_read(scope, self.read_token)):
            await send_error(send, 401, "AuthenticationError", "this server needs its token for every request: send "
                             "`Authorization: Bearer TOKEN` (the page asks for it)",
                             headers=[(b"www-authenticate", b"Bearer")])
            return
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
        if not bearer_matches(request.headers.get("authorization"), token):
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
