"""`castkeep storyboard PLAN`: every shot of a plan file, several characters, one pipeline load, resumable
(castkeep.generation.storyboard does the work). torch and diffusers are imported only when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import GenerationError
from ..generation.config import DEVICES, DTYPES
from ..utils import progress, slug
from .common import (
    emit,
    json_option,
    log_to_stderr,
    pipeline_load_options,
    vae_slicing_option,
    vae_tiling_option,
)
from .provenance import make_provenance, provenance_options
from .store_commands import store_option


def _print_example(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from ..generation.storyboard.plan import EXAMPLE_PLAN

    click.echo(EXAMPLE_PLAN.read_text(encoding="utf-8"), nl=False)
    ctx.exit(0)


class _ShotBar:
    """One progress bar over the plan's shots, opened at the first shot (after the loading lines)."""

    def __init__(self) -> None:
        self.bar: Any = None

    def advance(self, event: Any) -> None:
        if self.bar is None:
            self.bar = progress(range(event.total), label="storyboard", total=event.total, unit="shot")
        self.bar.update(1)
        probability = "" if event.probability is None else f" p {event.probability:.2f}"
        self.bar.set_postfix_str(f"{event.shot.id} {event.outcome}{probability}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _text(result: Any) -> str:
    summary = result.summary
    counts = summary["counts"]
    lines = [f"{shot['number']:>3}. {shot['id']}: {shot['state']}"
             + (f", p {shot['score']['probability']:.2f}" if shot["score"] and shot["score"]["probability"] is not None
                else "")
             + (f"  [{'; '.join(shot['flags'])}]" if shot["flags"] else "")
             for shot in summary["shots"]]
    lines.append(f"{counts['shots']} shots: {counts['done']} done, {counts['failed_target']} below target, "
                 f"{counts['error']} errors; {result.images_generated} image(s) generated in this run "
                 f"({result.pipeline_calls} pipeline calls)")
    if counts["failed_target"]:
        lines.append("warning: re-run with --retry-failed to give the shots below target more seeds")
    lines.append(f"report: {result.report_path}  summary: {result.summary_path}")
    return "\n".join(lines)


@click.command()
@click.argument("plan", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--example", is_flag=True, expose_value=False, is_eager=True, callback=_print_example,
              help="Print an example plan (TOML, every field explained) and exit.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Run folder; re-running the same command resumes it [default: ./castkeep-out/storyboard-PLAN].")
@click.option("--base-model", default=None, envvar="CASTKEEP_BASE_MODEL", show_envvar=True, metavar="ID|DIR|FILE",
              help="Stable Diffusion 1.5 or SDXL: a diffusers folder, a single-file .safetensors checkpoint "
                   "(A1111/Civitai) or a Hugging Face id.")
@click.option("--ip-adapter", default=None, envvar="CASTKEEP_IP_ADAPTER", show_envvar=True, metavar="ID|FILE",
              help="IP-Adapter FaceID weights: a file, a folder holding one, or a Hub repo[/file].")
@store_option
@click.option("--models", default=None, envvar="CASTKEEP_MODELS", show_envvar=True, metavar="PACK",
              help="Face model pack that scores outputs (the store's own).")
@click.option("--conditioning-models", default=None, metavar="PACK",
              help="The pack whose embeddings the adapter was trained on (known adapters need none).")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Images per pipeline call within a shot (faster on a GPU, more memory).")
@click.option("--retry-failed", is_flag=True,
              help="Give shots that missed their min_score another budget of takes, with new seeds.")
@click.option("--ray", "ray_address", default=None, metavar="auto|ADDRESS",
              help="Spread the shots over Ray workers, each loading the pipeline once: auto starts a local Ray "
                   "cluster, ADDRESS joins one (`ray start --head` prints it). Needs castkeep[ray].")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Ray workers (with --ray) [default: one per GPU of the cluster, else one per machine].")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="torch device; auto = cuda, then mps, then cpu.")
@click.option("--dtype", type=click.Choice(DTYPES), default="auto", show_default=True,
              help="Weights precision; auto = float16 on GPUs, float32 on CPU.")
@pipeline_load_options
@vae_tiling_option
@vae_slicing_option
@provenance_options
@json_option
def storyboard(plan: Path, out_dir: Path | None, base_model: str | None, ip_adapter: str | None,
               store_path: Path | None, models: str | None, conditioning_models: str | None, batch_size: int,
               retry_failed: bool, ray_address: str | None, workers: int | None, device: str, dtype: str,
               base_config: str | None, vae: str | None, offload: str, vae_tiling: bool | None,
               vae_slicing: bool | None, no_watermark: bool, c2pa_cert: Path | None, c2pa_key: Path | None,
               as_json: bool) -> None:
    """Generate every shot of PLAN (a TOML or YAML storyboard: shots with prompts, characters, seeds,
    sizes and selection rules; see --example), each judged against its characters.

    Each take is written as soon as it is scored; the run folder's ledger records it, so re-running the
    same command after a crash or Ctrl-C finishes the run without regenerating what is done. Writes
    shots/ (the kept images), attempts/ (every take), summary.json and report.html.
    """
    from ..generation.loading import quiet_generation_libraries
    from ..generation.storyboard.plan import load_plan
    from ..generation.storyboard.runner import run_storyboard

    if workers is not None and ray_address is None:
        raise click.UsageError("--workers needs --ray")
    checked = load_plan(plan)  # a malformed plan fails before anything else
    provenance = make_provenance(no_watermark, c2pa_cert, c2pa_key)
    quiet_generation_libraries()
    target = out_dir if out_dir is not None else Path("castkeep-out") / f"storyboard-{slug(plan.stem, fallback='plan')}"
    bar = _ShotBar()
    with log_to_stderr("castkeep.generation", verbose=not as_json):
        try:
            result = run_storyboard(checked, out_dir=target, store=store_path, base_model=base_model,
                                    ip_adapter=ip_adapter, device=device, dtype=dtype, models=models,
                                    conditioning_models=conditioning_models, batch_size=batch_size,
                                    retry_failed=retry_failed, ray=ray_address, workers=workers,
                                    on_shot=bar.advance, provenance=provenance, offload=offload,
                                    base_config=base_config, vae=vae, vae_tiling=vae_tiling,
                                    vae_slicing=vae_slicing)
        finally:
            bar.close()
    emit({**result.summary, "run_dir": str(result.run_dir), "report": str(result.report_path),
          "pipeline_calls": result.pipeline_calls, "images_generated": result.images_generated},
         as_json, lambda _: _text(result))
    failed = [shot for shot in result.summary["shots"] if shot["state"] == "error"]
    if failed:  # the others are written; a re-run tries these again
        raise GenerationError(f"{len(failed)} shot(s) could not be generated (first: {failed[0]['id']}: "
                              f"{'; '.join(failed[0]['flags'])}); run the same command again to retry them")
