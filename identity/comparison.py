"""Are two photos the same person? `compare` is the one call (insightface's `FaceAnalysis` +
cosine, or deepface's `DeepFace.verify`, in castkeep's terms)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..landmarks.images import ImageInput
from ..landmarks.model_pack import ModelPack
from .analyzer import FaceAnalyzer
from .calibration import probability
from .similarity import SAME_PERSON_THRESHOLD, verdict


@dataclass
class Comparison:
    """The verdict on two faces, with what produced it."""

    similarity: float  # cosine of the two ArcFace embeddings
    same: bool  # similarity >= threshold
    probability: float  # calibrated P(same person), 0.5 exactly at the default threshold
    threshold: float
    face_a: int  # which face of each image was compared (0 = largest)
    face_b: int
    model: str  # the embedding model's fingerprint
    providers: list[str] = field(default_factory=list)  # what onnxruntime really ran

    def to_dict(self) -> dict[str, Any]:
        return {"face_a": self.face_a, "face_b": self.face_b, "similarity": round(self.similarity, 4),
                "threshold": self.threshold, "same": self.same, "probability": round(self.probability, 4),
                "model": self.model, "providers": list(self.providers)}


def compare(a: ImageInput, b: ImageInput, *, models: str | os.PathLike | ModelPack | None = None,
            device: str = "cpu", face_a: int | None = None, face_b: int | None = None,
            threshold: float = SAME_PERSON_THRESHOLD, flip: bool = False,
            analyzer: FaceAnalyzer | None = None) -> Comparison:
    """Compare the faces in images `a` and `b` (paths, PIL images or RGB arrays).

    `face_a`/`face_b` pick a face in a group photo (0 = largest, as `analyze` numbers them).
    Pass a loaded `analyzer` to compare many photos without reloading the models; otherwise
    `models` (a pack name or folder; $CASTKEEP_MODELS, then buffalo_l) is loaded on `device`.
    """
    if analyzer is not None:
        return _compare_with(analyzer, a, b, face_a, face_b, threshold)
    with FaceAnalyzer.from_pretrained(models, device=device, dense=False, landmarks_106=False,
                                      flip=flip) as loaded:
        return _compare_with(loaded, a, b, face_a, face_b, threshold)


def _compare_with(analyzer: FaceAnalyzer, a: ImageInput, b: ImageInput, face_a: int | None,
                  face_b: int | None, threshold: float) -> Comparison:
    first = analyzer.embed(a, face=face_a)
    second = analyzer.embed(b, face=face_b)
    result = verdict(first.embedding, second.embedding, threshold)
    return Comparison(similarity=result.similarity, same=result.same,
                      probability=float(probability(result.similarity)), threshold=threshold,
                      face_a=first.index, face_b=second.index, model=analyzer.fingerprint,
                      providers=analyzer.pack.active_providers()["recognition"])
