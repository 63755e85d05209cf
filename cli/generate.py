"""`castkeep generate NAME "prompt"`: IP-Adapter FaceID generation conditioned on a stored character,
with every output scored against it (castkeep.generation.generator does the work). torch and
diffusers are imported only when this command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..generation.config import DEVICES, DTYPES, PLUS_VERSIONS, GenerationConfig
from ..generation.memory import OFFLOADS
from ..generation.schedulers import SCHEDULER_NAMES
from ..identity.scorers import SCORERS as GENERATION_SCORERS
from ..utils import progress
from .common import emit, json_option, log_to_stderr
from .provenance import make_provenance, provenance_options
from .store_commands import store_option


class _AttemptBar:
    """One progress bar per run, opened at the first attempt so it never sits under the loading line."""

    def __init__(self, name: str, total: int) -> None:
        self.name, self.total = name, total
        self.bar: Any = None

    def advance(self, attempt: Any) -> None:
        if self.bar is None:
            self.bar = progress(range(self.total), label=f"generating {self.name}", total=self.total)
        self.bar.update(1)
        score = attempt.score
        self.bar.set_postfix_str(f"seed {attempt.seed} " + (f"p {score.probability:.2f}"
                                                             if score.probability is not None else "no face"))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _text(result: Any) -> str:
    summary = result.summary
    lines = []
    for output in summary["outputs"]:
        score = output["score"]
        if score["face_found"]:
            verdict = "same person" if score["same"] else "different person"
            leak = f", closer to '{score['closest_other']['name']}' (leakage)" if score["leakage"] else ""
            agreement = score["agreement"] or {}
            flag = {"conditioning-only": ", ArcFace says same but dlib different (check it)",
                    "independent-only": ", dlib says same but ArcFace different"}.get(str(agreement.get("kind")), "")
            detail = (f"{score['scorer']} p {score['probability']:.2f} ({verdict}), cosine {score['cosine']:+.3f}"
                      f"{leak}{flag}")
        else:
            detail = "no face found"
        lines.append(f"#{output['rank']} seed {output['seed']}: {detail}  {result.out_dir / output['file']}")
    timing = summary["timing"]
    consistency = summary["consistency"]["mean_pairwise_cosine"]
    lines.append(f"{timing['images_generated']} image(s) generated in {timing['generate_s']:.1f} s "
                 f"({timing['s_per_step']:.3f} s/step), kept {len(summary['outputs'])}"
                 + (f", mean pairwise identity cosine {consistency:+.3f}" if consistency is not None else ""))
    inputs = summary["models"].get("adapter_inputs") or {}
    if inputs.get("variant", "faceid") != "faceid":  # Plus / Portrait: say what the adapter was given
        shortcut = "" if inputs["shortcut"] is None else (f", shortcut on (s_scale {inputs['s_scale']})"
                                                          if inputs["shortcut"] else ", shortcut off")
        lines.append(f"{inputs['variant']}: {inputs['references']} reference(s), {inputs['identity_tokens']} "
                     f"identity tokens{shortcut}")
    for warning in summary["warnings"]:
        lines.append(f"warning: {warning}")
    lines.append(f"summary: {result.summary_path}  contact sheet: {result.contact_sheet_path}")
    return "\n".join(lines)


@click.command()
@click.argument("name")
@click.argument("prompt")
@click.option("--negative", "negative_prompt", default="", help="Negative prompt.")
@click.option("--base-model", default=None, envvar="CASTKEEP_BASE_MODEL", show_envvar=True, metavar="ID|DIR|FILE",
              help="Stable Diffusion 1.5 or SDXL: a diffusers folder, a single-file .safetensors checkpoint "
                   "(A1111/Civitai) or a Hugging Face id "
                   "[default: stable-diffusion-v1-5/stable-diffusion-v1-5].")
@click.option("--ip-adapter", default=None, envvar="CASTKEEP_IP_ADAPTER", show_envvar=True, metavar="ID|FILE",
              help="IP-Adapter FaceID weights: a .safetensors/.bin file, a folder holding one, or a Hub "
                   "repo[/file] [default: h94/IP-Adapter-FaceID, ip-adapter-faceid_sd15.bin or _sdxl.bin].")
@click.option("--image-encoder", default=None, metavar="ID|DIR",
              help="FaceID Plus / Plus v2 only: the CLIP image encoder for the character's face crops, a transformers "
                   "folder (config.json + weights) or a Hub id [default: laion/CLIP-ViT-H-14-laion2B-s32B-b79K, "
                   "the one h94's model card names].")
@click.option("--plus-version", type=click.Choice(PLUS_VERSIONS), default="auto", show_default=True,
              help="FaceID Plus checkpoints: v2 turns diffusers' shortcut on (h94's card: shortcut=True for v2). "
                   "auto: v2 when the file name contains 'plusv2'.")
@click.option("--base-config", default=None, metavar="DIR",
              help="For a single-file --base-model (.safetensors): a diffusers folder of the same architecture whose "
                   "configs convert it [default: the SD1.5/SDXL reference configs from the Hugging Face cache].")
@click.option("--vae", default=None, metavar="ID|DIR|FILE",
              help="A VAE in place of the base model's: a diffusers folder, a .safetensors file or a Hub id.")
@store_option
@click.option("--models", default=None, envvar="CASTKEEP_MODELS", show_envvar=True, metavar="PACK",
              help="Face model pack used to score outputs (the store's own, the one it was created with).")
@click.option("--conditioning-models", default=None, metavar="PACK",
              help="The face model pack (name, folder or stored fingerprint) whose embeddings the adapter was "
                   "trained on. Known adapters need none (h94 FaceID: buffalo_l; InstantID, Kolors: antelopev2); "
                   "any other adapter must say.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Output folder [default: ./castkeep-out/NAME-TIMESTAMP].")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=None,
              help="Base seed (output i uses seed+i); random when omitted, always recorded.")
@click.option("--steps", type=click.IntRange(min=1), default=30, show_default=True, help="Denoising steps.")
@click.option("--guidance", type=click.FloatRange(min=0), default=7.5, show_default=True,
              help="Classifier-free guidance (CFG) scale.")
@click.option("--id-scale", type=click.FloatRange(0, 5), default=0.8, show_default=True,
              help="IP-Adapter scale: how strongly the identity steers the image (0: identity and FaceID LoRA off).")
@click.option("--lora-scale", type=click.FloatRange(0, 2), default=1.0, show_default=True,
              help="Weight of the FaceID LoRA the checkpoint carries (0.6-0.7 often follows the prompt better).")
@click.option("--s-scale", type=click.FloatRange(0, 5), default=1.0, show_default=True,
              help="FaceID Plus v2: weight of the face-crop (CLIP) tokens added to the identity tokens (shortcut).")
@click.option("--aspect", default=None, metavar="W:H",
              help="Aspect ratio (1:1, 4:3, 3:2, 16:9, 9:16, ...) at the model's native pixel count.")
@click.option("--width", type=click.IntRange(min=8), default=None, help="Width in pixels (multiple of 8).")
@click.option("--height", type=click.IntRange(min=8), default=None, help="Height in pixels (multiple of 8).")
@click.option("--num-images", "-n", type=click.IntRange(min=1), default=1, show_default=True,
              help="Images to keep.")
@click.option("--scheduler", default="default", show_default=True,
              type=click.Choice(SCHEDULER_NAMES),
              help="Sampler (default: the one the base model ships).")
@click.option("--best-of", type=click.IntRange(min=1), default=1, show_default=True,
              help="Generate N candidates and keep the top --num-images by identity score.")
@click.option("--scorer", type=click.Choice(GENERATION_SCORERS), default="fused", show_default=True,
              help="Who judges and ranks outputs, in the generated-image calibration: fused (ArcFace + dlib), "
                   "dlib (independent of the conditioning model), or arcface (only when its pack did not "
                   "condition the images).")
@click.option("--min-score", type=click.FloatRange(0, 1), default=None,
              help="Regenerate with new seeds until --num-images outputs reach this P(same person) by "
                   "--scorer...")
@click.option("--max-tries", type=click.IntRange(min=1), default=None,
              help="...or this many images were generated in all [default: 4 x --num-images].")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Images per pipeline call (faster on a GPU, more memory).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="torch device; auto = cuda, then mps, then cpu.")
@click.option("--dtype", type=click.Choice(DTYPES), default="auto",
              show_default=True, help="Weights precision; auto = float16 on GPUs, float32 on CPU.")
@click.option("--offload", type=click.Choice(OFFLOADS), default="none", show_default=True,
              help="Small GPUs: keep weights in CPU RAM and move each model (model) or each layer (sequential, "
                   "least memory, slowest) to the GPU as it runs.")
@click.option("--vae-tiling/--no-vae-tiling", default=None,
              help="Decode in tiles (less memory for large images) [default: on above 2x the model's native pixels].")
@click.option("--vae-slicing/--no-vae-slicing", default=None,
              help="Decode a batch one image at a time [default: on with --batch-size > 1].")
@click.option("--keep-rejected", is_flag=True, help="Also write the outputs best-of/retry dropped (rejected/).")
@provenance_options
@json_option
def generate(name: str, prompt: str, negative_prompt: str, base_model: str | None, ip_adapter: str | None,
             image_encoder: str | None, plus_version: str, base_config: str | None, vae: str | None,
             store_path: Path | None, models: str | None, conditioning_models: str | None, out_dir: Path | None,
             seed: int | None, steps: int, guidance: float, id_scale: float, lora_scale: float, s_scale: float,
             aspect: str | None,
             width: int | None, height: int | None, num_images: int, scheduler: str, best_of: int, scorer: str,
             min_score: float | None, max_tries: int | None,
             batch_size: int, device: str, dtype: str, offload: str, vae_tiling: bool | None,
             vae_slicing: bool | None, keep_rejected: bool, no_watermark: bool, c2pa_cert: Path | None,
             c2pa_key: Path | None, as_json: bool) -> None:
    """Generate images of character NAME from PROMPT, conditioned on its identity (IP-Adapter FaceID),
    and score every output against it.

    The adapter is conditioned on NAME's vector in the embedding space it was trained on (h94 FaceID:
    buffalo_l; add that space with `castkeep reembed NAME --models buffalo_l`). FaceID Plus / Plus v2 also
    take NAME's stored face crops through a CLIP image encoder; Portrait takes up to 5 reference vectors. Outputs are judged as
    generated images by ArcFace and dlib, ranked by --scorer, and flagged where the two disagree.

    Writes a PNG per output (A1111 `parameters` metadata, castkeep's invisible watermark, and C2PA Content
    Credentials with --c2pa-cert/--c2pa-key) with a JSON sidecar, summary.json with the pairwise
    identity-consistency matrix, and contact_sheet.png. `castkeep inspect` reads them back.
    """
    from ..generation.generator import generate as generate_run
    from ..generation.loading import quiet_generation_libraries

    quiet_generation_libraries()
    config = GenerationConfig(prompt=prompt, negative_prompt=negative_prompt, seed=seed, steps=steps,
                              guidance=guidance, id_scale=id_scale, lora_scale=lora_scale, s_scale=s_scale, width=width,
                              height=height,
                              aspect=aspect,
                              num_images=num_images, scheduler=scheduler, best_of=best_of, scorer=scorer,
                              min_score=min_score,
                              max_tries=max_tries, batch_size=batch_size, vae_tiling=vae_tiling,
                              vae_slicing=vae_slicing)
    provenance = make_provenance(no_watermark, c2pa_cert, c2pa_key)
    bar = _AttemptBar(name, config.budget)
    with log_to_stderr("castkeep.generation", verbose=not as_json):
        try:
            result = generate_run(name, config=config, base_model=base_model, ip_adapter=ip_adapter, device=device,
                                  dtype=dtype, offload=offload, base_config=base_config, vae=vae, image_encoder=image_encoder,
                                  plus_version=plus_version, store=store_path, models=models,
                                  conditioning_models=conditioning_models, out_dir=out_dir,
                                  keep_rejected=keep_rejected, on_attempt=bar.advance, provenance=provenance)
        finally:
            bar.close()
    if not result.target_met:
        click.echo(f"warning: only {sum(a.passed for a in result.kept)} of {config.num_images} output(s) reached "
                   f"--min-score {config.min_score} in {len(result.attempts)} tries", err=True)
    emit({**result.summary, "out_dir": str(result.out_dir), "summary_path": str(result.summary_path)},
         as_json, lambda _: _text(result))
