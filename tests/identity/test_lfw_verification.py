"""The acceptance test on LFW View-2 fold 1 (600 official pairs, original unaligned photos).

The embeddings come from the session's `lfw_fold` fixture (tests/conftest.py), cached in pytest's
cache under a key of the photos, the model files and castkeep's face code."""

from __future__ import annotations

import numpy as np

from castkeep.identity.similarity import SAME_PERSON_THRESHOLD


def test_every_same_pair_beats_the_median_different_pair(lfw_fold):
    scores, same = lfw_fold.scores(), lfw_fold.same()
    assert len(scores) == 600 and same.sum() == 300
    assert scores[same].min() > np.median(scores[~same])


def test_accuracy_at_the_documented_threshold(lfw_fold):
    scores, same = lfw_fold.scores(), lfw_fold.same()
    accuracy = float(((scores >= SAME_PERSON_THRESHOLD) == same).mean())
    assert accuracy >= 0.98, accuracy
