"""Statistics over a character's reference embeddings: the combined vector, the leave-one-out
genuine distribution (the per-character baseline) and the groups of who the references show (the impostor gate)."""

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


def identity_groups(embeddings: np.ndarray, threshold: float | None = None) -> list[list[int]]:
    """The references grouped by who they show: average-linkage clustering of their cosines, two groups
    merging while the mean cosine between them reaches the same-person threshold. Largest group first.

    Average linkage, not single links: one chance match between two people (about 1 pair in 200 at
    the threshold) does not join their groups, and one hard-pose photo of a person (a pair below the
    threshold) still joins its own person's group through the others."""
    threshold = similarity.SAME_PERSON_THRESHOLD if threshold is None else threshold
    unit = np.asarray(embeddings, dtype=np.float64)
    unit = unit / np.linalg.norm(unit, axis=1, keepdims=True)
    cosines = unit @ unit.T
    groups = [[i] for i in range(len(unit))]
    while len(groups) > 1:
        links = [(float(cosines[np.ix_(groups[a], groups[b])].mean()), a, b)
                 for a in range(len(groups)) for b in range(a + 1, len(groups))]
        link, a, b = max(links)
        if link < threshold:
            break
        groups[a] += groups.pop(b)
    return sorted((sorted(g) for g in groups), key=lambda g: (-len(g), g[0]))
