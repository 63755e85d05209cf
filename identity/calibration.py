"""Cosine similarity → probability that two faces are the same person (Platt scaling).

How the constants were obtained (re-run `python -m castkeep.benchmarks.calibrate FACES_DIR`):
every photo of ../shared/faces/lfw_gallery (139 LFW identities x 6 deep-funneled 250x250 photos,
no identity in common with LFW View-2 fold 1) was embedded with the buffalo_s MobileFaceNet pack
(buffalo_s_lite) through `FaceAnalyzer` (largest face, no flip). All same-identity pairs are the
genuine class and all cross-identity pairs the impostor class; the two classes are weighted equally
(a 50 % prior), and a logistic curve is fitted by maximum likelihood with its midpoint held at
`SAME_PERSON_THRESHOLD`, so `probability >= 0.5` exactly when the verdict says "same person".
The numbers of pairs, the fitted slope and the log-losses are in `CALIBRATION_INFO`.

The probability is calibrated for that photo population (news photos, mostly frontal) and that
model; with another pack or very different photos read it as a monotone score, not an exact
frequency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import similarity

# Fitted slope of P(same) = sigmoid(PLATT_SLOPE * (cosine - SAME_PERSON_THRESHOLD)), fitted with the
# midpoint at SAME_PERSON_THRESHOLD = 0.27 (refit with benchmarks/calibrate.py if the threshold moves).
PLATT_SLOPE = 22.2777
CALIBRATION_INFO: dict[str, object] = {
    "photos": "lfw_gallery: 834 images, 139 identities (LFW deep-funneled, disjoint from View-2 fold 1)",
    "model": "buffalo_s_lite:w600k_mbf.onnx:9cc6e4a75f0e2bf0",
    "genuine_pairs": 2085,
    "impostor_pairs": 345276,
    "class_weights": "balanced (50 % prior)",
    "fitted_at_threshold": 0.27,
    "log_loss": 0.03474,
    # An unconstrained two-parameter fit puts P = 0.5 at cosine 0.244 (slope 23.88, log-loss
    # 0.03369): holding the midpoint at the verdict threshold costs almost nothing.
    "free_fit": {"slope": 23.8781, "intercept": -5.8289, "midpoint": 0.2441, "log_loss": 0.03369},
}


def probability(cosine: float | np.ndarray, *, slope: float | None = None,
                threshold: float | None = None) -> float | np.ndarray:
    """Same-person probability for a cosine similarity (or an array of them)."""
    slope = PLATT_SLOPE if slope is None else slope
    # Read the threshold at call time: the lead may tune it in similarity.py.
    threshold = similarity.SAME_PERSON_THRESHOLD if threshold is None else threshold
    z = slope * (np.asarray(cosine, dtype=np.float64) - threshold)
    p = 0.5 * (1.0 + np.tanh(0.5 * z))  # = sigmoid(z), without overflow
    return float(p) if np.ndim(p) == 0 else p


@dataclass
class PlattFit:
    slope: float
    intercept: float
    midpoint: float      # cosine where P = 0.5
    log_loss: float      # class-balanced mean negative log-likelihood


def _balanced_weights(labels: np.ndarray) -> np.ndarray:
    positives = max(int(labels.sum()), 1)
    negatives = max(int(len(labels) - labels.sum()), 1)
    return np.where(labels > 0, 0.5 / positives, 0.5 / negatives)


def _log_loss(z: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
    # -log sigmoid(z) = logaddexp(0, -z)
    losses = np.where(labels > 0, np.logaddexp(0.0, -z), np.logaddexp(0.0, z))
    return float((weights * losses).sum() / weights.sum())


def fit_platt(cosines: np.ndarray, labels: np.ndarray, *, midpoint: float | None = None,
              iterations: int = 100) -> PlattFit:
    """Class-balanced logistic fit of labels (1 = same person) on cosines, by Newton's method.

    With `midpoint`, only the slope is fitted and the curve passes P = 0.5 at that cosine.
    """
    x = np.asarray(cosines, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    w = _balanced_weights(y)
    if midpoint is not None:
        features = (x - midpoint)[:, None]
    else:
        features = np.stack([x, np.ones_like(x)], axis=1)
    theta = np.zeros(features.shape[1])
    for _ in range(iterations):
        z = features @ theta
        p = 0.5 * (1.0 + np.tanh(0.5 * z))
        gradient = features.T @ (w * (p - y))
        hessian = (features * (w * p * (1 - p))[:, None]).T @ features + 1e-9 * np.eye(len(theta))
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    z = features @ theta
    if midpoint is not None:
        slope, intercept = float(theta[0]), float(-theta[0] * midpoint)
    else:
        slope, intercept = float(theta[0]), float(theta[1])
    mid = -intercept / slope if slope else math.nan
    return PlattFit(slope=slope, intercept=intercept, midpoint=mid, log_loss=_log_loss(z, y, w))
