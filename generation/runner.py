"""The generation loop: seeds, best-of-N, retry until a minimum identity score, and the files a
run leaves behind (PNG + sidecar per output, summary.json, contact_sheet.png)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .. import __version__
from ..errors import GenerationError, StoreError
from ..utils import slug, utc_now, write_json_atomic
from .aspect import resolve_size
from .conditioning import ConditioningSpace, space_vector
from .config import GenerationConfig
from .contact_sheet import contact_sheet
from .faceid_lora import apply_faceid_lora_scale, effective_lora_scale
from .identity_embeds import identity_embeds, normalised_identity, uses_guidance
from .loading import PLUS_VARIANTS, LoadedPipeline
from .memory import apply_vae_memory, tiling_wanted
from .metadata import SIDECAR_SCHEMA_ID, a1111_parameters
from .plus_conditioning import (
    ClipFaceEmbeds,
    adapter_inputs,
    chosen_references,
    clip_embeds_for_call,
    clip_face_image,
    encode_face_crops,
)
from .provenance.output import Provenance
from .schedulers import apply_scheduler
from .scoring import DOMAIN, OutputScore, Scorer, consistency_matrix, mean_off_diagonal

SUMMARY_SCHEMA_ID = "castkeep.generation.summary/3"


@dataclass
class Identity:
    """Who to generate: a name and its ArcFace vector (from the store, or given directly)."""

    name: str
    vector: np.ndarray  # what conditions the adapter: the character in the adapter's embedding space
    fingerprint: str | None = None  # the face model the vector came from (None: not known)
    source: str = "vector"  # "store" when read from a character store
    conditioning: dict[str, Any] | None = None  # the adapter's space and what declared it (sidecars)
    # FaceID Portrait: one row per chosen reference, in the adapter's space (generation/plus_conditioning.py)
    references: np.ndarray | None = None
    face_crops: list[np.ndarray] | None = None  # FaceID Plus: the chosen references' 224 px aligned crops

    def to_dict(self) -> dict[str, Any]:
        vector = normalised_identity(self.vector)
        return {"name": self.name, "fingerprint": self.fingerprint, "source": self.source,
                "vector_sha256": hashlib.sha256(vector.astype("<f4").tobytes()).hexdigest()[:16]}


@dataclass
class Attempt:
    attempt: int
    seed: int
    score: OutputScore
    image: Image.Image = field(repr=False)
    seconds: float = 0.0
    nsfw: bool | None = None
    passed: bool = True
    kept: bool = False
    rank: int | None = None
    file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"attempt": self.attempt, "seed": self.seed, "face_found": self.score.face_found,
                "cosine": None if self.score.cosine is None else round(float(self.score.cosine), 4),
                "probability": None if self.score.probability is None else round(float(self.score.probability), 4),
                "disagree": self.score.disagree,
                "leakage": self.score.leakage, "passed": self.passed, "kept": self.kept, "rank": self.rank,
                "file": self.file, "seconds": round(self.seconds, 3)}


@dataclass
class AdapterConditioning:
    """The adapter's inputs for one run: identity vector(s), FaceID Plus CLIP features, and their record."""

    vector: np.ndarray  # (dim,) one identity, or (n, dim): a Portrait adapter's reference vectors
    clip: ClipFaceEmbeds | None
    record: dict[str, Any]


def adapter_conditioning(loaded: LoadedPipeline, config: GenerationConfig, identity: Identity,
                         warnings: list[str] | None = None, *, clip: ClipFaceEmbeds | None = None
                         ) -> AdapterConditioning:
    """What the loaded adapter takes for `identity`: its vector, a Portrait adapter's reference vectors, a
    Plus adapter's CLIP features of the stored face crops (`clip`: ones encoded before for this identity, so a
    storyboard or an edit encodes each character once), and their record. Notes go to `warnings`."""
    checkpoint = loaded.checkpoint
    vector, references = identity.vector, None
    if checkpoint.variant == "faceid-portrait" and identity.references is not None:
        vector, references = identity.references, len(identity.references)
    if checkpoint.needs_image_encoder:
        if clip is None:
            if not identity.face_crops:
                raise GenerationError(f"{checkpoint.path.name} (FaceID Plus) conditions on the character's stored face "
                                      f"crops too, and '{identity.name}' has none (a vector given directly, or "
                                      "references stored before crops were kept: register the photos again)")
            clip = encode_face_crops(loaded, identity.face_crops)
        references = clip.references
        if config.s_scale != 1.0 and not checkpoint.shortcut and warnings is not None:
            warnings.append(f"--s-scale {config.s_scale} has no effect: it scales Plus v2's shortcut, and "
                            f"{checkpoint.path.name} runs as Plus v1 (see --plus-version)")
    else:
        clip = None
    rows = int(np.asarray(vector).reshape(-1, np.asarray(vector).shape[-1]).shape[0])
    record = adapter_inputs(checkpoint, tokens_rows=rows, references=references, s_scale=config.s_scale,
                            clip=clip, image_encoder=loaded.image_encoder, image_encoder_hash=loaded.image_encoder_hash)
    return AdapterConditioning(vector=np.asarray(vector, dtype=np.float32), clip=clip, record=record)


@dataclass
class RunResult:
    out_dir: Path
    attempts: list[Attempt]
    kept: list[Attempt]
    summary: dict[str, Any]
    summary_path: Path
    contact_sheet_path: Path
    target_met: bool


def generate_images(loaded: LoadedPipeline, config: GenerationConfig, vector: np.ndarray, seeds: list[int],
                    width: int, height: int, *, masks: list[Image.Image] | None = None,
                    clip: ClipFaceEmbeds | None = None) -> tuple[list[Image.Image], list[bool | None]]:
    """One pipeline call: len(seeds) images, image i from its own seeded generator, with the
    identity applied at `config.id_scale`. Several identities (`vector` of shape (n, dim)) need one mask
    each (white where that identity applies): diffusers' `ip_adapter_masks`. A FaceID Portrait adapter takes
    the n rows of one character's references as n token groups instead (no masks); FaceID Plus takes `clip`,
    the character's face-crop CLIP features, with one vector.

    Generators live on the CPU so a seed gives the same starting noise on every device.
    """
    import torch

    pipe = loaded.pipe
    checkpoint = loaded.checkpoint
    if masks is not None and checkpoint.variant != "faceid":
        raise GenerationError(f"several characters in one image (regions) need a plain FaceID checkpoint; "
                              f"{checkpoint.path.name} is {checkpoint.variant}")
    pipe.set_ip_adapter_scale(config.id_scale)  # per call: one loaded pipeline serves many configs
    apply_faceid_lora_scale(pipe, config.id_scale, config.lora_scale)
    apply_vae_memory(pipe, tiling=tiling_wanted(config.vae_tiling, width, height, loaded.native_size, loaded.offload),
                     slicing=config.vae_slicing if config.vae_slicing is not None else len(seeds) > 1)
    guidance = uses_guidance(pipe, config.guidance)
    embeds = identity_embeds(vector, guidance=guidance, device=loaded.device, dtype=pipe.unet.dtype,
                             dim=loaded.checkpoint.id_dim)
    generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]
    extra: dict[str, Any] = {}
    if masks is not None:
        from diffusers.image_processor import IPAdapterMaskProcessor

        processed = IPAdapterMaskProcessor().preprocess(masks, height=height, width=width)
        extra["cross_attention_kwargs"] = {"ip_adapter_masks": [processed.reshape(1, len(masks), *processed.shape[2:])]}
    try:
        with clip_embeds_for_call(loaded, clip, images=len(seeds), guidance=guidance, s_scale=config.s_scale):
            output = pipe(prompt=config.prompt, negative_prompt=config.negative_prompt or None,
                          num_inference_steps=config.steps, guidance_scale=config.guidance, width=width,
                          height=height, num_images_per_prompt=len(seeds),
                          generator=generators if len(generators) > 1 else generators[0],
                          ip_adapter_image_embeds=embeds, output_type="pil", **extra)
    except torch.OutOfMemoryError:
        raise GenerationError(f"out of memory on {loaded.device} at {width}x{height} x{len(seeds)}: lower "
                              "--batch-size, the size, or use --dtype float16") from None
    nsfw = getattr(output, "nsfw_content_detected", None) or [None] * len(seeds)
    return list(output.images), list(nsfw)


def passes(score: OutputScore, config: GenerationConfig) -> bool:
    """Whether an output meets the run's --min-score (every output passes without one)."""
    if config.min_score is None:
        return True
    return score.face_found and score.probability is not None and score.probability >= config.min_score


def next_attempts(config: GenerationConfig, made: int, passing: int) -> list[int]:
    """The attempt numbers of the next pipeline call, given how many images were made and how many passed:
    the best-of-N candidates first, then (with a min_score) retries until enough pass or the budget is
    spent, at most `batch_size` at a time; [] when the run is complete. A resumed run replays the same
    calls, so every batch holds the same images as in an uninterrupted run."""
    if made < config.candidates:
        wanted = config.candidates - made
    else:
        wanted = max(0, min(config.num_images - passing, config.budget - made))
    return list(range(made, made + min(wanted, config.batch_size)))


class GenerationRunner:
    """Runs one request against a loaded pipeline and writes everything to `out_dir`."""

    def __init__(self, loaded: LoadedPipeline, scorer: Scorer, *, analyzer_fingerprint: str | None = None,
                 on_attempt: Callable[[Attempt], None] | None = None, warnings: list[str] | None = None,
                 provenance: Provenance | None = None, cancel: Callable[[], bool] | None = None) -> None:
        self.loaded = loaded
        self.cancel = cancel  # asked after each batch: True ends the run with the attempts made so far
        self.scorer = scorer
        self.analyzer_fingerprint = analyzer_fingerprint
        self.on_attempt = on_attempt
        self.warnings = list(warnings or [])
        self.provenance = provenance if provenance is not None else Provenance()

    def _passes(self, score: OutputScore, config: GenerationConfig) -> bool:
        return passes(score, config)

    def adapter_conditioning(self, config: GenerationConfig, identity: Identity) -> AdapterConditioning:
        """What the loaded adapter takes for `identity`, computed once per run (seeds do not change it)."""
        return adapter_conditioning(self.loaded, config, identity, self.warnings)

    def attempts(self, config: GenerationConfig, identity: Identity, width: int, height: int,
                 conditioning: AdapterConditioning | None = None) -> list[Attempt]:
        """Generate and score until best-of-N is done and (with --min-score) enough outputs pass."""
        prepared = conditioning if conditioning is not None else self.adapter_conditioning(config, identity)
        attempts: list[Attempt] = []
        while indices := next_attempts(config, len(attempts), sum(a.passed for a in attempts)):
            seeds = [config.seed_for(i) for i in indices]
            started = time.perf_counter()
            images, nsfw = generate_images(self.loaded, config, prepared.vector, seeds, width, height,
                                           clip=prepared.clip)
            seconds = (time.perf_counter() - started) / len(seeds)
            for seed, image, flag in zip(seeds, images, nsfw, strict=True):
                score = self.scorer.score(image)
                attempt = Attempt(attempt=len(attempts), seed=seed, score=score, image=image, seconds=seconds,
                                  nsfw=flag, passed=self._passes(score, config))
                attempts.append(attempt)
                if self.on_attempt is not None:
                    self.on_attempt(attempt)
            if self.cancel is not None and self.cancel():
                self.warnings.append(f"cancelled after {len(attempts)} attempt(s): the best of those are kept")
                break
        return attempts

    def run(self, config: GenerationConfig, identity: Identity, out_dir: str | Path, *,
            keep_rejected: bool = False) -> RunResult:
        out_dir = Path(out_dir)
        if (out_dir / "summary.json").exists():
            raise GenerationError("this folder already holds a generation run (summary.json); choose another "
                                  "--out", path=out_dir)
        pipe = self.loaded.pipe
        width, height = resolve_size(width=config.width, height=config.height, aspect=config.aspect,
                                     base=self.loaded.native_size, model=f"this {self.loaded.kind} model",
                                     kind=self.loaded.kind)
        sampler = apply_scheduler(pipe, config.scheduler)
        conditioning = self.adapter_conditioning(config, identity)
        started = time.perf_counter()
        attempts = self.attempts(config, identity, width, height, conditioning)
        generate_seconds = time.perf_counter() - started

        # Passing outputs first, then by the judge's log-odds of "same person" (no face last), then the
        # earlier attempt.
        ranked = sorted(attempts, key=lambda a: (a.passed, a.score.value, -a.attempt), reverse=True)
        kept = ranked[:config.num_images]
        for rank, attempt in enumerate(kept, start=1):
            attempt.kept, attempt.rank = True, rank
        target_met = all(a.passed for a in kept)

        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GenerationError(f"cannot create the output folder ({exc.strerror})", path=out_dir) from None
        name_slug = slug(identity.name, fallback="character")
        to_write = kept + ([a for a in ranked if not a.kept] if keep_rejected else [])
        for attempt in to_write:
            folder = "" if attempt.kept else "rejected/"
            label = f"{attempt.rank:02d}" if attempt.kept else f"try{attempt.attempt:02d}"
            attempt.file = f"{folder}{name_slug}_{label}_s{attempt.seed}.png"
        settings = {**config.to_dict(), "sampler": sampler, "width": width, "height": height,
                    "device": self.loaded.device, "dtype": self.loaded.dtype,
                    "requested_device": self.loaded.requested_device}
        settings.pop("prompt"), settings.pop("negative_prompt")
        models = {**self.loaded.models_dict(), "face_analyzer": self.analyzer_fingerprint,
                  "conditioning": identity.conditioning, "adapter_inputs": conditioning.record}
        attempt_log = [a.to_dict() for a in attempts]
        created = utc_now()
        for attempt in to_write:
            self._write_output(out_dir, attempt, config, identity, settings, models, attempt_log, created)

        embeddings = [a.score.embedding for a in kept]
        matrix = consistency_matrix(embeddings)
        sheet_items = [{"index": a.rank, "seed": a.seed, "score": a.score.to_dict(), "passed": a.passed
                        if config.min_score is not None else a.score.same} for a in kept]
        sheet_path = contact_sheet(sheet_items, [a.image for a in kept], out_dir / "contact_sheet.png",
                                   title=f"{identity.name}: {config.prompt}", matrix=matrix,
                                   provenance=self.provenance)
        steps_done = len(attempts) * config.steps
        summary = {
            "schema": SUMMARY_SCHEMA_ID, "castkeep_version": __version__, "created_at": created,
            "character": identity.to_dict(), "prompt": config.prompt, "negative_prompt": config.negative_prompt,
            "seed": config.seed, "width": width, "height": height, "settings": settings, "models": models,
            "outputs": [{"file": a.file, "sidecar": str(Path(str(a.file)).with_suffix(".json")), "rank": a.rank,
                         "attempt": a.attempt, "seed": a.seed, "score": a.score.to_dict()} for a in kept],
            "attempts": attempt_log,
            "target_met": target_met,
            "min_score": config.min_score,
            "face_found": sum(a.score.face_found for a in kept),
            "mean_cosine": _mean([a.score.cosine for a in kept if a.score.face_found]),
            "mean_probability": _mean([a.score.probability for a in kept if a.score.face_found]),
            "scoring": {"scorer": config.scorer, "domain": DOMAIN, "rule": selection_rule(config)},
            "agreement": agreement_summary(kept),
            "consistency": {"labels": [a.file for a in kept], "matrix": matrix,
                            "mean_pairwise_cosine": mean_off_diagonal(matrix)},
            "contact_sheet": sheet_path.name,
            "timing": {"images_generated": len(attempts), "generate_s": round(generate_seconds, 3),
                       "s_per_image": round(generate_seconds / max(1, len(attempts)), 3),
                       "s_per_step": round(generate_seconds / max(1, steps_done), 4)},
            "warnings": list(self.loaded.warnings) + self.warnings,
            "provenance": self.provenance.summary(),
        }
        summary_path = out_dir / "summary.json"
        write_json_atomic(summary_path, summary)
        return RunResult(out_dir=out_dir, attempts=attempts, kept=kept, summary=summary,
                         summary_path=summary_path, contact_sheet_path=sheet_path, target_met=target_met)

    def _write_output(self, out_dir: Path, attempt: Attempt, config: GenerationConfig, identity: Identity,
                      settings: dict[str, Any], models: dict[str, Any], attempt_log: list[dict[str, Any]],
                      created: str) -> None:
        assert attempt.file is not None
        path = out_dir / attempt.file
        path.parent.mkdir(parents=True, exist_ok=True)
        score = attempt.score.to_dict()
        sidecar = {
            "schema": SIDECAR_SCHEMA_ID, "castkeep_version": __version__, "image": path.name,
            "width": attempt.image.width, "height": attempt.image.height,
            "prompt": config.prompt, "negative_prompt": config.negative_prompt, "seed": attempt.seed,
            "settings": settings, "models": models, "character": identity.to_dict(), "score": score,
            "nsfw": attempt.nsfw,
            "selection": {"rank": attempt.rank, "kept": attempt.kept, "passed": attempt.passed,
                          "attempt": attempt.attempt, "min_score": config.min_score, "best_of": config.best_of,
                          "rule": selection_rule(config)},
            "attempts": attempt_log, "created_at": created,
        }
        cosine_text = "no face" if not attempt.score.face_found else f"{attempt.score.cosine:.4f}"
        judged_text = ("no face" if attempt.score.probability is None
                       else f"{attempt.score.probability:.3f} ({config.scorer}, {DOMAIN})")
        fields = {
            "Steps": config.steps, "Sampler": settings["sampler"], "CFG scale": config.guidance,
            "Seed": attempt.seed, "Size": f"{attempt.image.width}x{attempt.image.height}",
            "Model hash": (models["base_model_hash"] or "")[:10], "Model": Path(models["base_model"]).name,
            "IP-Adapter": models["ip_adapter_file"], "IP-Adapter hash": models["ip_adapter_hash"][:10],
            "IP-Adapter weight": config.id_scale, "FaceID LoRA weight": effective_lora_scale(
                config.id_scale, config.lora_scale) if models["faceid_lora"] else None,
            "Character": identity.name, "Identity cosine": cosine_text,
            "Identity P(same)": judged_text,
            "Version": f"castkeep {__version__}",
        }
        sidecar = self.provenance.save_png(attempt.image, path, a1111_parameters(config.prompt, config.negative_prompt,
                                                                                 fields), sidecar)
        write_json_atomic(path.with_suffix(".json"), sidecar)


def selection_rule(config: GenerationConfig) -> str:
    return (f"passing outputs first, then highest P(same person) by the {config.scorer} scorer "
            f"({DOMAIN} domain)")


def agreement_summary(kept: list[Attempt]) -> dict[str, Any]:
    """How many kept outputs the ArcFace family and dlib judged alike, and which they did not."""
    judged = [a for a in kept if a.score.agreement is not None]
    return {"judged": len(judged), "disagree": sum(a.score.disagree for a in judged),
            "conditioning_only": [a.file for a in judged if _kind(a) == "conditioning-only"],
            "independent_only": [a.file for a in judged if _kind(a) == "independent-only"]}


def _kind(attempt: Attempt) -> str | None:
    return (attempt.score.agreement or {}).get("kind")


def _mean(values: list[float | None]) -> float | None:
    numbers = [float(v) for v in values if v is not None]
    return round(float(np.mean(numbers)), 4) if numbers else None


def identity_from_store(store: Any, name: str, space: ConditioningSpace | None = None,
                        adapter_name: str = "this adapter", variant: str = "faceid") -> Identity:
    """The character's vector in the adapter's space (`space`; None: the store's primary space).
    UnknownCharacterError (from the store) when missing, UnknownSpaceError when not in that space.
    `variant` (FACEID_VARIANTS) adds what FaceID Plus and Portrait adapters take: the chosen references'
    face crops, or their vectors in the adapter's space (generation/plus_conditioning.py)."""
    plus = variant in PLUS_VARIANTS
    character = store.get(name, crops=plus)
    if space is None:
        vector, fingerprint, conditioning = character.vector, character.fingerprint, None
    else:
        vector, fingerprint = space_vector(character, space, adapter_name)
        conditioning = {**space.to_dict(), "fingerprint": fingerprint}
    if vector is None or np.asarray(vector).ndim != 1 or not np.asarray(vector).size:
        raise StoreError(f"character '{character.name}' has no identity vector")
    references, crops = None, None
    if variant == "faceid-portrait":
        chosen = chosen_references(character, fingerprint=fingerprint)
        if chosen:
            references = np.stack([np.asarray(r.embeddings[fingerprint], dtype=np.float32) for r in chosen])
    if plus:
        crops = [clip_face_image(r) for r in chosen_references(character, crops=True)] or None
    return Identity(name=character.name, vector=np.asarray(vector, dtype=np.float32),
                    fingerprint=fingerprint, source="store", conditioning=conditioning, references=references,
                    face_crops=crops)
