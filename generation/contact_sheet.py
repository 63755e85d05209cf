"""One PNG to look at a run: every output with its seed and identity score, and the pairwise
identity-consistency matrix across outputs as a heat map. It shows generated faces, so it carries
castkeep's invisible watermark like the outputs themselves (unless the run has none)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from .provenance.output import Provenance

CELL = 256
CAPTION = 44
PAD = 8
BACKGROUND = (24, 24, 28)
PASS, FAIL, MISSING = (90, 200, 120), (230, 90, 80), (170, 170, 170)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _caption(item: dict[str, Any]) -> tuple[str, str, tuple[int, int, int]]:
    score = item["score"]
    top = f"#{item['index']}  seed {item['seed']}"
    if not score.get("face_found"):
        return top, "no face", MISSING
    line = f"p {score['probability']:.2f}  cos {score['cosine']:+.3f}"
    if score.get("leakage"):
        line += "  LEAK"
    if (score.get("agreement") or {}).get("kind") == "conditioning-only":
        line += "  DLIB?"  # ArcFace says same, dlib says different: look at this one
    return top, line, PASS if item.get("passed", score.get("same")) else FAIL


def _thumbnail(image: Image.Image) -> Image.Image:
    scale = CELL / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # Nearest for tiny images (keeps pixels honest), Lanczos when shrinking real outputs.
    return image.convert("RGB").resize(size, Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS)


def _matrix_panel(matrix: Sequence[Sequence[float | None]], labels: Sequence[str], size: int) -> Image.Image:
    panel = Image.new("RGB", (size, size), BACKGROUND)
    count = len(matrix)
    if count == 0:
        return panel
    draw = ImageDraw.Draw(panel)
    font = _font(11)
    margin = 40
    cell = max(4, (size - margin - PAD) // count)
    for i, row in enumerate(matrix):
        draw.text((4, margin + i * cell + cell // 2 - 6), labels[i], fill=(220, 220, 220), font=font)
        draw.text((margin + i * cell + 2, margin - 16), labels[i], fill=(220, 220, 220), font=font)
        for j, value in enumerate(row):
            box = (margin + j * cell, margin + i * cell, margin + (j + 1) * cell - 1, margin + (i + 1) * cell - 1)
            if value is None:
                draw.rectangle(box, fill=(60, 60, 60))
                continue
            t = max(0.0, min(1.0, (float(value) + 0.2) / 1.2))  # -0.2..1 → dark blue..yellow
            draw.rectangle(box, fill=(int(40 + 215 * t), int(40 + 180 * t), int(120 * (1 - t) + 40)))
            if cell >= 36:
                draw.text((box[0] + 3, box[1] + cell // 2 - 6), f"{value:.2f}", fill=(0, 0, 0), font=font)
    draw.text((4, 4), "identity consistency (cosine)", fill=(230, 230, 230), font=font)
    return panel


def contact_sheet(items: Sequence[dict[str, Any]], images: Sequence[Image.Image], path: Path, *,
                  title: str = "", matrix: Sequence[Sequence[float | None]] | None = None,
                  provenance: Provenance | None = None) -> Path:
    """Grid of outputs (with captions) + the consistency heat map; saved as PNG at `path`, watermarked
    when `provenance` says so (one mark per run: about as cheap as one output's)."""
    tiles = list(zip(items, images, strict=True))
    panels = len(tiles) + (1 if matrix else 0)
    columns = max(1, min(4, math.ceil(math.sqrt(panels))))
    rows = max(1, math.ceil(panels / columns))
    header = 28 if title else 0
    width = PAD + columns * (CELL + PAD)
    height = header + PAD + rows * (CELL + CAPTION + PAD)
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((PAD, 6), title[:120], fill=(240, 240, 240), font=_font(15))
    font = _font(13)
    for position, (item, image) in enumerate(tiles):
        x = PAD + (position % columns) * (CELL + PAD)
        y = header + PAD + (position // columns) * (CELL + CAPTION + PAD)
        thumb = _thumbnail(image)
        sheet.paste(thumb, (x + (CELL - thumb.width) // 2, y + (CELL - thumb.height) // 2))
        top, line, colour = _caption(item)
        draw.rectangle((x, y + CELL, x + CELL - 1, y + CELL + 3), fill=colour)
        draw.text((x + 2, y + CELL + 6), top, fill=(230, 230, 230), font=font)
        draw.text((x + 2, y + CELL + 24), line, fill=colour, font=font)
    if matrix:
        position = len(tiles)
        x = PAD + (position % columns) * (CELL + PAD)
        y = header + PAD + (position // columns) * (CELL + CAPTION + PAD)
        sheet.paste(_matrix_panel(matrix, [f"#{item['index']}" for item in items], CELL), (x, y))
    if provenance is not None:
        sheet = provenance.mark(sheet).image
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG")
    return path
