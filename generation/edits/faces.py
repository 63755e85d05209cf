"""The faces an edit works on (SCRFD boxes + the MediaPipe mesh) and their scores before and after it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ...errors import NoFaceError
from ..scoring import OutputScore

if TYPE_CHECKING:
    from ...identity.analyzer import Face, FaceAnalyzer
    from ..scoring import IdentityScorer

MIN_OVERLAP = 0.3  # the face found after an edit is "the same face" when its box overlaps the old one this much


@dataclass
class MeshedFace:
    index: int  # as `castkeep analyze` numbers it (0 = largest)
    face: Face
    points: np.ndarray  # 478 x 3 mesh points, image pixels


def pixels(image: Image.Image) -> np.ndarray:
    """A PIL image as the BGR array the face models take."""
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def meshed_faces(analyzer: FaceAnalyzer, image: Image.Image, indices: list[int | None], source: str
                 ) -> list[MeshedFace]:
    """The faces `indices` (None: the largest) with their dense mesh; NoFaceError / FaceIndexError
    (one line) for an image without them."""
    from ...landmarks.mesh import DenseLandmarker

    bgr = pixels(image)
    analysis = analyzer.analyze(bgr, dense=False)
    analysis.source = source
    chosen = [(index or 0, analysis.face(index)) for index in indices]
    found = []
    with DenseLandmarker.from_pretrained(search=(analyzer.pack.path,)) as landmarker:
        for index, face in chosen:
            mesh = landmarker.detect(bgr, face.bbox)
            if mesh is None:
                raise NoFaceError(f"face {index}: MediaPipe finds no face mesh in it (too small, turned away or "
                                  "not a face)", path=source)
            found.append(MeshedFace(index, face, mesh.points))
    return found


def _overlap(a: Any, b: Any) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def score_at(scorer: IdentityScorer, image: Image.Image, bbox: Any) -> OutputScore:
    """The face of `image` at `bbox` (the one overlapping it most) judged against the scorer's character;
    face_found False when no face there."""
    bgr = pixels(image)
    faces = scorer.analyzer.analyze(bgr, dense=False).faces
    overlaps = [_overlap(face.bbox, bbox) for face in faces]
    if not faces or max(overlaps) < MIN_OVERLAP:
        return OutputScore(face_found=False, faces=len(faces))
    return scorer.score_face(bgr, faces[int(np.argmax(overlaps))], faces=len(faces))


def improved(before: OutputScore, after: OutputScore) -> bool:
    """Whether the judge finds the edited face more likely the character (its log-odds rose)."""
    return after.face_found and after.value > before.value


def score_record(score: OutputScore) -> dict[str, Any]:
    """The part of a score a report needs (the sidecar keeps the full one)."""
    return {"face_found": score.face_found, "probability": None if score.probability is None
            else round(float(score.probability), 4), "same": score.same, "scorer": score.scorer,
            "cosine": None if score.cosine is None else round(float(score.cosine), 4)}
