"""`castkeep bench ...`: evaluation benchmarks anyone can run on their own labelled photos.

Every bench writes `<out>/<name>.json` (the full result) and prints a short summary with the paths
of its plots; `--json` prints the result object instead.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable

import click
import numpy as np

from ..utils import progress, slug
from .common import emit, json_option, model_options

out_option = click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
                          default=Path("bench-results"), show_default=True,
                          help="Folder for the JSON result and plots.")
selection_option = click.option(
    "--selection", type=click.Choice(["center", "largest"]), default="center", show_default=True,
    help="Which face of a multi-face photo is the subject: the big central one (insightface's rule, "
         "right for LFW-style photos) or simply the largest.")
flip_option = click.option("--flip/--no-flip", default=True, show_default=True,
                           help="Flip test-time augmentation: average each embedding with its mirror image's.")


def _slug(text: str) -> str:
    return slug(text, max_length=120)


def _finish(result: dict[str, Any], out_dir: Path, name: str, as_json: bool,
            summary: Callable[[dict[str, Any]], str]) -> None:
    from ..benchmarks.report import environment, write_json

    result["environment"] = environment()
    result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    path = out_dir / f"{name}.json"
    result["result_json"] = str(path)
    write_json(result, out_dir, name)

    def text(data: dict[str, Any]) -> str:
        lines = [summary(data)]
        for label, plot in (data.get("plots") or {}).items():
            lines.append(f"{label}: {plot}")
        lines.append(f"result: {path}")
        return "\n".join(lines)

    emit(result, as_json, text)


def _pack(models: str | None, device: str) -> Any:
    from ..landmarks.model_pack import ModelPack

    return ModelPack.from_pretrained(models, device=device)


@click.group()
def bench() -> None:
    """Evaluation benchmarks: verification, identification, store scale, throughput, consistency."""


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
@click.option("--name", default=None, help="Result file name (default: verify-<pairs file>).")
@out_option
@model_options
@json_option
def verify(pairs_file: Path, root: Path | None, limit: int | None, selection: str, flip: bool,
           baseline: bool, name: str | None, out_dir: Path, models: str | None, device: str,
           as_json: bool) -> None:
    """Face verification on a pairs file (LFW protocol): 10-fold accuracy, ROC AUC, TAR@FAR, EER,
    failures-to-detect, and a ROC plot; against insightface's FaceAnalysis in the same run."""
    from ..benchmarks.pairs import read_pairs
    from ..benchmarks.report import plot_histogram, plot_roc
    from ..benchmarks.verification import run_verification, summary_text

    pairs = read_pairs(pairs_file, root, limit=limit)
    pack = _pack(models, device)
    result, curves = run_verification(pairs, pack, selection=selection, flip=flip, baseline=baseline,
                                      device=device, progress=progress)
    name = name or _slug(f"verify-{pairs_file.parent.name}-{pairs_file.stem}")
    roc_path = plot_roc(curves, out_dir / f"{name}-roc.png", f"ROC: {pairs_file.parent.name}/{pairs_file.name}")
    scores = result["scores"]
    labels = np.asarray(scores["same"], dtype=bool)
    castkeep_scores = np.asarray(scores["castkeep"])
    hist_path = plot_histogram({"same person": castkeep_scores[labels], "different people": castkeep_scores[~labels]},
                               out_dir / f"{name}-scores.png", "castkeep pair similarities",
                               threshold=result["castkeep"]["threshold"])
    result["plots"] = {"roc": str(roc_path), "score histogram": str(hist_path)}
    _finish(result, out_dir, name, as_json, summary_text)


@bench.command()
@click.option("--gallery", required=True, type=click.Path(path_type=Path),
              help="Folder with one sub-folder of photos per identity.")
@click.option("--refs", "k", type=click.IntRange(min=1, max=13), default=2, show_default=True,
              help="Reference photos enrolled per identity (the first k by file name).")
@click.option("--unknown-fraction", type=click.FloatRange(0.0, 0.9), default=0.2, show_default=True,
              help="Share of identities held out entirely, to test open-set rejection.")
@click.option("--limit-identities", type=click.IntRange(min=2), default=None,
              help="Use only the first N identity folders (a quick run).")
@click.option("--threshold", type=float, default=None,
              help="Open-set acceptance threshold (default: castkeep's same-person threshold).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for choosing the held-out identities.")
@selection_option
@flip_option
@click.option("--name", default=None, help="Result file name (default: identify-<gallery>).")
@out_option
@model_options
@json_option
def identify(gallery: Path, k: int, unknown_fraction: float, limit_identities: int | None,
             threshold: float | None, seed: int, selection: str, flip: bool, name: str | None,
             out_dir: Path, models: str | None, device: str, as_json: bool) -> None:
    """1:N identification through a fresh character store: rank-1/rank-5, open-set rejection of
    people who are not enrolled, per-probe latency."""
    from ..benchmarks.identification import read_gallery, run_identification, summary_text
    from ..identity.analyzer import FaceAnalyzer
    from ..identity.similarity import SAME_PERSON_THRESHOLD

    images = read_gallery(gallery, limit_identities=limit_identities)
    with FaceAnalyzer(_pack(models, device), dense=False, landmarks_106=False, selection=selection,
                      flip=flip) as analyzer:
        result = run_identification(images, analyzer, k=k, unknown_fraction=unknown_fraction, seed=seed,
                                    threshold=SAME_PERSON_THRESHOLD if threshold is None else threshold,
                                    progress=progress)
    result["config"] = {"selection": selection, "flip": flip}
    name = name or _slug(f"identify-{gallery.name}")
    result["plots"] = {}
    _finish(result, out_dir, name, as_json, summary_text)


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
    from ..benchmarks.store_scale import parse_sizes, run_store_scale, summary_text

    result = run_store_scale(parse_sizes(sizes), kinds=[k.strip() for k in kinds.split(",") if k.strip()],
                             n_queries=queries, seed=seed, progress=progress)
    result["plots"] = {}
    _finish(result, out_dir, _slug(name), as_json, summary_text)


@bench.command()
@click.option("--images", "images_dir", required=True, type=click.Path(path_type=Path),
              help="Folder of photos (searched recursively).")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
              help="Use at most this many photos (sorted by path).")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed passes per pipeline, taken in turns; the median counts.")
@click.option("--name", default="throughput", show_default=True, help="Result file name.")
@out_option
@model_options
@json_option
def throughput(images_dir: Path, limit: int, rounds: int, name: str, out_dir: Path, models: str | None,
               device: str, as_json: bool) -> None:
    """Images/s of castkeep's analyze+embed against insightface's FaceAnalysis.get on the same
    model pack and photos, in the same run, as a ratio."""
    from ..benchmarks.throughput import collect_images, run_throughput, summary_text

    images = collect_images(images_dir, limit)
    result = run_throughput(images, _pack(models, device), rounds=rounds, device=device, progress=progress)
    result["images_dir"] = str(images_dir)
    result["plots"] = {}
    _finish(result, out_dir, _slug(name), as_json, summary_text)


@bench.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--character", default=None,
              help="Stored character to score against (default: the one named in the run's "
                   "summary.json/sidecars, if the store has it; else the run's own centroid).")
@click.option("--store", "store_path", type=click.Path(path_type=Path), default=None, envvar="CASTKEEP_STORE",
              show_envvar=True, help="Character store folder.")
@click.option("--threshold", type=float, default=None,
              help="Same-person threshold (default: castkeep's).")
@click.option("--name", default=None, help="Result file name (default: consistency-<run folder>).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the JSON result and plots [default: RUN_DIR/consistency].")
@model_options
@json_option
def consistency(run_dir: Path, character: str | None, store_path: Path | None, threshold: float | None,
                name: str | None, out_dir: Path | None, models: str | None, device: str, as_json: bool) -> None:
    """Identity consistency of a generation run: score distribution, consistency rate, pairwise
    similarity matrix (heatmap), outliers. Every image is re-embedded."""
    from ..benchmarks.consistency import run_character, run_consistency, run_images, summary_text
    from ..benchmarks.report import plot_heatmap, plot_histogram
    from ..errors import CastkeepError, UnknownCharacterError
    from ..identity.analyzer import FaceAnalyzer
    from ..identity.similarity import SAME_PERSON_THRESHOLD

    out_dir = out_dir or run_dir / "consistency"
    images = run_images(run_dir, exclude=out_dir.resolve())
    named = character or run_character(run_dir, images)
    reference, label, notes = None, None, []
    with FaceAnalyzer(_pack(models, device), dense=False, landmarks_106=False) as analyzer:
        if named is not None:
            from ..identity.store import Store

            try:
                with Store.open(store_path, analyzer=analyzer, create=False) as store:
                    stored = store.get(named)
                if stored.fingerprint != analyzer.fingerprint:
                    raise UnknownCharacterError(f"character '{named}' was registered with another model "
                                                f"({stored.fingerprint}); use its --models")
                reference, label = stored.vector, stored.name
            except UnknownCharacterError:
                if character is not None:
                    raise
                notes.append(f"character '{named}' from the run is not in the store; scored against the run centroid")
            except CastkeepError as exc:
                if character is not None:
                    raise
                notes.append(f"no usable store ({exc}); scored against the run centroid")
        result = run_consistency(images, analyzer, reference=reference, reference_label=label,
                                 threshold=SAME_PERSON_THRESHOLD if threshold is None else threshold,
                                 progress=progress)
    result["run_dir"] = str(run_dir)
    result["notes"] = notes
    name = name or _slug(f"consistency-{run_dir.resolve().name}")
    result["plots"] = {}
    if result["with_face"] >= 2:
        matrix = np.asarray(result["pairwise"]["matrix"])
        result["plots"]["pairwise heatmap"] = str(plot_heatmap(
            matrix, result["pairwise"]["labels"], out_dir / f"{name}-pairwise.png", "pairwise identity similarity"))
    if result["with_face"]:
        result["plots"]["score histogram"] = str(plot_histogram(
            {"outputs": [r["score"] for r in result["images"]]}, out_dir / f"{name}-scores.png",
            f"identity score vs {result['reference']}", threshold=result["threshold"]))
    _finish(result, out_dir, name, as_json, summary_text)
