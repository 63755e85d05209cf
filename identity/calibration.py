"""Pair score → probability that two faces are the same person (Platt scaling), and the fitting tools
behind every scorer's per-domain calibration (`Calibration`, `fit_calibration`, `Fusion`, `fit_fusion`;
the fitted constants are in identity/domains.py). The ArcFace photo calibration below is unchanged.

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


def fit_logistic(features: np.ndarray, labels: np.ndarray, *, iterations: int = 100) -> np.ndarray:
    """Class-balanced logistic regression by Newton's method: theta with P(same) = sigmoid(features @ theta).
    Add a column of ones to `features` for an intercept."""
    features = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    w = _balanced_weights(y)
    theta = np.zeros(features.shape[1])
    for _ in range(iterations):
        p = 0.5 * (1.0 + np.tanh(0.5 * (features @ theta)))
        gradient = features.T @ (w * (p - y))
        hessian = (features * (w * p * (1 - p))[:, None]).T @ features + 1e-9 * np.eye(len(theta))
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return theta


def fit_platt(cosines: np.ndarray, labels: np.ndarray, *, midpoint: float | None = None,
              iterations: int = 100) -> PlattFit:
    """Class-balanced logistic fit of labels (1 = same person) on scores (cosines, or distances:
    then the slope comes out negative).

    With `midpoint`, only the slope is fitted and the curve passes P = 0.5 at that score.
    """
    x = np.asarray(cosines, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if midpoint is not None:
        features = (x - midpoint)[:, None]
    else:
        features = np.stack([x, np.ones_like(x)], axis=1)
    theta = fit_logistic(features, y, iterations=iterations)
    z = features @ theta
    if midpoint is not None:
        slope, intercept = float(theta[0]), float(-theta[0] * midpoint)
    else:
        slope, intercept = float(theta[0]), float(theta[1])
    mid = -intercept / slope if slope else math.nan
    return PlattFit(slope=slope, intercept=intercept, midpoint=mid, log_loss=_log_loss(z, y, _balanced_weights(y)))


@dataclass(frozen=True)
class Calibration:
    """One scorer's verdict and probability in one domain: P(same) = sigmoid(slope * (score - threshold)).

    `slope` > 0 for similarities (cosine: higher = more alike), < 0 for distances (dlib's Euclidean), so
    P(same) >= 0.5 exactly when the verdict says "same person" in both cases.
    """

    threshold: float
    slope: float

    @property
    def higher_is_same(self) -> bool:
        return self.slope > 0

    def log_odds(self, score: float | np.ndarray) -> float | np.ndarray:
        z = self.slope * (np.asarray(score, dtype=np.float64) - self.threshold)
        return float(z) if np.ndim(z) == 0 else z

    def probability(self, score: float | np.ndarray) -> float | np.ndarray:
        return probability(score, slope=self.slope, threshold=self.threshold)

    def same(self, score: float | np.ndarray, threshold: float | None = None) -> bool | np.ndarray:
        """The verdict at the calibrated threshold (or another one on the same scale)."""
        threshold = self.threshold if threshold is None else threshold
        x = np.asarray(score, dtype=np.float64)
        verdict = x >= threshold if self.higher_is_same else x <= threshold
        return bool(verdict) if np.ndim(verdict) == 0 else verdict


def fit_calibration(scores: np.ndarray, labels: np.ndarray) -> tuple[Calibration, dict[str, float]]:
    """A class-balanced two-parameter logistic fit of the labels on the scores: its slope, and its midpoint
    (P = 0.5) as the verdict threshold. Distances get a negative slope. Returns the calibration and fit
    statistics (log-loss; balanced accuracy of the verdict on these pairs).

    The midpoint of the smooth fit, not the threshold that maximises accuracy on the fitting pairs: on
    generated_dev (leave-identities-out) it judged held-out identities better for ArcFace, dlib and the
    fusion alike (93.9 / 91.7 / 94.1 % against 93.7 / 90.9 / 93.7 %), as the accuracy maximum rests on
    the few pairs nearest the boundary.
    """
    fit = fit_platt(scores, labels)
    calibration = Calibration(threshold=fit.midpoint, slope=fit.slope)
    return calibration, calibration_stats(calibration, scores, labels)


def calibration_stats(calibration: Calibration, scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Class-balanced log-loss of P(same), and balanced accuracy of the verdict, on labelled pairs."""
    y = np.asarray(labels, dtype=np.float64)
    z = np.asarray(calibration.log_odds(scores), dtype=np.float64)
    verdict, genuine = z >= 0, y > 0
    return {"log_loss": _log_loss(z, y, _balanced_weights(y)),
            "balanced_accuracy": float(0.5 * (verdict[genuine].mean() + (~verdict[~genuine]).mean()))}


@dataclass(frozen=True)
class Fusion:
    """The fused scorer in one domain: P(same) = sigmoid(w_arcface * L_arcface + w_dlib * L_dlib + bias),
    where L are ArcFace's and dlib's calibrated log-odds in that domain; the weights and bias come from a
    class-balanced logistic regression. Its score is that fused log-odds (verdict "same" at >= 0)."""

    weights: tuple[float, float]  # on (ArcFace log-odds, dlib log-odds)
    bias: float

    calibration = Calibration(threshold=0.0, slope=1.0)  # the fused score already is a log-odds

    def score(self, arcface_log_odds: float | np.ndarray, dlib_log_odds: float | np.ndarray) -> float | np.ndarray:
        s = (self.weights[0] * np.asarray(arcface_log_odds, dtype=np.float64)
             + self.weights[1] * np.asarray(dlib_log_odds, dtype=np.float64) + self.bias)
        return float(s) if np.ndim(s) == 0 else s


def fit_fusion(arcface_log_odds: np.ndarray, dlib_log_odds: np.ndarray,
               labels: np.ndarray) -> tuple[Fusion, dict[str, float]]:
    """Class-balanced logistic regression of the labels on both calibrated log-odds, with an intercept."""
    features = np.stack([np.asarray(arcface_log_odds, dtype=np.float64),
                         np.asarray(dlib_log_odds, dtype=np.float64), np.ones(len(labels))], axis=1)
    theta = fit_logistic(features, labels)
    fusion = Fusion(weights=(float(theta[0]), float(theta[1])), bias=float(theta[2]))
    return fusion, calibration_stats(fusion.calibration, features @ theta, labels)
