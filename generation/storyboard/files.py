"""The files of a storyboard run, written the moment they exist:

    RUN/attempts/<shot>/<shot>_try03_s1234.png (+ .json)   every take, as soon as it is scored
    RUN/shots/<shot>.png (+ .json)                         the kept take(s), when the shot is finished

Every write is atomic (a temporary file renamed into place), and the ledger records a file's sha256 only
after it is complete. A take's PNG carries an A1111 `parameters` chunk and its sidecar (how it was made
and scored) as the `castkeep` chunk; a kept image is a byte copy of its take, and its sidecar adds why it
was chosen (`selection`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from ... import __version__
from ...utils import file_sha256, utc_now, write_bytes_atomic, write_json_atomic
from ..config import GenerationConfig
from ..faceid_lora import effective_lora_scale
from ..metadata import a1111_parameters
from ..provenance.output import Provenance
from ..runner import Identity
from .ledger import AttemptRow
from .plan import Shot
from .shot import Take

TAKE_SCHEMA_ID = "castkeep.storyboard.take/1"
ATTEMPTS_DIR, SHOTS_DIR = "attempts", "shots"


def take_path(shot: Shot, attempt: int, seed: int) -> str:
    return f"{ATTEMPTS_DIR}/{shot.id}/{shot.id}_try{attempt:02d}_s{seed}.png"


def kept_path(shot: Shot, rank: int, num_images: int) -> str:
    return f"{SHOTS_DIR}/{shot.id}.png" if num_images == 1 else f"{SHOTS_DIR}/{shot.id}_{rank:02d}.png"


def forget_shot_files(run_dir: Path, shot: Shot, kept: list[dict[str, Any]]) -> None:
    """A shot that changed in the plan: its old takes and kept files go, so none can be mistaken for new."""
    shutil.rmtree(run_dir / ATTEMPTS_DIR / shot.id, ignore_errors=True)
    for entry in kept:
        for name in (entry["file"], entry["sidecar"]):
            (run_dir / name).unlink(missing_ok=True)


def write_take(run_dir: Path, shot: Shot, config: GenerationConfig, take: Take, identities: dict[str, Identity],
               settings: dict[str, Any], models: dict[str, Any], provenance: Provenance | None = None) -> AttemptRow:
    """The take's PNG and sidecar, both complete on disk when this returns; the PNG marked as `provenance`
    says (default: castkeep's invisible watermark), unless the take comes marked (`take.marked`)."""
    relative = take_path(shot, take.attempt, take.seed)
    path = run_dir / relative
    sidecar = {
        "schema": TAKE_SCHEMA_ID, "castkeep_version": __version__, "image": path.name,
        "shot": {"id": shot.id, "number": shot.number, "caption": shot.caption},
        "prompt": shot.prompt, "negative_prompt": shot.negative, "seed": take.seed, "attempt": take.attempt,
        "width": take.image.width, "height": take.image.height, "settings": settings, "models": models,
        "characters": [{**identities[name].to_dict(),
                        "region": shot.regions[name].to_dict() if name in shot.regions else None}
                       for name in shot.characters],
        "score": take.score, "nsfw": take.nsfw,
        "created_at": utc_now(),
    }
    probability = take.score["probability"]
    fields = {
        "Steps": config.steps, "Sampler": settings["sampler"], "CFG scale": config.guidance, "Seed": take.seed,
        "Size": f"{take.image.width}x{take.image.height}", "Model hash": (models["base_model_hash"] or "")[:10],
        "Model": Path(models["base_model"]).name, "IP-Adapter": models["ip_adapter_file"],
        "IP-Adapter hash": models["ip_adapter_hash"][:10], "IP-Adapter weight": config.id_scale,
        "FaceID LoRA weight": effective_lora_scale(config.id_scale, config.lora_scale) if models["faceid_lora"] else None,
        "Character": " + ".join(shot.characters), "Shot": shot.id,
        "Identity P(same)": "no face" if probability is None else f"{probability:.3f} ({config.scorer}, generated)",
        "Version": f"castkeep {__version__}",
    }
    image = take.marked if take.marked is not None else take.image  # marked already on a Ray worker
    sidecar = (provenance or Provenance()).save_png(image, path, a1111_parameters(shot.prompt, shot.negative, fields),
                                                    sidecar)
    sidecar_path = write_json_atomic(path.with_suffix(".json"), sidecar)
    return AttemptRow(attempt=take.attempt, seed=take.seed, file=relative, sha256=file_sha256(path),
                      sidecar=str(Path(relative).with_suffix(".json")), sidecar_sha256=file_sha256(sidecar_path),
                      passed=take.passed, value=take.value, score=take.score, pipeline_s=take.pipeline_s,
                      scoring_s=take.scoring_s)


def write_kept(run_dir: Path, shot: Shot, config: GenerationConfig, kept: list[AttemptRow],
               attempts: list[AttemptRow]) -> list[dict[str, Any]]:
    """Copy each kept take to shots/ with a sidecar that says why it was chosen; the ledger's `kept` entries."""
    entries = []
    for rank, row in enumerate(kept, start=1):
        relative = kept_path(shot, rank, config.num_images)
        data = (run_dir / row.file).read_bytes()
        write_bytes_atomic(run_dir / relative, data)
        sidecar = json.loads((run_dir / row.sidecar).read_text(encoding="utf-8"))
        sidecar["image"] = Path(relative).name
        sidecar["selection"] = {
            "rank": rank, "attempt": row.attempt, "passed": row.passed, "take": row.file,
            "min_score": config.min_score, "best_of": config.best_of, "max_tries": config.budget,
            "rule": "passing takes first, then the highest P(same person) of the shot's weakest character",
            "attempts": [{"attempt": a.attempt, "seed": a.seed, "passed": a.passed,
                          "probability": a.score.get("probability"), "file": a.file} for a in attempts],
        }
        sidecar_relative = str(Path(relative).with_suffix(".json"))
        sidecar_path = write_json_atomic(run_dir / sidecar_relative, sidecar)
        entries.append({"file": relative, "sha256": hashlib.sha256(data).hexdigest(), "sidecar": sidecar_relative,
                        "sidecar_sha256": file_sha256(sidecar_path), "attempt": row.attempt, "rank": rank,
                        "seed": row.seed, "passed": row.passed})
    return entries
