"""Where a storyboard run's time went, shot by shot: the pipeline, scoring, and castkeep's own overhead
(its files, its ledger, and the rest of its own work), from the time split each shot keeps in the run's
ledger and summary.json (generation/storyboard/shot_run.py). On Ray, the time between the driver sending
a request and having its result, beyond the worker's own time, is shown apart (`transfer`).

The overhead is stated as a share of the pipeline's time. The tiny or CPU pipeline of a test run says
nothing about a real one, so the overhead per image is also projected onto a 30-step 512 px SD1.5 image
on a GPU (GPU_IMAGE_S): issue 12's goal is under 10 % of it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BenchmarkInputError
from .report import percent, table

GPU_IMAGE_S = 2.3  # a 30-step SD1.5 image, 512x512, on a GPU
GOAL = 0.10
PARTS = ("pipeline_s", "scoring_s", "files_s", "ledger_s", "other_s", "overhead_s", "transfer_s")
LABELS = {"pipeline_s": "pipeline", "scoring_s": "scoring", "files_s": "files", "ledger_s": "ledger",
          "other_s": "other", "overhead_s": "castkeep overhead", "transfer_s": "transfer (Ray)"}


def read_summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchmarkInputError(f"{run_dir} has no summary.json: is it a storyboard run folder? (a run writes it "
                                  "when it ends; run the same storyboard command again to finish one)") from None
    except (OSError, ValueError) as exc:
        raise BenchmarkInputError(f"cannot read {path}: {exc}") from None
    if not isinstance(summary, dict) or not str(summary.get("schema", "")).startswith("castkeep.storyboard.summary/"):
        raise BenchmarkInputError(f"{path} is not a storyboard summary")
    return summary


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values, dtype=np.float64)
    return {"median": round(float(np.median(array)), 6), "p90": round(float(np.percentile(array, 90)), 6),
            "mean": round(float(array.mean()), 6)}


def series_overhead(summary: dict[str, Any], *, gpu_image_s: float = GPU_IMAGE_S) -> dict[str, Any]:
    """Per shot and over the run: pipeline / scoring / castkeep overhead, the overhead's share of the
    pipeline's time, and the overhead per image against a `gpu_image_s` GPU image."""
    shots = []
    for shot in summary.get("shots", []):
        split = (shot.get("timing") or {}).get("split")
        if not split or not split.get("images"):  # finished earlier without generating, or by an older castkeep
            continue
        images = int(split["images"])
        per_image_s = split["overhead_s"] / images
        shots.append({"id": shot["id"], "images": images, **{part: split[part] for part in PARTS},
                      "overhead_share": split["overhead_s"] / split["pipeline_s"] if split["pipeline_s"] else None,
                      "overhead_ms_per_image": round(1000 * per_image_s, 3),
                      "gpu_share": round(per_image_s / gpu_image_s, 6),
                      # on Ray a worker waits this long for its next request: GPU time lost as well
                      "gpu_share_with_transfer": round((split["overhead_s"] + split["transfer_s"]) / images
                                                       / gpu_image_s, 6),
                      "workers": split.get("workers", []), "requeued": split.get("requeued", 0)})
    if not shots:
        raise BenchmarkInputError("no shot of this run has its time split (a run of an older castkeep, or one whose "
                                  "takes were all made earlier): run the plan into a new folder")
    stats = {part: _stats([shot[part] for shot in shots]) for part in PARTS}
    stats["overhead_share"] = _stats([s["overhead_share"] for s in shots if s["overhead_share"] is not None])
    stats["overhead_ms_per_image"] = _stats([shot["overhead_ms_per_image"] for shot in shots])
    stats["gpu_share"] = _stats([shot["gpu_share"] for shot in shots])
    stats["gpu_share_with_transfer"] = _stats([shot["gpu_share_with_transfer"] for shot in shots])
    totals = {part: round(sum(shot[part] for shot in shots), 4) for part in PARTS}
    images = sum(shot["images"] for shot in shots)
    return {
        "title": summary.get("title"),
        "shots": len(summary.get("shots", [])),
        "shots_measured": len(shots),
        "images": images,
        "workers": sorted({worker for shot in shots for worker in shot["workers"]}),
        "requeued": sum(shot["requeued"] for shot in shots),
        "models": summary.get("models"),
        "stats": stats,
        "totals": {**totals, "overhead_share": round(totals["overhead_s"] / totals["pipeline_s"], 6)
                   if totals["pipeline_s"] else None},
        "projection": {
            "gpu_image_s": gpu_image_s,
            "overhead_ms_per_image": stats["overhead_ms_per_image"],
            "share": stats["gpu_share"],
            "share_with_transfer": stats["gpu_share_with_transfer"],
            "goal": GOAL,
            "meets_goal": stats["gpu_share"]["median"] < GOAL,
            "note": "castkeep's overhead per image over a 30-step SD1.5 image's time on a GPU (the measured "
                    "pipeline here is not representative of one)",
        },
        "per_shot": shots,
    }


def summary_text(result: dict[str, Any]) -> str:
    stats = result["stats"]
    rows = [[LABELS[part], f"{1000 * stats[part]['median']:.1f}", f"{1000 * stats[part]['p90']:.1f}"] for part in PARTS]
    share = stats["overhead_share"]
    workers = ", ".join(worker.split()[0] for worker in result["workers"])
    projection = result["projection"]
    per_image = projection["overhead_ms_per_image"]
    lines = [
        f"{result['title']}: {result['images']} images in {result['shots_measured']} of {result['shots']} shots "
        f"(workers: {workers}; {result['requeued']} request(s) re-queued)",
        table(rows, ["per shot (ms)", "median", "p90"]),
        f"castkeep overhead / pipeline time: {percent(share.get('median'))} median, {percent(share.get('p90'))} p90 "
        f"(this run's pipeline)",
        f"castkeep overhead per image: {per_image['median']:.1f} ms median, {per_image['p90']:.1f} ms p90 = "
        f"{percent(projection['share']['median'])} (p90 {percent(projection['share']['p90'])}) of a "
        f"{projection['gpu_image_s']:g} s GPU image; goal < {100 * projection['goal']:g} %: "
        f"{'met' if projection['meets_goal'] else 'NOT met'}",
    ]
    if stats["transfer_s"]["median"] >= 0.001:
        with_transfer = projection["share_with_transfer"]
        lines.append(f"with Ray's transfer (a worker waiting for its next request): {percent(with_transfer['median'])} "
                     f"median, {percent(with_transfer['p90'])} p90 of a GPU image")
    return "\n".join(lines)
