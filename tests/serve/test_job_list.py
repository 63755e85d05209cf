"""The job list kept in the run folders, without running a job: a job the server died running twice fails
with a clear error, a record that is not a job is skipped, and one server per runs folder (the lock, its
error, and the exit code of a second `castkeep serve`). The real restart, with jobs killed mid-run, is in
test_restart.py."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from castkeep.errors import ServerBusyError
from castkeep.serve.jobs import JobManager
from castkeep.serve.runs_lock import RunsLock


def record(runs: Path, job_id: str, state: str, starts: int, sequence: int) -> Path:
    folder = runs / job_id
    folder.mkdir(parents=True)
    path = folder / "job.json"
    path.write_text(json.dumps({"id": job_id, "kind": "generate", "state": state, "starts": starts, "sequence": sequence,
                                "request": {"character": "Mara", "settings": {"prompt": "p"}}, "results": None,
                                "created": "2026-01-01T00:00:00+00:00", "progress": {"type": "attempt", "attempt": 2}}))
    return path


def manager(runs: Path) -> JobManager:
    return JobManager(runs, runs.parent / "store", None, "cpu", "auto")


def test_a_job_the_server_died_running_twice_fails_and_finished_ones_are_listed(tmp_path):
    runs = tmp_path / "runs"
    twice = record(runs, "20260101-000000-generate-aaaaaa", "running", 2, 1)
    record(runs, "20260101-000001-generate-bbbbbb", "done", 1, 2)
    (runs / "not-a-job").mkdir()
    (runs / "not-a-job" / "job.json").write_text("{broken")
    (runs / "other").mkdir()
    (runs / "other" / "job.json").write_text(json.dumps({"id": "elsewhere", "kind": "generate"}))
    jobs = manager(runs)
    try:
        assert set(jobs.jobs) == {"20260101-000000-generate-aaaaaa", "20260101-000001-generate-bbbbbb"}
        failed = jobs.jobs["20260101-000000-generate-aaaaaa"]
        assert failed.state == "failed" and "stopped 2 times" in failed.error and "not run again" in failed.error
        on_disk = json.loads(twice.read_text())
        assert on_disk["state"] == "failed" and on_disk["error"] == failed.error and on_disk["starts"] == 2
        done = jobs.jobs["20260101-000001-generate-bbbbbb"].snapshot()
        assert done["state"] == "done" and done["progress"] == {"type": "attempt", "attempt": 2}
    finally:
        jobs.close()


def test_one_server_per_runs_folder(tmp_path):
    runs = tmp_path / "runs"
    jobs = manager(runs)
    try:
        with pytest.raises(ServerBusyError, match=r"another castkeep serve \(pid \d+\) already uses this runs folder"):
            RunsLock.acquire(runs)
    finally:
        jobs.close()
    manager(runs).close()  # closing gave the folder back


def test_a_second_server_on_the_runs_folder_exits_with_one_line(invoke, tmp_path):
    lock = RunsLock.acquire(tmp_path / "runs")
    with socket.socket() as taken:  # were the lock not checked, the server would fail on this port, not serve on
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        try:
            result = invoke("serve", "--store", str(tmp_path / "store"), "--runs", str(tmp_path / "runs"),
                            "--port", str(taken.getsockname()[1]))
        finally:
            lock.release()
    assert result.returncode == ServerBusyError.exit_code == 22, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "another castkeep serve" in last and "--runs" in last and "Traceback" not in result.stderr
    assert not (tmp_path / "store").exists()  # refused before the store or the models are touched
