"""Identity consistency of a generation run: is every output the same person?

Every image in RUN_DIR (top level: png/jpg/webp; only those with a JSON sidecar when there are
sidecars, so a generation run's contact sheet is not counted as an output) is re-embedded with the analyzer, so the
numbers never depend on scores a generator wrote itself. The reference is the stored character
(`--character`, or the `character` named in the run's summary.json / sidecars when the store has
it); without one, each image is scored against the mean of the *other* outputs (leave-one-out).

Reported: the score distribution, the consistency rate (share of all outputs, faceless ones
included, judged the same person: score >= threshold), the pairwise similarity matrix (heatmap
PNG), and outliers: images whose mean similarity to the other outputs is below
median - max(2 x 1.4826 x MAD, 0.05) over the run (robust z < -2, with a floor so a very tight run
does not flag noise).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BenchmarkInputError, CastkeepError
from ..identity.embedder import l2_normalize
from ..identity.similarity import SAME_PERSON_THRESHOLD
from ..utils import IMAGE_SUFFIXES, Progress, no_progress

MAD_SCALE = 1.4826      # MAD → standard deviation for normal data
OUTLIER_Z = 2.0
OUTLIER_FLOOR = 0.05


def run_images(run_dir: str | os.PathLike, exclude: Path | None = None) -> list[Path]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BenchmarkInputError("run folder not found", path=run_dir)
    images = sorted(p for p in run_dir.iterdir()
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if exclude is not None:
        images = [p for p in images if exclude not in p.resolve().parents]
    # In a `castkeep generate` run every output has a JSON sidecar; the contact sheet has none.
    with_sidecar = [p for p in images if p.with_suffix(".json").is_file()]
    if with_sidecar:
        images = with_sidecar
    if not images:
        raise BenchmarkInputError("no images (png/jpg/webp) in the run folder", path=run_dir)
    return images


def _character_of(data: Any) -> str | None:
    value = data.get("character") if isinstance(data, dict) else None
    if isinstance(value, dict):
        value = value.get("name")
    return value if isinstance(value, str) and value else None


def run_character(run_dir: Path, images: list[Path]) -> str | None:
    """The character a run was generated for, from summary.json or else the first sidecar."""
    candidates = [run_dir / "summary.json"] + [p.with_suffix(".json") for p in images]
    for path in candidates:
        if path.is_file():
            try:
                name = _character_of(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
            if name:
                return name
    return None


def outlier_mask(values: np.ndarray) -> tuple[np.ndarray, float]:
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median)))
    cutoff = median - max(OUTLIER_Z * MAD_SCALE * mad, OUTLIER_FLOOR)
    return values < cutoff, cutoff


def run_consistency(images: list[Path], analyzer: Any, *, reference: np.ndarray | None = None,
                    reference_label: str | None = None, threshold: float = SAME_PERSON_THRESHOLD,
                    progress: Progress = no_progress) -> dict[str, Any]:
    embedded: list[tuple[Path, np.ndarray]] = []
    no_face: list[dict[str, str]] = []
    for path in progress(images, label="embed", total=len(images)):
        try:
            embedded.append((path, analyzer.embed(path).embedding))
        except CastkeepError as exc:  # no face or unreadable: a failed output, counted
            no_face.append({"image": path.name, "reason": str(exc)})
    names = [p.name for p, _ in embedded]
    vectors = np.stack([v for _, v in embedded]) if embedded else np.zeros((0, 0), np.float32)
    n = len(embedded)
    matrix = vectors @ vectors.T if n else np.zeros((0, 0))
    off = ~np.eye(n, dtype=bool)
    mean_to_others = (matrix * off).sum(axis=1) / max(n - 1, 1) if n > 1 else np.full(n, np.nan)
    if reference is not None:
        scores = vectors @ l2_normalize(reference)
        reference_kind = f"character '{reference_label}'" if reference_label else "given embedding"
    else:
        # Leave-one-out centroid: image i against the mean of the others, so it cannot match itself.
        total = vectors.sum(axis=0)
        scores = np.array([float(l2_normalize(total - v) @ v) if n > 1 else np.nan for v in vectors])
        reference_kind = "run centroid (leave-one-out)"
    per_image = [{"image": name, "score": float(s), "mean_to_others": float(m), "same": bool(s >= threshold)}
                 for name, s, m in zip(names, scores, mean_to_others, strict=True)]
    outliers, cutoff = (outlier_mask(mean_to_others) if n >= 3 else (np.zeros(n, bool), None))
    for row, flag in zip(per_image, outliers, strict=True):
        row["outlier"] = bool(flag)
    total_outputs = n + len(no_face)
    finite = scores[np.isfinite(scores)] if n else np.zeros(0)
    distribution = ({"mean": float(finite.mean()), "std": float(finite.std()), "min": float(finite.min()),
                     "p05": float(np.percentile(finite, 5)), "median": float(np.median(finite)),
                     "max": float(finite.max())} if finite.size else None)
    return {
        "bench": "consistency",
        "reference": reference_kind,
        "threshold": threshold,
        "outputs": total_outputs,
        "with_face": n,
        "no_face": no_face,
        "consistency_rate": (sum(bool(r["same"]) for r in per_image) / total_outputs) if total_outputs else None,
        "score_distribution": distribution,
        "pairwise_mean": float(matrix[off].mean()) if n > 1 else None,
        "pairwise_min": float(matrix[off].min()) if n > 1 else None,
        "outlier_cutoff": cutoff,
        "outliers": [r["image"] for r in per_image if r["outlier"]],
        "below_threshold": [r["image"] for r in per_image if not r["same"]],
        "images": per_image,
        "pairwise": {"labels": names, "matrix": np.round(matrix, 4).tolist()},
        "model": analyzer.fingerprint,
    }


def summary_text(result: dict[str, Any]) -> str:
    from .report import percent, table

    dist = result["score_distribution"] or {}
    rows = [["outputs (with a face)", f"{result['outputs']} ({result['with_face']})"],
            ["reference", result["reference"]],
            [f"consistency rate (score >= {result['threshold']:.2f})", percent(result["consistency_rate"])],
            ["score mean / median / min", " / ".join(f"{dist[k]:.3f}" for k in ("mean", "median", "min")) if dist else "-"],
            ["pairwise mean / min", "-" if result["pairwise_mean"] is None
             else f"{result['pairwise_mean']:.3f} / {result['pairwise_min']:.3f}"],
            ["outliers", ", ".join(result["outliers"]) or "none"]]
    lines = ["consistency of a generation run", table(rows, ["metric", "value"])]
    if result["no_face"]:
        lines.append(f"no face found in {len(result['no_face'])} output(s): "
                     + ", ".join(r["image"] for r in result["no_face"][:5]))
    return "\n".join(lines)
