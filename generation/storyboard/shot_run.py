"""The driver's side of one shot: which pipeline calls it still needs, writing every take that comes back,
then keeping the best. In-process and on Ray alike this is the only code that writes a shot's files and
ledger rows; a worker only makes takes (worker.py), and on Ray marks them.

The files are written by a background writer (generation/background_writer.py) while the pipeline makes
the next images: `record` queues each take (marked there unless a Ray worker marked it), `finish` queues
the kept copies, and `complete` — called once they are written, while the next shot runs — records the
shot as finished. A take's ledger row is written on this thread as soon as its files are complete
(`collect`), so the ledger never counts a file that is not whole, and a shot is done only after its kept
files are; a write that fails is raised here as a GenerationError naming the shot and the file.

A shot's takes come from the ledger where their files are intact, so a request is made only for the
batches that are missing, with the seeds the plan gives them: a resumed shot, or one whose worker died,
ends with the same pixels as one never interrupted.

Each shot's time is split as it runs (ShotTiming) and kept in its ledger row: the pipeline, scoring,
castkeep's files and ledger, the rest of castkeep's own work, and (on Ray) the time between the driver
sending a request and having its result, beyond the worker's own time. `castkeep bench series` reads it.
The overhead is what holds the pipeline up: for files, the driver's time queueing them and waiting for
them; the writer thread's own time beside the pipeline is `background_s`, apart.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ...errors import CastkeepError, GenerationError
from ..background_writer import BackgroundWriter
from ..runner import next_attempts
from .board import Storyboard
from .files import forget_shot_files, write_kept, write_take
from .ledger import FAILED_TARGET, AttemptRow, Ledger
from .plan import Shot
from .shot import Take
from .worker import TakeBatch, TakeRequest

logger = logging.getLogger("castkeep.generation")
SKIPPED = "skipped"
T = TypeVar("T")


def select_takes(attempts: list[AttemptRow], count: int) -> list[AttemptRow]:
    """Passing takes first, then the judge's log-odds of the weakest character, then the earlier take."""
    return sorted(attempts, key=lambda a: (a.passed, a.value, -a.attempt), reverse=True)[:count]


@dataclass
class ShotTiming:
    """Where a shot's time went, in the session that finished it (seconds)."""

    images: int = 0  # generated in this session
    pipeline_s: float = 0.0
    scoring_s: float = 0.0
    files_s: float = 0.0  # takes, kept copies, sidecars, hashing reused files: the driver's time on them
    background_s: float = 0.0  # the writer thread's time on this shot's files, beside the pipeline
    ledger_s: float = 0.0
    driver_s: float = 0.0  # all of the driver's work on the shot (files and ledger included)
    worker_s: float = 0.0  # the workers' whole calls (pipeline and scoring included)
    round_trip_s: float = 0.0  # from sending each request to having its result
    workers: list[str] = field(default_factory=list)
    requeued: int = 0  # requests given to another worker after theirs died

    def to_dict(self, wall_s: float) -> dict[str, Any]:
        other = max(0.0, self.driver_s - self.files_s - self.ledger_s) + max(
            0.0, self.worker_s - self.pipeline_s - self.scoring_s)
        values = {"pipeline_s": self.pipeline_s, "scoring_s": self.scoring_s, "files_s": self.files_s,
                  "ledger_s": self.ledger_s, "other_s": other, "overhead_s": self.files_s + self.ledger_s + other,
                  "transfer_s": max(0.0, self.round_trip_s - self.worker_s), "background_s": self.background_s,
                  "wall_s": wall_s}
        return {"images": self.images, **{key: round(value, 5) for key, value in values.items()},
                "workers": self.workers, "requeued": self.requeued}


class ShotRun:
    """One shot of a run, on the driver: begin, then `next_request` / `record` until it returns None, then
    `finish` (or `fail`)."""

    def __init__(self, board: Storyboard, ledger: Ledger, shot: Shot, writer: BackgroundWriter | None = None) -> None:
        self.board = board
        self.ledger = ledger
        self.shot = shot
        self.writer = writer  # None: every file is written before `record` / `finish` return
        self.timing = ShotTiming()
        self.started = time.perf_counter()
        self.active_s = 0.0  # the driver's time on this shot up to `finish` (wall_s: plus `complete`)
        self.made: list[AttemptRow] = []  # written and in the ledger
        # queued takes, in order: (attempt, seed, passed) and the write's outcome; the image goes with the job
        self.pending: list[tuple[tuple[int, int, bool], Future[AttemptRow]]] = []
        self.kept: Future[list[dict[str, Any]]] | None = None  # the kept copies, queued by `finish`
        self.known: dict[int, AttemptRow] = {}
        self.deaths = 0  # workers that died holding one of its requests

    @contextmanager
    def _timed(self, kind: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            setattr(self.timing, kind, getattr(self.timing, kind) + time.perf_counter() - started)

    def begin(self, *, retry_failed: bool = False) -> str | None:
        """Mark the shot running and find its intact takes; or "skipped" when it is finished already."""
        shot, run_dir = self.shot, self.board.run_dir
        with self._timed("driver_s"):
            self.key = self.board.key(shot)
            with self._timed("ledger_s"):
                previous = self.ledger.shot(shot.id)
            if previous is not None and previous.key == self.key:
                with self._timed("files_s"):
                    intact = previous.intact(run_dir)
                if intact:
                    if not (retry_failed and previous.state == FAILED_TARGET):
                        return SKIPPED
                    with self._timed("ledger_s"):
                        self.ledger.add_round(shot.id)
            elif previous is not None:
                logger.info("%s changed since the last run: generating it again", shot.where)
                with self._timed("files_s"):
                    forget_shot_files(run_dir, shot, previous.kept)
            with self._timed("ledger_s"):
                row = self.ledger.begin_shot(shot.id, shot.number, self.key)
                attempts = self.ledger.attempts(shot.id)
            self.config = self.board.config(shot, row.rounds)
            self.width, self.height = self.board.sizes[shot.id]
            for number, attempt in attempts.items():
                with self._timed("files_s"):
                    intact = attempt.intact(run_dir)
                if intact:
                    self.known[number] = attempt
                else:  # cut short or changed since: it is made again, with the same seed
                    with self._timed("ledger_s"):
                        self.ledger.forget_attempt(shot.id, number)
        return None

    def next_request(self) -> TakeRequest | None:
        """The next pipeline call the shot needs (batches whose takes are all intact are reused), or None
        when it has all its takes."""
        with self._timed("driver_s"):
            made = len(self.made) + len(self.pending)
            passing = sum(a.passed for a in self.made) + sum(passed for (_, _, passed), _ in self.pending)
            while batch := next_attempts(self.config, made, passing):
                if all(number in self.known for number in batch):
                    reused = [self.known[number] for number in batch]
                    self.made += reused
                    made, passing = made + len(reused), passing + sum(a.passed for a in reused)
                    continue
                return TakeRequest(self.shot, self.config, tuple(batch), self.width, self.height,
                                   watermark=self.board.mark_on_workers)
        return None

    def record(self, batch: TakeBatch, round_trip_s: float) -> None:
        """Queue each take of a request for writing (PNG and sidecar; its ledger row once they are whole),
        and record the takes written meanwhile."""
        timing = self.timing
        timing.worker_s += batch.call_s
        timing.round_trip_s += round_trip_s
        if batch.worker not in timing.workers:
            timing.workers.append(batch.worker)
        with self._timed("driver_s"):
            with self._timed("ledger_s"):
                self.ledger.count_pipeline_call(len(batch.takes))
            for take in batch.takes:
                timing.images += 1
                timing.pipeline_s += take.pipeline_s
                timing.scoring_s += take.scoring_s
                with self._timed("files_s"):  # waits only while the writer's queue is full
                    job = functools.partial(self._write_take, take, batch.settings, batch.adapter_inputs)
                    self.pending.append(((take.attempt, take.seed, take.passed), self._submit(job)))
        self.collect()

    def _write_take(self, take: Take, settings: dict[str, Any],
                    adapter_inputs: dict[str, Any] | None = None) -> AttemptRow:
        """On the writer thread: mark (unless a Ray worker did), write, hash. `adapter_inputs`: what the
        worker gave the adapter for each character (models.adapter_inputs of the sidecar)."""
        started = time.perf_counter()
        models = {**self.board.models, "adapter_inputs": adapter_inputs}
        written = write_take(self.board.run_dir, self.shot, self.config, take, self.board.identities, settings,
                             models, self.board.provenance)
        written.write_s = time.perf_counter() - started
        self.timing.background_s += written.write_s
        return written

    def _submit(self, job: Callable[[], T]) -> Future[T]:
        if self.writer is not None:
            return self.writer.submit(job)
        future: Future[T] = Future()
        try:
            future.set_result(job())
        except Exception as exc:
            future.set_exception(exc)
        return future

    def _result(self, future: Future[T], what: str) -> T:
        """A queued write's outcome; its failure as the shot's GenerationError (a castkeep error keeps its
        class), which ends the run: nothing after it is recorded."""
        try:
            return future.result()
        except CastkeepError as exc:
            raise type(exc)(f"{self.shot.where}: writing {what}: {exc}") from exc
        except Exception as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
            raise GenerationError(f"{self.shot.where}: cannot write {what} ({reason}); the ledger records no "
                                  "file that is not whole: fix it and run the same command to resume",
                                  path=self.board.run_dir) from exc

    def collect(self, *, wait: bool = False) -> None:
        """Record the takes whose files are whole, in order (`wait`: all of them, waiting for the writer)."""
        while self.pending and (wait or self.pending[0][1].done()):
            (attempt, seed, _), future = self.pending[0]
            with self._timed("driver_s"):
                with self._timed("files_s"):
                    written = self._result(future, f"take {attempt + 1} (seed {seed})")
                with self._timed("ledger_s"):
                    self.ledger.record_attempt(self.shot.id, self.key, written)
            self.pending.pop(0)
            self.made.append(written)

    def finish(self) -> None:
        """Queue the kept take(s)' copies to shots/; `complete` marks the shot done once they are written."""
        with self._timed("driver_s"):
            made, queued = list(self.made), [future for _, future in self.pending]

            def write_kept_copies() -> list[dict[str, Any]]:  # on the writer thread, after the takes
                started = time.perf_counter()
                attempts = sorted(made + [future.result() for future in queued], key=lambda a: a.attempt)
                kept = select_takes(attempts, self.config.num_images)
                entries = write_kept(self.board.run_dir, self.shot, self.config, kept, attempts)
                self.timing.background_s += time.perf_counter() - started
                return entries

            with self._timed("files_s"):
                self.kept = self._submit(write_kept_copies)
        self.active_s = time.perf_counter() - self.started

    @property
    def written(self) -> bool:
        """Every file `finish` queued is written (or failed): `complete` will not wait."""
        return self.kept is not None and self.kept.done()

    def complete(self) -> str:
        """Record the shot's takes and mark it done (or below target), once its files are whole."""
        assert self.kept is not None, "finish() first"
        started = time.perf_counter()
        self.collect(wait=True)
        with self._timed("driver_s"):
            with self._timed("files_s"):
                entries = self._result(self.kept, "its kept copies")
            kept = select_takes(self.made, self.config.num_images)
        target_met = all(a.passed for a in kept)
        timing = self.timing.to_dict(self.active_s + time.perf_counter() - started)
        self.ledger.finish_shot(self.shot.id, target_met=target_met, kept=entries, timing=timing)
        return "done" if target_met else FAILED_TARGET

    def fail(self, message: str) -> str:
        """Out of memory and the like: this shot only, the run goes on (a re-run tries it again). Its takes
        written so far are recorded first."""
        self.collect(wait=True)
        self.ledger.fail_shot(self.shot.id, message)
        logger.warning("%s: %s", self.shot.where, message)
        return "error"
