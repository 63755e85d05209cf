"""PNG metadata other tools read, and the JSON sidecar written next to every output.

The PNG carries an A1111-style `parameters` text chunk (read by A1111/Forge "PNG Info", Civitai,
ComfyUI importers and most image browsers) plus the full sidecar as a `castkeep` chunk, so an image
copied on its own still says how it was made and how it scored.
"""

from __future__ import annotations

import functools
import io
import json
import os
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

SIDECAR_SCHEMA_ID = "castkeep.generation.sidecar/3"


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def a1111_parameters(prompt: str, negative_prompt: str, settings: dict[str, Any]) -> str:
    """'prompt\\nNegative prompt: ...\\nSteps: 30, Sampler: ..., CFG scale: ..., Seed: ..., Size: WxH, ...'."""
    lines = [prompt.strip()]
    if negative_prompt.strip():
        lines.append(f"Negative prompt: {negative_prompt.strip()}")
    # A1111 separates fields with ", " and quotes values holding a comma or colon.
    fields = []
    for key, value in settings.items():
        if value is None or value == "":
            continue
        text = _clean(value)
        if "," in text or ":" in text:
            text = json.dumps(text, ensure_ascii=False)
        fields.append(f"{key}: {text}")
    lines.append(", ".join(fields))
    return "\n".join(lines)


def parse_a1111_parameters(text: str) -> dict[str, str]:
    """Inverse of `a1111_parameters` (enough of A1111's own parser to read our files back)."""
    lines = text.split("\n")
    result = {"prompt": lines[0], "negative_prompt": ""}
    for line in lines[1:-1]:
        if line.startswith("Negative prompt: "):
            result["negative_prompt"] = line[len("Negative prompt: "):]
    last = lines[-1] if len(lines) > 1 else ""
    position = 0
    while position < len(last):
        colon = last.find(": ", position)
        if colon < 0:
            break
        key = last[position:colon]
        start = colon + 2
        if last.startswith('"', start):
            value, end = json.JSONDecoder().raw_decode(last, start)
        else:
            end = last.find(", ", start)
            end = len(last) if end < 0 else end
            value = last[start:end]
        result[key] = value
        position = end + 2 if last.startswith(", ", end) else end
    return result


def png_bytes(image: Image.Image, parameters: str, sidecar: dict[str, Any]) -> bytes:
    """The PNG file of `image` with both text chunks (outputs are written by
    `provenance.output.Provenance.save_png`, which adds the watermark and Content Credentials)."""
    info = PngInfo()
    info.add_text("parameters", parameters)
    info.add_itxt("castkeep", json.dumps(sidecar, ensure_ascii=False, separators=(",", ":")))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_png_text(path: str | os.PathLike) -> dict[str, str]:
    """The text chunks of a PNG as PIL reads them (`parameters`, `castkeep`, ...)."""
    with Image.open(path) as image:
        image.load()
        return dict(getattr(image, "text", {}) or {})


# ---------------------------------------------------------------------------------- validation
# JSON Schemas (draft 2020-12) of the files a run or an edit writes, shipped as package data; the summaries'
# and the edit sidecar's schemas refer to the generation sidecar's parts by `$id`.
SCHEMA_DIR = Path(__file__).with_name("schemas")
SCHEMA_FILES = {"sidecar": "sidecar.schema.json", "summary": "summary.schema.json", "edit": "edit.schema.json",
                "storyboard": "storyboard.schema.json"}


@functools.cache
def _validators() -> dict[str, Any]:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    schemas = {kind: json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8")) for kind, name in SCHEMA_FILES.items()}
    registry = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in schemas.values())
    return {kind: Draft202012Validator(schema, registry=registry) for kind, schema in schemas.items()}


def _schema_errors(kind: str, data: Any) -> list[str]:
    errors = sorted(_validators()[kind].iter_errors(data), key=lambda error: error.json_path)
    return [f"{error.json_path}: {error.message}" for error in errors]


def sidecar_errors(data: Any) -> list[str]:
    """Why `data` is not a valid output sidecar, one line per problem (`$.seed: -3 is less than the
    minimum of 0`); empty when it is valid against schemas/sidecar.schema.json."""
    return _schema_errors("sidecar", data)


def summary_errors(data: Any) -> list[str]:
    """Why `data` is not a valid run summary.json; empty when it is valid against schemas/summary.schema.json."""
    return _schema_errors("summary", data)


def storyboard_summary_errors(data: Any) -> list[str]:
    """Why `data` is not a valid storyboard run's summary.json (generation/storyboard/report.py); empty when it
    is valid against schemas/storyboard.schema.json."""
    return _schema_errors("storyboard", data)


def edit_sidecar_errors(data: Any) -> list[str]:
    """Why `data` is not a valid edit sidecar (fix-face, edit, outpaint, upscale); empty when it is valid
    against schemas/edit.schema.json."""
    return _schema_errors("edit", data)
