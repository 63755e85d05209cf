"""The verification metrics on synthetic scores whose answers are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from castkeep.benchmarks.metrics import (
    accuracy_at,
    best_threshold,
    equal_error_rate,
    fold_indices,
    kfold_accuracy,
    roc_curve,
    tar_at_far,
    verification_metrics,
)


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_small_known_answer():
    genuine = [0.9, 0.8, 0.7, 0.4]
    impostor = [0.6, 0.3, 0.2, 0.1]
    scores = genuine + impostor
    labels = [1] * 4 + [0] * 4
    roc = roc_curve(scores, labels)
    # AUC = share of (genuine, impostor) pairs ranked right: only 0.4 < 0.6 is wrong.
    assert roc.auc == pytest.approx(15 / 16)
    threshold, accuracy = best_threshold(scores, labels)
    assert accuracy == pytest.approx(7 / 8)
    assert accuracy_at(scores, labels, threshold) == pytest.approx(7 / 8)
    # FAR 0 keeps only 0.9, 0.8, 0.7 above every impostor.
    assert tar_at_far(roc, 0.0)["tar"] == pytest.approx(3 / 4)
    assert tar_at_far(roc, 0.25)["tar"] == pytest.approx(1.0)


def test_auc_is_mann_whitney():
    rng = np.random.default_rng(1)
    scores = np.round(rng.normal(size=300), 1)  # rounding makes ties, which count one half
    labels = rng.random(300) < 0.4
    pos, neg = scores[labels], scores[~labels]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    expected = wins / (pos.size * neg.size)
    assert roc_curve(scores, labels).auc == pytest.approx(expected)


def test_gaussian_scores_match_theory():
    rng = np.random.default_rng(0)
    n = 20000
    scores = np.r_[rng.normal(0.6, 0.1, n), rng.normal(0.1, 0.1, n)]
    labels = np.r_[np.ones(n), np.zeros(n)]
    kfold = kfold_accuracy(scores, labels, 10)
    # Equal variances: the best threshold is the midpoint 0.35; accuracy Phi(2.5); EER 1 - Phi(2.5).
    assert kfold.accuracy == pytest.approx(_phi(2.5), abs=0.003)
    assert kfold.threshold == pytest.approx(0.35, abs=0.01)
    assert len(kfold.fold_accuracies) == 10
    roc = roc_curve(scores, labels)
    assert equal_error_rate(roc) == pytest.approx(1 - _phi(2.5), abs=0.002)
    # TAR at FAR 1e-2: threshold at the impostors' 99th percentile 0.1 + 2.326 * 0.1.
    assert tar_at_far(roc, 1e-2)["tar"] == pytest.approx(1 - _phi((0.1 + 0.2326 - 0.6) / 0.1), abs=0.01)


def test_threshold_is_chosen_on_the_other_folds():
    # One fold's genuine scores sit far below everyone else's: a threshold chosen on that fold
    # itself would call them genuine, one chosen on the other nine folds cannot.
    labels = np.r_[np.ones(100), np.zeros(100)].astype(int)
    scores = np.r_[np.full(100, 0.8), np.full(100, 0.2)]
    folds = fold_indices(labels, 10)
    scores[(folds == 3) & (labels == 1)] = 0.1
    result = kfold_accuracy(scores, labels, 10)
    assert result.fold_accuracies[3] == pytest.approx(0.5)
    assert all(a == 1.0 for i, a in enumerate(result.fold_accuracies) if i != 3)


def test_folds_are_stratified_and_balanced():
    labels = np.r_[np.ones(300), np.zeros(300)]  # LFW lists all genuine pairs first
    folds = fold_indices(labels, 10)
    for fold in range(10):
        assert (labels[folds == fold] == 1).sum() == 30
        assert (labels[folds == fold] == 0).sum() == 30


def test_uninformative_scores_score_chance():
    result, roc = verification_metrics(np.zeros(40), np.r_[np.ones(20), np.zeros(20)])
    assert result["accuracy"] == pytest.approx(0.5)
    assert roc.auc == pytest.approx(0.5)


def test_far_below_resolution_is_flagged():
    roc = roc_curve([0.9, 0.1, 0.2], [1, 0, 0])
    assert tar_at_far(roc, 1e-3)["resolved"] is False
    assert tar_at_far(roc, 0.5)["resolved"] is True


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        roc_curve([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError):
        verification_metrics([0.1], [1, 0])
    with pytest.raises(ValueError):
        best_threshold([float("nan"), 0.1], [1, 0])
