"""`castkeep inspect IMAGE...`: what an image carries — castkeep's invisible watermark, A1111 parameters,
castkeep's sidecar, other generators' metadata, C2PA Content Credentials."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import CastkeepError, ConfigError, ImageError
from .common import emit, expand_images, json_option


def _watermark_line(reading: dict[str, Any]) -> str:
    status = reading["status"]
    if status == "found":
        return (f"castkeep watermark found ({reading['method']}, {reading['bit_errors']} of {reading['bits']} bits "
                "differ)")
    if status == "not found":
        return f"no castkeep watermark ({reading['bit_errors']} of {reading['bits']} bits differ from it)"
    if status == "too small":
        return "image too small to carry a watermark (under 256x256 pixels)"
    return f"not checked ({reading.get('reason')})"


def _sidecar_line(sidecar: dict[str, Any]) -> str:
    if "error" in sidecar:
        return sidecar["error"]
    characters = sidecar.get("characters") or [sidecar.get("character") or {}]
    names = " + ".join(str(c.get("name")) for c in characters)
    score = sidecar.get("score") or {}
    probability = score.get("probability")
    judged = f", P(same) {probability:.3f} ({score.get('scorer')})" if isinstance(probability, float) else ""
    return (f"{names}, seed {sidecar.get('seed')}{judged}, castkeep {sidecar.get('castkeep_version')} "
            f"({sidecar.get('schema')})")


def _score_text(score: Any) -> str:
    if not isinstance(score, dict):
        return "not scored"
    if not score.get("face_found"):
        return "no face"
    probability = score.get("probability")
    return f"P(same) {probability:.3f}" if isinstance(probability, float) else "face"


def _edit_lines(edit: dict[str, Any]) -> list[str]:
    """An edit's sidecar: what ran on which image, each face before -> after, the mask, models and settings."""
    problems = edit["schema_errors"]
    lines = [f"{edit['command']} of {edit['source']} ("
             + ("valid sidecar" if not problems else f"sidecar does not match its schema: {problems[0]}") + ")"]
    for face in edit["faces"]:
        which = "face" if face["face"] is None else f"face {face['face']}"
        verdict = "" if face["kept"] is None else (", kept" if face["kept"] else ", original kept")
        if face["improved"] is not None:
            verdict += " (improved)" if face["improved"] else " (not improved)"
        lines.append(f"{which} as {face['character']}: {_score_text(face['before'])} -> "
                     f"{_score_text(face['after'])}{verdict}")
    if edit["mask"] is not None:
        fraction = edit["mask_fraction"]
        lines.append(f"mask: {edit['mask']}" + (f" ({fraction:.1%} of the image)" if isinstance(fraction, float) else ""))
    models = edit["models"]
    if models:
        lines.append("models: " + ", ".join(f"{key} {value}" for key, value in models.items() if value is not None))
    settings = edit["settings"]
    if settings:
        lines.append("settings: " + ", ".join(f"{key} {value}" for key, value in settings.items() if value is not None))
    return lines


def _c2pa_lines(credentials: dict[str, Any] | None) -> list[str]:
    if credentials is None:
        return ["none"]
    if "error" in credentials:
        return [credentials["error"]]
    signer = credentials["signer"]
    problems = [problem["code"] for problem in credentials["problems"]]
    trusted = credentials["validation_state"] == "Trusted"
    verdict = ("valid, signer trusted" if trusted and not problems else
               "valid, signer not trusted (no trust anchor for it)" if not problems else
               "INVALID: " + ", ".join(str(code) for code in problems))
    lines = [f"{verdict}; signed by {signer['common_name']} ({signer['issuer']}), {signer['algorithm']}"]
    for action in credentials["actions"]:
        agent = action.get("softwareAgent") or {}
        agent_text = f" by {agent.get('name')} {agent.get('version')}" if isinstance(agent, dict) and agent else ""
        source = str(action.get("digitalSourceType") or "").rsplit("/", 1)[-1]
        lines.append(f"{action.get('action')}{agent_text}" + (f" ({source})" if source else ""))
    castkeep = credentials.get("castkeep") or {}
    for character in castkeep.get("characters") or []:
        lines.append(f"character {character.get('name')}: vector {character.get('vector_sha256')}, "
                     f"{character.get('fingerprint')}")
    return lines


def _text(results: list[dict[str, Any]]) -> str:
    lines = []
    for result in results:
        if "error" in result:
            lines.append(f"{result['image']}: error: {result['error']}")
            continue
        lines.append(f"{result['image']} ({result['format']} {result['width']}x{result['height']})")
        lines.append(f"  watermark: {_watermark_line(result['watermark'])}")
        parameters = result["parameters"]
        lines.append("  parameters (A1111): " + ("none" if parameters is None else
                                                 parameters["text"].splitlines()[-1][:200]))
        lines.append("  castkeep sidecar: " + ("none" if result["castkeep"] is None else _sidecar_line(result["castkeep"])))
        if result.get("edit"):
            edit = _edit_lines(result["edit"])
            lines.append(f"  edit: {edit[0]}")
            lines += [f"        {line}" for line in edit[1:]]
        others = ", ".join(f"{o['tool']} ({o['chunk']})" for o in result["other_generators"])
        lines.append(f"  other generators: {others or 'none'}")
        c2pa = _c2pa_lines(result["c2pa"])
        lines.append(f"  c2pa: {c2pa[0]}")
        lines += [f"        {line}" for line in c2pa[1:]]
    return "\n".join(lines)


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--c2pa-trust", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None, metavar="PEM",
              help="Root certificate(s) to trust as C2PA signers (e.g. your own CA): their signatures read as trusted.")
@click.option("--keep-going", is_flag=True, help="Report unreadable images and continue instead of stopping.")
@json_option
def inspect(images: tuple[Path, ...], c2pa_trust: Path | None, keep_going: bool, as_json: bool) -> None:
    """Show what IMAGES (files or folders) carry: castkeep's invisible watermark, A1111 `parameters`,
    castkeep's sidecar chunk (for an edit output of fix-face, edit, outpaint or upscale: the command, each
    face's score before and after, the mask, models and settings), ComfyUI/InvokeAI metadata, and C2PA
    Content Credentials with their validation.

    Reads only; exits 3 when an image cannot be read (unless --keep-going).
    """
    from ..generation.provenance.inspection import inspect_image

    try:
        anchors = c2pa_trust.read_bytes() if c2pa_trust is not None else None
    except OSError as exc:
        raise ConfigError(f"cannot read --c2pa-trust ({exc.strerror or exc})", path=c2pa_trust) from None
    results: list[dict[str, Any]] = []
    failed = False
    for image in expand_images(images):
        try:
            results.append(inspect_image(image, trust_anchors=anchors))
        except CastkeepError as exc:
            if not keep_going:
                raise
            failed = True
            results.append({"image": str(image), "error": str(exc)})
    output: Any = results[0] if len(results) == 1 and "error" not in results[0] else {"images": results}
    emit(output, as_json, lambda _: _text(results))
    if failed:
        raise SystemExit(ImageError.exit_code)
