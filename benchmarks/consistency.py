"""Identity consistency of a generation run: is every output the same person, by two recognisers?

Every image in RUN_DIR (top level: png/jpg/webp; only those with a JSON sidecar when there are
sidecars, so a generation run's contact sheet is not counted as an output) is described again, so the
numbers never depend on scores a generator wrote itself: by ArcFace (the model pack's recogniser, the space
that conditions generation) and by dlib's ResNet descriptor (another model family, an independent judge).
The reference is a photo (`--reference`), the stored character (`--character`, or the `character` named in
the run's summary.json / sidecars when the store has it), or else, for each image, the *other* outputs
(leave-one-out: their mean vector; for dlib, as a character, on the photo-pair scale the calibrations use:
identity/reference_faces.py).

Every output with a face is judged by each scorer (arcface, dlib, fused) in a domain (`generated` by default:
a run holds generated images) and the two recognisers' verdicts are compared: `conditioning-only` (ArcFace
says same, dlib says different) is the dangerous disagreement, an output that may only look like the
character to the model that steered it. One scorer (`--scorer`, fused by default) drives the headline:
`score`/`same` per image, the consistency rate (share of all outputs, faceless ones included, judged the
same person), the score distribution and the outliers: images whose mean similarity to the other outputs is
below median - max(2 x 1.4826 x MAD, floor) on that scorer's scale (robust z < -2, with a floor so a very
tight run does not flag noise). Each scorer's own figures are under `scorers`. The pairwise matrices:
ArcFace cosine (`pairwise.matrix`, the heat map), dlib distance and fused log-odds.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BenchmarkInputError, CastkeepError, NoFaceError
from ..identity.embedder import l2_normalize
from ..identity.reference_faces import CharacterDescriptors
from ..identity.scorers import SCORERS, check_domain, describe_face, get_scorer, judge_all
from ..landmarks.model_pack import same_space
from ..utils import IMAGE_SUFFIXES, Progress, no_progress

MAD_SCALE = 1.4826      # MAD → standard deviation for normal data
OUTLIER_Z = 2.0
# The outlier floor on each scorer's similarity scale: about one unit of photo-domain log-odds each
# (0.05 cosine x slope 22.3; 0.03 distance x slope 34.2; the fused score is a log-odds itself).
OUTLIER_FLOOR = {"arcface": 0.05, "dlib": 0.03, "fused": 1.0}
CONDITIONING, INDEPENDENT = "arcface", "dlib"  # the recogniser that steers generation, and the other family


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


def _conditioning_of(data: Any) -> dict[str, Any] | None:
    models = data.get("models") if isinstance(data, dict) else None
    value = models.get("conditioning") if isinstance(models, dict) else None
    return value if isinstance(value, dict) and value else None


def _first_in_run(run_dir: Path, images: list[Path], read: Any) -> Any:
    """`read(json)` of summary.json or else of the first sidecar where it finds something."""
    for path in [run_dir / "summary.json"] + [p.with_suffix(".json") for p in images]:
        if path.is_file():
            try:
                found = read(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
            if found:
                return found
    return None


def run_character(run_dir: Path, images: list[Path]) -> str | None:
    """The character a run was generated for, from summary.json or else the first sidecar."""
    return _first_in_run(run_dir, images, _character_of)


def run_conditioning(run_dir: Path, images: list[Path]) -> dict[str, Any] | None:
    """The conditioning space a run's adapter used (`models.conditioning`: fingerprint, pack), when the
    run says so."""
    return _first_in_run(run_dir, images, _conditioning_of)


def conditioning_record(conditioning: dict[str, Any] | None, arcface_fingerprint: str) -> dict[str, Any] | None:
    """The run's conditioning space with `same_as_arcface_scorer`: whether the ArcFace judging here is the
    space that steered generation (so not independent of it). Decided by the space's fingerprint, else by
    its recogniser file (a fingerprint is `pack:recogniser-file:sha256-prefix`); None when the run says
    neither."""
    if conditioning is None:
        return None
    fingerprint, recogniser = conditioning.get("fingerprint"), conditioning.get("recogniser")
    if isinstance(fingerprint, str) and fingerprint:
        same: bool | None = same_space(fingerprint, arcface_fingerprint)
    elif isinstance(recogniser, str) and recogniser:
        same = recogniser == arcface_fingerprint.split(":")[1] if arcface_fingerprint.count(":") >= 2 else None
    else:
        same = None
    return {**conditioning, "same_as_arcface_scorer": same}


@dataclass
class Reference:
    """Who every output should be: an ArcFace vector and dlib descriptors (one photo's, or a stored character's
    references), and what to call it."""

    label: str
    embedding: np.ndarray
    descriptors: CharacterDescriptors


def outlier_mask(values: np.ndarray, floor: float = OUTLIER_FLOOR["arcface"]) -> tuple[np.ndarray, float]:
    """Values (higher = more alike) below median - max(2 robust SDs, floor), and that cutoff."""
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median)))
    cutoff = median - max(OUTLIER_Z * MAD_SCALE * mad, floor)
    return values < cutoff, cutoff


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of a and the rows of b (float64)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


def _reference_raw(vectors: np.ndarray, descriptors: np.ndarray,
                   reference: Reference | None) -> dict[str, np.ndarray]:
    """Each output's ArcFace cosine and dlib distance to the reference, or to the other outputs (their mean
    vector; for dlib the others as a character of equal weights, on the pair scale: `CharacterDescriptors`)."""
    if reference is not None:
        return {"arcface": vectors @ l2_normalize(reference.embedding),
                "dlib": reference.descriptors.distances(descriptors)}
    n = len(vectors)
    if n < 2:
        return {"arcface": np.full(n, np.nan), "dlib": np.full(n, np.nan)}
    # Leave-one-out: output i against the others, so it cannot match itself.
    total = vectors.sum(axis=0)
    others = [CharacterDescriptors(np.delete(descriptors, i, axis=0).astype(np.float64), np.ones(n - 1))
              for i in range(n)]
    return {"arcface": np.array([float(l2_normalize(total - v) @ v) for v in vectors]),
            "dlib": np.array([other.distance(d) for other, d in zip(others, descriptors, strict=True)])}


def _agreement(conditioning: bool, independent: bool) -> dict[str, Any]:
    kind = None if conditioning == independent else ("conditioning-only" if conditioning else "independent-only")
    return {"conditioning": conditioning, "independent": independent, "disagree": kind is not None, "kind": kind}


def _distribution(values: np.ndarray) -> dict[str, float] | None:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return None
    return {"mean": float(finite.mean()), "std": float(finite.std()), "min": float(finite.min()),
            "p05": float(np.percentile(finite, 5)), "median": float(np.median(finite)), "max": float(finite.max())}


def _scorer_summary(name: str, rows: list[dict[str, Any]], pairwise: np.ndarray, domain: str,
                    total_outputs: int) -> dict[str, Any]:
    """One scorer's consistency figures: verdicts against the reference, its pairwise matrix, its outliers.
    Scores, `mean_to_others` and the outlier cutoff are on the scorer's own scale (a dlib distance: lower
    is more alike); outliers are found on its similarity scale (higher is more alike)."""
    scorer = get_scorer(name)
    results = [row["scores"][name] for row in rows]
    n = len(rows)
    off = ~np.eye(n, dtype=bool)
    mean_to_others = (pairwise * off).sum(axis=1) / (n - 1) if n > 1 else np.full(n, np.nan)
    sign = float(np.sign(scorer.calibration(domain).slope))  # own scale → similarity scale
    flags, cutoff = (outlier_mask(sign * mean_to_others, OUTLIER_FLOOR[name]) if n >= 3
                     else (np.zeros(n, bool), None))
    worst = (pairwise[off].min() if sign > 0 else pairwise[off].max()) if n > 1 else None
    return {
        "metric": scorer.metric,
        "threshold": results[0]["threshold"] if results else scorer.calibration(domain).threshold,
        "consistency_rate": (sum(r["same"] for r in results) / total_outputs) if total_outputs else None,
        "score_distribution": _distribution(np.array([r["score"] for r in results], dtype=np.float64)),
        "below_threshold": [row["image"] for row, r in zip(rows, results, strict=True) if not r["same"]],
        "pairwise_mean": float(pairwise[off].mean()) if n > 1 else None,
        "pairwise_worst": None if worst is None else float(worst),
        "mean_to_others": [float(v) for v in mean_to_others],
        "outlier_cutoff": None if cutoff is None else sign * cutoff,
        "outliers": [row["image"] for row, flag in zip(rows, flags, strict=True) if flag],
    }


def run_consistency(images: list[Path], analyzer: Any, recogniser: Any, *, reference: Reference | None = None,
                    scorer: str = "fused", domain: str = "generated", threshold: float | None = None,
                    progress: Progress = no_progress) -> dict[str, Any]:
    """Every output judged by arcface, dlib and fused against `reference` (or the leave-one-out mean of the
    others); `scorer` drives the headline figures, `threshold` (on its scale) overrides its verdict."""
    headline = get_scorer(scorer)
    check_domain(domain)
    described: list[tuple[str, Any]] = []
    no_face: list[dict[str, str]] = []
    unreadable: list[dict[str, str]] = []  # a corrupt or truncated file is not "no face": say which
    for path in progress(images, label="describe", total=len(images)):
        try:
            described.append((path.name, describe_face(analyzer, path, recogniser=recogniser)))
        except NoFaceError as exc:  # a failed output, counted
            no_face.append({"image": path.name, "reason": str(exc)})
        except CastkeepError as exc:  # unreadable (ImageError) or another face problem: counted too
            unreadable.append({"image": path.name, "reason": exc.args[0] if exc.args else str(exc)})
    names = [name for name, _ in described]
    n = len(described)
    vectors = np.stack([f.embedding for _, f in described]) if n else np.zeros((0, 512), np.float32)
    descriptors = np.stack([f.descriptor for _, f in described]) if n else np.zeros((0, 128), np.float32)
    pairwise_raw = {"arcface": vectors @ vectors.T, "dlib": _distances(descriptors, descriptors)}
    pairwise = {name: np.asarray(get_scorer(name).score(pairwise_raw, domain), dtype=np.float64) for name in SCORERS}
    to_reference = _reference_raw(vectors, descriptors, reference)

    rows: list[dict[str, Any]] = []
    for i, name in enumerate(names):
        raw = {"arcface": float(to_reference["arcface"][i]), "dlib": float(to_reference["dlib"][i])}
        judged = judge_all(headline, raw, domain, threshold)
        chosen = judged[headline.name]
        rows.append({"image": name, "score": chosen.score, "same": chosen.same, "cosine": raw["arcface"],
                     "scores": {k: judged[k].to_dict() for k in SCORERS},
                     "agreement": _agreement(judged[CONDITIONING].same, judged[INDEPENDENT].same)})
    total_outputs = n + len(no_face) + len(unreadable)
    summaries = {name: _scorer_summary(name, rows, pairwise[name], domain, total_outputs) for name in SCORERS}
    main = summaries[headline.name]
    for i, row in enumerate(rows):
        row["mean_to_others"] = main["mean_to_others"][i]
        row["outlier"] = row["image"] in main["outliers"]
    disagreeing = [row for row in rows if row["agreement"]["disagree"]]
    if reference is not None:
        reference_kind = reference.label
    else:
        reference_kind = "run centroid (leave-one-out)"
    arcface = summaries["arcface"]
    return {
        "bench": "consistency",
        "reference": reference_kind,
        "scorer": headline.name,
        "metric": headline.metric,
        "domain": domain,
        "threshold": main["threshold"],
        "outputs": total_outputs,
        "with_face": n,
        "no_face": no_face,
        "unreadable": unreadable,
        "consistency_rate": main["consistency_rate"],
        "score_distribution": main["score_distribution"],
        "pairwise_mean": arcface["pairwise_mean"],   # ArcFace cosine, as `pairwise.matrix`
        "pairwise_min": arcface["pairwise_worst"],
        "outlier_cutoff": main["outlier_cutoff"],
        "outliers": main["outliers"],
        "below_threshold": main["below_threshold"],
        "scorers": {name: {k: v for k, v in summary.items() if k != "mean_to_others"}
                    for name, summary in summaries.items()},
        "agreement": {
            "conditioning": CONDITIONING, "independent": INDEPENDENT,
            "agree": n - len(disagreeing), "disagree": len(disagreeing),
            "disagreeing": [row["image"] for row in disagreeing],
            "conditioning_only": [r["image"] for r in disagreeing if r["agreement"]["kind"] == "conditioning-only"],
            "independent_only": [r["image"] for r in disagreeing if r["agreement"]["kind"] == "independent-only"],
        },
        "images": rows,
        "pairwise": {"labels": names, "matrix": np.round(pairwise["arcface"], 4).tolist(),
                     "dlib": np.round(pairwise["dlib"], 4).tolist(), "fused": np.round(pairwise["fused"], 4).tolist()},
        "model": analyzer.fingerprint,
        "models": {CONDITIONING: analyzer.fingerprint, INDEPENDENT: recogniser.fingerprint},
    }


def _verdict(result: dict[str, Any]) -> str:
    return f"{result['score']:.3f} {'same' if result['same'] else 'diff'}"


def summary_text(result: dict[str, Any]) -> str:
    from .report import percent, table

    dist = result["score_distribution"] or {}
    scorers = result["scorers"]
    agreement = result["agreement"]
    rates = " / ".join(f"{name} {percent(s['consistency_rate'])}" for name, s in scorers.items())
    rows = [["outputs (with a face)", f"{result['outputs']} ({result['with_face']})"],
            ["reference", f"{result['reference']} ({result['domain']} domain)"],
            [f"consistency rate ({result['scorer']}, {result['metric']} threshold {result['threshold']:.3f})",
             percent(result["consistency_rate"])],
            ["consistency rate by scorer", rates],
            [f"{result['scorer']} score mean / median / min",
             " / ".join(f"{dist[k]:.3f}" for k in ("mean", "median", "min")) if dist else "-"],
            ["pairwise cosine mean / min", "-" if result["pairwise_mean"] is None
             else f"{result['pairwise_mean']:.3f} / {result['pairwise_min']:.3f}"],
            [f"outliers ({result['scorer']})", ", ".join(result["outliers"]) or "none"],
            [f"{agreement['conditioning']} vs {agreement['independent']}",
             f"{agreement['agree']} agree, {agreement['disagree']} disagree "
             f"({len(agreement['conditioning_only'])} {agreement['conditioning']} only)"]]
    lines = ["consistency of a generation run", table(rows, ["metric", "value"])]
    if result["images"]:
        per_image = [[row["image"], *(_verdict(row["scores"][name]) for name in scorers),
                      row["agreement"]["kind"] or ""] for row in result["images"]]
        lines.append(table(per_image, ["image", *(f"{name} ({s['metric']})" for name, s in scorers.items()),
                                       "disagreement"]))
    if agreement["conditioning_only"]:
        lines.append(f"{agreement['conditioning']} (the conditioning model) alone calls these the same person, "
                     f"{agreement['independent']} does not: " + ", ".join(agreement["conditioning_only"]))
    if result["no_face"]:
        lines.append(f"no face found in {len(result['no_face'])} output(s): "
                     + ", ".join(r["image"] for r in result["no_face"][:5]))
    if result.get("unreadable"):
        lines.append(f"could not read {len(result['unreadable'])} output(s): "
                     + ", ".join(f"{r['image']} ({r['reason']})" for r in result["unreadable"][:5]))
    return "\n".join(lines)
