"""`castkeep bench ...`: evaluation benchmarks anyone can run on their own labelled photos.

Every bench writes `<out>/<name>.json` (the full result) and prints a short summary with the paths
of its plots; `--json` prints the result object instead.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .common import FACE_DEVICES, FINITE_FLOAT, emit, json_option, model_options, scorer_option

out_option = click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
                          default=Path("bench-results"), show_default=True,
                          help="Folder for the JSON result and plots.")
selection_option = click.option(
    "--selection", type=click.Choice(["center", "largest"]), default="center", show_default=True,
    help="Which face of a multi-face photo is the subject: the big central one (insightface's rule, "
         "right for LFW-style photos) or simply the largest.")
# A pairs file mixes images; its verdicts use one calibration, named (the image commands' `auto` reads one
# image's metadata).
pairs_domain_option = click.option(
    "--domain", type=click.Choice(["photo", "generated"]), default="photo", show_default=True,
    help="Which calibration the default verdict uses: real photos, or images from a generator (whose "
         "genuine pairs score lower).")
flip_option = click.option("--flip/--no-flip", default=True, show_default=True,
                           help="Flip test-time augmentation: average each embedding with its mirror image's.")


def _print(result: dict[str, Any], as_json: bool, summary: Callable[[dict[str, Any]], str]) -> None:
    """The result object with --json; else the bench's summary, its plots and the result file."""

    def text(data: dict[str, Any]) -> str:
        lines = [summary(data)]
        for label, plot in (data.get("plots") or {}).items():
            lines.append(f"{label}: {plot}")
        lines.append(f"result: {data['result_json']}")
        return "\n".join(lines)

    emit(result, as_json, text)


@click.group()
def bench() -> None:
    """Evaluation benchmarks: verification, identification, store scale, throughput, consistency, and where
    a storyboard series' time goes."""


@bench.command()
@click.option("--pairs", "pairs_file", required=True, type=click.Path(path_type=Path),
              help="Pairs file: 'a b same' per line (same = 1/0), or LFW's own pairs.txt format.")
@click.option("--root", type=click.Path(path_type=Path), default=None,
              help="Folder the image paths are relative to (default: the pairs file's folder, or its "
                   "parent when the paths start there).")
@click.option("--limit", type=click.IntRange(min=2), default=None,
              help="Use only this many pairs (half same, half different) for a quick run.")
@selection_option
@flip_option
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also run insightface's own FaceAnalysis on the same pairs, as the reference.")
@scorer_option
@pairs_domain_option
@click.option("--name", default=None, help="Result file name (default: verify-<pairs file>[-scorer][-domain]).")
@out_option
@model_options
@json_option
def verify(pairs_file: Path, root: Path | None, limit: int | None, selection: str, flip: bool,
           baseline: bool, scorer: str, domain: str, name: str | None, out_dir: Path, models: str | None,
           device: str, as_json: bool) -> None:
    """Face verification on a pairs file (LFW protocol): 10-fold accuracy, the default verdict's accuracy
    for --domain, ROC AUC, TAR@FAR, EER, failures-to-detect, and a ROC plot; against insightface's
    FaceAnalysis in the same run. --scorer dlib or fused also describes every image with dlib and reports
    arcface, dlib and fused side by side."""
    from ..benchmarks.runs import bench_verify
    from ..benchmarks.verification import summary_text

    result = bench_verify(pairs_file, root=root, limit=limit, selection=selection, flip=flip, baseline=baseline,
                          name=name, out_dir=out_dir, models=models, device=device, scorer=scorer, domain=domain)
    _print(result, as_json, summary_text)


@bench.command()
@click.option("--gallery", required=True, type=click.Path(path_type=Path),
              help="Folder with one sub-folder of photos per identity.")
@click.option("--refs", "k", type=click.IntRange(min=1, max=13), default=2, show_default=True,
              help="Reference photos enrolled per identity (the first k by file name).")
@click.option("--unknown-fraction", type=click.FloatRange(0.0, 0.9), default=0.2, show_default=True,
              help="Share of identities held out entirely, to test open-set rejection.")
@click.option("--limit-identities", type=click.IntRange(min=2), default=None,
              help="Use only the first N identity folders (a quick run).")
@click.option("--threshold", type=FINITE_FLOAT, default=None,
              help="Open-set acceptance threshold (default: castkeep's same-person threshold).")
@click.option("--fpir", "target_fpir", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.01,
              show_default=True, help="Target FPIR of the product's open-set threshold, reported beside the 1:1 one.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for choosing the held-out identities.")
@selection_option
@flip_option
@click.option("--name", default=None, help="Result file name (default: identify-<gallery>).")
@out_option
@model_options
@json_option
def identify(gallery: Path, k: int, unknown_fraction: float, limit_identities: int | None,
             threshold: float | None, target_fpir: float, seed: int, selection: str, flip: bool, name: str | None,
             out_dir: Path, models: str | None, device: str, as_json: bool) -> None:
    """1:N identification through a fresh character store: rank-1/rank-5, open-set rejection of
    people who are not enrolled (at the 1:1 threshold and at identify's own open-set threshold for
    the gallery's size), per-probe latency."""
    from ..benchmarks.identification import summary_text
    from ..benchmarks.runs import bench_identify

    result = bench_identify(gallery, k=k, unknown_fraction=unknown_fraction, limit_identities=limit_identities,
                            threshold=threshold, target_fpir=target_fpir, seed=seed, selection=selection, flip=flip, name=name,
                            out_dir=out_dir, models=models, device=device)
    _print(result, as_json, summary_text)


@bench.command("store")
@click.option("--sizes", default="1e4,1e5", show_default=True,
              help="Comma-separated numbers of stored vectors, e.g. 1e4,1e5,1e6 (1e6 x 512 floats = 2 GB).")
@click.option("--kinds", default="exact,hnsw,ivf", show_default=True,
              help="Index kinds to measure (castkeep.identity.index): exact, hnsw, ivf.")
@click.option("--queries", type=click.IntRange(min=1), default=100, show_default=True,
              help="Queries per size.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the random vectors.")
@click.option("--name", default="store-scale", show_default=True, help="Result file name.")
@out_option
@json_option
def store_scale(sizes: str, kinds: str, queries: int, seed: int, name: str, out_dir: Path, as_json: bool) -> None:
    """Identify latency, recall@10, build time and memory of the store's exact and approximate
    indexes, each against a numpy brute-force search measured in the same run."""
    from ..benchmarks.runs import bench_store
    from ..benchmarks.store_scale import parse_sizes, summary_text

    result = bench_store(parse_sizes(sizes), kinds=[k.strip() for k in kinds.split(",") if k.strip()],
                         queries=queries, seed=seed, name=name, out_dir=out_dir)
    _print(result, as_json, summary_text)


@bench.command()
@click.option("--images", "images_dir", required=True, type=click.Path(path_type=Path),
              help="Folder of photos (searched recursively).")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
              help="Use at most this many photos (sorted by path).")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed passes per pipeline, taken in turns; the median counts.")
@click.option("--scoring-images", type=click.Path(path_type=Path), default=None,
              help="Folder of generated images: also time scoring one of them, resized to 512x512 PNG, with "
                   "both scorers (decode, detect, ArcFace, dlib), image by image.")
@click.option("--scoring-limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="Use at most this many --scoring-images.")
@click.option("--stages/--no-stages", default=True, show_default=True,
              help="Also time each stage (decode, detect, align, embed, flip, dense mesh, dlib) image by image.")
@click.option("--name", default="throughput", show_default=True, help="Result file name.")
@out_option
@model_options
@json_option
def throughput(images_dir: Path, limit: int, rounds: int, scoring_images: Path | None, scoring_limit: int,
               stages: bool, name: str, out_dir: Path, models: str | None, device: str, as_json: bool) -> None:
    """Images/s of castkeep's analyze+embed against insightface's FaceAnalysis.get on the same
    model pack and photos, in the same run, as a ratio; where the time goes, stage by stage."""
    from ..benchmarks.runs import bench_throughput
    from ..benchmarks.throughput import summary_text

    result = bench_throughput(images_dir, limit=limit, rounds=rounds, name=name, out_dir=out_dir, models=models,
                              device=device, scoring_images=scoring_images, scoring_limit=scoring_limit,
                              stages=stages)
    _print(result, as_json, summary_text)


@bench.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--character", default=None,
              help="Stored character to score against (default: the one named in the run's "
                   "summary.json/sidecars, if the store has it; else the run's own centroid).")
@click.option("--reference", "reference_image", type=click.Path(path_type=Path), default=None,
              help="A photo of the person to score against instead of a stored character.")
@click.option("--store", "store_path", type=click.Path(path_type=Path), default=None, envvar="CASTKEEP_STORE",
              show_envvar=True, help="Character store folder.")
@click.option("--scorer", type=click.Choice(["arcface", "dlib", "fused"]), default="fused", show_default=True,
              help="Which scorer drives the headline consistency rate, score distribution and outliers "
                   "(every image is judged by all three either way).")
@click.option("--domain", type=click.Choice(["photo", "generated"]), default="generated", show_default=True,
              help="Which calibration the verdicts use: generated images (what a run holds) or real photos.")
@click.option("--threshold", type=FINITE_FLOAT, default=None,
              help="Verdict threshold of --scorer on its own scale (cosine, dlib distance, fused log-odds) "
                   "[default: its calibrated one for --domain].")
@click.option("--name", default=None, help="Result file name (default: consistency-<run folder>).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the JSON result and plots [default: RUN_DIR/consistency].")
@model_options
@json_option
def consistency(run_dir: Path, character: str | None, reference_image: Path | None, store_path: Path | None,
                scorer: str, domain: str, threshold: float | None, name: str | None, out_dir: Path | None,
                models: str | None, device: str, as_json: bool) -> None:
    """Identity consistency of a generation run: every image is described again by ArcFace (the model that
    conditions generation) and dlib (an independent one) and judged by arcface, dlib and fused; flags the
    images where the two disagree (ArcFace alone saying "same" is the dangerous case). Consistency rate,
    score distribution, pairwise matrices (heat maps), outliers."""
    from ..benchmarks.consistency import summary_text
    from ..benchmarks.runs import bench_consistency

    result = bench_consistency(run_dir, character=character, reference_image=reference_image, store=store_path,
                               scorer=scorer, domain=domain, threshold=threshold, name=name, out_dir=out_dir,
                               models=models, device=device)
    _print(result, as_json, summary_text)


@bench.command()
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--gpu-image-s", type=click.FloatRange(min=0, min_open=True), default=2.3, show_default=True,
              help="Seconds a GPU takes for one image (a 30-step SD1.5 image): what the overhead is projected onto.")
@click.option("--name", default=None, help="Result file name (default: series-<run folder>).")
@out_option
@json_option
def series(run_dir: Path, gpu_image_s: float, name: str | None, out_dir: Path, as_json: bool) -> None:
    """Where a storyboard run's time went (RUN_DIR: a `castkeep storyboard` run folder): per shot, the
    pipeline, scoring, and castkeep's own overhead (files, ledger, the rest), median and p90; the overhead
    as a share of the pipeline time, and per image against a GPU image of --gpu-image-s."""
    from ..benchmarks.runs import bench_series
    from ..benchmarks.series import summary_text

    result = bench_series(run_dir, gpu_image_s=gpu_image_s, name=name, out_dir=out_dir)
    _print(result, as_json, summary_text)


@bench.command("serve")
@click.option("--images", "images_dir", required=True, type=click.Path(path_type=Path),
              help="Folder of probe photos (each should show a stored character, e.g. a photo not registered).")
@click.option("--store", "store_path", required=True, type=click.Path(path_type=Path), envvar="CASTKEEP_STORE",
              show_envvar=True, help="The store the server serves (the CLI's reference answers read it too).")
@click.option("--url", default=None, help="A running `castkeep serve` on that store (default: start one on a free local port).")
@click.option("--token", default=None, envvar="CASTKEEP_TOKEN", show_envvar=True,
              help="The server's bearer token, sent with every request (a server started with --token-reads needs it).")
@click.option("--clients", type=click.IntRange(1, 256), default=8, show_default=True, help="Concurrent clients.")
@click.option("--requests", type=click.IntRange(1, 10000), default=10, show_default=True,
              help="Requests per client, for identify and again for score.")
@click.option("--limit", type=click.IntRange(min=1), default=4, show_default=True,
              help="Probe images used (each costs two cold CLI runs for the reference answers).")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True, help="The started server's --workers.")
@click.option("--device", type=click.Choice(FACE_DEVICES), default="cpu", show_default=True,
              help="Where the face models run, in the started server and the CLI's reference answers alike (see "
                   "`castkeep identify --help`).")
@click.option("--name", default="serve", show_default=True, help="Result file name.")
@out_option
@click.option("--models", "models", metavar="PACK", default=None, envvar="CASTKEEP_MODELS", show_envvar=True,
              help="Model pack of the store.")
@json_option
def serve_load(images_dir: Path, store_path: Path, url: str | None, token: str | None, clients: int, requests: int,
               limit: int, workers: int, device: str, name: str, out_dir: Path, models: str | None,
               as_json: bool) -> None:
    """Load test of `castkeep serve`: CLIENTS concurrent clients x REQUESTS identify and score requests each; p50/p99
    latency, throughput, errors, answers checked against the CLI's, bad uploads, and the identify p50 against a
    cold `castkeep identify` measured in the same run."""
    from ..benchmarks.runs import check_result_name
    from ..benchmarks.serve_load import bench_serve, summary_text

    check_result_name(name)
    result = bench_serve(images_dir, store_path, url=url, clients=clients, requests=requests, limit=limit, workers=workers,
                         models=models, out_dir=out_dir, name=name, token=token, device=device)
    _print(result, as_json, summary_text)
