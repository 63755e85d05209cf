"""The app factory: configuration in, an ASGI app out (models loaded, routes, error handlers, limits)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from .. import __version__
from .config import ServeConfig
from .errors import install_handlers
from .ratelimit import RateLimit
from .routes import characters, jobs, judging, system
from .security import Guard
from .state import ServeState

DESCRIPTION = """castkeep's character store and face scorers over HTTP.

Every refusal is `{"error": {"code", "type", "message"}}` with a 4xx status: `code` is the CLI's exit code
(`castkeep/errors.py`), `type` the error class. Changes to the store (register, add references, remove,
import) need `Authorization: Bearer TOKEN` when the server was started with a token; with --token-reads every
request under /api does (or the session cookie `POST /api/session` sets). With --rate-limit, a client sending
POST requests faster gets a 429 with `Retry-After`."""


def create_app(config: ServeConfig | None = None) -> FastAPI:
    """A FastAPI app serving the store of `config` (default: $CASTKEEP_STORE, the default models, no token).
    The face models load here, before the app is returned; they are released when the app shuts down."""
    config = config or ServeConfig()
    serve = ServeState.start(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            serve.close()

    app = FastAPI(title="castkeep", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.castkeep = serve
    install_handlers(app)
    for module in (characters, judging, jobs, system):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=system.STATIC), name="static")
    app.add_middleware(Guard, max_bytes=config.max_upload_bytes, local_only=config.token is None,
                       read_token=config.token if config.token_reads else None)
    if config.rate_limit > 0:  # outermost: a flood is refused before anything else looks at it
        app.add_middleware(RateLimit, rate=config.rate_limit, burst=config.rate_burst)
    return app
