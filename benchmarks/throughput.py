"""Images per second for castkeep's analyze+embed fast path against insightface's own
`FaceAnalysis.get`, on the same model pack and the same photos, in the same run.

Both pipelines detect every face and embed each one; castkeep takes the photos as one batch
(`FaceAnalyzer.analyze_many`: decoding ahead in a thread, faces of consecutive images embedded together),
the way `castkeep analyze/score/identify` take a folder; insightface takes them one `get` at a time. The two
take turns in rounds (castkeep, insightface, castkeep, ...) so load from other processes on a shared
machine hits both alike; the headline is the median over rounds of each round's ratio.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BenchmarkInputError
from ..utils import IMAGE_SUFFIXES, Progress, no_progress
from .pipelines import CastkeepPipeline, InsightFaceBaseline


def collect_images(folder: str | os.PathLike, limit: int | None = None, *, per_identity: int | None = None) -> list[Path]:
    """Images under `folder` (recursively), sorted; `per_identity` caps each sub-folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BenchmarkInputError("not a folder", path=folder)
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if per_identity:
        counts: dict[Path, int] = {}
        kept = []
        for path in images:
            counts[path.parent] = counts.get(path.parent, 0) + 1
            if counts[path.parent] <= per_identity:
                kept.append(path)
        images = kept
    if limit:
        images = images[:limit]
    if not images:
        raise BenchmarkInputError("no images (jpg/png/webp/bmp) found", path=folder)
    return images


def _timed_pass(run: Callable[[list[Path]], int], images: list[Path]) -> tuple[float, int]:
    start = time.perf_counter()
    faces = run(images)
    return time.perf_counter() - start, faces


def run_throughput(images: list[Path], pack: Any, *, rounds: int = 3, device: str = "cpu",
                   progress: Progress = no_progress) -> dict[str, Any]:
    castkeep = CastkeepPipeline(pack)
    insight = InsightFaceBaseline(pack.path, device=device)
    pipelines = {"castkeep": castkeep.analyze_all, "insightface": insight.analyze_all}
    for run in pipelines.values():  # warm-up: first-call session setup is not throughput
        run(images[:1])
    seconds: dict[str, list[float]] = {name: [] for name in pipelines}
    faces: dict[str, int] = {}
    for _ in progress(range(rounds), label="rounds", total=rounds):
        for name, run in pipelines.items():
            elapsed, found = _timed_pass(run, images)
            seconds[name].append(elapsed)
            faces[name] = found
    rates = {name: len(images) / float(np.median(times)) for name, times in seconds.items()}
    round_ratios = [theirs / ours for ours, theirs in zip(seconds["castkeep"], seconds["insightface"], strict=True)]
    return {
        "bench": "throughput",
        "images": len(images),
        "rounds": rounds,
        "model_pack": pack.name,
        "fingerprint": pack.fingerprint,
        "castkeep": {"images_per_s": rates["castkeep"], "round_seconds": seconds["castkeep"],
                     "faces": faces["castkeep"],
                     "pipeline": "FaceAnalyzer(dense=False, landmarks_106=False).analyze_many (one batch)"},
        "insightface": {"images_per_s": rates["insightface"], "round_seconds": seconds["insightface"],
                        "faces": faces["insightface"],
                        "pipeline": "FaceAnalysis(allowed_modules=[detection, recognition]).get, det_size 640"},
        "round_ratios": round_ratios,
        "ratio": float(np.median(round_ratios)),
    }


def summary_text(result: dict[str, Any]) -> str:
    from .report import table
    from .stages import stage_text

    rows = [[name, result[name]["images_per_s"], 1000 / result[name]["images_per_s"], result[name]["faces"]]
            for name in ("castkeep", "insightface")]
    text = (f"throughput: {result['images']} images x {result['rounds']} rounds, pack {result['model_pack']}\n"
            + table(rows, ["pipeline", "images/s", "ms/image", "faces"])
            + f"\nratio castkeep / insightface: {result['ratio']:.2f}x (median of the rounds' ratios: "
            + ", ".join(f"{r:.2f}" for r in result["round_ratios"]) + ")")
    if result.get("stages"):
        text += "\n" + stage_text(result["stages"])
    scoring = result.get("scoring")
    if scoring and scoring.get("images"):
        text += (f"\nscoring one {scoring['size']}x{scoring['size']} generated PNG with both scorers "
                 f"({scoring['images']} images): p50 {scoring['ms_p50']:.1f} ms, p90 {scoring['ms_p90']:.1f} ms "
                 f"(target {scoring['target_ms']:.0f} ms: {'met' if scoring['meets_target'] else 'NOT met'})")
    return text
