"""Aspect ratios → image sizes the pipelines accept.

Sizes keep roughly the model's native pixel count (512² for SD1.5, 1024² for SDXL) and are rounded to
a multiple of 8 (the VAE's downscale factor), the way A1111/ComfyUI aspect presets do. Explicit sizes are
bounded by the model: each side at most MAX_SIDE_FACTOR × its native side and at most MAX_AREA_FACTOR × its
native pixel count. Far past its training size a model repeats and tiles the subject, and the UNet's
attention and the VAE's decoder grow with the pixel count until the run takes minutes per step or fails to
allocate (8192² on SDXL).
"""

from __future__ import annotations

import math
import re

from ..errors import SizeError

SIZE_MULTIPLE = 8
MAX_SIDE_FACTOR = 4   # a side up to 4× native: 2048 px for SD1.5, 4096 px for SDXL...
MAX_AREA_FACTOR = 4   # ...and up to 4× the native pixels: 1024² for SD1.5, 2048² for SDXL
COMMON_ASPECTS = ("1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "21:9", "9:21")
_ASPECT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[:x/]\s*(\d+(?:\.\d+)?)\s*$")


def parse_aspect(text: str) -> float:
    """'16:9' (or '16x9', '16/9', '1.5') → width / height."""
    match = _ASPECT.match(text)
    try:
        ratio = float(match.group(1)) / float(match.group(2)) if match else float(text)
    except (ValueError, ZeroDivisionError):
        ratio = float("nan")
    if not math.isfinite(ratio) or not 0.1 <= ratio <= 10:
        raise SizeError(f"bad aspect ratio {text!r}: use W:H between 1:10 and 10:1, e.g. "
                        + ", ".join(COMMON_ASPECTS[:6]))
    return ratio


def round_to_multiple(value: float, multiple: int = SIZE_MULTIPLE) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def size_for_aspect(aspect: str | float, base: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """(width, height) with about base² pixels and the requested width/height ratio."""
    ratio = parse_aspect(aspect) if isinstance(aspect, str) else float(aspect)
    area = float(base) * float(base)
    return round_to_multiple(math.sqrt(area * ratio), multiple), round_to_multiple(math.sqrt(area / ratio), multiple)


def check_size(width: int, height: int, base: int, model: str = "the model") -> None:
    """SizeError when `width` x `height` is too large for a model of native side `base` (see the module
    docstring); `model` names it in the message."""
    side_limit = MAX_SIDE_FACTOR * base
    for label, value in (("width", width), ("height", height)):
        if value > side_limit:
            raise SizeError(f"--{label} {value} is too large: at most {side_limit} px, {MAX_SIDE_FACTOR}x the "
                            f"native {base} px of {model} (generate smaller and upscale)")
    area_limit = MAX_AREA_FACTOR * base * base
    if width * height > area_limit:
        raise SizeError(f"{width}x{height} is too large: at most {area_limit / 1e6:.1f} MP, {MAX_AREA_FACTOR}x "
                        f"the native {base}x{base} of {model} (generate smaller and upscale)")


def resolve_size(*, width: int | None, height: int | None, aspect: str | None, base: int,
                 multiple: int = SIZE_MULTIPLE, model: str = "the model") -> tuple[int, int]:
    """Width/height from what the user gave: both sizes, one size + aspect, an aspect, or nothing; within
    the bounds of a model of native side `base` (check_size)."""
    width, height = _requested_size(width=width, height=height, aspect=aspect, base=base, multiple=multiple)
    check_size(width, height, base, model)
    return width, height


def _requested_size(*, width: int | None, height: int | None, aspect: str | None, base: int,
                    multiple: int) -> tuple[int, int]:
    for label, value in (("width", width), ("height", height)):
        if value is not None and (value < multiple or value % multiple):
            raise SizeError(f"--{label} {value} must be a positive multiple of {multiple}")
    if width is not None and height is not None:
        if aspect is not None:
            raise SizeError("give --aspect or both --width and --height, not all three")
        return width, height
    ratio = parse_aspect(aspect) if aspect is not None else 1.0
    if width is not None:
        return width, round_to_multiple(width / ratio, multiple)
    if height is not None:
        return round_to_multiple(height * ratio, multiple), height
    return size_for_aspect(ratio, base, multiple)
