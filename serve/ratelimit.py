"""A per-client rate limit on the requests that cost: every POST under /api (identify, score, compare,
register, add references, import, job submissions and cancels, the page's sign-in).

A token bucket per client address: `burst` requests at once, then `rate` a second. A refused request is a
429 with the one JSON error shape and `Retry-After` (whole seconds), answered before its body is read, so a
client flooding uploads costs the server neither disk nor models; everyone else goes on being served.
Reads (GET) are not limited: they are cheap, and a page loads several at once.

The client is the connection's address: behind a reverse proxy every user shares the proxy's, so give the
proxy the limit there (or a generous one here).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from .security import send_error

MAX_CLIENTS = 10_000  # buckets kept; beyond it the full ones (clients idle long enough) are forgotten


class TokenBuckets:
    """`burst` tokens per client, refilled at `rate` a second; a request takes one or waits."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when counted)

    def take(self, client: str) -> float:
        """0 when `client` may go now (a token taken), else the seconds until it may."""
        now = self.clock()
        tokens, then = self._buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens >= 1:
            self._buckets[client] = (tokens - 1, now)
            if len(self._buckets) > MAX_CLIENTS:
                self._forget_idle(now)
            return 0.0
        self._buckets[client] = (tokens, now)
        return (1 - tokens) / self.rate

    def _forget_idle(self, now: float) -> None:
        for client, (tokens, then) in list(self._buckets.items()):
            if tokens + (now - then) * self.rate >= self.burst:
                del self._buckets[client]


class RateLimit:
    """ASGI middleware: the buckets in front of every POST under /api. One event loop calls it, so the
    buckets need no lock."""

    def __init__(self, app: ASGIApp, *, rate: float, burst: int) -> None:
        self.app, self.buckets = app, TokenBuckets(rate, burst)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST" and str(scope.get("path", "")).startswith("/api/"):
            client = scope.get("client")
            wait = self.buckets.take(client[0] if client else "unknown")
            if wait > 0:
                retry = max(1, math.ceil(wait))
                await send_error(send, 429, "TooManyRequests",
                                 f"too many requests from {client[0] if client else 'this client'}: at most "
                                 f"{self.buckets.rate:g}/s after a burst of {self.buckets.burst}; retry in {retry} s",
                                 headers=[(b"retry-after", str(retry).encode())])
                return
        await self.app(scope, receive, send)
