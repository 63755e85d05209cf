"""PNG metadata other tools read, and the JSON sidecar written next to every output.

The PNG carries an A1111-style `parameters` text chunk (read by A1111/Forge "PNG Info", Civitai,
ComfyUI importers and most image browsers) plus the full sidecar as a `castkeep` chunk, so an image
copied on its own still says how it was made and how it scored.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ..utils import write_bytes_atomic

SIDECAR_SCHEMA_ID = "castkeep.generation.sidecar/1"


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


def save_png(image: Image.Image, path: Path, parameters: str, sidecar: dict[str, Any]) -> None:
    """Write the PNG with both text chunks, atomically (a crash leaves no half-written image)."""
    info = PngInfo()
    info.add_text("parameters", parameters)
    info.add_itxt("castkeep", json.dumps(sidecar, ensure_ascii=False, separators=(",", ":")))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    write_bytes_atomic(path, buffer.getvalue())


def read_png_text(path: str | os.PathLike) -> dict[str, str]:
    """The text chunks of a PNG as PIL reads them (`parameters`, `castkeep`, ...)."""
    with Image.open(path) as image:
        image.load()
        return dict(getattr(image, "text", {}) or {})


# ---------------------------------------------------------------------------------- validation
_NUMBER = ["number", "null"]
_SCORE_SCHEMA = {
    "type": "object",
    "required": ["face_found", "faces", "cosine", "probability", "same", "threshold", "leakage", "pose"],
    "properties": {
        "face_found": {"type": "boolean"},
        "faces": {"type": "integer", "minimum": 0},
        "cosine": {"type": _NUMBER, "minimum": -1.0001, "maximum": 1.0001},
        "probability": {"type": _NUMBER, "minimum": 0, "maximum": 1},
        "same": {"type": ["boolean", "null"]},
        "threshold": {"type": "number"},
        "leakage": {"type": ["boolean", "null"]},
        "pose": {"type": ["object", "null"]},
    },
}
SIDECAR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["schema", "image", "width", "height", "prompt", "negative_prompt", "seed", "settings",
                 "models", "character", "score", "selection", "attempts", "created_at"],
    "properties": {
        "schema": {"enum": [SIDECAR_SCHEMA_ID]},
        "image": {"type": "string"},
        "width": {"type": "integer", "minimum": 8},
        "height": {"type": "integer", "minimum": 8},
        "prompt": {"type": "string"},
        "negative_prompt": {"type": "string"},
        "seed": {"type": "integer", "minimum": 0},
        "settings": {"type": "object", "required": ["steps", "guidance", "id_scale", "scheduler", "device"]},
        "models": {"type": "object", "required": ["base_model", "ip_adapter", "ip_adapter_hash"]},
        "character": {"type": "object", "required": ["name"]},
        "score": _SCORE_SCHEMA,
        "selection": {"type": "object", "required": ["rank", "kept", "passed"]},
        "attempts": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["attempt", "seed", "face_found", "cosine", "kept"],
            "properties": {"seed": {"type": "integer", "minimum": 0}, "face_found": {"type": "boolean"},
                           "cosine": {"type": _NUMBER}, "kept": {"type": "boolean"}}}},
        "created_at": {"type": "string"},
    },
}
_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _type_ok(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def schema_errors(data: Any, schema: dict[str, Any] = SIDECAR_SCHEMA, where: str = "$") -> list[str]:
    """The JSON-Schema subset the sidecar uses (type, required, properties, items, enum, min/max)."""
    errors: list[str] = []
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not any(_type_ok(data, name) for name in names):
            return [f"{where}: expected {' or '.join(names)}, got {type(data).__name__}"]
    if "enum" in schema and data not in schema["enum"]:
        errors.append(f"{where}: {data!r} not one of {schema['enum']}")
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        if "minimum" in schema and data < schema["minimum"]:
            errors.append(f"{where}: {data} < {schema['minimum']}")
        if "maximum" in schema and data > schema["maximum"]:
            errors.append(f"{where}: {data} > {schema['maximum']}")
    if isinstance(data, dict):
        errors += [f"{where}: missing '{key}'" for key in schema.get("required", []) if key not in data]
        for key, sub in schema.get("properties", {}).items():
            if key in data:
                errors += schema_errors(data[key], sub, f"{where}.{key}")
    if isinstance(data, list):
        if len(data) < schema.get("minItems", 0):
            errors.append(f"{where}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for index, item in enumerate(data):
                errors += schema_errors(item, schema["items"], f"{where}[{index}]")
    return errors
