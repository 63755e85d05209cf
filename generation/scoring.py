"""Score a generated image against the character it was conditioned on.

Every output gets a score record: no face in the output is a result ("face_found": false), not an
error. Outputs are judged in the `generated` domain (identity/domains.py: generated images of a person
score lower than photos of them) by every scorer that can: ArcFace in the store's space, dlib (a
recogniser of another family, on the character's stored face crops) and their fusion. One of them, the
*judge* (`GenerationConfig.scorer`, fused by default), decides `same`, `probability` and the ranking of
best-of-N and `--min-score`; ArcFace alone never ranks outputs it conditioned. `agreement` flags outputs
where the ArcFace family (which conditioned the image) and dlib disagree. With a store, leakage (another
stored character more likely the same person, by the judge) comes from `identity.store_scoring`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import CastkeepError
from ..identity.similarity import cosine

DOMAIN = "generated"  # what castkeep's outputs are judged as


@dataclass
class OutputScore:
    face_found: bool
    faces: int = 0
    cosine: float | None = None  # ArcFace cosine to the character in the scoring pack's space
    probability: float | None = None  # the judge's calibrated P(same person)
    same: bool | None = None  # the judge's verdict
    threshold: float | None = None  # the judge's threshold, on its own scale (`metric`)
    leakage: bool | None = None
    closest_other: dict[str, Any] | None = None
    pose: dict[str, Any] | None = None
    det_score: float | None = None
    bbox: list[float] | None = None
    quality: dict[str, Any] | None = None
    error: str | None = None
    scorer: str | None = None  # the judge
    metric: str | None = None
    score: float | None = None  # the judge's score on its own scale
    log_odds: float | None = None  # the judge's calibrated log-odds: what ranks outputs
    domain: str = DOMAIN
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # every scorer that could judge
    agreement: dict[str, Any] | None = None
    embedding: np.ndarray | None = field(default=None, repr=False)

    @property
    def value(self) -> float:
        """The number best-of-N ranks by: the judge's log-odds of "same person", -inf with no face."""
        return float(self.log_odds) if self.face_found and self.log_odds is not None else float("-inf")

    @property
    def disagree(self) -> bool:
        return bool(self.agreement and self.agreement["disagree"])

    def to_dict(self) -> dict[str, Any]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(float(value), 4)

        return {"face_found": self.face_found, "faces": self.faces, "cosine": rounded(self.cosine),
                "probability": rounded(self.probability), "same": self.same, "threshold": rounded(self.threshold),
                "scorer": self.scorer, "metric": self.metric, "score": rounded(self.score),
                "domain": self.domain, "scores": self.scores, "agreement": self.agreement,
                "leakage": self.leakage, "closest_other": self.closest_other, "pose": self.pose,
                "det_score": rounded(self.det_score), "bbox": self.bbox, "quality": self.quality,
                "error": self.error}


def agreement(scores: dict[str, Any]) -> dict[str, Any] | None:
    """Whether the ArcFace family (the one that conditioned the image) and dlib (independent) agree;
    None when dlib could not judge. "conditioning-only" (ArcFace says same, dlib says different) is
    the case to look at: an image that may only fool the model that steered it."""
    if "arcface" not in scores or "dlib" not in scores:
        return None
    conditioning, independent = bool(scores["arcface"].same), bool(scores["dlib"].same)
    kind = None if conditioning == independent else ("conditioning-only" if conditioning else "independent-only")
    return {"conditioning": conditioning, "independent": independent, "disagree": kind is not None, "kind": kind}


class Scorer(Protocol):
    def score(self, image: Any) -> OutputScore: ...


class IdentityScorer:
    """FaceAnalyzer (+ dlib) on the output, judged against the character in the generated domain.

    With a store holding the character: every scorer, by its stored vector and face crops, and leakage.
    Without one (an Identity given as a bare vector): ArcFace against `vector` only."""

    def __init__(self, analyzer: Any, vector: np.ndarray, *, name: str | None = None, store: Any = None,
                 judge: str = "arcface", recogniser: Any = None) -> None:
        from ..identity.scorers import get_scorer

        self.analyzer = analyzer
        self.vector = np.asarray(vector, dtype=np.float32).ravel()
        self.name = name
        self.store = store
        self.judge = get_scorer(judge)
        self.recogniser = recogniser
        self.references: Any = None
        if recogniser is not None and store is not None:
            from ..identity.reference_faces import ReferenceDescriptors

            self.references = ReferenceDescriptors(recogniser, analyzer.detector)  # once per run
        if self.judge.needs_dlib and self.references is None:
            raise CastkeepError(f"the {self.judge.name} scorer needs the character's stored face crops and dlib")

    def score(self, image: Any) -> OutputScore:
        from ..landmarks.images import load_image

        try:
            pixels = load_image(image)
            analysis = self.analyzer.analyze(pixels, dense=False)
        except CastkeepError as exc:  # an unreadable output is recorded like any other result
            return OutputScore(face_found=False, error=str(exc))
        if not analysis.faces:
            return OutputScore(face_found=False, faces=0)
        return self.score_face(pixels, analysis.faces[0], faces=len(analysis.faces))

    def score_face(self, pixels: np.ndarray, face: Any, *, faces: int = 1) -> OutputScore:
        """One detected face of an image (`self.analyzer`'s analysis of `pixels`) judged against the character."""
        result = OutputScore(
            face_found=True, faces=faces, embedding=np.asarray(face.embedding, dtype=np.float32),
            pose=face.pose.to_dict(), det_score=float(face.det_score),
            bbox=[round(float(v), 1) for v in face.bbox], quality=face.quality.to_dict())
        if self.store is not None and self.name is not None:
            self._judge_in_store(result, pixels, face)
        else:
            from ..identity.scorers import judge_all

            assert result.embedding is not None  # set above for every found face
            result.cosine = cosine(result.embedding, self.vector)
            self._record(result, judge_all(self.judge, {"arcface": result.cosine}, DOMAIN))
        return result

    def _judge_in_store(self, result: OutputScore, pixels: np.ndarray, face: Any) -> None:
        from ..identity.scorers import FaceFeatures
        from ..identity.store_scoring import score

        descriptor = None if self.recogniser is None else self.recogniser.describe(pixels, [face.bbox])[0]
        assert result.embedding is not None
        features = FaceFeatures(index=face.index, embedding=result.embedding, descriptor=descriptor)
        judged = score(self.store, pixels, str(self.name), scorer=self.judge.name, domain=DOMAIN,
                       recogniser=self.recogniser, features=features, references=self.references)
        result.cosine = judged.match.cosine
        result.leakage = judged.leakage
        result.closest_other = None if judged.closest_other is None else judged.closest_other.to_dict()
        self._record(result, judged.match.scores)

    def _record(self, result: OutputScore, scores: dict[str, Any]) -> None:
        verdict = scores[self.judge.name]
        result.scorer, result.metric, result.score = verdict.scorer, verdict.metric, verdict.score
        result.probability, result.same, result.threshold = verdict.probability, verdict.same, verdict.threshold
        result.log_odds = float(self.judge.calibration(DOMAIN).log_odds(verdict.score))
        result.scores = {name: judged.to_dict() for name, judged in scores.items()}
        result.agreement = agreement(scores)


def consistency_matrix(embeddings: list[np.ndarray | None]) -> list[list[float | None]]:
    """Pairwise cosine between outputs (None where an output has no face)."""
    size = len(embeddings)
    matrix: list[list[float | None]] = [[None] * size for _ in range(size)]
    for i in range(size):
        for j in range(size):
            a, b = embeddings[i], embeddings[j]
            if a is not None and b is not None:
                matrix[i][j] = round(cosine(a, b), 4)
    return matrix


def mean_off_diagonal(matrix: list[list[float | None]]) -> float | None:
    values = [v for i, row in enumerate(matrix) for j, v in enumerate(row) if i != j and v is not None]
    return round(float(np.mean(values)), 4) if values else None
