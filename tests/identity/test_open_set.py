"""The open-set threshold of a 1:N search (identity/open_set.py): how it moves with the store's size, that
it holds its FPIR target on people the tail was never fitted on (LFW fold 1, no one from lfw_gallery), and
that `identify` (the store and store_scoring) judges at it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from castkeep.benchmarks.calibrate import Described
from castkeep.benchmarks.open_set_fit import held_out_fpir
from castkeep.errors import CastkeepError
from castkeep.identity import open_set, store_scoring
from castkeep.identity.open_set import ImpostorTail, fit_tail, open_set_threshold, per_comparison_fmr
from castkeep.identity.scorers import DOMAINS, SCORERS, get_scorer
from castkeep.identity.similarity import SAME_PERSON_THRESHOLD
from castkeep.identity.store import Store


def test_per_comparison_rate_gives_the_target_over_n_comparisons():
    for characters in (1, 7, 188, 10_000):
        fmr = per_comparison_fmr(0.01, characters)
        assert 1 - (1 - fmr) ** characters == pytest.approx(0.01, rel=1e-9)
    assert per_comparison_fmr(0.01, 1) == pytest.approx(0.01)
    with pytest.raises(CastkeepError):
        per_comparison_fmr(0.0, 10)


def test_arcface_threshold_rises_with_the_store_and_starts_at_the_one_to_one_threshold():
    sizes = [1, 2, 10, 30, 100, 188, 1000, 10_000]
    thresholds = [open_set_threshold("arcface", "photo", n).threshold for n in sizes]
    assert thresholds[0] == pytest.approx(SAME_PERSON_THRESHOLD)  # 1 % FMR lies below 0.27: the 1:1 rule wins
    assert all(a <= b for a, b in zip(thresholds, thresholds[1:], strict=False))
    assert thresholds[-1] > thresholds[4] > thresholds[3] > SAME_PERSON_THRESHOLD  # strictly rising past ~16
    # a stricter target, a higher threshold, for the same store
    assert open_set_threshold("arcface", "photo", 100, 0.001).threshold > thresholds[4]


@pytest.mark.parametrize("scorer", SCORERS)
@pytest.mark.parametrize("domain", DOMAINS)
def test_never_laxer_than_one_to_one(scorer, domain):
    higher_is_same = get_scorer(scorer).calibration(domain).higher_is_same
    for characters in (1, 5, 50, 5000):
        rule = open_set_threshold(scorer, domain, characters)
        sign = 1 if higher_is_same else -1
        assert sign * rule.threshold >= sign * rule.one_to_one_threshold - 1e-12
        assert rule.fitted == ((scorer, domain) in open_set.IMPOSTOR_TAILS)
        if not rule.fitted:  # the generated domain: too few impostor pairs to fit a tail
            assert rule.threshold == rule.one_to_one_threshold


def test_tail_fit_recovers_a_known_pareto_tail():
    rng = np.random.default_rng(0)
    shape, scale = 0.1, 0.03
    uniform = rng.uniform(size=400_000)
    draws = scale / shape * (uniform ** -shape - 1)  # GPD(shape, scale) above 0, every draw an exceedance
    tail = fit_tail(draws, anchor_fmr=0.05)
    assert tail.shape == pytest.approx(shape, abs=0.03)
    truth = ImpostorTail(anchor=0.0, anchor_fmr=1.0, scale=scale, shape=shape)
    for fmr in (1e-3, 1e-4):
        assert tail.similarity_at(fmr) == pytest.approx(truth.similarity_at(fmr), rel=0.05)
        assert tail.fmr(tail.similarity_at(fmr)) == pytest.approx(fmr, rel=1e-6)


def test_fpir_target_holds_on_held_out_people(lfw_fold):
    """LFW fold 1 shares no one with lfw_gallery, where the tail was fitted: random galleries of N
    characters (first 2 photos each), probed by everyone else's photos. The open-set threshold keeps FPIR
    under the 1 % target; the 1:1 threshold lets it grow with N."""
    keys = sorted(lfw_fold.embeddings)
    described = Described(paths=keys, embeddings=dict(lfw_fold.embeddings))
    people = np.array([Path(k).parent.name for k in keys])
    report = {row["characters"]: row for row in held_out_fpir(described, keys, people, "arcface", "photo",
                                                              sizes=(30, 100, 300), trials=100)}
    for row in report.values():
        assert row["fpir_open_set"] <= 0.015, row  # the target, with room for 100-odd probes per gallery
    assert report[300]["fpir_one_to_one"] > 0.03 > 3 * report[300]["fpir_open_set"]


@pytest.mark.slow
def test_identify_judges_at_the_open_set_threshold(tmp_path, faces_dir, fast_analyzer):
    gallery = faces_dir / "lfw_gallery"
    with Store.open(tmp_path / "store", analyzer=fast_analyzer, create=True) as store:
        for person in ("Alejandro_Toledo", "Adrien_Brody"):
            store.register(person, sorted((gallery / person).glob("*.jpg"))[:2])
        probe = sorted((gallery / "Alejandro_Toledo").glob("*.jpg"))[4]
        [best, _] = store_scoring.identify(store, probe, k=2)
        assert best.name == "Alejandro_Toledo" and best.result.same
        assert best.open_set is not None and best.open_set.characters == 2
        assert best.to_dict()["open_set"] == {"threshold": 0.27, "target_fpir": 0.01, "characters": 2,
                                              "one_to_one_threshold": 0.27, "fitted": True}
        # An absurdly strict target moves the verdict, never the score or P(same).
        [strict, _] = store_scoring.identify(store, probe, k=2, fpir=1e-12)
        assert not strict.result.same and strict.result.threshold > 1.0 > strict.cosine == best.cosine
        assert strict.result.probability == best.result.probability
        assert store.identify(probe, k=1)[0].same and not store.identify(probe, k=1, fpir=1e-12)[0].same
