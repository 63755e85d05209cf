"""`castkeep bench serve`: N concurrent clients x M identify and score requests against a `castkeep serve`,
with the answers checked against the CLI's and the CLI's own cold start timed in the same run.

1. The CLI answers each probe image cold (`castkeep identify IMAGE --json`, then `score IMAGE -c TOP`, each a
   new process): the reference answers, and the cold-start time a server saves.
2. A server is started on a free local port (or `url` is used), warmed with one request per image. With a
   `token`, every request carries it as `Authorization: Bearer TOKEN` (a server started with --token-reads needs it
   for every /api request); a server that refuses the requests for want of it stops the bench before any load.
3. For identify, then score: `clients` threads, each with its own HTTP connection, send `requests` requests
   each, cycling over the images; every answer is compared with the CLI's (same characters in the same order,
   same cosine to 1e-6; the JSON is the same object). Latency p50/p90/p99, throughput, errors, mismatches.
4. Hostile uploads (zero bytes, text, a 100,000 x 100,000 PNG header, a path as file name) must each get a 4xx
   JSON error, and the server must answer a good request after them.

The headline: identify p50 under load against a cold `castkeep identify`, as a ratio.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BenchmarkInputError, MissingDependencyError
from .report import save_result
from .throughput import collect_images

COSINE_TOLERANCE = 1e-6


@dataclass
class Expected:
    """One probe image and the CLI's answers for it."""

    image: Path
    identify: list[dict[str, Any]]
    character: str  # the CLI's top match, which `score` is asked about
    score: dict[str, Any]
    cold_identify_s: float


def _httpx() -> Any:
    try:
        import httpx
    except ModuleNotFoundError:
        raise MissingDependencyError("castkeep bench serve needs httpx: pip install 'castkeep[serve]'") from None
    return httpx


def _cli(*args: str, env: dict[str, str]) -> tuple[Any, float]:
    """`castkeep ARGS --json` in a new process: its parsed answer and its wall time (a cold start)."""
    import json

    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "castkeep", *args, "--json"], capture_output=True, text=True, env=env,
                          timeout=600)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise BenchmarkInputError(f"castkeep {' '.join(args)} failed: {done.stderr.strip()[-400:]}")
    return json.loads(done.stdout), seconds


def cli_answers(images: list[Path], store: Path, env: dict[str, str], device: str = "cpu") -> list[Expected]:
    expected = []
    for image in images:
        identified, seconds = _cli("identify", str(image), "--store", str(store), "--device", device, env=env)
        if not identified:
            raise BenchmarkInputError("the store holds no characters: register some first", path=store)
        scored, _ = _cli("score", str(image), "-c", identified[0]["name"], "--store", str(store), "--device", device,
                         env=env)
        expected.append(Expected(image, identified, identified[0]["name"], scored, seconds))
    return expected


def _auth(token: str | None) -> dict[str, str]:
    """The headers of every request: the bearer token, when there is one."""
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def _refused(url: str, token: str | None) -> BenchmarkInputError:
    if token is None:
        return BenchmarkInputError(f"the server at {url} needs its token for every request (it runs with --token-reads): "
                                   "pass --token TOKEN or set CASTKEEP_TOKEN")
    return BenchmarkInputError(f"the server at {url} refused the token (401): pass the token it was started with")


def check_access(url: str, token: str | None) -> None:
    """Stop before the load when the server refuses reads (a --token-reads server, no or a wrong token): every
    request would be a 401, and the figures would measure refusals."""
    httpx = _httpx()
    try:
        answer = httpx.get(f"{url}/api/status", headers=_auth(token), timeout=30)
    except httpx.HTTPError as exc:
        raise BenchmarkInputError(f"no castkeep serve answers at {url}: {exc}") from None
    if answer.status_code == 401:
        raise _refused(url, token)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_server(store: Path, workers: int, env: dict[str, str], log: Path, timeout: float = 180,
                   token: str | None = None, device: str = "cpu") -> Iterator[str]:
    """`castkeep serve` on a free local port for the length of the block (with `token` as its token, when given);
    yields its URL."""
    httpx = _httpx()
    port = _free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    # Its own runs folder (it runs no job): a server already serving this store holds the store's runs folder.
    # No rate limit, whatever the environment says: the benchmark measures how fast the server answers.
    runs = tempfile.TemporaryDirectory(prefix="castkeep-bench-runs-")
    if token is not None:  # the server's token is the one the requests carry (CASTKEEP_TOKEN_READS may be set)
        env = {**env, "CASTKEEP_TOKEN": token}
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "castkeep", "serve", "--store", str(store), "--port", str(port),
                                    "--workers", str(workers), "--runs", runs.name, "--rate-limit", "0",
                                    "--device", device],
                                   stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise BenchmarkInputError(f"castkeep serve exited ({process.returncode}); see its log", path=log)
            try:
                status = httpx.get(f"{url}/api/status", headers=_auth(token), timeout=2).status_code
                if status == 200:
                    break
                if status == 401:
                    raise _refused(url, token)
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise BenchmarkInputError(f"castkeep serve did not answer within {timeout:g} s", path=log)
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        runs.cleanup()


def _same(kind: str, answer: dict[str, Any], expected: Expected) -> bool:
    """The server's answer is the CLI's: the same object (the CLI's `image` is its path), checked field by field
    where it matters (names in order, cosines to 1e-6)."""
    if kind == "identify":
        got, want = answer.get("matches", []), expected.identify
        return (got == want and [m["name"] for m in got] == [m["name"] for m in want]
                and all(abs(g["cosine"] - w["cosine"]) <= COSINE_TOLERANCE for g, w in zip(got, want, strict=True)))
    got_score = {k: v for k, v in answer.items() if k != "image"}
    want_score = {k: v for k, v in expected.score.items() if k != "image"}
    return got_score == want_score and abs(answer["cosine"] - expected.score["cosine"]) <= COSINE_TOLERANCE


def _request(client: Any, url: str, kind: str, expected: Expected) -> Any:
    with open(expected.image, "rb") as handle:
        files = {"image": (expected.image.name, handle.read(), "application/octet-stream")}
    data = {"character": expected.character} if kind == "score" else {}
    return client.post(f"{url}/api/{kind}", files=files, data=data)


def load(url: str, kind: str, expected: list[Expected], clients: int, requests: int,
         token: str | None = None) -> dict[str, Any]:
    """`clients` threads x `requests` requests of `kind`, each thread with its own connection."""
    httpx = _httpx()

    def client_run(index: int) -> list[tuple[float, bool, bool]]:
        outcomes = []
        with httpx.Client(timeout=300, headers=_auth(token)) as client:
            for i in range(requests):
                probe = expected[(index + i) % len(expected)]
                start = time.perf_counter()
                try:
                    answer = _request(client, url, kind, probe)
                    ok = answer.status_code == 200
                    same = ok and _same(kind, answer.json(), probe)
                except httpx.HTTPError:
                    ok = same = False
                outcomes.append((time.perf_counter() - start, ok, same))
        return outcomes

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = [o for outcomes in pool.map(client_run, range(clients)) for o in outcomes]
    wall = time.perf_counter() - start
    latencies = np.array([seconds for seconds, _, _ in results]) * 1000
    return {"requests": len(results), "clients": clients, "wall_s": round(wall, 3),
            "throughput_rps": round(len(results) / wall, 2),
            "latency_ms": {"p50": round(float(np.percentile(latencies, 50)), 1),
                           "p90": round(float(np.percentile(latencies, 90)), 1),
                           "p99": round(float(np.percentile(latencies, 99)), 1),
                           "mean": round(float(latencies.mean()), 1), "max": round(float(latencies.max()), 1)},
            "errors": sum(not ok for _, ok, _ in results),
            "mismatches": sum(ok and not same for _, ok, same in results)}


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def hostile(url: str, good: Expected, token: str | None = None) -> dict[str, Any]:
    """Bad uploads: each must be a 4xx JSON error; a good request must be answered after them."""
    httpx = _httpx()
    photo = good.image.read_bytes()
    cases = {"zero bytes": ("face.jpg", b""), "not an image": ("face.jpg", b"this is not a picture\n" * 20),
             "100000 x 100000 PNG header": ("bomb.png", _png_header(100_000, 100_000)),
             "a path in the file name": ("../../x.jpg", photo)}
    rows = []
    with httpx.Client(timeout=120, headers=_auth(token)) as client:
        for label, (name, content) in cases.items():
            answer = client.post(f"{url}/api/identify", files={"image": (name, content, "image/jpeg")})
            try:
                error = answer.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = None
            rows.append({"case": label, "status": answer.status_code, "type": None if error is None else error["type"],
                         "ok": 400 <= answer.status_code < 500 and error is not None})
        after = _request(client, url, "identify", good)
    serving = after.status_code == 200 and _same("identify", after.json(), good)
    return {"cases": rows, "all_refused": all(r["ok"] for r in rows), "serving_after": serving}


def bench_serve(images_dir: str | os.PathLike, store: str | os.PathLike, *, url: str | None = None, clients: int = 8,
                requests: int = 10, limit: int = 4, workers: int = 2, models: str | None = None,
                out_dir: str | os.PathLike = "bench-results", name: str = "serve", token: str | None = None,
                device: str = "cpu") -> dict[str, Any]:
    """The whole bench (module docstring); writes `<out_dir>/<name>.json` and returns the result. `token`: the
    server's bearer token, sent with every request (needed by a server started with --token-reads). `device`:
    where the face models run, in the started server and the CLI's reference answers alike; with another device
    than cpu, a cold `castkeep identify` on the default device is timed too, and the headline speedup is against
    the faster of the two cold commands."""
    store = Path(store)
    if not (store / "castkeep.sqlite3").is_file():
        raise BenchmarkInputError("no character store here (register characters first)", path=store)
    images = collect_images(images_dir, limit)
    if url is not None:  # before the cold CLI runs: a server that refuses every request is known in one request
        check_access(url.rstrip("/"), token)
    env = dict(os.environ)
    if models is not None:
        env["CASTKEEP_MODELS"] = str(models)
    expected = cli_answers(images, store, env, device)
    cold = [e.cold_identify_s for e in expected]
    # What a user types without options runs on the default device: time it too, so that a device that starts
    # slower (OpenVINO compiles its models) cannot flatter the ratio.
    cold_default = cold if device == "cpu" else [
        _cli("identify", str(image), "--store", str(store), env=env)[1] for image in images]

    @contextmanager
    def server() -> Iterator[str]:
        if url is not None:
            yield url.rstrip("/")
        else:
            with running_server(store, workers, env, Path(out_dir) / f"{name}-server.log", token=token,
                                device=device) as started:
                yield started

    with server() as address:
        httpx = _httpx()
        with httpx.Client(timeout=300, headers=_auth(token)) as warm:
            single = []
            for probe in expected:  # warm-up, and one request alone: latency without queueing
                start = time.perf_counter()
                _request(warm, address, "identify", probe)
                single.append(time.perf_counter() - start)
            runs_on = warm.get(f"{address}/api/status").json().get("runs_on")  # where the server's models really run
        phases = {kind: load(address, kind, expected, clients, requests, token) for kind in ("identify", "score")}
        checks = hostile(address, expected[0], token)
    cold_median = min(float(np.median(cold)), float(np.median(cold_default)))
    p50 = phases["identify"]["latency_ms"]["p50"] / 1000
    result = {"bench": "serve", "images_dir": str(images_dir), "images": [str(p) for p in images], "store": str(store),
              "url": url, "token": token is not None,  # whether the requests carried one; never the token
              "workers": None if url is not None else workers, "device": device, "server_runs_on": runs_on,
              "clients": clients,
              "requests_per_client": requests,
              "cli_cold_identify_s": _seconds(cold), "cli_cold_identify_default_device_s": _seconds(cold_default),
              "cold_baseline_s": round(cold_median, 3),
              "single_identify_ms": round(float(np.median(single[1:] or single)) * 1000, 1),
              "phases": phases, "hostile": checks,
              "identify_p50_speedup": round(cold_median / p50, 1) if p50 > 0 else None}
    save_result(result, out_dir, name)
    return result


def _seconds(runs: list[float]) -> dict[str, Any]:
    return {"median": round(float(np.median(runs)), 3), "min": round(min(runs), 3), "runs": [round(c, 3) for c in runs]}


def summary_text(result: dict[str, Any]) -> str:
    device = result.get("device", "cpu")
    cold = f"{result['cli_cold_identify_s']['median']:.2f} s median"
    if device != "cpu":
        cold = (f"{cold} with --device {device}, {result['cli_cold_identify_default_device_s']['median']:.2f} s on "
                "the default device")
    lines = [f"castkeep serve --device {device}, {result['clients']} clients x {result['requests_per_client']} requests "
             f"({result['workers'] or '?'} worker(s)); cold `castkeep identify`: {cold}; "
             f"one identify alone: {result['single_identify_ms']:.0f} ms"]
    for kind, phase in result["phases"].items():
        latency = phase["latency_ms"]
        lines.append(f"  {kind:<8} p50 {latency['p50']:.0f} ms  p90 {latency['p90']:.0f} ms  p99 {latency['p99']:.0f} ms  "
                     f"{phase['throughput_rps']:.1f} req/s  errors {phase['errors']}  answers unlike the CLI's "
                     f"{phase['mismatches']}")
    lines.append(f"  identify p50 under load is {result['identify_p50_speedup']}x faster than a cold CLI identify "
                 f"({result['cold_baseline_s']:.2f} s)")
    hostile = result["hostile"]
    lines.append("  bad uploads: " + ", ".join(f"{c['case']} -> {c['status']}" for c in hostile["cases"])
                 + f"; still serving: {'yes' if hostile['serving_after'] else 'NO'}")
    return "\n".join(lines)
