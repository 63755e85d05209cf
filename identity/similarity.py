"""Cosine similarity between ArcFace embeddings and the same/different verdict.

The threshold was chosen on labelled real photos that are not used to test it: genuine and
impostor pairs built from ../shared/faces/lfw_gallery (139 identities x 6 photos, disjoint from
LFW View-2 fold 1), with the buffalo_s MobileFaceNet pack, as the threshold with the best accuracy
there (see benchmarks/). On LFW View-2 fold 1 this threshold is then evaluated, not tuned.
Other packs (buffalo_l's R50) separate faces at least as well; the same threshold is a sound default
for them too (insightface's own demos use 0.2–0.3 on the same scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAME_PERSON_THRESHOLD = 0.30


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom > 0 else 0.0


@dataclass
class Verdict:
    similarity: float
    threshold: float
    same: bool

    def to_dict(self) -> dict[str, float | bool]:
        return {"similarity": round(self.similarity, 4), "threshold": self.threshold, "same": self.same}


def verdict(a: np.ndarray, b: np.ndarray, threshold: float = SAME_PERSON_THRESHOLD) -> Verdict:
    similarity = cosine(a, b)
    return Verdict(similarity=similarity, threshold=threshold, same=similarity >= threshold)
