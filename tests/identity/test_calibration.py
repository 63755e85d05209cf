"""The cosine → same-person probability: consistent with the verdict threshold, fitted correctly,
and calibrated on real pairs it was not fitted on (LFW View-2 fold 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from castkeep.identity import calibration, domains, similarity
from castkeep.identity.scorers import get_scorer


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


# ------------------------------------------------------------------ per-scorer, per-domain calibration


@pytest.mark.parametrize("scorer", ["arcface", "dlib", "fused"])
@pytest.mark.parametrize("domain", ["photo", "generated"])
def test_every_calibration_is_monotone_and_half_at_its_threshold(scorer, domain):
    calibration = get_scorer(scorer).calibration(domain)
    span = {"arcface": (-1, 1), "dlib": (0, 1.6), "fused": (-30, 30)}[scorer]
    scores = np.linspace(*span, 401)
    p = np.asarray(calibration.probability(scores))
    step = np.diff(p) if calibration.higher_is_same else -np.diff(p)
    assert np.all(step >= 0) and np.any(step > 0)
    assert abs(calibration.probability(calibration.threshold) - 0.5) < 1e-9
    assert calibration.same(calibration.threshold)
    # the verdict and P(same) agree on every score
    assert np.array_equal(np.asarray(calibration.same(scores)), p >= 0.5)
    assert {"arcface": True, "dlib": False, "fused": True}[scorer] == calibration.higher_is_same


def test_photo_arcface_calibration_is_unchanged():
    assert domains.ARCFACE["photo"].threshold == similarity.SAME_PERSON_THRESHOLD == 0.27
    assert domains.ARCFACE["photo"].slope == calibration.PLATT_SLOPE == pytest.approx(22.2777)
    assert domains.ARCFACE["generated"].threshold < 0.27  # generated genuine pairs score lower


def test_fit_calibration_on_distances_and_fit_fusion():
    rng = np.random.default_rng(1)
    labels = np.repeat([1.0, 0.0], 4000)
    distances = np.where(labels > 0, rng.normal(0.45, 0.1, labels.size), rng.normal(0.85, 0.1, labels.size))
    fitted, stats = calibration.fit_calibration(distances, labels)
    assert fitted.slope < 0 and not fitted.higher_is_same
    assert abs(fitted.threshold - 0.65) < 0.02 and stats["balanced_accuracy"] > 0.95
    # Two independent noisy views of the same truth: the fusion uses both and beats either alone.
    cosines = np.where(labels > 0, rng.normal(0.4, 0.15, labels.size), rng.normal(0.05, 0.15, labels.size))
    arc, _ = calibration.fit_calibration(cosines, labels)
    fusion, fused_stats = calibration.fit_fusion(arc.log_odds(cosines), fitted.log_odds(distances), labels)
    assert fusion.weights[0] > 0.3 and fusion.weights[1] > 0.3
    alone = min(calibration.calibration_stats(arc, cosines, labels)["log_loss"], stats["log_loss"])
    assert fused_stats["log_loss"] < alone


@pytest.mark.slow
def test_generated_calibration_beats_the_photo_threshold_on_held_out_identities(faces_dir, fast_analyzer):
    """Fit ArcFace's generated-domain calibration on some identities of generated_dev and judge pairs of
    the others: the fitted threshold must beat the photo threshold 0.27 there."""
    from castkeep.benchmarks.calibrate import describe_images, generated_pairs, raw_pair_scores
    from castkeep.benchmarks.domain_fit import fit_domain

    images, pairs = generated_pairs(faces_dir / "generated_dev" / "pairs.txt")
    identities = sorted(set().union(*pairs.identities))
    held_out = set(identities[::2])  # every other identity (by name): never seen by the fit
    # A few dozen faces: each identity's first reference and first 4 generated images (file order).
    kept: dict[str, list[str]] = {}
    for a, b in zip(pairs.a, pairs.b, strict=True):
        for path, cap in ((a, 1), (b, 4)):
            chosen = kept.setdefault(f"{Path(path).parent.name}:{cap}", [])
            if path not in chosen and len(chosen) < cap:
                chosen.append(path)
    wanted = {p for chosen in kept.values() for p in chosen}
    small = np.array([a in wanted and b in wanted for a, b in zip(pairs.a, pairs.b, strict=True)])
    test = small & np.array([ids <= held_out for ids in pairs.identities])
    train = small & np.array([ids.isdisjoint(held_out) for ids in pairs.identities])
    described = describe_images([p for p in images if str(p) in wanted], dlib=False, analyzer=fast_analyzer)
    raw = raw_pair_scores(described, pairs.a, pairs.b)["arcface"]
    found = np.isfinite(raw)
    train, test = train & found, test & found
    assert len(wanted) <= 90 and pairs.same[test].sum() >= 30 and (~pairs.same[test]).sum() >= 10
    fitted = fit_domain({"arcface": raw[train]}, pairs.same[train]).arcface
    held = raw[test]
    labels = pairs.same[test]
    generated_accuracy = np.mean(np.asarray(fitted.same(held)) == labels)
    photo_accuracy = np.mean((held >= similarity.SAME_PERSON_THRESHOLD) == labels)
    assert fitted.threshold < similarity.SAME_PERSON_THRESHOLD
    assert generated_accuracy >= photo_accuracy + 0.05, (generated_accuracy, photo_accuracy)


@pytest.mark.slow
def test_calibrate_command_refits_a_domain_with_identity_cross_validation(faces_dir, tmp_path, pack_dir):
    import json

    from click.testing import CliRunner

    from castkeep.benchmarks.calibrate import main

    root = faces_dir / "generated_dev"
    lines = (root / "pairs.txt").read_text().splitlines()
    chosen = [line for line in lines if line.endswith(" 1")][::12] + [line for line in lines if line.endswith(" 0")][::12]
    pairs_file = tmp_path / "pairs.txt"  # absolute paths; identities from folder names (no manifest here)
    pairs_file.write_text("".join(f"{root / line.split()[0]} {root / line.split()[1]} {line.split()[2]}\n" for line in chosen))
    cache = tmp_path / "described.npz"
    args = ["--domain", "generated", "--pairs", str(pairs_file), "--scorer", "arcface", "--models", str(pack_dir),
            "--cache", str(cache), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data["fit"]) == {"arcface"} and data["fit"]["arcface"]["threshold"] < 0.27
    assert data["pairs"] == len(chosen) and cache.is_file()
    cv = data["cross_validation"]
    assert cv["pairs_judged"] > 0 and set(cv["scorers"]) == {"arcface"}
    held_out = cv["scorers"]["arcface"]["all"]
    assert held_out["accuracy"] > cv["reference_verdicts"]["arcface at the photo threshold"]["all"]["accuracy"]
    again = CliRunner().invoke(main, args)  # from the cache: the same numbers
    assert json.loads(again.output)["fit"] == data["fit"]
