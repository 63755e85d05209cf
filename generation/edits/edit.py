"""`edit`: inpaint a region of an image from a prompt, conditioned on a character's identity. The region is
a mask from the face mesh (face, hair, background: see masks.py) or a mask file of the image's size."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError
from ..config import GenerationConfig
from ..generator import CharacterOrIdentity, Generator, make_config
from ..provenance.output import Provenance
from .faces import meshed_faces, pixels, score_at, score_record
from .inpaint import derived_pipe, inpaint_region, work_region
from .masks import MASK_KINDS, landmark_mask, load_mask, mask_image, mask_stats
from .output import EditResult, output_path, write_edit
from .session import edit_session

if TYPE_CHECKING:
    from ...identity.analyzer import Face

STRENGTH = 0.75  # an edit changes what the prompt says, more than fix-face's refinement
MARGIN = 0.25


def edit_image(image: str | os.PathLike[str], character: CharacterOrIdentity, prompt: str | None = None, *,
               mask: str | os.PathLike[str] = "face", face: int | None = None, config: GenerationConfig | None = None,
               strength: float = STRENGTH, margin: float = MARGIN, out: str | os.PathLike[str] | None = None,
               generator: Generator | None = None, base_model: Any = None, ip_adapter: Any = None,
               device: str = "auto", dtype: str = "auto", store: Any = None, models: Any = None,
               conditioning_models: Any = None, offload: str = "none", base_config: Any = None,
               vae: Any = None, provenance: Provenance | None = None, **settings: Any) -> EditResult:
    """Repaint the `mask` region of `image` from `prompt` as `character`: mask is face, hair or background
    (from face `face`'s mesh, default the largest) or a mask file (white = repaint) of the image's size.
    The character's face is scored before and after."""
    from ...landmarks.images import load_pil

    if not 0 < strength <= 1:
        raise ConfigError(f"--strength {strength} must be in (0, 1]")
    config = make_config(prompt, config, settings)
    source = Path(image)
    original = load_pil(source)
    path = output_path(out, source, "edit", provenance)
    # A mask file is checked before the face models even look at the image.
    file_mask = None if str(mask) in MASK_KINDS else load_mask(mask, original.size)
    with edit_session([character], config, generator=generator, base_model=base_model, ip_adapter=ip_adapter,
                      device=device, dtype=dtype, store=store, models=models,
                      conditioning_models=conditioning_models,
                      offload=offload, base_config=base_config, vae=vae) as session:
        member = session.cast[0]
        bgr = pixels(original)
        faces = session.analyzer.analyze(bgr, dense=False).faces
        target: Face | None
        if file_mask is None:
            meshed = meshed_faces(session.analyzer, original, [face], str(source))[0]
            region_mask = landmark_mask(str(mask), (original.height, original.width), meshed.points)
            target = meshed.face
        else:
            region_mask = file_mask
            target = faces[face or 0] if faces and (face or 0) < len(faces) else None
        before = member.scorer.score_face(bgr, target, faces=len(faces)) if target is not None else None
        loaded = session.load(inpaint=True).loaded
        pipe, sampler = derived_pipe(loaded, "inpaint", config.scheduler)
        region = work_region(region_mask, loaded.native_size, margin)
        edited = inpaint_region(loaded, pipe, config, member.identity.vector, original, region_mask, region,
                                strength=strength, seed=config.seed_for(0))
        after = score_at(member.scorer, edited, target.bbox) if target is not None else None
        settings_out = {**config.to_dict(), "sampler": sampler, "strength": strength, "margin": margin,
                        "mask": str(mask), **session.load_settings()}
        settings_out.pop("prompt"), settings_out.pop("negative_prompt")
        mask_file = path.with_suffix(".mask.png")
        report = {"mask": {"kind": str(mask) if file_mask is None else "file", **mask_stats(region_mask)},
                  "region": region.to_dict(), "mask_file": mask_file.name,
                  "face": None if target is None else {
                      "before": score_record(before) if before is not None else None,
                      "after": score_record(after) if after is not None else None}}
        result = write_edit(edited, path, command="edit", source=source, session=session, config=config,
                            settings=settings_out, report=report, provenance=provenance)
        mask_image(region_mask).save(mask_file)
        return result
