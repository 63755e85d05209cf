"""Scorers: how alike two faces are, and whether they are the same person, in a domain.

- `arcface`: cosine of the model pack's ArcFace embeddings (the space that also conditions generation).
- `dlib`: Euclidean distance of dlib's ResNet descriptors, a recogniser of another family: an
  independent judge of images ArcFace helped to make.
- `fused`: a logistic fusion of the two calibrated log-odds.

Every scorer has its own threshold and P(same) per domain (`photo`, `generated`; identity/domains.py).
A scorer reads "raw" pair numbers, `{"arcface": cosine, "dlib": distance}`, so one description of each
face serves all three, and the benchmarks can score whole arrays of pairs at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import CastkeepError
from . import domains
from .calibration import Calibration
from .dlib_recogniser import distance
from .similarity import cosine

SCORERS = ("arcface", "dlib", "fused")
DOMAINS = domains.DOMAINS

Raw = Mapping[str, Any]  # recogniser name → a pair score (float) or an array of them


def check_domain(domain: str) -> str:
    if domain not in DOMAINS:
        raise CastkeepError(f"unknown domain '{domain}': use one of {', '.join(DOMAINS)}")
    return domain


@dataclass
class ScoreResult:
    """One scorer's judgement of one pair."""

    scorer: str
    domain: str
    score: float        # on the scorer's own scale (`metric`)
    metric: str
    threshold: float    # on the same scale
    same: bool
    probability: float  # calibrated P(same person) for this domain; 0.5 at the calibrated threshold

    def to_dict(self) -> dict[str, Any]:
        return {"scorer": self.scorer, "domain": self.domain, "score": round(self.score, 4), "metric": self.metric,
                "threshold": round(self.threshold, 4), "same": self.same, "probability": round(self.probability, 4)}


class Scorer:
    """A pair score → a calibrated verdict, per domain. Subclasses say which recognisers they need."""

    name: ClassVar[str]
    metric: ClassVar[str]
    recognisers: ClassVar[tuple[str, ...]]

    def calibration(self, domain: str) -> Calibration:
        raise NotImplementedError

    def score(self, raw: Raw, domain: str) -> Any:
        """The pair score on this scorer's own scale (a float, or an array for arrays of pairs)."""
        raise NotImplementedError

    @property
    def needs_dlib(self) -> bool:
        return "dlib" in self.recognisers

    def log_odds(self, raw: Raw, domain: str) -> Any:
        return self.calibration(domain).log_odds(self.score(raw, domain))

    def similarity(self, raw: Raw, domain: str) -> Any:
        """Higher = more alike, for ranking and ROC curves: cosine, minus the distance, the fused log-odds."""
        return np.sign(self.calibration(domain).slope) * np.asarray(self.score(raw, domain), dtype=np.float64)

    def judge(self, raw: Raw, domain: str = "photo", threshold: float | None = None) -> ScoreResult:
        """The verdict on one pair; `threshold` (on this scorer's scale) overrides the calibrated one for
        the verdict only, never for P(same)."""
        calibration = self.calibration(check_domain(domain))
        value = float(self.score(raw, domain))
        threshold = calibration.threshold if threshold is None else float(threshold)
        return ScoreResult(scorer=self.name, domain=domain, score=value, metric=self.metric, threshold=threshold,
                           same=bool(calibration.same(value, threshold)),
                           probability=float(calibration.probability(value)))


class ArcFaceScorer(Scorer):
    name = "arcface"
    metric = "cosine"
    recognisers = ("arcface",)

    def calibration(self, domain: str) -> Calibration:
        return domains.ARCFACE[check_domain(domain)]

    def score(self, raw: Raw, domain: str) -> Any:
        return raw["arcface"]


class DlibScorer(Scorer):
    name = "dlib"
    metric = "euclidean distance"
    recognisers = ("dlib",)

    def calibration(self, domain: str) -> Calibration:
        return domains.DLIB[check_domain(domain)]

    def score(self, raw: Raw, domain: str) -> Any:
        return raw["dlib"]


class FusedScorer(Scorer):
    name = "fused"
    metric = "log-odds"
    recognisers = ("arcface", "dlib")

    def calibration(self, domain: str) -> Calibration:
        return domains.FUSION[check_domain(domain)].calibration

    def score(self, raw: Raw, domain: str) -> Any:
        fusion = domains.FUSION[check_domain(domain)]
        return fusion.score(domains.ARCFACE[domain].log_odds(raw["arcface"]),
                            domains.DLIB[domain].log_odds(raw["dlib"]))


_SCORERS: dict[str, type[Scorer]] = {"arcface": ArcFaceScorer, "dlib": DlibScorer, "fused": FusedScorer}


def get_scorer(name: str | Scorer) -> Scorer:
    if isinstance(name, Scorer):
        return name
    if name not in _SCORERS:
        raise CastkeepError(f"unknown scorer '{name}': use one of {', '.join(SCORERS)}")
    return _SCORERS[name]()


@dataclass
class FaceFeatures:
    """What the scorers need of one face: its ArcFace embedding and, when dlib is used, its descriptor."""

    index: int
    embedding: np.ndarray
    descriptor: np.ndarray | None = None


def describe_face(analyzer: Any, source: Any, *, face: int | None = None, recogniser: Any = None) -> FaceFeatures:
    """Detect once (SCRFD), embed with ArcFace and, given a `DlibRecogniser`, describe with dlib too."""
    from ..landmarks.images import describe_source, load_image

    image = load_image(source)
    analysis = analyzer.analyze(image, dense=False)
    analysis.source = describe_source(source)  # errors name the file, not the array
    chosen = analysis.face(face)
    descriptor = None if recogniser is None else recogniser.describe(image, [chosen.bbox])[0]
    return FaceFeatures(index=chosen.index, embedding=chosen.embedding, descriptor=descriptor)


def raw_scores(a: FaceFeatures, b: FaceFeatures) -> dict[str, float]:
    """ArcFace cosine and, when both faces have dlib descriptors, their Euclidean distance."""
    raw = {"arcface": cosine(a.embedding, b.embedding)}
    if a.descriptor is not None and b.descriptor is not None:
        raw["dlib"] = distance(a.descriptor, b.descriptor)
    return raw


def judge_all(scorer: Scorer, raw: Raw, domain: str, threshold: float | None = None) -> dict[str, ScoreResult]:
    """The chosen scorer's judgement (first, with `threshold`) and that of every other scorer the raw numbers
    allow."""
    results = {scorer.name: scorer.judge(raw, domain, threshold)}
    for name in SCORERS:
        other = get_scorer(name)
        if name != scorer.name and all(r in raw for r in other.recognisers):
            results[name] = other.judge(raw, domain)
    return results
