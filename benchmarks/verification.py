"""Face verification on a pairs file, the LFW way: 10-fold accuracy, ROC/AUC, TAR@FAR, EER.

Each distinct image is embedded once per pipeline. An image where no face is found is a
failure-to-detect: its pairs get the lowest score (cosine -1: called "different", so genuine pairs
count as errors) and are listed in the result, never dropped. castkeep and insightface's own
FaceAnalysis run on the same pairs in the same run. castkeep is judged by a chosen scorer (arcface,
dlib, fused) and reports, next to the 10-fold accuracy, the accuracy of that scorer's default verdict
for a domain (photo, generated): the threshold the product ships, not one fitted on these pairs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BenchmarkInputError
from ..identity.scorers import SCORERS, check_domain, get_scorer
from ..utils import Progress, no_progress
from .metrics import Roc, verification_metrics
from .pairs import PairsFile
from .pipelines import SELECTIONS, CastkeepPipeline, ImageEmbeddings, InsightFaceBaseline, variant_name

NO_FACE_SCORE = -1.0
# A pair with a missing face scores below any real pair on each scorer's similarity scale (cosine, minus the
# dlib distance, the fused log-odds), so it is called "different".
NO_FACE_SIMILARITY = {"arcface": NO_FACE_SCORE, "dlib": -4.0, "fused": -50.0}
SCALES = {"arcface": "cosine", "dlib": "minus the dlib Euclidean distance", "fused": "fused log-odds"}

# Published LFW accuracy of insightface's recognition models (insightface model zoo, pre-aligned
# 112x112 LFW crops, full View 2), keyed by the recognition ONNX file of the pack.
PUBLISHED_LFW = {
    "w600k_mbf.onnx": {"pack": "buffalo_s / buffalo_sc (MobileFaceNet, WebFace600K)", "lfw_accuracy": 0.9970},
    "w600k_r50.onnx": {"pack": "buffalo_l (ResNet-50, WebFace600K)", "lfw_accuracy": 0.9983},
}


def embed_images(pipeline: Any, images: list[Path],
                 progress: Progress = no_progress) -> tuple[dict[Path, ImageEmbeddings], float]:
    started = time.perf_counter()
    results = {path: pipeline.variants(path) for path in progress(images, label=pipeline.name, total=len(images))}
    return results, time.perf_counter() - started


def pair_scores(pairs: PairsFile, embedded: dict[Path, ImageEmbeddings], variant: str) -> np.ndarray:
    scores = np.empty(len(pairs.pairs), dtype=np.float64)
    for i, pair in enumerate(pairs.pairs):
        a = embedded[pair.a].embeddings.get(variant)
        b = embedded[pair.b].embeddings.get(variant)
        scores[i] = NO_FACE_SCORE if a is None or b is None else float(np.dot(a, b))
    return scores


def dlib_distances(pairs: PairsFile, embedded: dict[Path, ImageEmbeddings], selection: str) -> np.ndarray:
    """dlib Euclidean distance of each pair (NaN where a face is missing)."""
    distances = np.full(len(pairs.pairs), np.nan)
    for i, pair in enumerate(pairs.pairs):
        a = embedded[pair.a].descriptors.get(selection)
        b = embedded[pair.b].descriptors.get(selection)
        if a is not None and b is not None:
            distances[i] = float(np.linalg.norm(a.astype(np.float64) - b.astype(np.float64)))
    return distances


def scorer_similarities(name: str, raw: dict[str, np.ndarray], domain: str) -> np.ndarray:
    """A scorer's pair similarities (higher = more alike) in `domain`, missing faces at its floor."""
    similarity = np.asarray(get_scorer(name).similarity(raw, domain), dtype=np.float64)
    return np.where(np.isfinite(similarity), similarity, NO_FACE_SIMILARITY[name])


def fixed_threshold(name: str, domain: str) -> tuple[float, float]:
    """The product's default verdict threshold for a scorer and domain: (on the similarity scale, as the
    scorer states it)."""
    calibration = get_scorer(name).calibration(domain)
    return float(np.sign(calibration.slope) * calibration.threshold), calibration.threshold


def _failures(pairs: PairsFile, embedded: dict[Path, ImageEmbeddings]) -> dict[str, Any]:
    no_face = sorted(str(p.path) for p in embedded.values() if not p.embeddings and p.error is None)
    unreadable = sorted(f"{p.error}" for p in embedded.values() if p.error is not None)
    missing = {Path(x) for x in no_face} | {p.path for p in embedded.values() if p.error is not None}
    affected = [pair for pair in pairs.pairs if pair.a in missing or pair.b in missing]
    return {"images": len(no_face) + len(unreadable), "no_face": no_face, "unreadable": unreadable,
            "pairs": len(affected), "genuine_pairs": sum(p.same for p in affected),
            "rate": (len(no_face) + len(unreadable)) / max(len(embedded), 1)}


def _summary(scores: np.ndarray, labels: np.ndarray, name: str, domain: str) -> tuple[dict[str, Any], Roc]:
    """Verification metrics of one scorer's similarities, with the accuracy of its default verdict for
    `domain` (`fixed_threshold`: no per-run fitting) next to the 10-fold number."""
    on_scale, stated = fixed_threshold(name, domain)
    metrics, roc = verification_metrics(scores, labels, fixed_threshold=on_scale)
    metrics["fixed_threshold"] = {"threshold": stated, "accuracy": metrics["fixed_threshold"]["accuracy"],
                                  "scorer": name, "domain": domain}
    metrics["scale"] = SCALES[name]
    return metrics, roc


def _pipeline_summary(pairs: PairsFile, embedded: dict[Path, ImageEmbeddings], seconds: float,
                      scores: np.ndarray, labels: np.ndarray, name: str, domain: str) -> tuple[dict[str, Any], Roc]:
    metrics, roc = _summary(scores, labels, name, domain)
    metrics["failures_to_detect"] = _failures(pairs, embedded)
    metrics["seconds"] = seconds
    metrics["images_per_s"] = len(embedded) / seconds if seconds > 0 else None
    return metrics, roc


def run_verification(pairs: PairsFile, pack: Any, *, selection: str = "center", flip: bool = True,
                     baseline: bool = True, device: str = "cpu", scorer: str = "arcface", domain: str = "photo",
                     progress: Progress = no_progress) -> tuple[dict[str, Any], dict[str, Roc]]:
    """Returns the JSON-ready result and the ROC curves to plot (label → Roc).

    `scorer` is the headline ("castkeep"); with dlib or fused every image is also described by dlib and
    all three scorers are reported under "scorers". `domain` picks the default verdict whose accuracy
    `fixed_threshold` reports.
    """
    chosen_scorer = get_scorer(scorer)
    check_domain(domain)
    labels = np.array([p.same for p in pairs.pairs], dtype=bool)
    if min(labels.sum(), (~labels).sum()) < 2:  # k-fold fits each fold's threshold on the other folds' pairs
        raise BenchmarkInputError(f"verification needs at least 2 same (1) and 2 different (0) pairs; got "
                                  f"{labels.sum()} and {(~labels).sum()}", path=pairs.path)
    images = pairs.images
    recogniser = None
    if chosen_scorer.needs_dlib:
        from ..identity.dlib_recogniser import DlibRecogniser

        recogniser = DlibRecogniser()
    castkeep = CastkeepPipeline(pack, recogniser=recogniser)
    embedded, seconds = embed_images(castkeep, images, progress)
    failures = _failures(pairs, embedded)
    if failures["pairs"] == len(pairs.pairs):  # every number would be the "no face" floor: nothing measured
        examples = ", ".join((failures["no_face"] + failures["unreadable"])[:3])
        raise BenchmarkInputError(f"no pair could be scored: {failures['images']} of {len(embedded)} image(s) "
                                  f"had no face or could not be read (e.g. {examples})", path=pairs.path)
    chosen = variant_name(selection, flip)
    cosines = pair_scores(pairs, embedded, chosen)
    raw = {"arcface": np.where(cosines == NO_FACE_SCORE, np.nan, cosines)}
    if recogniser is not None:
        raw["dlib"] = dlib_distances(pairs, embedded, selection)
    computed = [n for n in SCORERS if all(r in raw for r in get_scorer(n).recognisers)]
    similarities = {n: scorer_similarities(n, raw, domain) for n in computed}
    summary, roc = _pipeline_summary(pairs, embedded, seconds, similarities[scorer], labels, scorer, domain)
    summary["config"] = {"selection": selection, "flip": flip, "scorer": scorer, "domain": domain}
    summary["found_by_retry"] = sum(1 for e in embedded.values() if e.attempt)
    curves = {f"castkeep {scorer} ({chosen})": roc}
    scorers: dict[str, Any] = {}
    for name in computed:
        metrics, curve = _summary(similarities[name], labels, name, domain)
        scorers[name] = {k: metrics[k] for k in ("accuracy", "accuracy_std", "threshold", "auc", "eer", "tar_at_far",
                                                 "fixed_threshold", "scale", "genuine_mean", "impostor_mean")}
        if name != scorer:
            curves[f"castkeep {name}"] = curve

    variants: dict[str, Any] = {}
    for sel in SELECTIONS:
        for fl in (False, True):
            name = variant_name(sel, fl)
            metrics, _ = _summary(pair_scores(pairs, embedded, name), labels, "arcface", domain)
            variants[name] = {k: metrics[k] for k in ("accuracy", "accuracy_std", "auc", "eer", "threshold")}
            variants[name]["tar_at_far_1e-2"] = metrics["tar_at_far"][0]["tar"]
    # How often the two face choices disagree (multi-face photos), which is where selection matters.
    differ = sum(1 for e in embedded.values() if e.embeddings and
                 not np.array_equal(e.embeddings["center"], e.embeddings["largest"]))

    recognition = pack.model_file("recognition").name
    scores: dict[str, Any] = {"pair_lines": [p.line for p in pairs.pairs], "same": labels.astype(int).tolist(),
                              "castkeep": np.round(similarities[scorer], 6).tolist()}
    if "dlib" in raw:  # the raw numbers too, NaN (null) where a face is missing
        scores["arcface_cosine"] = [None if np.isnan(v) else round(float(v), 6) for v in raw["arcface"]]
        scores["dlib_distance"] = [None if np.isnan(v) else round(float(v), 6) for v in raw["dlib"]]
    result: dict[str, Any] = {
        "bench": "verify",
        "pairs_file": os.fspath(pairs.path),
        "root": os.fspath(pairs.root),
        "pairs": len(pairs.pairs),
        "genuine_pairs": int(labels.sum()),
        "impostor_pairs": int((~labels).sum()),
        "images": len(images),
        "skipped_lines": pairs.skipped,
        "model_pack": pack.name,
        "fingerprint": pack.fingerprint,
        "dlib_model": None if recogniser is None else recogniser.fingerprint,
        "scorer": scorer,
        "domain": domain,
        "protocol": "10-fold stratified; per-fold threshold chosen on the other 9 folds; fixed_threshold: the "
                    f"scorer's default verdict for the {domain} domain, not fitted here; no face found -> "
                    "the lowest similarity",
        "accuracy": summary["accuracy"],
        "castkeep": summary,
        "scorers": scorers,
        "variants": variants,
        "images_where_face_choice_differs": differ,
        "baseline": None,
        # The published figure is an LFW number: shown only next to LFW pairs.
        "published": PUBLISHED_LFW.get(recognition) if "lfw" in os.fspath(pairs.path).lower() else None,
        # Per-pair similarities, in pairs-file order, so others can recompute any metric.
        "scores": scores,
    }
    if baseline:
        insight = InsightFaceBaseline(pack.path, device=device)
        base_embedded, base_seconds = embed_images(insight, images, progress)
        base_scores = pair_scores(pairs, base_embedded, InsightFaceBaseline.variant)
        base_summary, base_roc = _pipeline_summary(pairs, base_embedded, base_seconds, base_scores, labels,
                                                   "arcface", domain)
        base_summary["config"] = {"det_size": 640, "max_num": 1, "modules": ["detection", "recognition"]}
        result["baseline"] = base_summary
        result["accuracy_gain_vs_baseline"] = summary["accuracy"] - base_summary["accuracy"]
        result["speed_ratio_vs_baseline"] = (base_seconds / seconds) if seconds > 0 else None
        curves["insightface FaceAnalysis"] = base_roc
        result["scores"]["insightface"] = np.round(base_scores, 6).tolist()
    return result, curves


def summary_text(result: dict[str, Any]) -> str:
    from .report import percent, table

    rows = []
    published = result.get("published")
    for label, data in (("castkeep", result["castkeep"]), ("insightface FaceAnalysis", result.get("baseline"))):
        if not data:
            continue
        rows.append([label, percent(data["accuracy"]), f"±{100 * data['accuracy_std']:.2f}", data["auc"],
                     data["tar_at_far"][0]["tar"], data["tar_at_far"][1]["tar"], data["eer"],
                     data["threshold"], data["failures_to_detect"]["images"]])
    if published:
        rows.append(["published (model zoo)", percent(published["lfw_accuracy"]),
                     "", None, None, None, None, None, None])
    lines = [f"verification: {result['pairs']} pairs ({result['genuine_pairs']} same, "
             f"{result['impostor_pairs']} different), {result['images']} images, pack {result['model_pack']}",
             table(rows, ["pipeline", "accuracy", "std", "AUC", "TAR@1e-2", "TAR@1e-3", "EER",
                          "threshold", "no face"])]
    if published:
        lines.append(f"(published: {published['pack']}, pre-aligned crops of all 6000 View-2 pairs; "
                     f"here: the original photos)")
    scorer_rows = [[name, percent(v["accuracy"]), percent(v["fixed_threshold"]["accuracy"]),
                    round(v["fixed_threshold"]["threshold"], 4), v["auc"], v["tar_at_far"][0]["tar"], v["eer"]]
                   for name, v in result.get("scorers", {}).items()]
    lines += [f"scorers, {result.get('domain', 'photo')} domain (default verdict = the scorer's calibrated threshold):",
              table(scorer_rows, ["scorer", "10-fold", "default verdict", "threshold", "AUC", "TAR@1e-2", "EER"])]
    variant_rows = [[name, percent(v["accuracy"]), v["auc"], v["tar_at_far_1e-2"], v["eer"]]
                    for name, v in result["variants"].items()]
    lines += ["castkeep ArcFace variants (same detections):",
              table(variant_rows, ["face choice + TTA", "accuracy", "AUC", "TAR@1e-2", "EER"])]
    tars = result["castkeep"]["tar_at_far"]
    unresolved = [t["far"] for t in tars if not t["resolved"]]
    if unresolved:
        lines.append(f"note: FAR {', '.join(f'{f:g}' for f in unresolved)} is below 1/{result['impostor_pairs']} "
                     f"impostor pairs: that TAR is measured at FAR 0")
    failures = result["castkeep"]["failures_to_detect"]
    if failures["images"]:
        lines.append(f"castkeep found no face in {failures['images']} image(s) "
                     f"({failures['pairs']} pairs scored 'different'): {', '.join(failures['no_face'][:5])}")
    if result.get("baseline") and result["baseline"]["failures_to_detect"]["images"]:
        bf = result["baseline"]["failures_to_detect"]
        lines.append(f"insightface found no face in {bf['images']} image(s) ({bf['pairs']} pairs)")
    if result["skipped_lines"]:
        lines.append(f"{len(result['skipped_lines'])} unreadable line(s) in the pairs file, e.g. "
                     f"line {result['skipped_lines'][0]['line']}: {result['skipped_lines'][0]['reason']}")
    return "\n".join(lines)
