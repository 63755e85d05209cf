"""Fitting SD1.5/SDXL + FaceID into a small GPU: CPU offload at load time, VAE slicing/tiling per run.

- `offload="model"` (diffusers' `enable_model_cpu_offload`): each whole model (text encoders, UNet, VAE)
  moves to the GPU only while it runs; the GPU holds the largest one (SDXL's UNet) plus activations.
  A little slower per image.
- `offload="sequential"` (`enable_sequential_cpu_offload`): submodule by submodule; the least memory and
  many times slower.
- VAE slicing decodes a batch one image at a time; VAE tiling decodes large images in overlapping tiles
  (the decoder's activations grow with the pixel count). Tiling is on by default ("auto") above
  TILING_AUTO_FACTOR x the model's native pixels, and with sequential offload.

Both offloads move weights between CPU RAM and an accelerator (accelerate hooks); on the CPU everything
is already in RAM, so `--offload` with `--device cpu` is refused rather than silently ignored.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

OFFLOADS = ("none", "model", "sequential")
TILING_AUTO_FACTOR = 2  # auto tiling above 2x native pixels: SDXL past ~2.1 MP, SD1.5 past ~0.5 MP


def check_offload(offload: str, device: str | None = None) -> None:
    """ConfigError for an unknown mode, or an offload on the CPU (`device` resolved; None: not known yet)."""
    if offload not in OFFLOADS:
        raise ConfigError(f"--offload {offload!r} is not one of {', '.join(OFFLOADS)}")
    if offload != "none" and device == "cpu":
        raise ConfigError(f"--offload {offload} moves weights between CPU RAM and a GPU; on the CPU they are all in "
                          "RAM already: drop --offload (or use --device cuda)")


def place_pipeline(pipe: Any, device: str, offload: str = "none") -> None:
    """Move `pipe` to `device`, or install the offload hooks that move each part there when it runs."""
    check_offload(offload, device)
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)


def tiling_wanted(setting: bool | None, width: int, height: int, native: int, offload: str = "none") -> bool:
    """An explicit setting wins; auto (None) tiles large images, and everything under sequential offload."""
    if setting is not None:
        return setting
    return width * height > TILING_AUTO_FACTOR * native * native or offload == "sequential"


def apply_vae_memory(pipe: Any, *, tiling: bool, slicing: bool) -> None:
    """Switch the VAE's tiled and sliced decoding on or off for this run."""
    vae = pipe.vae
    vae.enable_tiling() if tiling else vae.disable_tiling()
    vae.enable_slicing() if slicing else vae.disable_slicing()
