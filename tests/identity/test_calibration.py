"""The cosine → same-person probability: consistent with the verdict threshold, fitted correctly,
and calibrated on real pairs it was not fitted on (LFW View-2 fold 1)."""

from __future__ import annotations

import numpy as np

from castkeep.identity import calibration, similarity


def test_probability_is_monotone_and_half_at_threshold():
    cosines = np.linspace(-1, 1, 201)
    p = calibration.probability(cosines)
    assert np.all(np.diff(p) > 0) and p[0] < 0.01 and p[-1] > 0.99
    assert abs(calibration.probability(similarity.SAME_PERSON_THRESHOLD) - 0.5) < 1e-9


def test_fit_platt_recovers_a_known_curve():
    rng = np.random.default_rng(0)
    cosines = rng.uniform(-0.2, 0.9, 20000)
    truth = 1 / (1 + np.exp(-15.0 * (cosines - 0.3)))
    labels = (rng.uniform(size=cosines.size) < truth).astype(float)
    # balanced weights shift the intercept by log(prior odds); undo that to compare
    fit = calibration.fit_platt(cosines, labels)
    odds = labels.mean() / (1 - labels.mean())
    assert abs(fit.slope - 15.0) < 1.0
    assert abs((fit.intercept + np.log(odds)) - (-15.0 * 0.3)) < 0.3
    held = calibration.fit_platt(cosines, labels, midpoint=0.3)
    assert abs(held.midpoint - 0.3) < 1e-9


def test_calibrated_on_held_out_real_pairs(faces_dir, lfw_fold):
    lines = (faces_dir / "lfw_pairs_fold1" / "pairs_corrected.txt").read_text().split("\n")
    pairs = [line.split() for line in lines if line.strip()]
    same = [p for p in pairs if p[2] == "1"][:15]
    different = [p for p in pairs if p[2] == "0"][:15]

    def probabilities(chosen):
        return np.array([calibration.probability(similarity.cosine(lfw_fold.embeddings[a], lfw_fold.embeddings[b]))
                         for a, b, _ in chosen])

    genuine, impostor = probabilities(same), probabilities(different)
    # log-loss of the held-out pairs stays small (a constant 0.5 would score 0.69)
    log_loss = -np.mean(np.concatenate([np.log(np.clip(genuine, 1e-9, 1)),
                                        np.log(np.clip(1 - impostor, 1e-9, 1))]))
    assert genuine.mean() > 0.85 and impostor.mean() < 0.15
    assert log_loss < 0.3, log_loss
