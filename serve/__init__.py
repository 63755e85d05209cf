"""`castkeep serve`: the store and the scorers over HTTP (FastAPI), with a web page.

    from castkeep.serve import ServeConfig, create_app
    app = create_app(ServeConfig(store="cast", token="s3cret"))   # an ASGI app: uvicorn, TestClient

The face models are loaded once, when the app is made, into a pool of workers (serve/workers.py); each
request borrows one. Uploads are checked (size, magic bytes, pixel count, file name) before any model sees
them (serve/uploads.py); every castkeep error is one JSON answer with a 4xx status (serve/errors.py); writes
need the bearer token when one is set (serve/security.py). Needs the `[serve]` extra.
"""

from __future__ import annotations

from .app import create_app
from .config import ServeConfig

__all__ = ["ServeConfig", "create_app"]
