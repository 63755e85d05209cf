"""Generation and storyboard jobs over HTTP on the tiny SD1.5 FaceID weights and a real store: a generate job
streams its attempts as server-sent events and ends with scored outputs whose files are served; a storyboard
is cancelled between shots; bad plans, weights outside --models-dir, path traversal and missing tokens are
refused."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serve_helpers import make_client

from castkeep.identity.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.generation]

PEOPLE = ("Abdullah_Gul", "Adrien_Brody")
TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WEIGHTS = {"base_model": "tiny-sd15", "ip_adapter": "adapters/ip-adapter-faceid_sd15.bin"}


def plan_text(shots: int) -> str:
    lines = ['title = "Tiny"', "seed = 3", "[defaults]", "width = 64", "height = 64", "steps = 2"]
    for number in range(1, shots + 1):
        person = PEOPLE[number % 2]
        lines += ["[[shots]]", f'id = "s{number}"', f'prompt = "{person} shot {number}"', f'characters = ["{person}"]',
                  "best_of = 2"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def jobs_client(tmp_path_factory, tiny_models, faces_dir, fast_analyzer, buffalo_l_pack) -> Iterator[TestClient]:
    """An app with a token, whose store holds two people embedded in buffalo_l's space too (the adapter's),
    with the tiny weights under its --models-dir."""
    folder = tmp_path_factory.mktemp("jobs")
    with Store.open(folder / "store", analyzer=fast_analyzer, create=True) as store:
        for person in PEOPLE:
            store.register(person, sorted((faces_dir / "lfw_gallery" / person).glob("*.jpg"))[:3])
            store.reembed(person, models=buffalo_l_pack)
    with make_client(folder / "store", workers=1, token=TOKEN, runs=folder / "runs", models_dir=tiny_models["root"],
                     generation_device="cpu") as client:
        yield client


def events(client: TestClient, job_id: str) -> list[dict]:
    """The job's event stream read to its end (TestClient returns a streamed body once it is complete)."""
    answer = client.get(f"/api/jobs/{job_id}/events")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    return [json.loads(line[len("data: "):]) for line in answer.text.splitlines() if line.startswith("data: ")]


def wait(client: TestClient, job_id: str, until, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if until(job):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not get there: {job}")


def test_a_generate_job_streams_progress_and_serves_its_scored_outputs(jobs_client):
    body = {"character": PEOPLE[0], "prompt": "a portrait", "n": 2, "best_of": 3, "seed": 7, "steps": 2,
            "width": 64, "height": 64, **WEIGHTS}
    answer = jobs_client.post("/api/jobs/generate", json=body, headers=AUTH)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    stream = events(jobs_client, job_id)
    assert stream[0]["type"] == "snapshot"
    attempts = [e for e in stream if e["type"] == "attempt"]
    assert [(e["attempt"], e["of"]) for e in attempts] == [(1, 3), (2, 3), (3, 3)]
    assert stream[-1]["type"] == "state" and stream[-1]["state"] == "done", stream[-1]
    job = jobs_client.get(f"/api/jobs/{job_id}").json()
    assert job["state"] == "done" and len(job["results"]["outputs"]) == 2
    for output in job["results"]["outputs"]:
        assert set(output["verdicts"]) == {"arcface", "dlib", "fused"}
        if output["face_found"]:  # tiny random weights paint noise: most often no face, and no verdict
            assert output["verdicts"]["fused"]["scorer"] == "fused"
        image = jobs_client.get(output["file"])
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    sheet = jobs_client.get(job["results"]["contact_sheet"])
    assert sheet.status_code == 200 and sheet.headers["content-type"] == "image/png"
    late = events(jobs_client, job_id)  # a client connecting after the end hears the final state at once
    assert len(late) == 1 and late[0]["state"] == "done"
    assert job["run"] in [run["run"] for run in jobs_client.get("/api/runs").json()]


def test_a_cancelled_generation_keeps_the_best_of_the_attempts_made(jobs_client):
    body = {"character": PEOPLE[1], "prompt": "a portrait", "n": 1, "best_of": 40, "seed": 1, "steps": 2,
            "width": 64, "height": 64, **WEIGHTS}
    job_id = jobs_client.post("/api/jobs/generate", json=body, headers=AUTH).json()["id"]
    wait(jobs_client, job_id, lambda job: job["progress"] is not None)
    assert jobs_client.post(f"/api/jobs/{job_id}/cancel", headers=AUTH).status_code == 200
    job = wait(jobs_client, job_id, lambda job: job["state"] in ("done", "failed", "cancelled"))
    assert job["state"] == "cancelled" and len(job["results"]["outputs"]) == 1
    made = events(jobs_client, job_id)  # its snapshot: the last attempt heard
    assert made[0]["progress"]["attempt"] < 40


def test_a_cancelled_storyboard_stops_between_shots_and_its_ledger_stays_whole(jobs_client):
    answer = jobs_client.post("/api/jobs/storyboard", json={"plan": plan_text(8), **WEIGHTS}, headers=AUTH)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    wait(jobs_client, job_id, lambda job: job["progress"] is not None)  # the first shot is done
    assert jobs_client.post(f"/api/jobs/{job_id}/cancel", headers=AUTH).status_code == 200
    job = wait(jobs_client, job_id, lambda job: job["state"] in ("done", "failed", "cancelled"))
    assert job["state"] == "cancelled", job
    counts = job["results"]["counts"]
    assert 1 <= counts["done"] + counts["failed_target"] < 8
    report = jobs_client.get(job["results"]["report"])
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "sandbox" in report.headers["content-security-policy"]  # its inline style only; no script


def test_a_bad_plan_is_refused_with_its_shot_and_field(jobs_client):
    bad = plan_text(2).replace('shot 2"', 'shot 2"\nsteps = -1')
    answer = jobs_client.post("/api/jobs/storyboard", content=bad, headers={**AUTH, "Content-Type": "application/toml"})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "PlanError" and "shot 2" in error["message"] and "steps" in error["message"]
    assert str(Path("/")) + "tmp" not in error["message"]  # the server's folders stay its own


def test_run_files_cannot_leave_the_run_folder(jobs_client, tmp_path):
    runs = jobs_client.get("/api/runs").json()
    assert runs, "the generate test leaves a run"
    run = runs[0]["run"]
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    root = Path(jobs_client.app.state.castkeep.jobs.runs_root)
    (root / run / "link.json").symlink_to(secret)
    for path in ("../job.json", "..%2F..%2Fstore%2Fcastkeep.json", "%2Fetc%2Fpasswd", "%2E%2E/%2E%2E/x.json",
                 "link.json", "output/../../" + run + "/job.json/.."):
        answer = jobs_client.get(f"/api/runs/{run}/files/{path}")
        assert answer.status_code in (400, 404), (path, answer.status_code)
    assert jobs_client.get(f"/api/runs/..%2F{run}/files/job.json").status_code == 404
    assert jobs_client.get(f"/api/runs/{run}/files/job.json").status_code == 200


def test_weights_outside_the_models_folder_and_writes_without_the_token_are_refused(jobs_client, tiny_models):
    body = {"character": PEOPLE[0], "prompt": "a portrait"}
    for base in (str(tiny_models["pipeline"]), "../tiny-models0/tiny-sd15", "/etc", "~/x"):
        answer = jobs_client.post("/api/jobs/generate", json={**body, "base_model": base}, headers=AUTH)
        assert answer.status_code == 400, (base, answer.text)
    assert jobs_client.post("/api/jobs/generate", json=body).status_code == 401
    assert jobs_client.post("/api/jobs/storyboard", json={"plan": plan_text(1)}).status_code == 401
    assert jobs_client.post("/api/jobs/nothing/cancel").status_code == 401
    unknown = jobs_client.post("/api/jobs/generate", json={**body, "character": "Nobody"}, headers=AUTH)
    assert unknown.status_code == 404


def test_a_generate_job_takes_the_cli_s_per_run_knobs_and_refuses_bad_ones_before_queueing(jobs_client):
    body = {"character": PEOPLE[0], "prompt": "a portrait", "seed": 5, "steps": 2, "width": 64, "height": 64,
            "guidance": 3.0, "id_scale": 0.5, "lora_scale": 0.6, "scheduler": "euler", "scorer": "dlib", **WEIGHTS}
    answer = jobs_client.post("/api/jobs/generate", json=body, headers=AUTH)
    assert answer.status_code == 202, answer.text
    job = wait(jobs_client, answer.json()["id"], lambda job: job["state"] in ("done", "failed", "cancelled"))
    assert job["state"] == "done", job
    settings = jobs_client.get(job["results"]["summary"]).json()["settings"]
    assert {k: settings[k] for k in ("guidance", "id_scale", "lora_scale", "scheduler", "scorer")} == {
        "guidance": 3.0, "id_scale": 0.5, "lora_scale": 0.6, "scheduler": "euler", "scorer": "dlib"}
    queued = len(jobs_client.get("/api/jobs").json())
    for bad in ({"scheduler": "nope"}, {"lora_scale": 3}, {"aspect": "banana"}, {"scorer": "eyeball"}):
        refused = jobs_client.post("/api/jobs/generate", json={**body, **bad}, headers=AUTH)
        assert refused.status_code in (400, 422), (bad, refused.text)
        assert "detail" in refused.json() or "error" in refused.json(), refused.text
    assert len(jobs_client.get("/api/jobs").json()) == queued  # nothing queued for them
