"""Are two photos the same person? `compare` is the one call (insightface's `FaceAnalysis` +
cosine, or deepface's `DeepFace.verify`, in castkeep's terms), with a choice of scorer and domain."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..landmarks.images import ImageInput
from ..landmarks.model_pack import ModelPack
from .analyzer import FaceAnalyzer
from .scorers import ScoreResult, check_domain, describe_face, get_scorer, judge_all, raw_scores


@dataclass
class Comparison:
    """The verdict on two faces, with what produced it."""

    similarity: float  # cosine of the two ArcFace embeddings (whatever the scorer)
    same: bool  # the chosen scorer's verdict: its score against `threshold`
    probability: float  # the chosen scorer's calibrated P(same person) for `domain`; 0.5 at its default threshold
    threshold: float  # on the chosen scorer's scale
    face_a: int  # which face of each image was compared (0 = largest)
    face_b: int
    model: str  # the embedding model's fingerprint
    providers: list[str] = field(default_factory=list)  # what onnxruntime really ran
    scorer: str = "arcface"
    domain: str = "photo"
    score: float | None = None  # the chosen scorer's own number: cosine, dlib distance, fused log-odds
    scores: dict[str, ScoreResult] = field(default_factory=dict)  # every scorer that could judge the pair
    dlib_model: str | None = None  # the dlib model's fingerprint, when dlib was run

    def to_dict(self) -> dict[str, Any]:
        data = {"face_a": self.face_a, "face_b": self.face_b, "similarity": round(self.similarity, 4),
                "threshold": self.threshold, "same": self.same, "probability": round(self.probability, 4),
                "model": self.model, "providers": list(self.providers), "scorer": self.scorer,
                "domain": self.domain, "score": None if self.score is None else round(self.score, 4),
                "scores": {name: result.to_dict() for name, result in self.scores.items()}}
        if self.dlib_model is not None:
            data["dlib_model"] = self.dlib_model
        return data


def compare(a: ImageInput, b: ImageInput, *, models: str | os.PathLike | ModelPack | None = None,
            device: str = "cpu", face_a: int | None = None, face_b: int | None = None,
            threshold: float | None = None, flip: bool = False, analyzer: FaceAnalyzer | None = None,
            scorer: str = "arcface", domain: str = "photo", recogniser: Any = None) -> Comparison:
    """Compare the faces in images `a` and `b` (paths, PIL images or RGB arrays).

    `scorer`: "arcface" (cosine of the pack's embeddings), "dlib" (dlib's ResNet descriptor, another
    model family) or "fused" (both). `domain`: "photo" or "generated" (images from a generator), each with
    its own calibrated threshold and P(same); `threshold` (on the scorer's scale) overrides the verdict's.
    `face_a`/`face_b` pick a face in a group photo (0 = largest, as `analyze` numbers them).
    Pass a loaded `analyzer` (and, for dlib, a `DlibRecogniser` as `recogniser`) to compare many photos
    without reloading the models; otherwise `models` (a pack name or folder; $CASTKEEP_MODELS, then
    buffalo_l) is loaded on `device`.
    """
    chosen = get_scorer(scorer)
    check_domain(domain)
    if chosen.needs_dlib and recogniser is None:
        from .dlib_recogniser import DlibRecogniser

        recogniser = DlibRecogniser()
    if not chosen.needs_dlib:
        recogniser = None
    if analyzer is not None:
        return _compare_with(analyzer, recogniser, a, b, face_a, face_b, threshold, chosen.name, domain)
    with FaceAnalyzer.from_pretrained(models, device=device, dense=False, landmarks_106=False,
                                      flip=flip) as loaded:
        return _compare_with(loaded, recogniser, a, b, face_a, face_b, threshold, chosen.name, domain)


def _compare_with(analyzer: FaceAnalyzer, recogniser: Any, a: ImageInput, b: ImageInput, face_a: int | None,
                  face_b: int | None, threshold: float | None, scorer: str, domain: str) -> Comparison:
    first = describe_face(analyzer, a, face=face_a, recogniser=recogniser)
    second = describe_face(analyzer, b, face=face_b, recogniser=recogniser)
    raw = raw_scores(first, second)
    results = judge_all(get_scorer(scorer), raw, domain, threshold)
    chosen = results[scorer]
    return Comparison(similarity=raw["arcface"], same=chosen.same, probability=chosen.probability,
                      threshold=chosen.threshold, face_a=first.index, face_b=second.index,
                      model=analyzer.fingerprint, providers=analyzer.pack.active_providers()["recognition"],
                      scorer=scorer, domain=domain, score=chosen.score, scores=results,
                      dlib_model=None if recogniser is None else recogniser.fingerprint)
