"""`fix-face`, ADetailer-style: each chosen face is cropped with a margin, inpainted at the model's
resolution with its character's identity at a chosen strength, and pasted back through a feathered mask
of the MediaPipe face oval; the repaint is kept only when the independent judge (fused ArcFace + dlib by
default) finds the face more likely the character than before."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...errors import ConfigError
from ..config import GenerationConfig
from ..generator import CharacterOrIdentity, Generator, make_config
from ..provenance.output import Provenance
from .faces import improved, meshed_faces, pixels, score_at, score_record
from .inpaint import derived_pipe, inpaint_region, work_region
from .masks import face_mask, mask_image, mask_stats
from .output import EditResult, output_path, write_edit
from .session import edit_session

DEFAULT_PROMPT = "a detailed photo of a face, sharp focus, natural skin texture"
STRENGTH = 0.4  # ADetailer's default denoising strength: the face is refined, not replaced
MARGIN = 0.35  # context around the face for the model, as a fraction of the face box
KEEP = ("improved", "always")


def pair_faces(characters: list[CharacterOrIdentity], faces: list[int] | None) -> list[tuple[int, int | None]]:
    """(character position, face index or None for the largest) per face to fix: one character for every
    face, or one character per face, in order."""
    chosen: list[int | None] = list(faces) if faces else [None]
    if len({f or 0 for f in chosen}) != len(chosen):
        raise ConfigError("the same face is given twice with --face")
    if not characters:
        raise ConfigError("fix-face needs a --character")
    if len(characters) == 1:
        return [(0, face) for face in chosen]
    if len(characters) != len(chosen):
        raise ConfigError(f"{len(characters)} --character for {len(chosen)} --face: give one character for every "
                          "face, or one per face")
    return list(enumerate(chosen))


def fix_face(image: str | os.PathLike[str], characters: CharacterOrIdentity | list[CharacterOrIdentity], *,
             faces: list[int] | None = None, prompt: str | None = None, config: GenerationConfig | None = None,
             strength: float = STRENGTH, margin: float = MARGIN, keep: str = "improved",
             out: str | os.PathLike[str] | None = None, generator: Generator | None = None,
             base_model: Any = None, ip_adapter: Any = None, device: str = "auto", dtype: str = "auto",
             store: Any = None, models: Any = None, conditioning_models: Any = None, offload: str = "none",
             base_config: Any = None, vae: Any = None,
             provenance: Provenance | None = None, **settings: Any) -> EditResult:
    """Repaint faces of `image` as their characters (see the module docstring). `faces` are indices as
    `castkeep analyze` numbers them (default: the largest); `characters` one for all, or one per face.
    `settings` are GenerationConfig fields (seed, steps, guidance, id_scale, scheduler, scorer, ...).
    Every face is scored before and after; with keep="improved" a face the judge does not find improved
    keeps its original pixels (keep="always" pastes every repaint)."""
    from ...landmarks.images import load_pil

    if not 0 < strength <= 1:
        raise ConfigError(f"--strength {strength} must be in (0, 1]")
    if keep not in KEEP:
        raise ConfigError(f"--keep {keep!r}: choose one of {', '.join(KEEP)}")
    if not 0 <= margin <= 2:
        raise ConfigError(f"--margin {margin} must be between 0 and 2")
    config = make_config(prompt if prompt is not None or config is not None else DEFAULT_PROMPT, config, settings)
    cast_list = characters if isinstance(characters, list) else [characters]
    pairs = pair_faces(cast_list, faces)
    source = Path(image)
    original = load_pil(source)
    path = output_path(out, source, "fixface", provenance)
    with edit_session(cast_list, config, generator=generator, base_model=base_model, ip_adapter=ip_adapter,
                      device=device, dtype=dtype, store=store, models=models,
                      conditioning_models=conditioning_models,
                      offload=offload, base_config=base_config, vae=vae) as session:
        meshed = meshed_faces(session.analyzer, original, [face for _, face in pairs], str(source))
        bgr = pixels(original)
        found = len(session.analyzer.analyze(bgr, dense=False).faces)
        befores = [session.cast[who].scorer.score_face(bgr, mf.face, faces=found)
                   for (who, _), mf in zip(pairs, meshed, strict=True)]
        loaded = session.load(inpaint=True).loaded
        pipe, sampler = derived_pipe(loaded, "inpaint", config.scheduler)
        current, union = original, np.zeros((original.height, original.width), dtype=np.float32)
        records = []
        for attempt, ((who, _), mf, before) in enumerate(zip(pairs, meshed, befores, strict=True)):
            member = session.cast[who]
            mask = face_mask((original.height, original.width), mf.points)
            region = work_region(mask, loaded.native_size, margin)
            candidate = inpaint_region(loaded, pipe, config, member.identity.vector, current, mask, region,
                                       strength=strength, seed=config.seed_for(attempt))
            after = score_at(member.scorer, candidate, mf.face.bbox)
            better = improved(before, after)
            kept = better or keep == "always"
            if kept:
                current = candidate
                union = np.maximum(union, mask)
            records.append({"face": mf.index, "character": member.identity.name, "before": score_record(before),
                            "after": score_record(after), "improved": better, "kept": kept,
                            "mask": mask_stats(mask), "region": region.to_dict(),
                            "scores": {"before": before.to_dict(), "after": after.to_dict()}})
        settings_out = {**config.to_dict(), "sampler": sampler, "strength": strength, "margin": margin, "keep": keep,
                        **session.load_settings()}
        settings_out.pop("prompt"), settings_out.pop("negative_prompt")
        mask_file = path.with_suffix(".mask.png")
        report = {"faces": records, "changed": any(r["kept"] for r in records), "mask_file": mask_file.name}
        result = write_edit(current, path, command="fix-face", source=source, session=session, config=config,
                            settings=settings_out, report=report, provenance=provenance)
        mask_image(union).save(mask_file)
        return result


def changed_pixels(before: Image.Image, after: Image.Image) -> np.ndarray:
    """Where two same-sized images differ (any channel): a boolean height x width array."""
    return np.any(np.asarray(before.convert("RGB")) != np.asarray(after.convert("RGB")), axis=2)
