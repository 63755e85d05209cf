"""Verification metrics on similarity scores (pure numpy): the LFW 10-fold protocol, ROC, AUC,
TAR at a given FAR, EER.

Convention everywhere: `scores` are similarities (higher = more alike), `labels` are 1 for a
genuine (same-person) pair and 0 for an impostor pair, and a pair is called "same" when
score >= threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _check(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    if scores.size == 0:
        raise ValueError("no scores")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite")
    return scores, labels


def candidate_thresholds(scores: np.ndarray) -> np.ndarray:
    """Every threshold that changes a decision: midpoints between distinct sorted scores, plus
    one below the minimum and one above the maximum."""
    unique = np.unique(scores)
    mids = (unique[:-1] + unique[1:]) / 2
    return np.concatenate([[unique[0] - 1e-6], mids, [unique[-1] + 1e-6]])


def accuracy_at(scores: Any, labels: Any, threshold: float) -> float:
    scores, labels = _check(scores, labels)
    return float(np.mean((scores >= threshold) == labels))


def best_threshold(scores: Any, labels: Any) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy on these pairs. Ties go to the middle of the
    best plateau, so the choice does not hug one sample."""
    scores, labels = _check(scores, labels)
    thresholds = candidate_thresholds(scores)
    # For each threshold t: genuine pairs with score >= t are right, impostors with score < t are.
    pos = np.sort(scores[labels])
    neg = np.sort(scores[~labels])
    true_accepts = pos.size - np.searchsorted(pos, thresholds, side="left")
    true_rejects = np.searchsorted(neg, thresholds, side="left")
    accuracy = (true_accepts + true_rejects) / scores.size
    best = np.flatnonzero(accuracy == accuracy.max())
    # The longest contiguous run of best thresholds, and its middle element.
    runs = np.split(best, np.flatnonzero(np.diff(best) != 1) + 1)
    run = max(runs, key=len)
    index = run[len(run) // 2]
    return float(thresholds[index]), float(accuracy[index])


def fold_indices(labels: Any, n_folds: int = 10) -> np.ndarray:
    """Fold number of each pair: stratified and deterministic (the k-th genuine pair goes to fold
    k mod n, likewise for impostors), so every fold holds both kinds even when a pairs file lists
    all genuine pairs first, as LFW's does."""
    labels = np.asarray(labels).astype(bool).ravel()
    folds = np.empty(labels.size, dtype=np.int64)
    for value in (True, False):
        where = np.flatnonzero(labels == value)
        folds[where] = np.arange(where.size) % n_folds
    return folds


@dataclass
class KFoldResult:
    accuracy: float                 # mean over folds
    accuracy_std: float
    threshold: float                # mean of the per-fold thresholds
    threshold_std: float
    fold_accuracies: list[float] = field(default_factory=list)
    fold_thresholds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "accuracy_std": self.accuracy_std,
                "threshold": self.threshold, "threshold_std": self.threshold_std,
                "fold_accuracies": self.fold_accuracies, "fold_thresholds": self.fold_thresholds}


def kfold_accuracy(scores: Any, labels: Any, n_folds: int = 10) -> KFoldResult:
    """The LFW protocol: for each fold, pick the threshold on the other folds, test on this one."""
    scores, labels = _check(scores, labels)
    n_folds = max(2, min(n_folds, scores.size))
    folds = fold_indices(labels, n_folds)
    accuracies, thresholds = [], []
    for fold in range(n_folds):
        test = folds == fold
        if not test.any():
            continue
        threshold, _ = best_threshold(scores[~test], labels[~test])
        thresholds.append(threshold)
        accuracies.append(float(np.mean((scores[test] >= threshold) == labels[test])))
    return KFoldResult(accuracy=float(np.mean(accuracies)), accuracy_std=float(np.std(accuracies)),
                       threshold=float(np.mean(thresholds)), threshold_std=float(np.std(thresholds)),
                       fold_accuracies=accuracies, fold_thresholds=thresholds)


@dataclass
class Roc:
    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    n_genuine: int
    n_impostor: int

    @property
    def auc(self) -> float:
        # numpy 2 renamed trapz to trapezoid (and 2.4 removed trapz); the floor, numpy 1.24, has only trapz.
        integrate = getattr(np, "trapezoid", None) or getattr(np, "trapz")  # noqa: B009
        return float(integrate(self.tpr, self.fpr))


def roc_curve(scores: Any, labels: Any) -> Roc:
    """ROC points from the strictest threshold (nothing accepted) to the loosest (all accepted)."""
    scores, labels = _check(scores, labels)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("a ROC curve needs both genuine and impostor pairs")
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    # Keep the last index of each run of tied scores: a threshold accepts all ties or none.
    last = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    tps = np.cumsum(sorted_labels)[last]
    fps = np.cumsum(~sorted_labels)[last]
    tpr = np.r_[0.0, tps / n_pos]
    fpr = np.r_[0.0, fps / n_neg]
    thresholds = np.r_[np.inf, sorted_scores[last]]
    return Roc(fpr=fpr, tpr=tpr, thresholds=thresholds, n_genuine=n_pos, n_impostor=n_neg)


def tar_at_far(roc: Roc, far: float) -> dict[str, Any]:
    """Highest TAR with FAR <= `far`. With n impostor pairs the smallest non-zero FAR is 1/n, so
    `resolved` says whether the target is measurable on this many pairs at all."""
    allowed = roc.fpr <= far + 1e-12
    index = int(np.flatnonzero(allowed)[np.argmax(roc.tpr[allowed])])
    return {"far": far, "tar": float(roc.tpr[index]), "threshold": float(roc.thresholds[index]),
            "achieved_far": float(roc.fpr[index]), "resolved": far >= 1.0 / roc.n_impostor}


def equal_error_rate(roc: Roc) -> float:
    """EER: where FAR equals FRR (1 - TPR), linearly interpolated between ROC points."""
    frr = 1.0 - roc.tpr
    diff = roc.fpr - frr  # rises from -1 to +1 along the curve
    index = int(np.flatnonzero(diff >= 0)[0])
    if index == 0 or diff[index] == 0:
        return float(roc.fpr[index])
    d0, d1 = diff[index - 1], diff[index]
    weight = -d0 / (d1 - d0)
    return float(roc.fpr[index - 1] + weight * (roc.fpr[index] - roc.fpr[index - 1]))


def verification_metrics(scores: Any, labels: Any, *, n_folds: int = 10,
                         fars: tuple[float, ...] = (1e-2, 1e-3),
                         fixed_threshold: float | None = None) -> tuple[dict[str, Any], Roc]:
    """Everything a verification report shows, as a JSON-ready dict, plus the ROC for plotting."""
    scores, labels = _check(scores, labels)
    kfold = kfold_accuracy(scores, labels, n_folds)
    roc = roc_curve(scores, labels)
    result: dict[str, Any] = {
        "accuracy": kfold.accuracy,
        "accuracy_std": kfold.accuracy_std,
        "threshold": kfold.threshold,
        "threshold_std": kfold.threshold_std,
        "folds": len(kfold.fold_accuracies),
        "fold_accuracies": kfold.fold_accuracies,
        "auc": roc.auc,
        "eer": equal_error_rate(roc),
        "tar_at_far": [tar_at_far(roc, far) for far in fars],
        "genuine_pairs": roc.n_genuine,
        "impostor_pairs": roc.n_impostor,
        "genuine_mean": float(scores[labels].mean()),
        "impostor_mean": float(scores[~labels].mean()),
    }
    if fixed_threshold is not None:
        result["fixed_threshold"] = {"threshold": fixed_threshold,
                                     "accuracy": accuracy_at(scores, labels, fixed_threshold)}
    return result, roc
