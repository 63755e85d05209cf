"""The driver's side of one shot: which pipeline calls it still needs, writing every take that comes back,
then keeping the best. In-process and on Ray alike this is the only code that writes a shot's files and
ledger rows; a worker only makes takes (worker.py).

A shot's takes come from the ledger where their files are intact, so a request is made only for the
batches that are missing, with the seeds the plan gives them: a resumed shot, or one whose worker died,
ends with the same pixels as one never interrupted.

Each shot's time is split as it runs (ShotTiming) and kept in its ledger row: the pipeline, scoring,
castkeep's files and ledger, the rest of castkeep's own work, and (on Ray) the time between the driver
sending a request and having its result, beyond the worker's own time. `castkeep bench series` reads it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..runner import next_attempts
from .board import Storyboard
from .files import forget_shot_files, write_kept, write_take
from .ledger import FAILED_TARGET, AttemptRow, Ledger
from .plan import Shot
from .worker import TakeBatch, TakeRequest

logger = logging.getLogger("castkeep.generation")
SKIPPED = "skipped"


def select_takes(attempts: list[AttemptRow], count: int) -> list[AttemptRow]:
    """Passing takes first, then the judge's log-odds of the weakest character, then the earlier take."""
    return sorted(attempts, key=lambda a: (a.passed, a.value, -a.attempt), reverse=True)[:count]


@dataclass
class ShotTiming:
    """Where a shot's time went, in the session that finished it (seconds)."""

    images: int = 0  # generated in this session
    pipeline_s: float = 0.0
    scoring_s: float = 0.0
    files_s: float = 0.0  # takes, kept copies, sidecars, and hashing the files a resumed shot reuses
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
                  "transfer_s": max(0.0, self.round_trip_s - self.worker_s), "wall_s": wall_s}
        return {"images": self.images, **{key: round(value, 5) for key, value in values.items()},
                "workers": self.workers, "requeued": self.requeued}


class ShotRun:
    """One shot of a run, on the driver: begin, then `next_request` / `record` until it returns None, then
    `finish` (or `fail`)."""

    def __init__(self, board: Storyboard, ledger: Ledger, shot: Shot) -> None:
        self.board = board
        self.ledger = ledger
        self.shot = shot
        self.timing = ShotTiming()
        self.started = time.perf_counter()
        self.made: list[AttemptRow] = []
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
            while batch := next_attempts(self.config, len(self.made), sum(a.passed for a in self.made)):
                if all(number in self.known for number in batch):
                    self.made += [self.known[number] for number in batch]
                    continue
                return TakeRequest(self.shot, self.config, tuple(batch), self.width, self.height)
        return None

    def record(self, batch: TakeBatch, round_trip_s: float) -> None:
        """Write each take of a request (PNG and sidecar, then its ledger row)."""
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
                with self._timed("files_s"):
                    started = time.perf_counter()
                    models = {**self.board.models, "adapter_inputs": batch.adapter_inputs}
                    written = write_take(self.board.run_dir, self.shot, self.config, take, self.board.identities,
                                         batch.settings, models, self.board.provenance)
                    written.write_s = time.perf_counter() - started
                with self._timed("ledger_s"):
                    self.ledger.record_attempt(self.shot.id, self.key, written)
                self.made.append(written)

    def finish(self) -> str:
        """Copy the kept take(s) to shots/ and mark the shot done (or below target)."""
        with self._timed("driver_s"):
            kept = select_takes(self.made, self.config.num_images)
            with self._timed("files_s"):
                entries = write_kept(self.board.run_dir, self.shot, self.config, kept, self.made)
        target_met = all(a.passed for a in kept)
        timing = self.timing.to_dict(time.perf_counter() - self.started)
        self.ledger.finish_shot(self.shot.id, target_met=target_met, kept=entries, timing=timing)
        return "done" if target_met else FAILED_TARGET

    def fail(self, message: str) -> str:
        """Out of memory and the like: this shot only, the run goes on (a re-run tries it again)."""
        self.ledger.fail_shot(self.shot.id, message)
        logger.warning("%s: %s", self.shot.where, message)
        return "error"
