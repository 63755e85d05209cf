"""What the server tests share (imported by name: pyproject's pytest `pythonpath` holds tests/serve): the photos,
an app on a store in a temporary folder, and a real `castkeep serve` process on a free local port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi.testclient import TestClient

GALLERY = Path(os.environ["CASTKEEP_MODELS"]).parent.parent / "faces" / "lfw_gallery"
# Two people of the LFW gallery: three photos register each, the others are probes.
MARA = [GALLERY / "Abdullah_Gul" / f"Abdullah_Gul_000{i}.jpg" for i in range(1, 7)]
THEO = [GALLERY / "Alejandro_Toledo" / f"Alejandro_Toledo_000{i}.jpg" for i in range(1, 7)]
BASE_URL = "http://127.0.0.1"  # the server without a token answers only requests addressed to this machine
MAX_UPLOAD = 8 * 2**20


def photo_files(paths: list[Path], field: str = "photos") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, (path.name, path.read_bytes(), "image/jpeg")) for path in paths]


def make_client(store: Path, **config) -> TestClient:
    from castkeep.serve import ServeConfig, create_app

    settings = {"workers": 2, "max_upload_bytes": MAX_UPLOAD, **config}
    return TestClient(create_app(ServeConfig(store=store, **settings)), base_url=BASE_URL)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    store: Path
    process: subprocess.Popen


def start_server(store: Path, log: Path, *extra: str, timeout: float = 90.0) -> LiveServer:
    """`castkeep serve` in a subprocess on a free local port; returns once /api/status answers (or refuses for
    want of the token, with --token-reads)."""
    import httpx

    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "castkeep", "serve", "--store", str(store), "--port", str(port),
                                    *extra], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"castkeep serve exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/api/status", timeout=2).status_code in (200, 401):  # 401: reads need the token
                return LiveServer(url, store, process)
        except httpx.HTTPError:
            time.sleep(0.3)
    process.terminate()
    raise RuntimeError(f"castkeep serve did not answer in {timeout:g} s: {log.read_text()[-2000:]}")


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
