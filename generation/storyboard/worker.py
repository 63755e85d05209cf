"""The worker's side of a storyboard: a loaded pipeline and the characters' scorers, making one pipeline
call's takes at a time (shot.make_takes) and writing nothing. The in-process runner holds one worker;
with `--ray` every Ray actor holds its own, loaded from the same `WorkerSpec` (ray_workers.py), and marks
its takes with the watermark when the request says so, so that the driver's work per image stays small.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from ..config import GenerationConfig
from ..generator import Generator, load_scoring_analyzer, scoring_device
from ..loading import LoadedPipeline
from ..plus_conditioning import ClipFaceEmbeds
from ..provenance.output import Provenance
from ..runner import AdapterConditioning, Identity, adapter_conditioning
from ..schedulers import apply_scheduler
from ..scoring import DOMAIN, IdentityScorer, Scorer
from .plan import Shot
from .shot import ShotScorer, Take, make_takes

IN_PROCESS = "in-process"
WATERMARK = Provenance(watermark=True)  # the pixels' part of provenance: credentials are signed by the driver


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker loads: the same for the in-process runner and every Ray actor."""

    base_model: str
    ip_adapter: str
    device: str
    dtype: str
    models: str | None  # the face model pack that scores outputs (a name or a folder)
    store: str  # the store's folder, opened read-only by each worker
    identities: dict[str, Identity]
    judges: tuple[str, ...]  # the scorers the plan's shots rank by (fused, dlib, arcface)
    offload: str = "none"  # load-time, like device and dtype (generation/memory.py)
    base_config: str | None = None  # the configs of a single-file base model
    vae: str | None = None  # a VAE in place of the base model's
    image_encoder: str | None = None  # FaceID Plus: the CLIP image encoder (None: the default)
    plus_version: str = "auto"  # FaceID Plus v1/v2 (loading.inspect_faceid)


@dataclass(frozen=True)
class PipelineInfo:
    """What the driver needs to know of a worker's pipeline before the first shot."""

    models: dict[str, Any]  # the weights and their hashes, and the face analyzer's fingerprint
    kind: str  # "sd15" | "sdxl"
    native_size: int
    device: str
    dtype: str
    label: str  # which worker: "in-process", or a Ray actor's name, pid and host


@dataclass(frozen=True)
class TakeRequest:
    """One pipeline call of a shot: the attempts it makes (their seeds: config.seed_for)."""

    shot: Shot
    config: GenerationConfig
    attempts: tuple[int, ...]
    width: int
    height: int
    watermark: bool = False  # mark the takes here (a Ray worker, sparing the driver); else the driver's writer does


@dataclass
class TakeBatch:
    """A request's takes, scored, with the sidecar's settings and the worker's time for the whole call."""

    settings: dict[str, Any]
    takes: list[Take]
    call_s: float  # pipeline and scoring included; the rest of it is the worker's own overhead
    worker: str
    adapter_inputs: dict[str, Any] | None = None  # per character: what the adapter was given (as generate records)


class ShotWorker:
    """A loaded pipeline with one scorer per (character, judge)."""

    def __init__(self, loaded: LoadedPipeline, scorers: dict[tuple[str, str], Scorer], identities: dict[str, Identity],
                 analyzer_fingerprint: str, *, label: str = IN_PROCESS) -> None:
        self.loaded = loaded
        self.scorers = scorers
        self.identities = identities
        self.clip: dict[str, ClipFaceEmbeds | None] = {}  # FaceID Plus: each character's crops, encoded once
        self.default_scheduler = loaded.pipe.scheduler
        self.info = PipelineInfo(models={**loaded.models_dict(), "face_analyzer": analyzer_fingerprint},
                                 kind=loaded.kind, native_size=loaded.native_size, device=loaded.device,
                                 dtype=loaded.dtype, label=label)

    @classmethod
    def build(cls, generator: Generator, analyzer: Any, store: Any, identities: dict[str, Identity],
              judges: tuple[str, ...], *, label: str = IN_PROCESS) -> ShotWorker:
        """From models already loaded (the in-process runner loads the analyzer and store for its checks)."""
        recogniser = generator.recogniser()
        scorers: dict[tuple[str, str], Scorer] = {
            (name, judge): IdentityScorer(analyzer, identity.vector, name=name, store=store, judge=judge,
                                          recogniser=recogniser)
            for name, identity in identities.items() for judge in judges}
        return cls(generator.loaded, scorers, identities, analyzer.fingerprint, label=label)

    @classmethod
    def load(cls, spec: WorkerSpec, stack: ExitStack, *, label: str) -> ShotWorker:
        """Load everything from the spec; the store stays open (read-only) as long as `stack`."""
        from ...identity.store import Store

        store = stack.enter_context(Store.open(spec.store, create=False, read_only=True))
        analyzer = load_scoring_analyzer(spec.models, scoring_device(spec.device))
        generator = Generator.from_pretrained(spec.base_model, spec.ip_adapter, device=spec.device, dtype=spec.dtype,
                                             offload=spec.offload, base_config=spec.base_config, vae=spec.vae,
                                             image_encoder=spec.image_encoder, plus_version=spec.plus_version)
        return cls.build(generator, analyzer, store, spec.identities, spec.judges, label=label)

    def make(self, request: TakeRequest) -> TakeBatch:
        started = time.perf_counter()
        shot, config = request.shot, request.config
        settings = self._settings(config, request.width, request.height)
        scorer = ShotScorer(shot, {name: self.scorers[(name, config.scorer)] for name in shot.characters}, config)
        prepared = self.conditioning(shot, config)
        takes = make_takes(self.loaded, shot, config, self.identities, scorer, list(request.attempts),
                           request.width, request.height, prepared)
        if request.watermark:
            for take in takes:  # only the marked image travels back
                take.marked = WATERMARK.mark(take.image)
                take.image = take.marked.image
        return TakeBatch(settings=settings, takes=takes, call_s=time.perf_counter() - started, worker=self.info.label,
                         adapter_inputs={name: inputs.record for name, inputs in prepared.items()})

    def conditioning(self, shot: Shot, config: GenerationConfig) -> dict[str, AdapterConditioning]:
        """Each character's adapter inputs for this shot (a Plus adapter's CLIP features are encoded at the
        character's first shot and reused: they depend on the stored crops only)."""
        prepared = {}
        for name in shot.characters:
            inputs = adapter_conditioning(self.loaded, config, self.identities[name], clip=self.clip.get(name))
            self.clip[name] = inputs.clip
            prepared[name] = inputs
        return prepared

    def _settings(self, config: GenerationConfig, width: int, height: int) -> dict[str, Any]:
        """The sidecar's settings; the shot's sampler is set on the pipeline here, from the model's own
        scheduler each call, so no shot inherits another's."""
        pipe = self.loaded.pipe
        pipe.scheduler = type(self.default_scheduler).from_config(self.default_scheduler.config)
        sampler = apply_scheduler(pipe, config.scheduler)
        settings = {**config.to_dict(), "sampler": sampler, "width": width, "height": height, "domain": DOMAIN,
                    "device": self.loaded.device, "requested_device": self.loaded.requested_device,
                    "dtype": self.loaded.dtype, "offload": self.loaded.offload}
        settings.pop("prompt"), settings.pop("negative_prompt")
        return settings
