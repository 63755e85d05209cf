"""Generation and storyboard jobs (submit, list, state, progress as server-sent events, cancel) and the run
folders they write (listed, and their files served: PNG, JSON, report.html)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, Field

from ...errors import PlanError
from ..errors import ApiError, json_error_schema
from ..jobs import FINAL, Job, JobManager, new_job_id, run_results
from ..model_paths import job_weights
from ..security import require_writer, writer_responses
from ..state import state
from . import views

router = APIRouter(prefix=views.API, tags=["jobs"], responses={"4XX": json_error_schema()})
writes = [Depends(require_writer)]
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SERVED_SUFFIXES = {".png": "image/png", ".jpg": "image/jpeg", ".json": "application/json",
                   ".html": "text/html", ".toml": "text/plain", ".yaml": "text/plain"}
EVENT_POLL_S = 0.2
# GenerateJob fields that are GenerationConfig keywords of the same name.
RUN_SETTINGS = ("negative_prompt", "best_of", "min_score", "seed", "steps", "width", "height", "aspect", "guidance",
                "id_scale", "lora_scale", "s_scale", "scheduler", "scorer")


class GenerateJob(BaseModel):
    character: str = Field(min_length=1, max_length=200)
    prompt: str = Field(min_length=1, max_length=2000)
    negative_prompt: str | None = Field(default=None, max_length=2000)
    n: int = Field(default=1, ge=1, le=16, description="images kept")
    best_of: int | None = Field(default=None, ge=1, le=64)
    min_score: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    steps: int | None = Field(default=None, ge=1, le=150)
    width: int | None = Field(default=None, ge=64, le=2048)
    height: int | None = Field(default=None, ge=64, le=2048)
    aspect: str | None = Field(default=None, max_length=20)
    guidance: float | None = Field(default=None, ge=0, le=30, description="classifier-free guidance scale")
    id_scale: float | None = Field(default=None, ge=0, le=5, description="how strongly the identity conditions the UNet")
    lora_scale: float | None = Field(default=None, ge=0, le=2, description="weight of the FaceID LoRA (0.6-0.7 keeps "
                                                                             "prompts better than 1.0)")
    s_scale: float | None = Field(default=None, ge=0, le=5, description="FaceID Plus v2's shortcut scale")
    scheduler: str | None = Field(default=None, max_length=40)
    scorer: Literal["dlib", "fused", "arcface"] | None = Field(default=None, description="who judges and ranks outputs")
    base_model: str | None = Field(default=None, description="a Hugging Face id or a path under --models-dir")
    ip_adapter: str | None = Field(default=None, description="a Hugging Face id or a path under --models-dir")


def manager(request: Request) -> JobManager:
    jobs: JobManager = state(request).jobs
    return jobs


def _weights(request: Request, base_model: str | None, ip_adapter: str | None) -> tuple[str | None, str | None]:
    return job_weights(state(request).config, base_model, ip_adapter)


@router.post("/jobs/generate", status_code=202, dependencies=writes, responses=writer_responses(),
             summary="Queue a scored generation of a stored character")
def submit_generate(request: Request, body: GenerateJob) -> dict[str, Any]:
    from ...generation.config import GenerationConfig

    weights = _weights(request, body.base_model, body.ip_adapter)
    with state(request).store() as store:
        store.get(body.character)  # an unknown name is a 404 now, not a failed job later
    settings: dict[str, Any] = {"num_images": body.n}
    for name in RUN_SETTINGS:
        if getattr(body, name) is not None:
            settings[name] = getattr(body, name)
    GenerationConfig(prompt=body.prompt, **settings)  # a bad combination (size, scheduler, ...) is a 400 now, not a failed job
    jobs = manager(request)
    job_id = new_job_id("generate")
    job = Job(id=job_id, kind="generate", run_dir=jobs.runs_root / job_id, weights=weights,
              request={"character": body.character, "settings": {"prompt": body.prompt, **settings},
                       "base_model": body.base_model, "ip_adapter": body.ip_adapter})
    return jobs.submit(job).snapshot()


def _plan_text(content_type: str, raw: bytes) -> tuple[str, str, str | None, str | None]:
    """(plan text, suffix, base_model, ip_adapter) from a JSON body `{"plan": text|table, "format", ...}`, or
    a plan sent as it is (YAML when the content type says so, else TOML)."""
    if "json" not in content_type:
        return raw.decode("utf-8", errors="strict"), ".yaml" if "yaml" in content_type else ".toml", None, None
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, "the body is not JSON", type_name="PlanError", code=PlanError.exit_code) from None
    if not isinstance(body, dict) or "plan" not in body:
        raise ApiError(400, 'send {"plan": TOML or YAML text, or the plan as a JSON table}', type_name="PlanError",
                       code=PlanError.exit_code)
    plan, fmt = body["plan"], str(body.get("format", "toml")).lower()
    base_model, ip_adapter = body.get("base_model"), body.get("ip_adapter")
    if isinstance(plan, dict):
        import yaml

        return yaml.safe_dump(plan, sort_keys=False), ".yaml", base_model, ip_adapter
    if not isinstance(plan, str):
        raise ApiError(400, "plan: must be text or a table", type_name="PlanError", code=PlanError.exit_code)
    return plan, ".yaml" if fmt in ("yaml", "yml") else ".toml", base_model, ip_adapter


@router.post("/jobs/storyboard", status_code=202, dependencies=writes, responses=writer_responses(),
             summary="Queue a storyboard plan (TOML/YAML text, or JSON); a bad plan is refused with its shot and field")
async def submit_storyboard(request: Request) -> dict[str, Any]:
    from ...generation.storyboard.plan import load_plan

    try:
        text, suffix, base_model, ip_adapter = _plan_text(request.headers.get("content-type", ""), await request.body())
    except UnicodeDecodeError:
        raise ApiError(400, "the plan is not UTF-8 text", type_name="PlanError", code=PlanError.exit_code) from None
    weights = _weights(request, base_model, ip_adapter)
    jobs = manager(request)
    job_id = new_job_id("storyboard")
    run_dir = jobs.runs_root / job_id
    run_dir.mkdir(parents=True)
    plan_file = f"plan{suffix}"
    (run_dir / plan_file).write_text(text, encoding="utf-8")
    try:
        plan = load_plan(run_dir / plan_file)
    except PlanError as exc:  # the message names the shot and field; never the server's folder
        shutil.rmtree(run_dir, ignore_errors=True)
        raise ApiError(400, " ".join(str(exc.args[0]).split()), type_name="PlanError", code=exc.exit_code) from None
    job = Job(id=job_id, kind="storyboard", run_dir=run_dir, weights=weights,
              request={"plan_file": plan_file, "title": plan.title, "shots": len(plan.shots),
                       "base_model": base_model, "ip_adapter": ip_adapter})
    return jobs.submit(job).snapshot()


@router.get("/jobs", summary="Every job of this server, newest first")
def list_jobs(request: Request) -> list[dict[str, Any]]:
    return [job.snapshot() for job in sorted(manager(request).jobs.values(), key=lambda j: j.id, reverse=True)]


def _job(request: Request, job_id: str) -> Job:
    job = manager(request).jobs.get(job_id)
    if job is None:
        raise ApiError(404, f"no job {job_id!r}", type_name="NotFound")
    return job


@router.get("/jobs/{job_id}", summary="A job's state, progress and results (outputs with every scorer's verdict)")
def show_job(request: Request, job_id: str) -> dict[str, Any]:
    return _job(request, job_id).snapshot()


@router.post("/jobs/{job_id}/cancel", dependencies=writes, responses=writer_responses(),
             summary="Cancel a job: a queued one at once, a running one before its next attempt or shot")
def cancel_job(request: Request, job_id: str) -> dict[str, Any]:
    job = _job(request, job_id)
    if job.state not in FINAL:
        manager(request).cancel(job)
    return job.snapshot()


def _sse(event: dict[str, Any]) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


@router.get("/jobs/{job_id}/events", summary="Progress as server-sent events: the current state first, then each "
            "attempt or shot, then the final state", response_class=StreamingResponse)
async def job_events(request: Request, job_id: str) -> StreamingResponse:
    job = _job(request, job_id)

    async def stream() -> AsyncIterator[str]:
        seen = len(job.events)
        yield _sse({"type": "snapshot", **job.snapshot()})
        if job.state in FINAL:
            return
        while True:
            while seen < len(job.events):
                event = job.events[seen]
                seen += 1
                yield _sse(event)
                if event.get("final"):
                    return
            if await request.is_disconnected():
                return
            await asyncio.sleep(EVENT_POLL_S)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _run_dir(request: Request, run: str) -> Path:
    root = manager(request).runs_root.resolve()
    folder = (root / run).resolve() if RUN_NAME.match(run) else None
    if folder is None or folder.parent != root or not folder.is_dir():
        raise ApiError(404, f"no run {run!r}", type_name="NotFound")
    return folder


@router.get("/runs", summary="The run folders under the server's runs root, newest first")
def list_runs(request: Request) -> list[dict[str, Any]]:
    root = manager(request).runs_root
    if not root.is_dir():
        return []
    runs = []
    for folder in sorted((p for p in root.iterdir() if p.is_dir() and not p.is_symlink()), reverse=True):
        job_file = folder / "job.json"
        job = json.loads(job_file.read_text(encoding="utf-8")) if job_file.is_file() else None
        runs.append({"run": folder.name, "state": None if job is None else job.get("state"),
                     "kind": None if job is None else job.get("kind"), **run_results(folder)})
    return runs


@router.get("/runs/{run}/files/{path:path}", summary="One file of a run folder (PNG, JSON, report.html)")
def run_file(request: Request, run: str, path: str) -> FileResponse:
    folder = _run_dir(request, run)
    missing = ApiError(404, f"no file {path!r} in run {run!r}", type_name="NotFound")
    if not path or Path(path).is_absolute() or "\\" in path or "\x00" in path:
        raise missing
    try:  # resolving follows symlinks: one leading out of the run folder is refused like `..`
        target = (folder / path).resolve(strict=True)
    except (OSError, RuntimeError):
        raise missing from None
    if not target.is_relative_to(folder) or not target.is_file():
        raise missing
    media_type = SERVED_SUFFIXES.get(target.suffix.lower())
    if media_type is None:
        raise missing
    return FileResponse(target, media_type=media_type)
