"""`castkeep fix-face | edit | outpaint | upscale IMAGE`: edit an existing image with a stored character's
identity (castkeep.generation.edits does the work). Each writes a PNG with A1111 metadata and a JSON sidecar
(before/after identity scores) and prints a summary, or the sidecar with --json. torch and diffusers are
imported only when one of them runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..generation.config import DEVICES, DTYPES
from ..generation.schedulers import SCHEDULER_NAMES
from ..identity.scorers import SCORERS
from .common import (
    base_config_option,
    emit,
    json_option,
    log_to_stderr,
    lora_scale_option,
    offload_option,
    plus_load_options,
    s_scale_option,
    vae_option,
    vae_tiling_option,
)
from .provenance import make_provenance, provenance_options
from .store_commands import store_option

image_argument = click.argument("image", type=click.Path(path_type=Path))
out_option = click.option("--out", type=click.Path(path_type=Path), default=None,
                          help="Output PNG (its .json sidecar is written beside it) "
                               "[default: ./castkeep-out/IMAGE-COMMAND-TIMESTAMP.png].")


def weights_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Where the weights are, and the per-run diffusion knobs every editing command shares."""
    options = [
        click.option("--base-model", default=None, envvar="CASTKEEP_BASE_MODEL", show_envvar=True,
                     metavar="ID|DIR|FILE",
                     help="SD1.5 or SDXL: a diffusers folder, a single-file .safetensors checkpoint or a Hub id; an "
                          "inpainting checkpoint of either works for fix-face, edit and outpaint "
                          "[default: stable-diffusion-v1-5/stable-diffusion-v1-5]."),
        base_config_option,
        vae_option,
        click.option("--ip-adapter", default=None, envvar="CASTKEEP_IP_ADAPTER", show_envvar=True, metavar="ID|FILE",
                     help="IP-Adapter FaceID weights (file, folder or Hub repo[/file]) [default: h94/IP-Adapter-FaceID]."),
        click.option("--conditioning-models", default=None, metavar="PACK",
                     help="The face model pack the adapter was trained on (known adapters need none)."),
        click.option("--negative", "negative_prompt", default="", help="Negative prompt."),
        click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=None,
                     help="Seed (random when omitted, always recorded)."),
        click.option("--steps", type=click.IntRange(min=1), default=30, show_default=True,
                     help="Denoising steps of a full run (an edit runs steps x --strength of them)."),
        click.option("--guidance", type=click.FloatRange(min=0), default=7.5, show_default=True, help="CFG scale."),
        click.option("--id-scale", type=click.FloatRange(0, 5), default=0.8, show_default=True,
                     help="IP-Adapter scale: how strongly the identity steers the repaint."),
        lora_scale_option,
        s_scale_option,
        click.option("--scheduler", default="default", show_default=True, type=click.Choice(SCHEDULER_NAMES),
                     help="Sampler."),
        click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True, help="torch device."),
        click.option("--dtype", type=click.Choice(DTYPES), default="auto", show_default=True,
                     help="Weights precision; auto = float16 on GPUs."),
        offload_option,
        vae_tiling_option,  # no --vae-slicing: an edit decodes one image per call
    ]
    for option in reversed(options):
        func = option(func)
    return plus_load_options(func)


def scoring_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        store_option,
        click.option("--models", default=None, envvar="CASTKEEP_MODELS", show_envvar=True, metavar="PACK",
                     help="Face model pack that finds and scores faces (the store's own)."),
        click.option("--scorer", type=click.Choice(SCORERS), default="fused", show_default=True,
                     help="Who judges the face before and after: fused (ArcFace + dlib), dlib, or arcface."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run(as_json: bool, call: Callable[[], Any], *, diffusion: bool = True) -> None:
    if diffusion:  # a Lanczos upscale imports no torch, diffusers or transformers
        from ..generation.loading import quiet_generation_libraries

        quiet_generation_libraries()
    with log_to_stderr("castkeep.generation", verbose=not as_json):
        result = call()
    report = {**result.report, "output": str(result.path), "sidecar_path": str(result.sidecar_path)}
    emit(report, as_json, _text)


def _score_text(score: dict[str, Any] | None) -> str:
    if not score or not score.get("face_found"):
        return "no face"
    return f"p {score['probability']:.2f}" if score.get("probability") is not None else "face"


def _text(report: dict[str, Any]) -> str:
    lines = []
    for face in report.get("faces", []):
        verdict = ("kept" if face["kept"] else "original kept") + (" (improved)" if face["improved"] else
                                                                   " (not improved)")
        lines.append(f"face {face['face']} as {face['character']}: {_score_text(face['before'])} -> "
                     f"{_score_text(face['after'])}, {verdict}")
    face = report.get("face")
    if face:
        lines.append(f"face: {_score_text(face.get('before'))} -> {_score_text(face.get('after'))}")
    lines += [f"warning: {warning}" for warning in report.get("warnings", [])]
    lines.append(f"wrote {report['output']} ({report['width']}x{report['height']}) and {report['sidecar_path']}")
    return "\n".join(lines)


def _edit_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options every edit command shares (weights, loading, scoring, diffusion knobs, provenance) as the
    keywords of castkeep.generation.edits' functions: --store becomes `store`, and --no-watermark/--c2pa-*
    one `provenance`."""
    shared = dict(options)
    shared["store"] = shared.pop("store_path")
    shared["provenance"] = make_provenance(shared.pop("no_watermark"), shared.pop("c2pa_cert"), shared.pop("c2pa_key"))
    return shared


@click.command("fix-face")
@image_argument
@click.option("--character", "characters", multiple=True, required=True, metavar="NAME",
              help="The stored character to restore; repeat it with --face for a character per face.")
@click.option("--face", "faces", multiple=True, type=click.IntRange(min=0),
              help="Face to fix (0 = largest, as `castkeep analyze` numbers them); repeat for several.")
@click.option("--prompt", default=None, help="Prompt for the repaint [default: a generic detailed-face prompt].")
@click.option("--strength", type=click.FloatRange(0, 1, min_open=True), default=0.4, show_default=True,
              help="Denoising strength: how much of the face is repainted.")
@click.option("--margin", type=click.FloatRange(0, 2), default=0.35, show_default=True,
              help="Context around the face for the model, as a fraction of the face box.")
@click.option("--keep", type=click.Choice(["improved", "always"]), default="improved", show_default=True,
              help="Keep a repaint only when the judge scores the face higher (improved), or always.")
@out_option
@scoring_options
@weights_options
@provenance_options
@json_option
def fix_face(image: Path, characters: tuple[str, ...], faces: tuple[int, ...], prompt: str | None, strength: float,
             margin: float, keep: str, out: Path | None, as_json: bool, **options: Any) -> None:
    """Restore the faces of IMAGE as stored characters, ADetailer-style.

    Each face is cropped with a margin, repainted at the model's resolution with its character's identity
    (IP-Adapter FaceID) and pasted back through a feathered mask of the MediaPipe face oval: pixels outside
    the mask are unchanged, byte for byte (with --no-watermark: the watermark, on by default, touches every
    pixel faintly). The face is scored before and after by --scorer; with --keep
    improved (default) a repaint that does not score higher is dropped. The mask is written beside the
    output (OUT.mask.png)."""
    from ..generation.edits import fix_face as run

    _run(as_json, lambda: run(image, list(characters), faces=list(faces) or None, strength=strength, margin=margin,
                              keep=keep, out=out, prompt=prompt, **_edit_options(options)))


@click.command("edit")
@image_argument
@click.argument("prompt")
@click.option("--character", required=True, metavar="NAME", help="The stored character whose identity conditions it.")
@click.option("--mask", default="face", show_default=True, metavar="face|hair|background|FILE",
              help="What to repaint: from the face mesh (face oval; hair and background are heuristics, see the "
                   "README), or a mask image of IMAGE's size (white = repaint).")
@click.option("--face", type=click.IntRange(min=0), default=None, help="The face the mask is built from (0 = largest).")
@click.option("--strength", type=click.FloatRange(0, 1, min_open=True), default=0.75, show_default=True,
              help="Denoising strength.")
@click.option("--margin", type=click.FloatRange(0, 2), default=0.25, show_default=True,
              help="Context around the mask for the model, as a fraction of its box.")
@out_option
@scoring_options
@weights_options
@provenance_options
@json_option
def edit(image: Path, prompt: str, character: str, mask: str, face: int | None, strength: float, margin: float,
         out: Path | None, as_json: bool, **options: Any) -> None:
    """Repaint the --mask region of IMAGE from PROMPT, conditioned on --character's identity (inpainting).

    Only pixels where the feathered mask is above 0 change (with --no-watermark); the character's face is
    scored before and after."""
    from ..generation.edits import edit_image

    _run(as_json, lambda: edit_image(image, character, mask=mask, face=face, strength=strength, margin=margin,
                                     out=out, prompt=prompt, **_edit_options(options)))


@click.command("outpaint")
@image_argument
@click.option("--character", required=True, metavar="NAME", help="The stored character whose identity conditions it.")
@click.option("--aspect", default=None, metavar="W:H", help="Extend the canvas (centred) to this aspect ratio.")
@click.option("--left", type=click.IntRange(min=0), default=0, help="Pixels to add on the left (instead of --aspect).")
@click.option("--right", type=click.IntRange(min=0), default=0, help="Pixels to add on the right.")
@click.option("--top", type=click.IntRange(min=0), default=0, help="Pixels to add at the top.")
@click.option("--bottom", type=click.IntRange(min=0), default=0, help="Pixels to add at the bottom.")
@click.option("--prompt", default=None, help="What the new area shows [default: a continuation of the scene].")
@click.option("--strength", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="Denoising strength on the new area (below 1 keeps some of the edge-stretched prefill).")
@out_option
@scoring_options
@weights_options
@provenance_options
@json_option
def outpaint(image: Path, character: str, aspect: str | None, left: int, right: int, top: int, bottom: int,
             prompt: str | None, strength: float, out: Path | None, as_json: bool, **options: Any) -> None:
    """Extend IMAGE's canvas and fill the new area; the original pixels are kept exactly (with
    --no-watermark) and the character's face is re-scored on the new canvas."""
    from ..generation.edits import outpaint as run

    _run(as_json, lambda: run(image, character, aspect=aspect, left=left, right=right, top=top, bottom=bottom,
                              strength=strength, out=out, prompt=prompt, **_edit_options(options)))


@click.command("upscale")
@image_argument
@click.option("--to", "to", default="2k", show_default=True, metavar="2k|4k|PIXELS",
              help="The long side: 2k = 2048, 4k = 4096, or a pixel count.")
@click.option("--mode", type=click.Choice(["diffusion", "lanczos"]), default="diffusion", show_default=True,
              help="diffusion: Lanczos, then a tiled img2img detail pass with the identity; lanczos: the resize "
                   "alone (no model, no GPU).")
@click.option("--character", default=None, metavar="NAME",
              help="The stored character: conditions the diffusion pass; scores the face in either mode.")
@click.option("--prompt", default=None, help="Prompt of the detail pass.")
@click.option("--strength", type=click.FloatRange(0, 1, min_open=True), default=0.3, show_default=True,
              help="Denoising strength of the detail pass.")
@click.option("--tile", type=click.IntRange(min=64), default=None,
              help="Tile side in pixels [default: the model's native size].")
@out_option
@scoring_options
@weights_options
@provenance_options
@json_option
def upscale(image: Path, to: str, mode: str, character: str | None, prompt: str | None, strength: float,
            tile: int | None, out: Path | None, as_json: bool, **options: Any) -> None:
    """Upscale IMAGE to 2K/4K (the long side) or --to PIXELS, with the face re-scored after."""
    from ..generation.edits import upscale as run

    _run(as_json, lambda: run(image, character, to=to, mode=mode, strength=strength, tile=tile, out=out,
                              prompt=prompt, **_edit_options(options)),
         diffusion=mode == "diffusion")
