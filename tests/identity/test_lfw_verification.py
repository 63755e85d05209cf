"""The acceptance test on LFW View-2 fold 1 (600 official pairs, original unaligned photos)."""

from __future__ import annotations

import numpy as np
import pytest

from castkeep.identity.similarity import SAME_PERSON_THRESHOLD


@pytest.fixture(scope="module")
def lfw_scores(model_pack, faces_dir):
    from castkeep.identity.analyzer import FaceAnalyzer

    # LFW photos are framed on the named person: 123 of the 1,200 images hold other faces too,
    # and the centred face is the labelled one (with "largest", Julianna_Margulies_0001 is wrong).
    lfw_analyzer = FaceAnalyzer(model_pack, dense=False, landmarks_106=False, selection="center")
    pairs = [line.split() for line in (faces_dir / "lfw_pairs_fold1" / "pairs.txt").read_text().splitlines()
             if line.strip()]
    assert len(pairs) == 600
    cache = {}

    def embedding(relative):
        if relative not in cache:
            cache[relative] = lfw_analyzer.embed(faces_dir / relative).embedding
        return cache[relative]

    same = np.array([p[2] == "1" for p in pairs])
    scores = np.array([float(embedding(a) @ embedding(b)) for a, b, _ in pairs])
    return scores, same


def test_every_same_pair_beats_the_median_different_pair(lfw_scores):
    scores, same = lfw_scores
    assert same.sum() == 300
    assert scores[same].min() > np.median(scores[~same])


def test_accuracy_at_the_documented_threshold(lfw_scores):
    scores, same = lfw_scores
    accuracy = float(((scores >= SAME_PERSON_THRESHOLD) == same).mean())
    assert accuracy >= 0.98, accuracy
