"""Leave-identities-out cross-validation of a domain calibration, reported per style.

Every pair is judged by a calibration fitted only on pairs that share no identity with it: the genuine
pairs of identity X by a fit on all pairs not involving X, the impostor pairs of X and Y by a fit on all
pairs involving neither. So no threshold, slope or fusion weight is ever fitted and reported on the same
people. Accuracy is that of the out-of-fold verdicts. AUC and TAR@FAR rank the pairs by ArcFace's cosine
and dlib's distance as they are (nothing about their order is fitted), and by the out-of-fold log-odds for
the fused scorer (whose weights are fitted).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..identity import domains
from .domain_fit import scorer_scores
from .metrics import roc_curve, tar_at_far

STYLES = ("photo", "stylized", "anime", "painting")
FAR = 1e-2


def _oof(pairs: Any, fit_fn: Callable[[dict[str, np.ndarray], np.ndarray], Any]) -> dict[str, dict[str, np.ndarray]]:
    n = len(pairs.same)
    out: dict[str, dict[str, np.ndarray]] = {}
    for group in sorted(set(pairs.identities), key=sorted):
        test = np.array([ids == group for ids in pairs.identities])
        train = np.array([ids.isdisjoint(group) for ids in pairs.identities])
        train_raw = {k: v[train] for k, v in pairs.raw.items()}
        if pairs.same[train].all() or not pairs.same[train].any():
            continue  # nothing to fit on (only in toy sets)
        fit = fit_fn(train_raw, pairs.same[train])
        for name, (scores, calibration) in scorer_scores(fit, {k: v[test] for k, v in pairs.raw.items()}).items():
            slot = out.setdefault(name, {"rank": np.full(n, np.nan), "same": np.zeros(n, dtype=bool),
                                         "threshold": np.full(n, np.nan)})
            # higher = more alike: cosine, minus the distance, the fused log-odds
            slot["rank"][test] = np.sign(calibration.slope) * np.asarray(scores)
            slot["same"][test] = calibration.same(scores)
            slot["threshold"][test] = calibration.threshold
    return out


def _metrics(rank: np.ndarray | None, verdict: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    genuine, impostor = int(labels.sum()), int((~labels).sum())
    result: dict[str, Any] = {
        "pairs": int(labels.size), "genuine": genuine, "impostor": impostor,
        "accuracy": float(np.mean(verdict == labels)) if labels.size else None,
        "genuine_accepted": float(verdict[labels].mean()) if genuine else None,
        "impostors_rejected": float((~verdict[~labels]).mean()) if impostor else None,
        "auc": None, "tar_at_far_1e-2": None,
    }
    if rank is not None and genuine and impostor:
        roc = roc_curve(rank, labels)
        result["auc"] = roc.auc
        tar = tar_at_far(roc, FAR)
        result["tar_at_far_1e-2"] = tar["tar"] if tar["resolved"] else None
    return result


def leave_identities_out(pairs: Any, fit_fn: Callable[[dict[str, np.ndarray], np.ndarray], Any]) -> dict[str, Any]:
    """Out-of-fold metrics per scorer, overall and per style, plus the accuracy of fixed verdicts
    (ArcFace's photo threshold 0.27, dlib's standard 0.6) on the same pairs for reference."""
    oof = _oof(pairs, fit_fn)
    labels = np.asarray(pairs.same, dtype=bool)
    styles = np.asarray(pairs.styles)
    judged = np.isfinite(next(iter(oof.values()))["rank"]) if oof else np.zeros(labels.size, dtype=bool)
    subsets = {"all": judged} | {s: judged & (styles == s) for s in STYLES if (styles == s).any()}
    result: dict[str, Any] = {
        "protocol": "leave-identities-out: each pair judged by a calibration fitted on the pairs that share "
                    "no identity with it",
        "pairs_judged": int(judged.sum()),
        "scorers": {},
        "reference_verdicts": {},
    }
    for name, slot in oof.items():
        result["scorers"][name] = {
            style: _metrics(slot["rank"][keep], slot["same"][keep], labels[keep]) for style, keep in subsets.items()}
        result["scorers"][name]["all"]["fold_threshold_range"] = [
            float(np.nanmin(slot["threshold"])), float(np.nanmax(slot["threshold"]))]
    fixed = {"arcface at the photo threshold": ("arcface", domains.ARCFACE["photo"]),
             "dlib at its standard 0.6": ("dlib", domains.DLIB_STANDARD)}
    for label, (recogniser, calibration) in fixed.items():
        if recogniser not in pairs.raw:
            continue
        raw = pairs.raw[recogniser]
        result["reference_verdicts"][label] = {
            style: _metrics(None, np.asarray(calibration.same(raw[keep])), labels[keep])
            for style, keep in subsets.items()}
    return result


def summary_text(result: dict[str, Any]) -> str:
    from .report import percent, table

    def cell(value: float | None, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    rows = []
    for group in ("scorers", "reference_verdicts"):
        for name, per_style in result[group].items():
            for style, m in per_style.items():
                rows.append([name, style, f"{m['genuine']}/{m['impostor']}", percent(m["accuracy"]),
                             cell(m["auc"]), cell(m["tar_at_far_1e-2"])])
    return "\n".join([result["protocol"],
                      table(rows, ["scorer", "style", "genuine/impostor", "accuracy", "AUC", "TAR@FAR=1e-2"])])
