"""Inpainting and img2img with identity conditioning, on the weights `Generator.from_pretrained` loaded.

An inpainting checkpoint (a 9-channel UNet: SD1.5/SDXL inpainting) is used as it is; a text-to-image base
model becomes diffusers' inpainting (or img2img) pipeline through `AutoPipeline*.from_pipe`, which shares
the loaded modules, so the FaceID adapter loaded into the UNet by `load_ip_adapter` conditions it too (a
4-channel UNet inpaints by blending the re-noised original back outside the mask at every step).

Edits work on a region at the model's own resolution (its native pixel count, the region's aspect) and
paste back with `masks.compose`: only pixels where the mask is above 0 change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ...errors import GenerationError, SizeError
from ..aspect import size_for_aspect
from ..config import GenerationConfig
from ..faceid_lora import apply_faceid_lora_scale
from ..identity_embeds import identity_embeds, uses_guidance
from ..loading import INPAINT_KINDS, LoadedPipeline
from ..memory import apply_vae_memory, tiling_wanted
from ..plus_conditioning import clip_embeds_for_call
from ..runner import AdapterConditioning
from ..schedulers import apply_scheduler
from .masks import compose, mask_box

# The largest image an edit writes (outpaint canvas, upscale target): 8192 px a side and 4096² pixels.
# Tiles keep the diffusion memory flat, but the canvas, its float copy and the PNG encoder still grow
# with the pixel count (about 0.5 GB at the limit).
MAX_OUTPUT_SIDE = 8192
MAX_OUTPUT_PIXELS = 4096 * 4096


def check_output_size(width: int, height: int, what: str) -> None:
    """SizeError when an edit's output would pass the limits above."""
    if width < 8 or height < 8:
        raise SizeError(f"{what} {width}x{height} is too small (at least 8 px a side)")
    if max(width, height) > MAX_OUTPUT_SIDE or width * height > MAX_OUTPUT_PIXELS:
        raise SizeError(f"{what} {width}x{height} is too large: at most {MAX_OUTPUT_SIDE} px a side and "
                        f"{MAX_OUTPUT_PIXELS / 1e6:.1f} MP")


def is_inpaint_checkpoint(loaded: LoadedPipeline) -> bool:
    return type(loaded.pipe).__name__ in INPAINT_KINDS


def derived_pipe(loaded: LoadedPipeline, task: str, scheduler: str = "default") -> tuple[Any, str]:
    """(`task` pipeline on the loaded modules, its sampler label): task is "inpaint" or "img2img"."""
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

    if task == "inpaint" and is_inpaint_checkpoint(loaded):
        pipe = loaded.pipe
    elif is_inpaint_checkpoint(loaded):
        raise GenerationError("an inpainting checkpoint cannot upscale (img2img): pass the text-to-image base model")
    else:
        auto = AutoPipelineForInpainting if task == "inpaint" else AutoPipelineForImage2Image
        pipe = auto.from_pipe(loaded.pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe, apply_scheduler(pipe, scheduler)


def run_pipe(loaded: LoadedPipeline, pipe: Any, config: GenerationConfig, inputs: AdapterConditioning, *,
             image: Image.Image, strength: float, seed: int, mask: Image.Image | None = None) -> Image.Image:
    """One conditioned call at the size of `image` (a multiple of 8): inpaint when `mask` is given. `inputs`
    (runner.adapter_conditioning) are the character's vector, or a Portrait adapter's reference vectors, and a
    FaceID Plus adapter's CLIP features of the stored face crops (handed to the shared UNet's projection)."""
    import torch

    if int(config.steps * strength) < 1:
        raise GenerationError(f"--steps {config.steps} x --strength {strength} leaves no denoising step: raise "
                              "either")
    guidance = uses_guidance(pipe, config.guidance)
    pipe.set_ip_adapter_scale(config.id_scale)
    apply_faceid_lora_scale(pipe, config.id_scale, config.lora_scale)
    # One image per call: slicing only when asked; tiling as `generate` decides it (--vae-tiling, else auto).
    apply_vae_memory(pipe, tiling=tiling_wanted(config.vae_tiling, image.width, image.height, loaded.native_size,
                                                loaded.offload), slicing=bool(config.vae_slicing))
    embeds = identity_embeds(inputs.vector, guidance=guidance, device=loaded.device, dtype=pipe.unet.dtype,
                             dim=loaded.checkpoint.id_dim)
    extra: dict[str, Any] = {} if mask is None else {"mask_image": mask, "width": image.width,
                                                     "height": image.height}
    try:
        with clip_embeds_for_call(loaded, inputs.clip, images=1, guidance=guidance, s_scale=config.s_scale):
            output = pipe(prompt=config.prompt, negative_prompt=config.negative_prompt or None, image=image,
                          strength=strength, num_inference_steps=config.steps, guidance_scale=config.guidance,
                          generator=torch.Generator(device="cpu").manual_seed(seed), ip_adapter_image_embeds=embeds,
                          output_type="pil", **extra)
    except torch.OutOfMemoryError:
        raise GenerationError(f"out of memory on {loaded.device} at {image.width}x{image.height}: use "
                              "--dtype float16 or a smaller --tile") from None
    result: Image.Image = output.images[0]
    return result


@dataclass
class Region:
    """Where an edit works: `box` (x1, y1, x2, y2) of the image, processed at `size` (the model's)."""

    box: tuple[int, int, int, int]
    size: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {"box": list(self.box), "model_size": list(self.size)}


def work_region(mask: np.ndarray, native: int, margin: float) -> Region:
    """The box around the mask grown by `margin` x its longer side (context for the model), inside the
    image, and the size the model works at: its native pixel count in the box's aspect."""
    height, width = mask.shape[:2]
    x1, y1, x2, y2 = mask_box(mask)
    pad = int(round(margin * max(x2 - x1, y2 - y1)))
    box = (max(0, x1 - pad), max(0, y1 - pad), min(width, x2 + pad), min(height, y2 + pad))
    return Region(box, model_size(box, native))


def model_size(box: tuple[int, int, int, int], native: int) -> tuple[int, int]:
    ratio = min(max((box[2] - box[0]) / max(1, box[3] - box[1]), 0.25), 4.0)
    return size_for_aspect(ratio, native)


def pipeline_mask(mask: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """The region's mask at the model's size, white wherever the paste-back may take pixels (mask > 0),
    grown a pixel so resizing never leaves an edge of the feather unpainted."""
    import cv2

    binary = (np.asarray(mask) > 0).astype(np.uint8) * 255
    resized = cv2.resize(binary, size, interpolation=cv2.INTER_LINEAR)
    resized = cv2.dilate((resized > 0).astype(np.uint8) * 255, np.ones((3, 3), np.uint8))
    return Image.fromarray(resized, "L")


def inpaint_region(loaded: LoadedPipeline, pipe: Any, config: GenerationConfig, inputs: AdapterConditioning,
                   image: Image.Image, mask: np.ndarray, region: Region, *, strength: float, seed: int
                   ) -> Image.Image:
    """`image` with `region` inpainted where `mask` (full size, float) is above 0 and pasted back by it."""
    x1, y1, x2, y2 = region.box
    crop = image.crop(region.box).resize(region.size, Image.Resampling.LANCZOS)
    painted = run_pipe(loaded, pipe, config, inputs, image=crop, strength=strength, seed=seed,
                       mask=pipeline_mask(mask[y1:y2, x1:x2], region.size))
    edited = image.copy()
    edited.paste(painted.resize((x2 - x1, y2 - y1), Image.Resampling.LANCZOS), (x1, y1))
    return compose(image, edited, mask)
