"""Generation and storyboard jobs: queued, run one at a time in a background thread (a GPU holds one
pipeline), each into its own run folder under the runs root, with progress events for server-sent events.

The last pipeline loaded stays warm for the next job with the same (base model, adapter, device, dtype).
Cancelling is cooperative: a generation stops after its current batch and keeps the best of the attempts made,
a storyboard stops before its next shot (its ledger holds whole shots, so `castkeep storyboard PLAN --out RUN` resumes it later).

The job list is durable: each job's `job.json` in its run folder is rewritten at every change of state
(queued, running, final; serve/job_records.py), and a server starting on the runs folder re-reads them all
(serve/runs_lock.py keeps it to one server per folder). Queued jobs queue again in the order they were
submitted; a job that was running when the server died runs again once (a storyboard resumes from its ledger,
a generation starts its output folder afresh), and fails with a clear error if it was already run again once.
A server stopped gently (SIGTERM, Ctrl-C) interrupts its running job like a cancel, and leaves it queued.
"""

from __future__ import annotations

import logging
import queue
import secrets
import shutil
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import CastkeepError
from ..utils import utc_now
from . import job_records
from .runs_lock import RunsLock

log = logging.getLogger("castkeep.serve")

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL = frozenset({"done", "failed", "cancelled"})
SCORERS = ("arcface", "dlib", "fused")
MAX_STARTS = 2  # a job the server died running runs once more; dying again, it fails (it may be what kills it)

# The weights a job runs with, from the names in its request: the server's own rule (serve/model_paths.py),
# applied again when a restarted server re-queues a job (its --models-dir may have changed).
WeightsResolver = Callable[[str | None, str | None], tuple[str | None, str | None]]


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
    sequence: int = 0  # submission order, across restarts
    starts: int = 0  # how many times a worker started it (2: the server died running it once already)
    saved_progress: dict[str, Any] | None = None  # the last progress of a job read back from its record

    def snapshot(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "state": self.state, "error": self.error, "created": self.created,
                "request": self.request, "run": self.run_dir.name, "progress": self.progress(),
                "results": self.results, "events_url": f"/api/jobs/{self.id}/events"}

    def progress(self) -> dict[str, Any] | None:
        steps = [e for e in self.events if e["type"] in ("attempt", "shot")]
        return steps[-1] if steps else self.saved_progress

    def record(self) -> dict[str, Any]:
        """What job.json holds: the snapshot and the bookkeeping a restarted server needs."""
        snapshot = {k: v for k, v in self.snapshot().items() if k != "events_url"}
        return {**snapshot, "sequence": self.sequence, "starts": self.starts}

    @classmethod
    def from_record(cls, record: dict[str, Any], runs_root: Path) -> Job:
        return cls(id=record["id"], kind=record["kind"], request=dict(record.get("request") or {}),
                   run_dir=runs_root / record["id"], weights=(None, None), state=record.get("state", "queued"),
                   error=record.get("error"), created=record.get("created") or utc_now(), results=record.get("results"),
                   sequence=int(record.get("sequence") or 0), starts=int(record.get("starts") or 0),
                   saved_progress=record.get("progress"))


def new_job_id(kind: str) -> str:
    return f"{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}-{kind}-{secrets.token_hex(3)}"


class JobManager:
    """The queue, the worker thread, and the one warm pipeline; the job list, read back from the runs folder
    at start (which this manager locks: one server per runs folder)."""

    def __init__(self, runs_root: Path, store_path: Path | str, models: str | None, device: str, dtype: str,
                 weights: WeightsResolver | None = None, runs_lock: RunsLock | None = None) -> None:
        self.runs_root, self.store_path, self.models = runs_root, store_path, models
        self.device, self.dtype = device, dtype
        self._resolve_weights = weights or (lambda base, adapter: (base, adapter))
        self.jobs: dict[str, Job] = {}
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._stopping = threading.Event()  # the server is shutting down: interrupt, but do not cancel
        self._warm: tuple[tuple[Any, ...], Any] | None = None  # (key, Generator): a cache of one
        self._runs_lock = runs_lock or RunsLock.acquire(runs_root)
        self._sequence = 0
        try:
            restored = self._restore()
        except BaseException:
            self._runs_lock.release()
            raise
        self.requeued = [job.id for job in restored]  # for the start-up line
        self._thread = threading.Thread(target=self._work, name="castkeep-jobs", daemon=True)
        self._thread.start()
        for job in restored:
            self._queue.put(job)

    def _restore(self) -> list[Job]:
        """The jobs of the runs folder's records: final ones listed, queued ones (and, once, ones the server
        died running) to queue again, in submission order."""
        again = []
        for record in job_records.load_all(self.runs_root):
            job = Job.from_record(record, self.runs_root)
            self._sequence = max(self._sequence, job.sequence)
            self.jobs[job.id] = job
            if job.state in FINAL:
                continue
            if job.state == "running" and job.starts >= MAX_STARTS:
                self._finish(job, "failed", f"the server stopped {job.starts} times while running this job; it is "
                                            f"not run again (submit it again to retry)")
                continue
            try:
                job.weights = self._resolve_weights(job.request.get("base_model"), job.request.get("ip_adapter"))
            except CastkeepError as exc:  # the restarted server's --models-dir no longer allows these weights
                self._finish(job, "failed", str(exc))
                continue
            restarted = job.state == "running"
            job.state = "queued"
            self._emit(job, {"type": "state", "state": "queued", "restarted": restarted})
            self._save(job)
            again.append(job)
            log.info("job %s queued again after a restart%s", job.id, " (it was running)" if restarted else "")
        return again

    # ------------------------------------------------------------------------------ client side
    def submit(self, job: Job) -> Job:
        with self._lock:
            self._sequence += 1
            job.sequence = self._sequence
            self.jobs[job.id] = job
            self._save(job)  # on disk before it is queued: a crash from here on leaves it queued
        self._emit(job, {"type": "state", "state": "queued"})
        self._queue.put(job)
        return job

    def cancel(self, job: Job) -> None:
        job.cancel_requested.set()
        with self._lock:
            if job.state == "queued":
                self._finish(job, "cancelled")

    def close(self) -> None:
        """Stop the worker: the running job is interrupted as a cancel would (a generation after its current
        attempt, a storyboard between shots) and left queued, like the waiting ones, for the next start."""
        self._stopping.set()
        self._queue.put(None)
        self._thread.join(timeout=30)
        self._warm = None
        self._runs_lock.release()

    # ------------------------------------------------------------------------------ worker side
    def _emit(self, job: Job, event: dict[str, Any]) -> None:
        job.events.append({**event, "job": job.id, "time": round(time.time(), 3)})

    def _save(self, job: Job) -> None:
        job_records.save(job.run_dir, job.record())

    def _finish(self, job: Job, state: str, error: str | None = None) -> None:
        job.state, job.error = state, error
        self._emit(job, {"type": "state", "state": state, "error": error, "final": True})
        self._save(job)

    def _interrupted(self, job: Job) -> bool:
        """Whether a run that just returned was stopped by the server shutting down (not by a client's cancel):
        if so the job is queued again on disk, and this start does not count against its restarts."""
        if not self._stopping.is_set() or job.cancel_requested.is_set():
            return False
        job.state, job.starts = "queued", job.starts - 1
        self._save(job)
        log.info("job %s interrupted by the shutdown; it runs again at the next start", job.id)
        return True

    def _work(self) -> None:
        while (job := self._queue.get()) is not None and not self._stopping.is_set():
            with self._lock:
                if job.state != "queued":
                    continue  # cancelled while waiting
                job.state = "running"
                job.starts += 1
                self._save(job)  # a crash from here on: the next start knows it was running
            self._emit(job, {"type": "state", "state": "running"})
            try:
                job.results = self._run(job)
                if self._interrupted(job):
                    break
                self._finish(job, "cancelled" if job.cancel_requested.is_set() else "done")
            except CastkeepError as exc:
                if self._interrupted(job):
                    break
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

    def _stop_asked(self, job: Job) -> Callable[[], bool]:
        return lambda: job.cancel_requested.is_set() or self._stopping.is_set()

    def _generate(self, job: Job) -> dict[str, Any]:
        from ..generation.runner import Attempt

        # A generation has no ledger: one the server died running starts again from an empty output folder.
        shutil.rmtree(job.run_dir / "output", ignore_errors=True)

        settings = dict(job.request["settings"])
        total = settings.get("best_of") or settings.get("num_images", 1)

        def on_attempt(attempt: Attempt) -> None:
            self._emit(job, {"type": "attempt", "attempt": attempt.attempt + 1, "of": total, "seed": attempt.seed,
                             "passed": attempt.passed, "score": attempt.score.to_dict()})

        generator = self.generator(*job.weights)
        generator.generate(job.request["character"], store=self.store_path, models=self.models,
                                    out_dir=job.run_dir / "output", on_attempt=on_attempt,
                           cancel=self._stop_asked(job), **settings)
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
                       on_shot=on_shot, cancel=self._stop_asked(job),
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
