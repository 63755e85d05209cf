"""`upscale`: to 2K/4K (the long side) or a pixel count. `diffusion` mode enlarges with Lanczos, then runs
a low-strength img2img pass tile by tile (tiles of the model's native size, overlapping and blended with
linear ramps, so memory stays that of one native-size image however large the output; the VAE's own
tiling is switched on too) with the character's identity conditioning, and re-scores the face.
`lanczos` mode is the resize alone: no model, no GPU."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...errors import ConfigError, SizeError
from ..config import GenerationConfig
from ..generator import CharacterOrIdentity, Generator, make_config
from ..loading import LoadedPipeline
from ..provenance.output import Provenance
from .faces import pixels, score_at, score_record
from .inpaint import check_output_size, derived_pipe, run_pipe
from .output import EditResult, output_path, write_edit
from .session import EditSession, edit_session

PRESETS = {"2k": 2048, "4k": 4096}  # the long side, as DCI 2K / 4K
MODES = ("diffusion", "lanczos")
DEFAULT_PROMPT = "a high-resolution photo, sharp focus, fine detail"
STRENGTH = 0.3  # enough to add detail, too little to change the composition or the face


def target_size(size: tuple[int, int], to: str | int) -> tuple[int, int]:
    """(width, height) with the long side `to` (2k, 4k or pixels) and the image's aspect; SizeError when it
    is not larger than the image or passes the output limits."""
    text = str(to).strip().lower()
    if text in PRESETS:
        long_side = PRESETS[text]
    elif re.fullmatch(r"\d+", text):
        long_side = int(text)
    else:
        raise SizeError(f"--to {to!r}: use 2k, 4k or the long side in pixels")
    width, height = size
    scale = long_side / max(width, height)
    target = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    if long_side <= max(width, height):
        raise SizeError(f"--to {to} is not larger than the image ({width}x{height}): nothing to upscale")
    check_output_size(*target, f"--to {to}:")
    return target


def positions(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts covering 0..length, the last flush with the end."""
    if length <= tile:
        return [0]
    step = max(8, tile - overlap)
    return sorted({*range(0, length - tile, step), length - tile})


def ramp(length: int, overlap: int) -> np.ndarray:
    """A tile's blending weight along one axis: rising over `overlap` pixels at each end, never 0."""
    edge = np.minimum(np.arange(1, length + 1), np.arange(length, 0, -1)).astype(np.float64)
    return np.minimum(edge / max(1, overlap), 1.0)


def tiled_img2img(loaded: LoadedPipeline, pipe: Any, config: GenerationConfig, vector: np.ndarray,
                  image: Image.Image, *, tile: int, strength: float) -> tuple[Image.Image, int]:
    """img2img over overlapping tiles (multiples of 8), blended; returns the image and the tile count."""
    width, height = image.size
    tile_w, tile_h = min(tile, width // 8 * 8), min(tile, height // 8 * 8)
    overlap = max(8, tile // 8)
    total = np.zeros((height, width, 3), dtype=np.float64)
    weights = np.zeros((height, width, 1), dtype=np.float64)
    count = 0
    for y in positions(height, tile_h, overlap):
        for x in positions(width, tile_w, overlap):
            crop = image.crop((x, y, x + tile_w, y + tile_h))
            out = run_pipe(loaded, pipe, config, vector, image=crop, strength=strength, seed=config.seed_for(count))
            if out.size != crop.size:
                out = out.resize(crop.size, Image.Resampling.LANCZOS)
            weight = np.outer(ramp(tile_h, overlap), ramp(tile_w, overlap))[..., None]
            total[y:y + tile_h, x:x + tile_w] += np.asarray(out, dtype=np.float64) * weight
            weights[y:y + tile_h, x:x + tile_w] += weight
            count += 1
    return Image.fromarray(np.clip(np.rint(total / weights), 0, 255).astype(np.uint8), "RGB"), count


def _scores(session: EditSession | None, original: Image.Image, result: Image.Image) -> dict[str, Any] | None:
    if session is None or not session.cast:
        return None
    member = session.cast[0]
    bgr = pixels(original)
    faces = session.analyzer.analyze(bgr, dense=False).faces
    if not faces:
        return {"before": {"face_found": False}, "after": None}
    before = member.scorer.score_face(bgr, faces[0], faces=len(faces))
    scale = result.width / original.width
    after = score_at(member.scorer, result, [float(v) * scale for v in faces[0].bbox])
    return {"before": score_record(before), "after": score_record(after)}


def upscale(image: str | os.PathLike[str], character: CharacterOrIdentity | None = None, *, to: str | int = "2k",
            mode: str = "diffusion", prompt: str | None = None, config: GenerationConfig | None = None,
            strength: float = STRENGTH, tile: int | None = None, out: str | os.PathLike[str] | None = None,
            generator: Generator | None = None, base_model: Any = None, ip_adapter: Any = None,
            device: str = "auto", dtype: str = "auto", store: Any = None, models: Any = None,
            conditioning_models: Any = None, offload: str = "none",
             base_config: Any = None, vae: Any = None, provenance: Provenance | None = None,
             **settings: Any) -> EditResult:
    """Upscale `image` so its long side is `to`; `diffusion` mode needs `character` (its identity conditions
    the detail pass), `lanczos` scores it only when one is given."""
    from ...landmarks.images import load_pil

    if mode not in MODES:
        raise ConfigError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
    if not 0 < strength <= 1:
        raise ConfigError(f"--strength {strength} must be in (0, 1]")
    if tile is not None and (tile < 64 or tile % 8):
        raise SizeError(f"--tile {tile} must be a multiple of 8, at least 64")
    source = Path(image)
    original = load_pil(source)
    size = target_size(original.size, to)
    path = output_path(out, source, "upscale", provenance)
    enlarged = original.resize(size, Image.Resampling.LANCZOS)
    if mode == "lanczos":
        if character is None:
            return write_edit(enlarged, path, command="upscale", source=source, session=None, config=None,
                              settings={"mode": mode, "to": str(to)},
                              report={"face": None}, provenance=provenance)
        lanczos_config = make_config(DEFAULT_PROMPT, None, {"scorer": settings.get("scorer", "fused")})
        with edit_session([character], lanczos_config, store=store, models=models, needs_weights=False) as session:
            return write_edit(enlarged, path, command="upscale", source=source, session=session, config=None,
                              settings={"mode": mode, "to": str(to)},
                              report={"face": _scores(session, original, enlarged)},
                              provenance=provenance)
    if character is None:
        raise ConfigError("--mode diffusion conditions the detail pass on a character: pass --character (or use "
                          "--mode lanczos)")
    config = make_config(prompt if prompt is not None or config is not None else DEFAULT_PROMPT, config, settings)
    with edit_session([character], config, generator=generator, base_model=base_model, ip_adapter=ip_adapter,
                      device=device, dtype=dtype, store=store, models=models,
                      conditioning_models=conditioning_models,
                      offload=offload, base_config=base_config, vae=vae) as session:
        loaded = session.load().loaded
        pipe, sampler = derived_pipe(loaded, "img2img", config.scheduler)
        if config.vae_tiling is None:  # the detail pass decodes with the VAE's tiling unless --no-vae-tiling
            config = replace(config, vae_tiling=True)
        tile_size = tile or loaded.native_size
        result, count = tiled_img2img(loaded, pipe, config, session.cast[0].identity.vector, enlarged,
                                      tile=tile_size, strength=strength)
        settings_out = {**config.to_dict(), "mode": mode, "to": str(to), "sampler": sampler, "strength": strength,
                        "tile": tile_size, "tiles": count, **session.load_settings()}
        settings_out.pop("prompt"), settings_out.pop("negative_prompt")
        return write_edit(result, path, command="upscale", source=source, session=session, config=config,
                          settings=settings_out, report={"face": _scores(session, original, result)},
                          provenance=provenance)
