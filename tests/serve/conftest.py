"""Fixtures of the server tests: an app on a real store in a temporary folder, with the real face models
(CASTKEEP_MODELS: the shared buffalo_s_lite pack), driven by FastAPI's TestClient in this process; and a
real `castkeep serve` process on a free local port, for the HTTP and browser tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="castkeep serve needs the [serve] extra")

from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import MARA, THEO, LiveServer, make_client, photo_files, start_server, stop_server  # noqa: E402
from tiny_fixtures import tiny_models  # noqa: E402, F401  (a fixture: tiny SD1.5 + FaceID on disk)


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[TestClient, Path]]:
    """A client of an app whose store holds Mara (3 photos) and Theo (3 photos), registered through the API."""
    store = tmp_path_factory.mktemp("served") / "store"
    with make_client(store) as client:
        for name, photos in (("Mara", MARA[:3]), ("Theo", THEO[:3])):
            answer = client.post("/api/characters", data={"name": name, "tags": ["cast"]}, files=photo_files(photos))
            assert answer.status_code == 201, answer.text
        yield client, store


@pytest.fixture
def client(served) -> TestClient:
    return served[0]


@pytest.fixture(scope="session")
def live_server(tmp_path_factory) -> Iterator[LiveServer]:
    """A real server (uvicorn, in its own process) on a store with Mara and Theo, registered over HTTP."""
    import httpx

    folder = tmp_path_factory.mktemp("live")
    server = start_server(folder / "store", folder / "server.log")
    try:
        for name, photos in (("Mara", MARA[:3]), ("Theo", THEO[:3])):
            answer = httpx.post(f"{server.url}/api/characters", data={"name": name}, files=photo_files(photos), timeout=120)
            assert answer.status_code == 201, answer.text
        yield server
    finally:
        stop_server(server)
