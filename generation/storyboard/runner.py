"""Drive a storyboard plan: check everything cheap, load the pipeline once, run each shot not already
finished (the ledger says which), write every take as soon as it is scored, then summary.json and the
HTML report.

Resuming is replaying: a shot's takes come from the ledger where their files are intact, and the
pipeline runs only for the batches that are missing, with the seeds the plan gives them. So a run
killed at any point and run again ends with the same pixels as one never interrupted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ...errors import CastkeepError, GenerationError, SizeError
from ...utils import dumps, write_bytes_atomic
from ..aspect import resolve_size
from ..conditioning import conditioning_space
from ..config import GenerationConfig
from ..generator import (
    Generator,
    ModelsSpec,
    PathSpec,
    StoreSpec,
    check_scoring_model,
    choose_judge,
    load_scoring_analyzer,
    open_store,
    pack_option,
    weights_specs,
)
from ..loading import resolve_weights
from ..provenance.output import Provenance
from ..runner import Identity, identity_from_store, next_attempts
from ..schedulers import apply_scheduler
from ..scoring import DOMAIN, IdentityScorer, Scorer
from .files import forget_shot_files, write_kept, write_take
from .ledger import FAILED_TARGET, AttemptRow, Ledger
from .plan import Plan, Shot, load_plan
from .report import write_report

logger = logging.getLogger("castkeep.generation")


@dataclass
class ShotEvent:
    """What the progress callback hears after each shot."""

    shot: Shot
    outcome: str  # "skipped" (finished earlier), "done", "failed-target", "error"
    index: int  # shots handled so far in this run, this one included
    total: int
    probability: float | None = None


@dataclass
class StoryboardResult:
    run_dir: Path
    summary: dict[str, Any]
    summary_path: Path
    report_path: Path
    pipeline_calls: int  # in this session (0 when everything was finished already)
    images_generated: int


def shot_key(shot: Shot, identities: dict[str, Identity], models: dict[str, Any]) -> str:
    """Everything that decides a shot's takes and their selection. Its number and caption do not (reordering
    shots or rewording a caption regenerates nothing); nor do device, dtype and batch size."""
    content = {**shot.to_dict(), "characters": [identities[n].to_dict() for n in shot.characters], "models": models}
    content.pop("number"), content.pop("caption")
    return hashlib.sha256(dumps(content, indent=None).encode()).hexdigest()


def _select(attempts: list[AttemptRow], count: int) -> list[AttemptRow]:
    """Passing takes first, then the judge's log-odds of the weakest character, then the earlier take."""
    return sorted(attempts, key=lambda a: (a.passed, a.value, -a.attempt), reverse=True)[:count]


class Storyboard:
    """A checked plan with its characters, scorers and a loaded pipeline, run into one folder."""

    def __init__(self, generator: Generator, plan: Plan, identities: dict[str, Identity],
                 scorers: dict[tuple[str, str], Scorer], analyzer_fingerprint: str, run_dir: Path, *,
                 batch_size: int = 1, provenance: Provenance | None = None) -> None:
        self.generator = generator
        self.plan = plan
        self.identities = identities
        self.scorers = scorers  # (character, judge) → scorer
        self.run_dir = run_dir
        self.batch_size = batch_size
        self.provenance = provenance if provenance is not None else Provenance()
        loaded = generator.loaded
        self.models = {**loaded.models_dict(), "face_analyzer": analyzer_fingerprint,
                       "conditioning": next(iter(identities.values())).conditioning}
        self.sizes = {shot.id: self._size(shot) for shot in plan.shots}  # all checked before the first image
        self.default_scheduler = loaded.pipe.scheduler

    def _size(self, shot: Shot) -> tuple[int, int]:
        settings = shot.settings
        loaded = self.generator.loaded
        try:
            return resolve_size(width=settings.get("width"), height=settings.get("height"),
                                aspect=settings.get("aspect"), base=loaded.native_size, model=f"this {loaded.kind} model")
        except SizeError as exc:
            raise SizeError(f"{shot.where}: {exc}") from None

    def config(self, shot: Shot, rounds: int) -> GenerationConfig:
        config = shot.config(batch_size=self.batch_size)
        # --retry-failed: each round adds one more budget of takes, continuing the shot's seed sequence.
        return config if rounds <= 1 else replace(config, max_tries=config.budget * rounds)

    def run(self, ledger: Ledger, *, retry_failed: bool = False,
            on_shot: Callable[[ShotEvent], None] | None = None, cancel: Callable[[], bool] | None = None) -> bool:
        """Every shot in plan order; False when `cancel()` said stop (checked before each shot, so the ledger
        holds only whole shots and the same command resumes the run)."""
        total = len(self.plan.shots)
        for index, shot in enumerate(self.plan.shots, start=1):
            if cancel is not None and cancel():
                return False
            outcome = self.run_shot(ledger, shot, retry_failed=retry_failed)
            if on_shot is not None:
                row = ledger.shot(shot.id)
                best = ledger.attempts(shot.id).get(row.kept[0]["attempt"]) if row and row.kept else None
                on_shot(ShotEvent(shot, outcome, index, total, None if best is None else best.score.get("probability")))
        return True

    def run_shot(self, ledger: Ledger, shot: Shot, *, retry_failed: bool = False) -> str:
        key = shot_key(shot, self.identities, self.models)
        previous = ledger.shot(shot.id)
        if previous is not None and previous.key == key and previous.intact(self.run_dir):
            if not (retry_failed and previous.state == FAILED_TARGET):
                return "skipped"
            ledger.add_round(shot.id)
        elif previous is not None and previous.key != key:
            logger.info("%s changed since the last run: generating it again", shot.where)
            forget_shot_files(self.run_dir, shot, previous.kept)
        row = ledger.begin_shot(shot.id, shot.number, key)
        try:
            return self._takes(ledger, shot, key, row.rounds)
        except GenerationError as exc:  # out of memory and the like: this shot only, the run goes on
            ledger.fail_shot(shot.id, str(exc))
            logger.warning("%s: %s", shot.where, exc)
            return "error"

    def _takes(self, ledger: Ledger, shot: Shot, key: str, rounds: int) -> str:
        from .shot import ShotScorer, make_takes

        config = self.config(shot, rounds)
        width, height = self.sizes[shot.id]
        settings = self._settings(config, width, height)
        scorer = ShotScorer(shot, {name: self.scorers[(name, config.scorer)] for name in shot.characters}, config)
        known = {}
        for number, attempt in ledger.attempts(shot.id).items():
            if attempt.intact(self.run_dir):
                known[number] = attempt
            else:  # cut short or changed since: it is made again, with the same seed
                ledger.forget_attempt(shot.id, number)
        made: list[AttemptRow] = []
        while batch := next_attempts(config, len(made), sum(a.passed for a in made)):
            if all(number in known for number in batch):
                made += [known[number] for number in batch]
                continue
            takes = make_takes(self.generator.loaded, shot, config, self.identities, scorer, batch, width, height)
            ledger.count_pipeline_call(len(batch))
            for take in takes:
                started = time.perf_counter()
                written = write_take(self.run_dir, shot, config, take, self.identities, settings, self.models,
                                     self.provenance)
                written.write_s = time.perf_counter() - started
                ledger.record_attempt(shot.id, key, written)
                made.append(written)
        kept = _select(made, config.num_images)
        entries = write_kept(self.run_dir, shot, config, kept, made)
        target_met = all(a.passed for a in kept)
        ledger.finish_shot(shot.id, target_met=target_met, kept=entries)
        return "done" if target_met else FAILED_TARGET

    def _settings(self, config: GenerationConfig, width: int, height: int) -> dict[str, Any]:
        """The sidecar's settings; the shot's sampler is set on the pipeline here, from the model's own
        scheduler each time, so no shot inherits another's."""
        pipe = self.generator.loaded.pipe
        pipe.scheduler = type(self.default_scheduler).from_config(self.default_scheduler.config)
        sampler = apply_scheduler(pipe, config.scheduler)
        loaded = self.generator.loaded
        settings = {**config.to_dict(), "sampler": sampler, "width": width, "height": height, "domain": DOMAIN,
                    "device": loaded.device, "dtype": loaded.dtype}
        settings.pop("prompt"), settings.pop("negative_prompt")
        return settings


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


def resolve_cast(plan: Plan, store: Any, adapter: Path, conditioning_models: ModelsSpec) -> dict[str, Identity]:
    """Each character the plan names, in the adapter's space (the first shot naming one without it says so)."""
    space = conditioning_space(adapter, pack_option(conditioning_models))
    identities = {}
    for name in plan.characters:
        try:
            identities[name] = identity_from_store(store, name, space, adapter.name)
        except CastkeepError as exc:
            raise _prefixed(exc, _first_shot(plan, name)) from None
    return identities


def run_storyboard(plan: Plan | str | os.PathLike[str], *, out_dir: PathSpec, store: StoreSpec = None,
                   base_model: PathSpec | None = None, ip_adapter: PathSpec | None = None, device: str = "auto",
                   dtype: str = "auto", models: ModelsSpec = None, conditioning_models: ModelsSpec = None,
                   batch_size: int = 1, retry_failed: bool = False,
                   on_shot: Callable[[ShotEvent], None] | None = None,
                   provenance: Provenance | None = None, cancel: Callable[[], bool] | None = None,
                   generator: Generator | None = None) -> StoryboardResult:
    """Run (or resume) every shot of `plan` into `out_dir` with one pipeline load.

    The plan, the characters (in the store and in the adapter's embedding space), the scorers and every
    shot's size are checked before the diffusion weights load. Re-running into the same folder resumes;
    `retry_failed` gives shots that missed their min_score another budget of takes (new seeds). Every take is
    marked as `provenance` says (default: castkeep's invisible watermark). `cancel`, asked before each shot,
    stops the run between shots (the session's outcome is "cancelled"; running it again resumes). `generator`:
    a pipeline already loaded with these weights (a server keeps one warm), instead of loading one.
    """
    provenance = provenance if provenance is not None else Provenance()
    provenance.check()
    if not isinstance(plan, Plan):
        plan = load_plan(plan)
    if batch_size < 1:
        raise GenerationError(f"--batch-size {batch_size} must be at least 1")
    run_dir = Path(out_dir)
    base, adapter = weights_specs(base_model, ip_adapter)
    with ExitStack() as stack:
        opened = open_store(stack, store)
        check_cast(plan, opened)  # an unknown name fails before any weights are looked for
        identities = resolve_cast(plan, opened, resolve_weights(base, adapter), conditioning_models)
        analyzer = load_scoring_analyzer(models)
        for identity in identities.values():
            check_scoring_model(identity, analyzer, opened)
        for shot in plan.shots:
            for name in shot.characters:
                try:
                    choose_judge(shot.config(), identities[name], analyzer, opened)
                except CastkeepError as exc:
                    raise _prefixed(exc, shot) from None
        ledger = stack.enter_context(Ledger.open(run_dir))
        if generator is None:
            generator = Generator.from_pretrained(base, adapter, device=device, dtype=dtype)
        recogniser = generator.recogniser()
        judges = {shot.config().scorer for shot in plan.shots}
        scorers: dict[tuple[str, str], Scorer] = {
            (name, judge): IdentityScorer(analyzer, identity.vector, name=name, store=opened, judge=judge,
                                          recogniser=recogniser)
            for name, identity in identities.items() for judge in judges}
        board = Storyboard(generator, plan, identities, scorers, analyzer.fingerprint, run_dir, batch_size=batch_size,
                           provenance=provenance)
        if plan.path is not None:
            write_bytes_atomic(run_dir / f"plan{plan.path.suffix.lower()}", plan.path.read_bytes())
        ledger.start_session()
        ledger.set_meta(title=plan.title, plan=None if plan.path is None else os.fspath(plan.path),
                        models=board.models, shots=[shot.id for shot in plan.shots])
        outcome = "interrupted"
        try:
            finished = board.run(ledger, retry_failed=retry_failed, on_shot=on_shot, cancel=cancel)
            outcome = "finished" if finished else "cancelled"
        finally:
            ledger.finish_session(outcome)
        summary_path, report_path, summary = write_report(run_dir, plan, ledger, identities)
        session = ledger.sessions()[-1]
        return StoryboardResult(run_dir=run_dir, summary=summary, summary_path=summary_path, report_path=report_path,
                                pipeline_calls=int(session["pipeline_calls"]), images_generated=int(session["images"]))


def read_summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
