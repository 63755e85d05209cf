"""Statistics over a character's reference embeddings: the combined vector, the leave-one-out
genuine distribution (the per-character baseline) and impostor references."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import similarity
from .vectors import normalise

MIN_WEIGHT = 0.05          # a forced low-quality reference still counts a little


def combine(embeddings: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The character vector: quality-weighted mean of normalised embeddings, renormalised."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    embeddings = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    weights = np.maximum(np.asarray(weights, dtype=np.float64), MIN_WEIGHT)
    return normalise((weights[:, None] * embeddings).sum(axis=0))


def leave_one_out(embeddings: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Cosine of each reference to the vector combined from all the others (needs ≥ 2)."""
    n = len(embeddings)
    if n < 2:
        return np.zeros(0)
    return np.array([float(np.dot(normalise(embeddings[i]),
                                  combine(np.delete(embeddings, i, 0), np.delete(weights, i))))
                     for i in range(n)])


def baseline_of(embeddings: np.ndarray, weights: np.ndarray) -> dict[str, Any]:
    """Genuine similarity distribution of a character (leave-one-out over its references)."""
    loo = leave_one_out(embeddings, weights)
    if not len(loo):
        return {"references": int(len(embeddings)), "loo": [], "mean": None, "std": None,
                "min": None, "max": None}
    return {"references": int(len(embeddings)), "loo": [round(float(v), 4) for v in loo],
            "mean": round(float(loo.mean()), 4), "std": round(float(loo.std()), 4),
            "min": round(float(loo.min()), 4), "max": round(float(loo.max()), 4)}


def find_impostors(embeddings: np.ndarray, weights: np.ndarray,
                   threshold: float | None = None) -> dict[int, float]:
    """References that do not look like the same person as the others: {index: similarity}.

    With ≥ 3 references the worst leave-one-out reference is flagged while it is below the
    threshold, then set aside and the rest re-checked (so one impostor cannot drag the genuine ones
    under). With 2 references both are flagged when they do not match each other.
    """
    threshold = similarity.SAME_PERSON_THRESHOLD if threshold is None else threshold
    embeddings = np.asarray(embeddings, dtype=np.float32)
    weights = np.asarray(weights, dtype=np.float64)
    active = list(range(len(embeddings)))
    flagged: dict[int, float] = {}
    while len(active) >= 3:
        loo = leave_one_out(embeddings[active], weights[active])
        worst = int(np.argmin(loo))
        if loo[worst] >= threshold:
            break
        flagged[active[worst]] = float(loo[worst])
        active.pop(worst)
    if len(embeddings) == 2:
        pair = float(np.dot(normalise(embeddings[0]), normalise(embeddings[1])))
        if pair < threshold:
            flagged = {0: pair, 1: pair}
    return flagged
