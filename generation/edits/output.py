"""An edit's output: the PNG (A1111 `parameters` + the sidecar as a `castkeep` chunk, marked by
`Provenance.save_png` like every generated image: the invisible watermark unless turned off, C2PA Content
Credentials when given) and the JSON sidecar beside it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image

from ... import __version__
from ...errors import ConfigError
from ...utils import file_sha256, slug, utc_now, write_json_atomic
from ..config import GenerationConfig
from ..faceid_lora import effective_lora_scale
from ..generator import OUT_ROOT
from ..metadata import a1111_parameters
from ..provenance.output import Provenance
from .session import EditSession

EDIT_SIDECAR_SCHEMA_ID = "castkeep.edit.sidecar/2"  # /2: settings record requested_device and offload


@dataclass
class EditResult:
    """What an edit wrote: the image, where, and the report (the sidecar, which `--json` prints)."""

    image: Image.Image
    path: Path
    sidecar_path: Path
    report: dict[str, Any]


def output_path(out: str | os.PathLike[str] | None, source: Path, command: str,
                provenance: Provenance | None = None) -> Path:
    """`out`, or `castkeep-out/STEM-COMMAND-TIMESTAMP.png`; never the source image itself. Also checks,
    before any model loads, that `provenance` can mark it (the watermark's package is installed)."""
    (provenance if provenance is not None else Provenance()).check()
    path = Path(out) if out is not None else OUT_ROOT / (
        f"{slug(source.stem, fallback='image')}-{command}" + datetime.now().strftime("-%Y%m%d-%H%M%S") + ".png")
    if path.suffix.lower() != ".png":
        raise ConfigError(f"--out {path}: edits are written as PNG (name it .png)")
    if path.exists() and source.exists() and path.resolve() == source.resolve():
        raise ConfigError(f"--out {path} is the input image: write the edit to another file")
    return path


def write_edit(image: Image.Image, path: Path, *, command: str, source: Path, session: EditSession | None,
               config: GenerationConfig | None, settings: dict[str, Any], report: dict[str, Any],
               provenance: Provenance | None = None) -> EditResult:
    """Write `image` with its sidecar; `report` (what the command found and did) goes into the sidecar.
    `provenance` marks the PNG (default: castkeep's invisible watermark, which changes low-amplitude pixels
    all over the image: pass Provenance(watermark=False) for outputs equal to the input outside the mask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cast = [] if session is None else [member.identity.to_dict() for member in session.cast]
    sidecar: dict[str, Any] = {
        "schema": EDIT_SIDECAR_SCHEMA_ID, "castkeep_version": __version__, "command": command,
        "image": path.name, "width": image.width, "height": image.height,
        "source": {"file": str(source), "sha256": file_sha256(source) if source.is_file() else None},
        "prompt": None if config is None else config.prompt,
        "negative_prompt": None if config is None else config.negative_prompt,
        "seed": None if config is None else config.seed, "settings": settings,
        "models": None if session is None else session.models_dict(), "characters": cast,
        **report, "warnings": [] if session is None else session.warnings,
        "created_at": utc_now(),
    }
    fields: dict[str, Any] = {"castkeep edit": command, "Size": f"{image.width}x{image.height}"}
    if config is not None:
        fields.update({"Steps": config.steps, "Sampler": settings.get("sampler"), "CFG scale": config.guidance,
                       "Seed": config.seed, "Denoising strength": settings.get("strength"),
                       "IP-Adapter weight": config.id_scale})
    models = sidecar["models"] or {}
    if config is not None and models.get("faceid_lora"):  # as generate writes it: the weight the run applied
        fields["FaceID LoRA weight"] = effective_lora_scale(config.id_scale, config.lora_scale)
    if "base_model" in models:
        fields.update({"Model": Path(models["base_model"]).name, "Model hash": (models["base_model_hash"] or "")[:10],
                       "IP-Adapter": models["ip_adapter_file"], "IP-Adapter hash": models["ip_adapter_hash"][:10]})
    fields.update({"Character": ", ".join(c["name"] for c in cast) or None, "Version": f"castkeep {__version__}"})
    prompt = "" if config is None else config.prompt
    negative = "" if config is None else config.negative_prompt
    marker = provenance if provenance is not None else Provenance()
    sidecar = marker.save_png(image, path, a1111_parameters(prompt, negative, fields), sidecar)
    sidecar_path = path.with_suffix(".json")
    write_json_atomic(sidecar_path, sidecar)
    return EditResult(image=image, path=path, sidecar_path=sidecar_path, report=sidecar)

