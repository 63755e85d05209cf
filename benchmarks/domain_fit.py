"""Fitting every scorer's calibration for one domain from labelled pairs (benchmarks/calibrate.py and the
leave-identities-out cross-validation both use it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..identity.calibration import Calibration, Fusion, calibration_stats, fit_calibration, fit_fusion


@dataclass
class LabelledPairs:
    """Pairs with their raw scores per recogniser (NaN where a face is missing), labels and metadata."""

    a: list[str]
    b: list[str]
    same: np.ndarray                          # bool
    identities: list[frozenset[str]]          # the identities a pair involves
    styles: list[str]                         # the style of the pair's second (generated) image
    raw: dict[str, np.ndarray] = field(default_factory=dict)

    def subset(self, keep: np.ndarray) -> LabelledPairs:
        idx = np.flatnonzero(keep)
        return LabelledPairs(a=[self.a[i] for i in idx], b=[self.b[i] for i in idx], same=self.same[idx],
                             identities=[self.identities[i] for i in idx], styles=[self.styles[i] for i in idx],
                             raw={k: v[idx] for k, v in self.raw.items()})



@dataclass
class DomainFit:
    arcface: Calibration | None = None
    dlib: Calibration | None = None
    fusion: Fusion | None = None
    stats: dict[str, dict[str, float]] = field(default_factory=dict)


def fit_domain(raw: dict[str, np.ndarray], same: np.ndarray, *, arcface: Calibration | None = None) -> DomainFit:
    """Fit every scorer the raw scores allow. Pass `arcface` to keep a fixed ArcFace calibration (the photo
    domain keeps its published 0.27 / 22.3) and fit the others around it."""
    fit = DomainFit()
    if "arcface" in raw:
        if arcface is None:
            arcface, fit.stats["arcface"] = fit_calibration(raw["arcface"], same)
        else:
            fit.stats["arcface"] = calibration_stats(arcface, raw["arcface"], same)
        fit.arcface = arcface
    if "dlib" in raw:
        fit.dlib, fit.stats["dlib"] = fit_calibration(raw["dlib"], same)
    if fit.arcface is not None and fit.dlib is not None:
        fit.fusion, fit.stats["fused"] = fit_fusion(np.asarray(fit.arcface.log_odds(raw["arcface"])),
                                                    np.asarray(fit.dlib.log_odds(raw["dlib"])), same)
    return fit


def scorer_scores(fit: DomainFit, raw: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, Calibration]]:
    """Each fitted scorer's score on its own scale and its calibration."""
    out: dict[str, tuple[np.ndarray, Calibration]] = {}
    if fit.arcface is not None:
        out["arcface"] = (raw["arcface"], fit.arcface)
    if fit.dlib is not None:
        out["dlib"] = (raw["dlib"], fit.dlib)
    if fit.fusion is not None and fit.arcface is not None and fit.dlib is not None:
        fused = np.asarray(fit.fusion.score(fit.arcface.log_odds(raw["arcface"]), fit.dlib.log_odds(raw["dlib"])))
        out["fused"] = (fused, fit.fusion.calibration)
    return out


def fit_report(fit: DomainFit) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for name, calibration in (("arcface", fit.arcface), ("dlib", fit.dlib),
                              ("fused", None if fit.fusion is None else fit.fusion.calibration)):
        if calibration is None:
            continue
        report[name] = {"threshold": round(calibration.threshold, 4), "slope": round(calibration.slope, 4),
                        **{k: round(v, 5) for k, v in fit.stats.get(name, {}).items()}}
    if fit.fusion is not None:
        report["fused"]["weights"] = [round(w, 4) for w in fit.fusion.weights]
        report["fused"]["bias"] = round(fit.fusion.bias, 4)
    return report


def usable(pairs: LabelledPairs) -> np.ndarray:
    """Pairs where every recogniser found both faces (the fit needs them; the rest are reported)."""
    keep = np.ones(len(pairs.same), dtype=bool)
    for values in pairs.raw.values():
        keep &= np.isfinite(values)
    return keep
