"""Drive a storyboard plan: check everything cheap, load the pipeline once, run each shot not already
finished (the ledger says which), write every take as soon as it is scored, then summary.json and the
HTML report.

Resuming is replaying: a shot's takes come from the ledger where their files are intact, and the
pipeline runs only for the batches that are missing, with the seeds the plan gives them. So a run
killed at any point and run again ends with the same pixels as one never interrupted.

In-process, one worker (worker.py) makes the takes; with `ray=` a pool of Ray actors does
(ray_workers.py, imported only then). Either way this process is the only writer of the run folder.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import CastkeepError, GenerationError
from ...landmarks.model_pack import ENV_MODELS
from ...utils import write_bytes_atomic
from ..background_writer import BackgroundWriter
from ..conditioning import conditioning_space
from ..generator import (
    Generator,
    ModelsSpec,
    PathSpec,
    StoreSpec,
    adapter_variant,
    check_scoring_model,
    choose_judge,
    load_scoring_analyzer,
    open_store,
    pack_option,
    scoring_device,
    weights_specs,
)
from ..loading import resolve_weights
from ..memory import check_offload
from ..provenance.output import Provenance
from ..runner import Identity, identity_from_store
from .board import ShotEvent, Storyboard
from .ledger import Ledger
from .plan import Plan, Shot, load_plan
from .report import write_report
from .shot_run import ShotRun
from .worker import ShotWorker, WorkerSpec

logger = logging.getLogger("castkeep.generation")


@dataclass
class StoryboardResult:
    run_dir: Path
    summary: dict[str, Any]
    summary_path: Path
    report_path: Path
    pipeline_calls: int  # in this session (0 when everything was finished already)
    images_generated: int


def run_in_process(board: Storyboard, ledger: Ledger, worker: ShotWorker, *, retry_failed: bool = False,
                   on_shot: Callable[[ShotEvent], None] | None = None, cancel: Callable[[], bool] | None = None) -> bool:
    """Every shot in plan order, made by one worker in this process; False when `cancel()` said stop (asked
    before each shot, so the ledger holds only whole shots and the same command resumes the run).

    A background writer marks and writes each shot's files while the pipeline makes the next images, the
    next shot's included: a shot is completed (recorded done, its event sent) once its files are whole,
    at the latest before the next shot that needs no pipeline and at the end. Events keep the plan's order."""
    finishing: deque[tuple[ShotRun, int]] = deque()  # shots whose files are still being written

    def settle(*, wait: bool) -> None:
        while finishing and (wait or finishing[0][0].written):
            task, index = finishing.popleft()
            outcome = task.complete()
            if on_shot is not None:
                on_shot(board.event(ledger, task.shot, outcome, index, worker.info.label))

    with BackgroundWriter() as writer:
        for index, shot in enumerate(board.plan.shots, start=1):
            if cancel is not None and cancel():
                settle(wait=True)
                return False
            task = ShotRun(board, ledger, shot, writer)
            outcome = task.begin(retry_failed=retry_failed)
            if outcome is None:
                failure = None
                while (request := task.next_request()) is not None:
                    started = time.perf_counter()
                    try:
                        batch = worker.make(request)
                    except GenerationError as exc:  # out of memory and the like: this shot only, the run goes on
                        failure = str(exc)
                        break
                    task.record(batch, time.perf_counter() - started)  # a write that failed ends the run
                    settle(wait=False)
                if failure is None:
                    task.finish()
                    finishing.append((task, index))
                    continue
                settle(wait=True)
                outcome = task.fail(failure)
            settle(wait=True)
            if on_shot is not None:
                on_shot(board.event(ledger, shot, outcome, index, worker.info.label))
        settle(wait=True)  # every file written and recorded before the summary and report
    return True


# ---------------------------------------------------------------------------------- checks before loading
def _prefixed(exc: CastkeepError, shot: Shot) -> CastkeepError:
    """The same error class (so the same exit code), saying which shot asked for it."""
    return type(exc)(f"{shot.where}: {' '.join(str(exc).split())}")


def _first_shot(plan: Plan, name: str) -> Shot:
    return next(shot for shot in plan.shots if name in shot.characters)


def check_cast(plan: Plan, store: Any) -> None:
    """Every character the plan names is in the store; the first shot naming a missing one says so."""
    for name in plan.characters:
        try:
            store.get(name)
        except CastkeepError as exc:
            raise _prefixed(exc, _first_shot(plan, name)) from None


def resolve_cast(plan: Plan, store: Any, adapter: Path, conditioning_models: ModelsSpec,
                 variant: str = "faceid") -> dict[str, Identity]:
    """Each character the plan names, in the adapter's space (the first shot naming one without it says so),
    with what a FaceID Plus / Portrait `variant` also takes (their stored crops, their reference vectors)."""
    space = conditioning_space(adapter, pack_option(conditioning_models))
    identities = {}
    for name in plan.characters:
        try:
            identities[name] = identity_from_store(store, name, space, adapter.name, variant)
        except CastkeepError as exc:
            raise _prefixed(exc, _first_shot(plan, name)) from None
    return identities


def check_variant_shots(plan: Plan, variant: str, adapter: Path) -> None:
    """Several characters in one image (regions) need a plain FaceID adapter (runner.generate_images): the
    first such shot says so, before any weights load."""
    if variant == "faceid":
        return
    for shot in plan.shots:
        if len(shot.characters) > 1 or shot.regions:
            raise GenerationError(f"{shot.where}: several characters in one image (regions) need a plain FaceID "
                                  f"checkpoint; {adapter.name} is {variant}")


def run_storyboard(plan: Plan | str | os.PathLike[str], *, out_dir: PathSpec, store: StoreSpec = None,
                   base_model: PathSpec | None = None, ip_adapter: PathSpec | None = None, device: str = "auto",
                   dtype: str = "auto", models: ModelsSpec = None, conditioning_models: ModelsSpec = None,
                   batch_size: int = 1, retry_failed: bool = False, ray: str | None = None,
                   workers: int | None = None, on_shot: Callable[[ShotEvent], None] | None = None,
                   provenance: Provenance | None = None, cancel: Callable[[], bool] | None = None,
                   generator: Generator | None = None, offload: str = "none", base_config: PathSpec | None = None,
                   vae: PathSpec | None = None, vae_tiling: bool | None = None,
                   vae_slicing: bool | None = None, image_encoder: PathSpec | None = None,
                   plus_version: str = "auto") -> StoryboardResult:
    """Run (or resume) every shot of `plan` into `out_dir` with one pipeline load.

    The plan, the characters (in the store and in the adapter's embedding space), the scorers and every
    shot's size are checked before the diffusion weights load. Re-running into the same folder resumes;
    `retry_failed` gives shots that missed their min_score another budget of takes (new seeds).
    `ray` ("auto": a local Ray cluster; else a cluster's address) spreads the shots over `workers` Ray
    actors, each loading the pipeline once (default: one per GPU of the cluster). Every take is marked as
    `provenance` says (default: castkeep's invisible watermark). In-process runs only: `cancel`, asked before
    each shot, stops the run between shots (the session's outcome is "cancelled"; running it again resumes);
    `generator` is a pipeline already loaded with these weights (a server keeps one warm) instead of a new one.
    `offload`, `base_config` and `vae` are `Generator.from_pretrained`'s (every Ray worker loads with them too);
    `vae_tiling`/`vae_slicing` apply to every shot (None: on where `generate` would switch them on).
    FaceID Plus / Plus v2 adapters load `image_encoder` (`plus_version` as `generate`'s) and condition each
    character on its stored face crops, Portrait adapters on its reference vectors (shots of one character).
    """
    provenance = provenance if provenance is not None else Provenance()
    provenance.check()
    if not isinstance(plan, Plan):
        plan = load_plan(plan)
    if batch_size < 1:
        raise GenerationError(f"--batch-size {batch_size} must be at least 1")
    if ray is not None and (cancel is not None or generator is not None):
        raise GenerationError("cancel and a loaded generator are for in-process runs, not --ray")
    if workers is not None and (ray is None or workers < 1):
        raise GenerationError("--workers needs --ray" if ray is None else f"--workers {workers} must be at least 1")
    run_dir = Path(out_dir)
    base, adapter = weights_specs(base_model, ip_adapter)
    load: dict[str, Any] = {"offload": offload, "base_config": None if base_config is None else os.fspath(base_config),
            "vae": None if vae is None else os.fspath(vae),
            "image_encoder": None if image_encoder is None else os.fspath(image_encoder), "plus_version": plus_version}
    if generator is None:  # a wrong mode, or an offload on the CPU, fails before anything loads
        check_offload(offload, "cpu" if device == "cpu" else None)
    memory: dict[str, Any] = {"vae_tiling": vae_tiling, "vae_slicing": vae_slicing}
    with ExitStack() as stack:
        opened = open_store(stack, store)
        check_cast(plan, opened)  # an unknown name fails before any weights are looked for
        weights = resolve_weights(base, adapter, load["base_config"])
        variant = adapter_variant(weights, plus_version, generator)
        check_variant_shots(plan, variant, weights)
        identities = resolve_cast(plan, opened, weights, conditioning_models, variant)
        analyzer = (generator.scoring_analyzer(models) if generator is not None
                    else load_scoring_analyzer(models, scoring_device(device)))
        for identity in identities.values():
            check_scoring_model(identity, analyzer, opened)
        for shot in plan.shots:
            for name in shot.characters:
                try:
                    choose_judge(shot.config(), identities[name], analyzer, opened)
                except CastkeepError as exc:
                    raise _prefixed(exc, shot) from None
        judges = tuple(sorted({shot.config().scorer for shot in plan.shots}))
        ledger = stack.enter_context(Ledger.open(run_dir))
        if ray is None:
            if generator is None:
                generator = Generator.from_pretrained(base, adapter, device=device, dtype=dtype, **load)
            worker = ShotWorker.build(generator, analyzer, opened, identities, judges)
            board = Storyboard(worker.info, plan, identities, run_dir, batch_size=batch_size, provenance=provenance,
                               **memory)
            _drive(board, ledger, lambda: run_in_process(board, ledger, worker, retry_failed=retry_failed,
                                                         on_shot=on_shot, cancel=cancel))
        else:
            from .ray_workers import RayPool

            # The driver's pack, by the name or folder it was given: each machine resolves it itself, and
            # every worker's models are checked to be the same files (RayPool).
            pack = pack_option(models) or os.environ.get(ENV_MODELS)
            spec = WorkerSpec(base_model=base, ip_adapter=adapter, device=device, dtype=dtype,
                              models=None if pack is None else os.fspath(pack), store=_store_location(store, opened),
                              identities=identities, judges=judges, **load)
            pool, pipeline = stack.enter_context(RayPool.start(spec, ray, workers=workers,
                                                               analyzer=analyzer.fingerprint))
            board = Storyboard(pipeline, plan, identities, run_dir, batch_size=batch_size, provenance=provenance,
                               mark_on_workers=True, **memory)
            _drive(board, ledger, lambda: pool.run(board, ledger, retry_failed=retry_failed, on_shot=on_shot))
        summary_path, report_path, summary = write_report(run_dir, plan, ledger, identities)
        session = ledger.sessions()[-1]
        return StoryboardResult(run_dir=run_dir, summary=summary, summary_path=summary_path, report_path=report_path,
                                pipeline_calls=int(session["pipeline_calls"]), images_generated=int(session["images"]))


def _store_location(store: StoreSpec, opened: Any) -> str:
    """Where each Ray worker opens the store: its folder, or the `postgresql://` URL it was given."""
    if opened.path is not None:
        return os.fspath(opened.path)
    if isinstance(store, (str, os.PathLike)):
        return os.fspath(store)
    if store is None:
        from ...identity.store import default_store_path

        return os.fspath(default_store_path())
    raise GenerationError("--ray needs the store's URL (the workers open it themselves), not an open Store")


def _drive(board: Storyboard, ledger: Ledger, run: Callable[[], bool | None]) -> None:
    """One session of the ledger around `run`: the plan as run, the models, the outcome."""
    plan = board.plan
    if plan.path is not None:
        write_bytes_atomic(board.run_dir / f"plan{plan.path.suffix.lower()}", plan.path.read_bytes())
    ledger.start_session()
    ledger.set_meta(title=plan.title, plan=None if plan.path is None else os.fspath(plan.path),
                    models=board.models, shots=[shot.id for shot in plan.shots])
    outcome = "interrupted"
    try:
        outcome = "cancelled" if run() is False else "finished"
    finally:
        ledger.finish_session(outcome)


def read_summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
