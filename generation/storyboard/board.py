"""A storyboard run as the driver sees it: the checked plan, its characters, and what the workers loaded
(their models, which are part of every shot's key, and the sizes the model allows), run into one folder.
The driver decides what each shot still needs and writes everything (shot_run.ShotRun); workers only make
takes (worker.py)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ...errors import SizeError
from ...utils import dumps
from ..aspect import resolve_size
from ..config import GenerationConfig
from ..provenance.output import Provenance
from ..runner import Identity
from .ledger import Ledger
from .plan import Plan, Shot
from .worker import PipelineInfo


@dataclass
class ShotEvent:
    """What the progress callback hears after each shot."""

    shot: Shot
    outcome: str  # "skipped" (finished earlier), "done", "failed-target", "error"
    index: int  # shots handled so far in this run, this one included
    total: int
    probability: float | None = None
    worker: str | None = None  # which worker made it ("in-process", or a Ray actor's name)


def shot_key(shot: Shot, identities: dict[str, Identity], models: dict[str, Any]) -> str:
    """Everything that decides a shot's takes and their selection. Its number and caption do not (reordering
    shots or rewording a caption regenerates nothing); nor do device, dtype, batch size and workers."""
    content = {**shot.to_dict(), "characters": [identities[n].to_dict() for n in shot.characters], "models": models}
    content.pop("number"), content.pop("caption")
    return hashlib.sha256(dumps(content, indent=None).encode()).hexdigest()


class Storyboard:
    """A checked plan with its characters and the workers' pipeline, run into one folder."""

    def __init__(self, pipeline: PipelineInfo, plan: Plan, identities: dict[str, Identity], run_dir: Path, *,
                 batch_size: int = 1, provenance: Provenance | None = None, vae_tiling: bool | None = None,
                 vae_slicing: bool | None = None, mark_on_workers: bool = False) -> None:
        self.pipeline = pipeline
        self.plan = plan
        self.identities = identities
        self.run_dir = run_dir
        self.batch_size = batch_size
        # Decoding memory, for every shot (like batch_size, not part of a shot's key): None = generate's auto.
        self.vae_tiling, self.vae_slicing = vae_tiling, vae_slicing
        self.provenance = provenance if provenance is not None else Provenance()  # how every take is marked
        # Ray: each worker watermarks its own takes (same pixels: the same code), the driver saves them.
        self.mark_on_workers = mark_on_workers and self.provenance.watermark
        self.models = {**pipeline.models, "conditioning": next(iter(identities.values())).conditioning}
        self.sizes = {shot.id: self._size(shot) for shot in plan.shots}  # all checked before the first image

    def _size(self, shot: Shot) -> tuple[int, int]:
        settings = shot.settings
        try:
            return resolve_size(width=settings.get("width"), height=settings.get("height"),
                                aspect=settings.get("aspect"), base=self.pipeline.native_size,
                                model=f"this {self.pipeline.kind} model")
        except SizeError as exc:
            raise SizeError(f"{shot.where}: {exc}") from None

    def key(self, shot: Shot) -> str:
        return shot_key(shot, self.identities, self.models)

    def config(self, shot: Shot, rounds: int) -> GenerationConfig:
        config = replace(shot.config(batch_size=self.batch_size), vae_tiling=self.vae_tiling,
                         vae_slicing=self.vae_slicing)
        # --retry-failed: each round adds one more budget of takes, continuing the shot's seed sequence.
        return config if rounds <= 1 else replace(config, max_tries=config.budget * rounds)

    def event(self, ledger: Ledger, shot: Shot, outcome: str, index: int, worker: str | None = None) -> ShotEvent:
        row = ledger.shot(shot.id)
        best = ledger.attempts(shot.id).get(row.kept[0]["attempt"]) if row and row.kept else None
        return ShotEvent(shot, outcome, index, len(self.plan.shots),
                         None if best is None else best.score.get("probability"), worker)
