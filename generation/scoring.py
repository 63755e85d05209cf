"""Score a generated image against the character it was conditioned on.

Every output gets a score record: no face in the output is a result ("face_found": false), not an
error. With a store, leakage (another stored character matching better) comes from `Store.score`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import CastkeepError
from ..identity.similarity import SAME_PERSON_THRESHOLD, cosine


@dataclass
class OutputScore:
    face_found: bool
    faces: int = 0
    cosine: float | None = None
    probability: float | None = None
    same: bool | None = None
    threshold: float = SAME_PERSON_THRESHOLD
    leakage: bool | None = None
    closest_other: dict[str, Any] | None = None
    pose: dict[str, Any] | None = None
    det_score: float | None = None
    bbox: list[float] | None = None
    quality: dict[str, Any] | None = None
    error: str | None = None
    embedding: np.ndarray | None = field(default=None, repr=False)

    @property
    def value(self) -> float:
        """The number best-of-N ranks by: cosine to the character, -inf with no face."""
        return float(self.cosine) if self.face_found and self.cosine is not None else float("-inf")

    def to_dict(self) -> dict[str, Any]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(float(value), 4)

        return {"face_found": self.face_found, "faces": self.faces, "cosine": rounded(self.cosine),
                "probability": rounded(self.probability), "same": self.same, "threshold": self.threshold,
                "leakage": self.leakage, "closest_other": self.closest_other, "pose": self.pose,
                "det_score": rounded(self.det_score), "bbox": self.bbox, "quality": self.quality,
                "error": self.error}


class Scorer(Protocol):
    def score(self, image: Any) -> OutputScore: ...


class IdentityScorer:
    """FaceAnalyzer on the output; cosine/probability vs the character; leakage via the store."""

    def __init__(self, analyzer: Any, vector: np.ndarray, *, name: str | None = None, store: Any = None) -> None:
        self.analyzer = analyzer
        self.vector = np.asarray(vector, dtype=np.float32).ravel()
        self.name = name
        self.store = store

    def embedding_of(self, image: Any) -> tuple[Any, int]:
        analysis = self.analyzer.analyze(image, dense=False)
        return (analysis.faces[0] if analysis.faces else None), len(analysis.faces)

    def score(self, image: Any) -> OutputScore:
        try:
            face, count = self.embedding_of(image)
        except CastkeepError as exc:  # an unreadable output is recorded like any other result
            return OutputScore(face_found=False, error=str(exc))
        if face is None:
            return OutputScore(face_found=False, faces=0)
        result = OutputScore(
            face_found=True, faces=count, embedding=np.asarray(face.embedding, dtype=np.float32),
            pose=face.pose.to_dict(), det_score=float(face.det_score),
            bbox=[round(float(v), 1) for v in face.bbox], quality=face.quality.to_dict())
        if self.store is not None and self.name is not None:
            character_score = self.store.score(result.embedding, self.name)
            result.cosine = character_score.cosine
            result.probability = character_score.probability
            result.same = character_score.same
            result.threshold = character_score.threshold
            result.leakage = character_score.leakage
            other = character_score.closest_other
            result.closest_other = None if other is None else other.to_dict()
        else:
            from ..identity.calibration import probability

            assert result.embedding is not None  # set above for every found face
            result.cosine = cosine(result.embedding, self.vector)
            result.probability = float(probability(result.cosine))
            result.same = result.cosine >= SAME_PERSON_THRESHOLD
        return result


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
