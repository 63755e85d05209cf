"""What an image carries, for `castkeep inspect`: castkeep's invisible watermark, the A1111 `parameters`
chunk, castkeep's sidecar chunk, other generators' chunks (ComfyUI, InvokeAI) and C2PA Content Credentials."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from PIL import Image

from ...errors import MissingDependencyError
from ...landmarks.images import GENERATOR_CHUNKS, load_pil
from ..metadata import parse_a1111_parameters

# The tools behind the other generator chunks (landmarks.images.GENERATOR_CHUNKS).
CHUNK_TOOLS = {"prompt": "ComfyUI", "workflow": "ComfyUI", "invokeai_metadata": "InvokeAI", "sd-metadata": "InvokeAI"}


def _text_chunks(path: Path) -> tuple[str | None, dict[str, Any]]:
    """The file's format and its metadata chunks (every PNG text chunk, before or after the pixels)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # load_pil has checked the size already
        with Image.open(path) as image:
            image.load()
            chunks = {**image.info, **(getattr(image, "text", None) or {})}
            return image.format, chunks


def _watermark(image: Image.Image) -> dict[str, Any]:
    from .watermark import read_watermark

    try:
        return read_watermark(image).to_dict()
    except MissingDependencyError as exc:
        return {"status": "not checked", "reason": str(exc)}


def _credentials(path: Path, image_format: str | None, trust_anchors: bytes | None) -> dict[str, Any] | None:
    from .credentials import read_credentials

    mime_type = Image.MIME.get(image_format or "", "application/octet-stream")
    try:
        return read_credentials(path.read_bytes(), mime_type, trust_anchors=trust_anchors)
    except MissingDependencyError as exc:
        return {"error": f"not checked: {exc}"}


def _sidecar(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str):
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        return {"error": f"unreadable castkeep chunk ({exc})"}
    return data if isinstance(data, dict) else {"error": "castkeep chunk is not a JSON object"}


def inspect_image(path: str | os.PathLike[str], *, trust_anchors: bytes | None = None) -> dict[str, Any]:
    """Everything `path` carries that says where it came from. ImageError (one line) when it is missing,
    unreadable or not an image. `trust_anchors`: PEM root certificates to judge C2PA signers against."""
    path = Path(path)
    image = load_pil(path)
    image_format, chunks = _text_chunks(path)
    parameters = chunks.get("parameters")
    return {
        "image": os.fspath(path), "format": image_format, "width": image.width, "height": image.height,
        "watermark": _watermark(image),
        "parameters": ({"text": parameters, "fields": parse_a1111_parameters(parameters)}
                       if isinstance(parameters, str) else None),
        "castkeep": _sidecar(chunks.get("castkeep")),
        "other_generators": [{"chunk": key, "tool": CHUNK_TOOLS.get(key, "unknown")}
                             for key in GENERATOR_CHUNKS if key in chunks and key not in ("castkeep", "parameters")],
        "c2pa": _credentials(path, image_format, trust_anchors),
    }
