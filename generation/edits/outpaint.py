"""`outpaint`: extend the canvas (to an aspect ratio, or by pixels per side) and fill the new area with the
character's identity conditioning. The original pixels are kept exactly (the fill is pasted back only
where the mask is 1: the new area), so the character's face is untouched; it is re-scored on the new
canvas all the same (a detector sees the whole frame)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...errors import ConfigError
from ..aspect import parse_aspect
from ..config import GenerationConfig
from ..generator import CharacterOrIdentity, Generator, make_config
from ..provenance.output import Provenance
from .faces import pixels, score_at, score_record
from .inpaint import Region, check_output_size, derived_pipe, inpaint_region, model_size
from .output import EditResult, output_path, write_edit
from .session import edit_session

DEFAULT_PROMPT = "a photo, natural continuation of the scene, consistent lighting"
STRENGTH = 1.0  # the new area has no content worth keeping: it starts from noise


def extension(size: tuple[int, int], aspect: str | None = None, *, left: int = 0, right: int = 0, top: int = 0,
              bottom: int = 0) -> tuple[int, int, int, int]:
    """Pixels to add (left, top, right, bottom): what reaches `aspect` with the image centred (the canvas
    only grows), or the sides as given."""
    sides = (left, top, right, bottom)
    if any(side < 0 for side in sides):
        raise ConfigError("pixels per side cannot be negative")
    if aspect is not None:
        if any(sides):
            raise ConfigError("give --aspect or pixels per side (--left/--right/--top/--bottom), not both")
        ratio = parse_aspect(aspect)
        width, height = size
        if width / height < ratio:
            extra = int(round(height * ratio)) - width
            sides = (extra // 2, 0, extra - extra // 2, 0)
        else:
            extra = int(round(width / ratio)) - height
            sides = (0, extra // 2, 0, extra - extra // 2)
    if not any(sides):
        raise ConfigError("nothing to extend: the image already has that aspect, or every side is 0")
    return sides


def extended_canvas(original: Image.Image, sides: tuple[int, int, int, int]) -> tuple[Image.Image, np.ndarray]:
    """The original on the larger canvas, the new area prefilled with its edge pixels (context for a
    strength below 1), and the mask: 1 on the new area, 0 on the original."""
    import cv2

    left, top, right, bottom = sides
    rgb = np.asarray(original.convert("RGB"))
    canvas = cv2.copyMakeBorder(rgb, top, bottom, left, right, cv2.BORDER_REPLICATE)
    mask = np.ones(canvas.shape[:2], dtype=np.float32)
    mask[top:top + original.height, left:left + original.width] = 0.0
    return Image.fromarray(canvas, "RGB"), mask


def outpaint(image: str | os.PathLike[str], character: CharacterOrIdentity, prompt: str | None = None, *,
             aspect: str | None = None, left: int = 0, right: int = 0, top: int = 0, bottom: int = 0,
             config: GenerationConfig | None = None, strength: float = STRENGTH,
             out: str | os.PathLike[str] | None = None, generator: Generator | None = None, base_model: Any = None,
             ip_adapter: Any = None, device: str = "auto", dtype: str = "auto", store: Any = None,
             models: Any = None, conditioning_models: Any = None, offload: str = "none",
             base_config: Any = None, vae: Any = None, provenance: Provenance | None = None,
             **settings: Any) -> EditResult:
    """Extend `image` to `aspect` (or by pixels per side) and fill the new area as `character`'s scene."""
    from ...landmarks.images import load_pil

    if not 0 < strength <= 1:
        raise ConfigError(f"--strength {strength} must be in (0, 1]")
    config = make_config(prompt if prompt is not None or config is not None else DEFAULT_PROMPT, config, settings)
    source = Path(image)
    original = load_pil(source)
    sides = extension(original.size, aspect, left=left, right=right, top=top, bottom=bottom)
    width, height = original.width + sides[0] + sides[2], original.height + sides[1] + sides[3]
    check_output_size(width, height, "the outpainted canvas")
    path = output_path(out, source, "outpaint", provenance)
    with edit_session([character], config, generator=generator, base_model=base_model, ip_adapter=ip_adapter,
                      device=device, dtype=dtype, store=store, models=models,
                      conditioning_models=conditioning_models,
                      offload=offload, base_config=base_config, vae=vae) as session:
        member = session.cast[0]
        bgr = pixels(original)
        faces = session.analyzer.analyze(bgr, dense=False).faces
        before = member.scorer.score_face(bgr, faces[0], faces=len(faces)) if faces else None
        loaded = session.load(inpaint=True).loaded
        pipe, sampler = derived_pipe(loaded, "inpaint", config.scheduler)
        canvas, mask = extended_canvas(original, sides)
        region = Region((0, 0, width, height), model_size((0, 0, width, height), loaded.native_size))
        filled = inpaint_region(loaded, pipe, config, member.identity.vector, canvas, mask, region,
                                strength=strength, seed=config.seed_for(0))
        after = None
        if faces:
            x1, y1, x2, y2 = (float(v) for v in faces[0].bbox)
            after = score_at(member.scorer, filled, (x1 + sides[0], y1 + sides[1], x2 + sides[0], y2 + sides[1]))
        settings_out = {**config.to_dict(), "sampler": sampler, "strength": strength, "aspect": aspect,
                        **session.load_settings()}
        settings_out.pop("prompt"), settings_out.pop("negative_prompt")
        report = {"extension": dict(zip(("left", "top", "right", "bottom"), sides, strict=True)),
                  "original_box": [sides[0], sides[1], sides[0] + original.width, sides[1] + original.height],
                  "region": region.to_dict(),
                  "face": None if before is None else {"before": score_record(before),
                                                       "after": score_record(after) if after is not None else None}}
        return write_edit(filled, path, command="outpaint", source=source, session=session, config=config,
                          settings=settings_out, report=report, provenance=provenance)
