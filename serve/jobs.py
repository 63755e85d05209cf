"""Generation and storyboard jobs: queued, run one at a time in a background thread (a GPU holds one
pipeline), each into its own run folder under the runs root, with progress events for server-sent events.

The last pipeline loaded stays warm for the next job with the same (base model, adapter, device, dtype).
Cancelling is cooperative: a generation stops after its current batch and keeps the best of the attempts made,
a storyboard stops before its next shot (its ledger holds whole shots, so `castkeep storyboard PLAN --out RUN` resumes it later).
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import CastkeepError
from ..utils import utc_now, write_json_atomic

log = logging.getLogger("castkeep.serve")

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL = frozenset({"done", "failed", "cancelled"})
SCORERS = ("arcface", "dlib", "fused")
JOB_FILE = "job.json"  # in each run folder: what was asked, and how it ended


@dataclass
class Job:
    id: str
    kind: str  # "generate" or "storyboard"
    request: dict[str, Any]
    run_dir: Path
    weights: tuple[str | None, str | None]
    state: str = "queued"
    error: str | None = None
    created: str = field(default_factory=utc_now)
    events: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, Any] | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)

    def snapshot(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "state": self.state, "error": self.error, "created": self.created,
                "request": self.request, "run": self.run_dir.name, "progress": self.progress(),
                "results": self.results, "events_url": f"/api/jobs/{self.id}/events"}

    def progress(self) -> dict[str, Any] | None:
        steps = [e for e in self.events if e["type"] in ("attempt", "shot")]
        return steps[-1] if steps else None


def new_job_id(kind: str) -> str:
    return f"{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}-{kind}-{secrets.token_hex(3)}"


class JobManager:
    """The queue, the worker thread, and the one warm pipeline."""

    def __init__(self, runs_root: Path, store_path: Path | str, models: str | None, device: str, dtype: str) -> None:
        self.runs_root, self.store_path, self.models = runs_root, store_path, models
        self.device, self.dtype = device, dtype
        self.jobs: dict[str, Job] = {}
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._warm: tuple[tuple[Any, ...], Any] | None = None  # (key, Generator): a cache of one
        self._thread = threading.Thread(target=self._work, name="castkeep-jobs", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------ client side
    def submit(self, job: Job) -> Job:
        with self._lock:
            self.jobs[job.id] = job
        self._emit(job, {"type": "state", "state": "queued"})
        self._queue.put(job)
        return job

    def cancel(self, job: Job) -> None:
        job.cancel_requested.set()
        with self._lock:
            if job.state == "queued":
                self._finish(job, "cancelled")

    def close(self) -> None:
        for job in list(self.jobs.values()):
            job.cancel_requested.set()
        self._queue.put(None)
        self._thread.join(timeout=30)
        self._warm = None

    # ------------------------------------------------------------------------------ worker side
    def _emit(self, job: Job, event: dict[str, Any]) -> None:
        job.events.append({**event, "job": job.id, "time": round(time.time(), 3)})

    def _finish(self, job: Job, state: str, error: str | None = None) -> None:
        job.state, job.error = state, error
        self._emit(job, {"type": "state", "state": state, "error": error, "final": True})
        try:
            job.run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(job.run_dir / JOB_FILE, {k: v for k, v in job.snapshot().items() if k != "events_url"})
        except OSError:
            log.exception("cannot write %s", job.run_dir / JOB_FILE)

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            with self._lock:
                if job.state != "queued":
                    continue  # cancelled while waiting
                job.state = "running"
            self._emit(job, {"type": "state", "state": "running"})
            try:
                job.results = self._run(job)
                self._finish(job, "cancelled" if job.cancel_requested.is_set() else "done")
            except CastkeepError as exc:
                self._finish(job, "failed", str(exc))
            except Exception as exc:  # a bug: the log has it, the job says so, the server goes on
                log.error("job %s failed:\n%s", job.id, traceback.format_exc())
                self._finish(job, "failed", f"internal error ({type(exc).__name__}); the server log has the traceback")

    def generator(self, base: str | None, adapter: str | None) -> Any:
        """The pipeline for these weights, loaded once and kept until other weights are asked for."""
        from ..generation.generator import Generator, weights_specs

        key = (*weights_specs(base, adapter), self.device, self.dtype)
        if self._warm is None or self._warm[0] != key:
            self._warm = None  # release the old pipeline before loading the next
            self._warm = (key, Generator.from_pretrained(key[0], key[1], device=self.device, dtype=self.dtype))
        return self._warm[1]

    def _run(self, job: Job) -> dict[str, Any]:
        return self._generate(job) if job.kind == "generate" else self._storyboard(job)

    def _generate(self, job: Job) -> dict[str, Any]:
        from ..generation.runner import Attempt

        settings = dict(job.request["settings"])
        total = settings.get("best_of") or settings.get("num_images", 1)

        def on_attempt(attempt: Attempt) -> None:
            self._emit(job, {"type": "attempt", "attempt": attempt.attempt + 1, "of": total, "seed": attempt.seed,
                             "passed": attempt.passed, "score": attempt.score.to_dict()})

        generator = self.generator(*job.weights)
        generator.generate(job.request["character"], store=self.store_path, models=self.models,
                                    out_dir=job.run_dir / "output", on_attempt=on_attempt,
                           cancel=job.cancel_requested.is_set, **settings)
        return run_results(job.run_dir)

    def _storyboard(self, job: Job) -> dict[str, Any]:
        from ..generation.storyboard.plan import load_plan
        from ..generation.storyboard.runner import ShotEvent, run_storyboard

        def on_shot(event: ShotEvent) -> None:
            self._emit(job, {"type": "shot", "shot": event.index, "of": event.total, "id": event.shot.id,
                             "outcome": event.outcome, "probability": event.probability})

        plan = load_plan(job.run_dir / job.request["plan_file"])
        run_storyboard(plan, out_dir=job.run_dir, store=self.store_path, base_model=job.weights[0],
                       ip_adapter=job.weights[1], device=self.device, dtype=self.dtype, models=self.models,
                       on_shot=on_shot, cancel=job.cancel_requested.is_set,
                       generator=self.generator(*job.weights))
        return run_results(job.run_dir)


def _link(run: str, file: str) -> str:
    return f"/api/runs/{run}/files/{file}"


def verdicts(score: dict[str, Any]) -> dict[str, Any]:
    """Each scorer's verdict on an output (None where it could not judge: no face, or no stored crops)."""
    given = score.get("scores") or {}
    return {name: given.get(name) for name in SCORERS}


def run_results(run_dir: Path) -> dict[str, Any]:
    """What a run folder holds, for the page: outputs with every scorer's verdict, and links to its files."""
    import json

    run = run_dir.name
    results: dict[str, Any] = {"run": run, "files_url": f"/api/runs/{run}/files/"}
    summary_path = run_dir / "output" / "summary.json"
    if summary_path.is_file():  # a generation
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        results.update(kind="generate", target_met=summary.get("target_met"),
                       contact_sheet=_link(run, f"output/{summary['contact_sheet']}"),
                       summary=_link(run, "output/summary.json"),
                       outputs=[{"file": _link(run, f"output/{o['file']}"), "rank": o["rank"], "seed": o["seed"],
                                 "score": o["score"].get("score"), "same": o["score"].get("same"),
                                 "face_found": o["score"].get("face_found"), "verdicts": verdicts(o["score"])}
                                for o in summary["outputs"]])
    elif (run_dir / "summary.json").is_file():  # a storyboard
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        results.update(kind="storyboard", report=_link(run, "report.html"), summary=_link(run, "summary.json"),
                       counts=summary.get("counts"),
                       shots=[{"id": s["id"], "number": s["number"], "state": s["state"], "score": s.get("score"),
                               "files": [_link(run, k["file"]) for k in s.get("kept") or [] if "file" in k]}
                              for s in summary["shots"]])
    return results
