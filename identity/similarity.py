"""Cosine similarity between ArcFace embeddings and the same/different verdict.

SAME_PERSON_THRESHOLD was chosen on labelled real photos that are not used to test it: all pairs of
the LFW gallery set (139 identities x 6 photos, no identity shared with LFW View-2 fold 1; 2,085
genuine and 345,276 impostor pairs), embedded with the buffalo_s MobileFaceNet pack. 0.27 maximises
balanced accuracy there (99.86 %); genuine pairs' 1st percentile is 0.34, impostors' 99.9th is 0.24.
LFW View-2 fold 1 then *evaluates* it (tests/identity/test_lfw_verification.py). Larger packs
(buffalo_l's R50) separate faces at least as well on the same cosine scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAME_PERSON_THRESHOLD = 0.27


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
