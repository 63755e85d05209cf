"""A storyboard's shots across GPUs and machines on Ray (`castkeep storyboard PLAN --ray auto|ADDRESS`).

Ray is imported here only, and this module only when `--ray` is given. Each worker is a Ray actor that
loads the pipeline, the scoring models and the store once, from the same `WorkerSpec` the in-process
runner loads, and makes one pipeline call's takes per request (worker.py). The driver keeps one request
in flight per worker and is the only writer of the run folder: it queues every take for its background
writer as the results come back and records each in the ledger once written (shot_run.ShotRun, the
in-process code), then sends that worker the shot's next batch or a new shot. The workers watermark their
own takes (the same code as in-process, so the same pixels): the driver only saves them.

A worker that dies loses only the request it held: that request goes to the front of the queue for the
next free worker (same attempts, same seeds, so the same pixels), and a fresh actor replaces the dead one.
A shot whose request killed two workers is marked as an error (a re-run tries it again).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from ...errors import CastkeepError, GenerationError, MissingDependencyError
from ..background_writer import BackgroundWriter
from .board import ShotEvent, Storyboard
from .ledger import Ledger
from .shot_run import ShotRun
from .worker import PipelineInfo, ShotWorker, TakeBatch, TakeRequest, WorkerSpec

try:
    import ray
    from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError
except ImportError:  # pragma: no cover - the optional extra is missing
    raise MissingDependencyError("--ray needs Ray: pip install 'castkeep[ray]'") from None

logger = logging.getLogger("castkeep.generation")
LOCAL = "auto"
ACTOR_PREFIX = "castkeep-storyboard"
MAX_DEATHS_PER_SHOT = 2  # a shot that crashes every worker it is given (out of memory?) stops there
DEATHS = (RayActorError, WorkerCrashedError)


class ShotActor:
    """One Ray worker: a ShotWorker loaded once. A loading error is kept and raised by `info()`, so the
    driver gets the castkeep error itself (and its exit code) rather than an actor that died."""

    def __init__(self, spec: WorkerSpec, name: str) -> None:
        from ..loading import quiet_generation_libraries

        quiet_generation_libraries()
        self._stack = ExitStack()
        self._error: BaseException | None = None
        label = f"{name} (pid {os.getpid()} on {socket.gethostname()})"
        try:
            self._worker = ShotWorker.load(spec, self._stack, label=label)
        except Exception as exc:  # raised again by info(), on the driver
            self._error = exc

    def info(self) -> PipelineInfo:
        if self._error is not None:
            raise self._error
        return self._worker.info

    def make(self, request: TakeRequest) -> TakeBatch:
        return self._worker.make(request)


@dataclass
class _Call:
    actor: Any
    task: ShotRun
    request: TakeRequest
    sent: float


def connect(address: str) -> bool:
    """Join the cluster at `address`, or start a local one for "auto". False when this process was
    connected already (the caller's own `ray.init`): then the caller shuts it down."""
    if ray.is_initialized():
        return False
    # The workers' output stays in the cluster's logs; their errors come back as the calls' exceptions.
    if address == LOCAL:
        ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    else:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    return True


class RayPool:
    """The Ray actors of one run, fed by the driver."""

    def __init__(self, spec: WorkerSpec, count: int, use_gpu: bool, analyzer: str) -> None:
        self.spec = ray.put(spec)
        self.count = count
        self.options = {"num_cpus": 1, "num_gpus": 1 if use_gpu else 0, "max_restarts": 0}
        self.analyzer = analyzer
        self.run_id = uuid.uuid4().hex[:8]
        self.launched = 0
        self.starting: dict[Any, Any] = {}  # info() call → actor loading its pipeline
        self.idle: deque[Any] = deque()
        self.actors: list[Any] = []
        self.pipeline: PipelineInfo | None = None  # the first worker's; the others must match it

    @classmethod
    @contextmanager
    def start(cls, spec: WorkerSpec, address: str, *, workers: int | None, analyzer: str
              ) -> Iterator[tuple[RayPool, PipelineInfo]]:
        """Connect, start the actors and wait for the first to have loaded its pipeline (whose description
        comes with the pool); on leaving, every actor is stopped (and the cluster too when this call
        started it)."""
        started = connect(address)
        pool = None
        try:
            count, use_gpu = _workers(spec.device, workers)
            pool = cls(spec, count, use_gpu, analyzer)
            for _ in range(count):
                pool._launch()
            yield pool, pool._wait_for_first()
        finally:
            if pool is not None:
                pool.close()
            if started:
                ray.shutdown()

    def _launch(self) -> None:
        self.launched += 1
        name = f"{ACTOR_PREFIX}-{self.run_id}-{self.launched}"
        actor: Any = ray.remote(ShotActor).options(name=name, **self.options).remote(self.spec, name)
        self.actors.append(actor)
        self.starting[actor.info.remote()] = actor

    def _wait_for_first(self) -> PipelineInfo:
        while self.pipeline is None:
            if not self.starting:
                raise GenerationError("no Ray worker could start (see the Ray logs of the cluster)")
            (ready,), _ = ray.wait(list(self.starting), num_returns=1)
            self._joined(ready)
        return self.pipeline

    def _joined(self, ref: Any) -> None:
        """A worker has loaded its pipeline (or failed to): check it loaded the same models as the others."""
        actor = self.starting.pop(ref)
        try:
            info: PipelineInfo = ray.get(ref)
        except DEATHS:
            self._died(actor)
            return
        except RayTaskError as exc:
            raise _cause(exc) from None
        if info.models["face_analyzer"] != self.analyzer:
            raise GenerationError(f"Ray worker {info.label} scores with face models {info.models['face_analyzer']}, "
                                  f"not the store's {self.analyzer}: give --models a pack every machine has")
        if self.pipeline is None:
            self.pipeline = info
            logger.info("Ray: %s loaded %s on %s", info.label, info.models["base_model"], info.device)
        elif info.models != self.pipeline.models:
            raise GenerationError(f"Ray worker {info.label} loaded other weights than {self.pipeline.label}: "
                                  "every machine needs the same base model and adapter files")
        self.idle.append(actor)

    def _died(self, actor: Any) -> None:
        """Drop a dead worker and start another in its place (as many replacements as workers, in all)."""
        if actor in self.actors:
            self.actors.remove(actor)
        ray.kill(actor, no_restart=True)
        if self.launched < 2 * self.count:
            logger.warning("Ray: a worker died; starting another")
            self._launch()
        else:
            logger.warning("Ray: a worker died; %d left", len(self.actors))

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors, self.starting = [], {}

    # ------------------------------------------------------------------------------ the driver's loop
    def run(self, board: Storyboard, ledger: Ledger, *, retry_failed: bool = False,
            on_shot: Callable[[ShotEvent], None] | None = None) -> None:
        """Every shot, spread over the workers; the shots' events come as they finish."""
        with BackgroundWriter() as writer:
            self._run(board, ledger, writer, retry_failed=retry_failed, on_shot=on_shot)

    def _run(self, board: Storyboard, ledger: Ledger, writer: BackgroundWriter, *, retry_failed: bool,
             on_shot: Callable[[ShotEvent], None] | None) -> None:
        waiting = deque(board.plan.shots)
        retry: deque[tuple[ShotRun, TakeRequest]] = deque()  # requests whose worker died, first served
        in_flight: dict[Any, _Call] = {}
        finishing: list[tuple[ShotRun, str | None]] = []  # shots whose files the writer is still writing
        handled = 0

        def report(task: ShotRun, outcome: str, worker: str | None) -> None:
            nonlocal handled
            handled += 1
            if on_shot is not None:
                on_shot(board.event(ledger, task.shot, outcome, handled, worker))

        def settle(*, wait: bool) -> None:
            """Complete the shots whose files are written (`wait`: all of them)."""
            for entry in [entry for entry in finishing if wait or entry[0].written]:
                finishing.remove(entry)
                report(entry[0], entry[0].complete(), entry[1])

        def next_work() -> tuple[ShotRun, TakeRequest] | None:
            if retry:
                return retry.popleft()
            while waiting:
                task = ShotRun(board, ledger, waiting.popleft(), writer)
                outcome = task.begin(retry_failed=retry_failed)
                if outcome is None:
                    request = task.next_request()
                    if request is not None:
                        return task, request
                    task.finish()  # every take was intact: only the kept copies to write
                    finishing.append((task, None))
                    continue
                report(task, outcome, None)
            return None

        def send(actor: Any, task: ShotRun, request: TakeRequest) -> None:
            in_flight[actor.make.remote(request)] = _Call(actor, task, request, time.perf_counter())

        while True:
            settle(wait=False)
            while self.idle and (work := next_work()) is not None:
                send(self.idle.popleft(), *work)
            if not in_flight and not (self.starting and (retry or waiting)):
                break
            (ready,), _ = ray.wait([*in_flight, *self.starting], num_returns=1)
            if ready in self.starting:
                self._joined(ready)
                continue
            call = in_flight.pop(ready)
            try:
                batch: TakeBatch = ray.get(ready)
            except DEATHS:
                self._died(call.actor)
                call.task.timing.requeued += 1
                call.task.deaths += 1
                if call.task.deaths >= MAX_DEATHS_PER_SHOT:
                    report(call.task, call.task.fail(f"{call.task.deaths} Ray workers died making it (out of "
                                                     "memory?)"), None)
                else:
                    retry.appendleft((call.task, call.request))
                continue
            except RayTaskError as exc:
                cause = _cause(exc)
                if not isinstance(cause, GenerationError):
                    raise cause from None
                report(call.task, call.task.fail(str(cause)), None)
                self.idle.append(call.actor)
                continue
            call.task.record(batch, time.perf_counter() - call.sent)  # queued: the writer writes them
            request = call.task.next_request()
            if request is not None:
                send(call.actor, call.task, request)
                continue
            call.task.finish()
            finishing.append((call.task, batch.worker))
            self.idle.append(call.actor)
        settle(wait=True)  # every file written and recorded before the summary and report
        if retry or waiting:
            raise GenerationError("every Ray worker died before the run finished: run the same command again "
                                  "to resume it")


def _workers(device: str, workers: int | None) -> tuple[int, bool]:
    """How many workers, and whether each takes a GPU: one per GPU of the cluster by default (one per
    machine on a cluster without GPUs)."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if device == "cuda" and not gpus:
        raise GenerationError("--device cuda, but the Ray cluster has no GPU")
    use_gpu = device in ("auto", "cuda") and gpus > 0
    count = workers or (gpus if use_gpu else max(1, sum(bool(node.get("Alive")) for node in ray.nodes())))
    capacity = gpus if use_gpu else int(resources.get("CPU", 0))
    if count > capacity:
        unit = "GPU" if use_gpu else "CPU"
        raise GenerationError(f"--workers {count}, but the Ray cluster has {capacity} {unit}{'s' * (capacity != 1)} "
                              f"(a worker takes one {unit})")
    return count, use_gpu


def _cause(exc: RayTaskError) -> BaseException:
    """The worker's own exception: a castkeep error keeps its class (and so its exit code)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, CastkeepError) else exc
