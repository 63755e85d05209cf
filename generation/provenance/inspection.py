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
from ..metadata import edit_sidecar_errors, parse_a1111_parameters

# The tools behind the other generator chunks (landmarks.images.GENERATOR_CHUNKS).
CHUNK_TOOLS = {"prompt": "ComfyUI", "workflow": "ComfyUI", "invokeai_metadata": "InvokeAI", "sd-metadata": "InvokeAI"}
EDIT_SCHEMA_PREFIX = "castkeep.edit.sidecar/"
# What each edit command repaints, where its sidecar has no `mask` of its own.
_MASK_KINDS = {"fix-face": "face", "outpaint": "new canvas area", "upscale": None}
_EDIT_SETTINGS = ("mode", "to", "strength", "margin", "keep", "id_scale", "lora_scale", "scorer", "device", "dtype",
                  "offload", "vae_tiling")
_EDIT_MODELS = ("base_model", "ip_adapter_file", "vae", "face_analyzer")


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


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def edit_summary(sidecar: dict[str, Any] | None) -> dict[str, Any] | None:
    """What an edit's sidecar says (None for any other chunk): the command and its source, each face's score
    before and after, what was repainted, the models and the settings that matter, and whether the sidecar
    is valid against schemas/edit.schema.json."""
    data = _dict(sidecar)
    if not str(data.get("schema", "")).startswith(EDIT_SCHEMA_PREFIX):
        return None
    command = data.get("command")
    if isinstance(data.get("faces"), list):  # fix-face: one entry per repainted face
        faces = [{"face": f.get("face"), "character": f.get("character"), "before": f.get("before"),
                  "after": f.get("after"), "improved": f.get("improved"), "kept": f.get("kept")}
                 for f in data["faces"] if isinstance(f, dict)]
    else:  # edit, outpaint, upscale: the character's face, when there was one to score
        names = [c.get("name") for c in data.get("characters") or [] if isinstance(c, dict)]
        face = _dict(data.get("face"))
        faces = [{"face": None, "character": names[0] if names else None, "before": face.get("before"),
                  "after": face.get("after"), "improved": None, "kept": None}] if face else []
    mask = _dict(data.get("mask"))
    settings, models = _dict(data.get("settings")), _dict(data.get("models"))
    return {
        "command": command, "source": _dict(data.get("source")).get("file"),
        "faces": faces,
        "mask": mask.get("kind", _MASK_KINDS.get(str(command))), "mask_fraction": mask.get("fraction"),
        "changed": data.get("changed"),
        "models": {key: models[key] for key in _EDIT_MODELS if key in models},
        "settings": {key: settings[key] for key in _EDIT_SETTINGS if key in settings},
        "schema_errors": edit_sidecar_errors(data),
    }


def inspect_image(path: str | os.PathLike[str], *, trust_anchors: bytes | None = None) -> dict[str, Any]:
    """Everything `path` carries that says where it came from. ImageError (one line) when it is missing,
    unreadable or not an image. `trust_anchors`: PEM root certificates to judge C2PA signers against."""
    path = Path(path)
    image = load_pil(path)
    image_format, chunks = _text_chunks(path)
    parameters = chunks.get("parameters")
    sidecar = _sidecar(chunks.get("castkeep"))
    return {
        "image": os.fspath(path), "format": image_format, "width": image.width, "height": image.height,
        "watermark": _watermark(image),
        "parameters": ({"text": parameters, "fields": parse_a1111_parameters(parameters)}
                       if isinstance(parameters, str) else None),
        "castkeep": sidecar,
        "edit": edit_summary(sidecar),  # an edit's sidecar, read out (None for any other image)
        "other_generators": [{"chunk": key, "tool": CHUNK_TOOLS.get(key, "unknown")}
                             for key in GENERATOR_CHUNKS if key in chunks and key not in ("castkeep", "parameters")],
        "c2pa": _credentials(path, image_format, trust_anchors),
    }
