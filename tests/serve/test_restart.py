"""Jobs survive the server: a real `castkeep serve` (tiny SD1.5 FaceID weights) is killed with SIGKILL while a
storyboard runs and a generation waits; started again, it re-queues both in order, the storyboard resumes from
its ledger (the shots finished before the kill are not made again) and the generation runs once. A second
server on the same runs folder is refused (exit 22), and a gentle stop (SIGTERM) leaves the running job queued."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from serve_helpers import LiveServer, free_port, start_server, stop_server

from castkeep.identity.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.subprocess, pytest.mark.generation]

PEOPLE = ("Abdullah_Gul", "Adrien_Brody")
TOKEN = "restart-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WEIGHTS = {"base_model": "tiny-sd15", "ip_adapter": "adapters/ip-adapter-faceid_sd15.bin"}
FINAL = ("done", "failed", "cancelled")


def plan_text(shots: int) -> str:
    lines = ['title = "Restart"', "seed = 5", "[defaults]", "width = 64", "height = 64", "steps = 2", "best_of = 2"]
    for number in range(1, shots + 1):
        person = PEOPLE[number % 2]
        lines += ["[[shots]]", f'id = "s{number}"', f'prompt = "{person} shot {number}"', f'characters = ["{person}"]']
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_models, faces_dir, fast_analyzer, buffalo_l_pack) -> tuple[Path, list[str]]:
    """A store of two people (in buffalo_l's space too: the adapter's) and the server's arguments."""
    folder = tmp_path_factory.mktemp("restart")
    with Store.open(folder / "store", analyzer=fast_analyzer, create=True) as store:
        for person in PEOPLE:
            store.register(person, sorted((faces_dir / "lfw_gallery" / person).glob("*.jpg"))[:3])
            store.reembed(person, models=buffalo_l_pack)
    args = ["--token", TOKEN, "--runs", str(folder / "runs"), "--models-dir", str(tiny_models["root"]),
            "--generation-device", "cpu", "--workers", "1"]
    return folder, args


def job(server: LiveServer, job_id: str) -> dict:
    answer = httpx.get(f"{server.url}/api/jobs/{job_id}", timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait(server: LiveServer, job_id: str, until, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = job(server, job_id)
        if until(found):
            return found
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not get there: {found}")


def submit(server: LiveServer, kind: str, body: dict) -> str:
    answer = httpx.post(f"{server.url}/api/jobs/{kind}", json=body, headers=AUTH, timeout=60)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def ledger_attempts(run_dir: Path) -> tuple[set[tuple], dict[str, str]]:
    """(every attempt row: shot, attempt, session, file hash, time; each shot's state) from the run's ledger."""
    with sqlite3.connect(run_dir / "ledger.sqlite3") as connection:
        rows = set(connection.execute("SELECT shot, attempt, session, sha256, created_at FROM attempts"))
        shots = dict(connection.execute("SELECT id, state FROM shots"))
    return rows, shots


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "job.json").read_text(encoding="utf-8"))


def test_jobs_survive_a_kill_9_and_run_once(studio):
    folder, args = studio
    runs = folder / "runs"
    server = start_server(folder / "store", folder / "first.log", *args, timeout=180)
    try:
        # One server per runs folder: a second one stops at once, with one line and its own exit code.
        second = subprocess.run([sys.executable, "-m", "castkeep", "serve", "--store", str(folder / "store"),
                                 "--port", str(free_port()), *args], capture_output=True, text=True, timeout=120)
        assert second.returncode == 22, second.stderr
        assert "another castkeep serve" in second.stderr.strip().splitlines()[-1]
        storyboard = submit(server, "storyboard", {"plan": plan_text(12), **WEIGHTS})
        generate = submit(server, "generate", {"character": PEOPLE[0], "prompt": "a portrait", "n": 1, "best_of": 2,
                                               "seed": 11, "steps": 2, "width": 64, "height": 64, **WEIGHTS})
        assert job(server, generate)["state"] == "queued"
        wait(server, storyboard, lambda j: (j["progress"] or {}).get("shot", 0) >= 2)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=30)
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
    # What the kill left: the storyboard running (some shots finished, in its ledger), the generation queued.
    assert record(runs / storyboard)["state"] == "running" and record(runs / storyboard)["starts"] == 1
    assert record(runs / generate)["state"] == "queued" and record(runs / generate)["starts"] == 0
    before, shots_before = ledger_attempts(runs / storyboard)
    finished_before = {shot for shot, state in shots_before.items() if state in ("done", "failed-target")}
    assert 1 <= len(finished_before) < 12, shots_before
    assert not (runs / generate / "output").exists()

    server = start_server(folder / "store", folder / "second.log", *args, timeout=180)
    try:
        listed = {j["id"]: j for j in httpx.get(f"{server.url}/api/jobs", timeout=30).json()}
        assert {storyboard, generate} <= set(listed)
        done_board = wait(server, storyboard, lambda j: j["state"] in FINAL)
        done_generate = wait(server, generate, lambda j: j["state"] in FINAL)
        assert done_board["state"] == "done" and done_generate["state"] == "done", (done_board, done_generate)
        # Both still listed with their results once finished.
        again = {j["id"]: j for j in httpx.get(f"{server.url}/api/jobs", timeout=30).json()}
        assert again[storyboard]["results"]["counts"]["shots"] == 12
        assert len(again[generate]["results"]["outputs"]) == 1

        # The storyboard resumed: every shot finished once, and the ones finished before the kill were left alone.
        after, shots_after = ledger_attempts(runs / storyboard)
        assert all(state in ("done", "failed-target") for state in shots_after.values()) and len(shots_after) == 12
        assert {row for row in after if row[0] in finished_before} == {row for row in before if row[0] in finished_before}
        assert record(runs / storyboard)["starts"] == 2  # started again once
        # The generation ran once, after the storyboard (queued again in submission order).
        assert record(runs / generate)["starts"] == 1
        board_end = (runs / storyboard / "summary.json").stat().st_mtime
        assert board_end <= (runs / generate / "output" / "summary.json").stat().st_mtime

        # A gentle stop (SIGTERM) interrupts the running job between shots and leaves it queued, not cancelled.
        gentle = submit(server, "storyboard", {"plan": plan_text(12), **WEIGHTS})
        wait(server, gentle, lambda j: (j["progress"] or {}).get("shot", 0) >= 1)
    finally:
        stop_server(server)
    # uvicorn ends by raising the signal again once it has shut down: the log says the shutdown ran through.
    assert server.process.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in (folder / "second.log").read_text(encoding="utf-8")
    assert record(runs / gentle)["state"] == "queued" and record(runs / gentle)["starts"] == 0
