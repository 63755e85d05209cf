"""Aspect ratios → image sizes the pipelines accept.

`--aspect` presets follow what each model family was trained on:

- SD1.5 (and any model with a native side below 1024): the short side stays at the native side (512) and
  the long side grows, as the FaceID card's 512x768 does (2:3 → 512x768, 16:9 → 912x512); SD1.5 crops and
  repeats subjects when a side drops below 512. A ratio so wide that the long side would pass 4x native is
  shrunk to fit.
- SDXL: the nearest of the aspect buckets SDXL was trained on (64-pixel steps around 1024², from the SDXL
  paper's appendix: 16:9 → 1344x768, 3:2 → 1216x832), scaled to the model's native side; a ratio no
  bucket is within 10% of keeps about 1024² pixels in 64-pixel steps.

`size_for_aspect` (about base² pixels, multiples of 8) remains for callers that want the plain area rule.
Explicit sizes are bounded by the model: each side at most MAX_SIDE_FACTOR × its native side and at most
MAX_AREA_FACTOR × its native pixel count. Far past its training size a model repeats and tiles the subject,
and the UNet's attention and the VAE's decoder grow with the pixel count until the run takes minutes per
step or fails to allocate (8192² on SDXL).
"""

from __future__ import annotations

import math
import re

from ..errors import SizeError

SIZE_MULTIPLE = 8
MAX_SIDE_FACTOR = 4   # a side up to 4× native: 2048 px for SD1.5, 4096 px for SDXL...
MAX_AREA_FACTOR = 4   # ...and up to 4× the native pixels: 1024² for SD1.5, 2048² for SDXL
COMMON_ASPECTS = ("1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "21:9", "9:21")
# SDXL's training buckets (width, height), landscape and square; portrait ones are these transposed.
SDXL_BUCKETS = ((1024, 1024), (1088, 960), (1088, 896), (1152, 896), (1152, 832), (1216, 832), (1280, 768),
                (1344, 768), (1408, 704), (1472, 704), (1536, 640), (1600, 640), (1664, 576), (1728, 576),
                (1792, 576), (1856, 512), (1920, 512), (1984, 512), (2048, 512))
SDXL_NATIVE = 1024
BUCKET_TOLERANCE = 0.10  # a bucket more than 10% off the requested ratio is not that ratio any more
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


def sdxl_bucket(ratio: float, base: int = SDXL_NATIVE, multiple: int = SIZE_MULTIPLE) -> tuple[int, int] | None:
    """The SDXL training bucket nearest `ratio` (width / height), scaled to a model of native side `base`;
    None when no bucket is within BUCKET_TOLERANCE of it."""
    buckets = [*SDXL_BUCKETS, *((h, w) for w, h in SDXL_BUCKETS[1:])]
    width, height = min(buckets, key=lambda size: abs(math.log(size[0] / size[1] / ratio)))
    if abs(math.log(width / height / ratio)) > math.log1p(BUCKET_TOLERANCE):
        return None
    if base == SDXL_NATIVE:
        return width, height
    return round_to_multiple(width * base / SDXL_NATIVE, multiple), round_to_multiple(height * base / SDXL_NATIVE,
                                                                                        multiple)


def short_side_size(ratio: float, base: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """The short side at `base`, the long side `ratio` times it; shrunk to MAX_SIDE_FACTOR × base at most."""
    wide = ratio >= 1
    long_side = base * (ratio if wide else 1 / ratio)
    short = float(base)
    if long_side > MAX_SIDE_FACTOR * base:
        short, long_side = short * MAX_SIDE_FACTOR * base / long_side, float(MAX_SIDE_FACTOR * base)
    long_px, short_px = round_to_multiple(long_side, multiple), round_to_multiple(short, multiple)
    long_px = min(long_px, MAX_SIDE_FACTOR * base // multiple * multiple)
    return (long_px, short_px) if wide else (short_px, long_px)


def preset_size(aspect: str | float, base: int, kind: str | None = None, multiple: int = SIZE_MULTIPLE
                ) -> tuple[int, int]:
    """`--aspect` for a model of native side `base`: SDXL buckets for `kind` "sdxl", the short-side rule
    for "sd15"; with no kind, a native side of 1024 or more counts as SDXL (see the module docstring)."""
    ratio = parse_aspect(aspect) if isinstance(aspect, str) else float(aspect)
    if (kind or ("sdxl" if base >= SDXL_NATIVE else "sd15")) == "sdxl":
        bucket = sdxl_bucket(ratio, base, multiple)
        if bucket is not None:
            return bucket
        step = max(multiple, round_to_multiple(64 * base / SDXL_NATIVE, multiple))
        return size_for_aspect(ratio, base, step)
    return short_side_size(ratio, base, multiple)


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
                 multiple: int = SIZE_MULTIPLE, model: str = "the model", kind: str | None = None
                 ) -> tuple[int, int]:
    """Width/height from what the user gave: both sizes, one size + aspect, an aspect (`preset_size` for
    `kind`), or nothing (native square); within the bounds of a model of native side `base` (check_size)."""
    width, height = _requested_size(width=width, height=height, aspect=aspect, base=base, multiple=multiple,
                                    kind=kind)
    check_size(width, height, base, model)
    return width, height


def _requested_size(*, width: int | None, height: int | None, aspect: str | None, base: int,
                    multiple: int, kind: str | None) -> tuple[int, int]:
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
    return (base, base) if aspect is None else preset_size(ratio, base, kind, multiple)
