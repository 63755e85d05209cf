"""Several characters in one shot: faces are assigned to characters by optimal matching, and a shot flags
a missing face, a swap, a face outside its region and leakage; checked on score tables and on real photos
of two stored people composed side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from castkeep.generation.storyboard.cast import assign_faces, place_characters
from castkeep.identity.store import Store

PEOPLE = ("Abdullah_Gul", "Adrien_Brody")
NAMES = ["A", "B"]
INF = float("-inf")


def regions(where: dict[int, str]):
    """centre_in for faces standing in named regions: face index → the character whose region holds it."""
    return lambda face, name: where.get(face) == name


def test_optimal_assignment_beats_greedy():
    # Greedy would give face 0 to A (3.0) and leave B with face 1 (-5); optimal: A-1, B-0 (2.5 + 2.0).
    values = np.array([[3.0, 2.0], [2.5, -5.0]])
    assert assign_faces(values) == {0: 1, 1: 0}
    assert assign_faces(np.zeros((0, 2))) == {}


def test_everyone_in_place_passes_without_flags():
    placed = place_characters(np.array([[4.0, -3.0], [-2.0, 5.0]]), NAMES, regions({0: "A", 1: "B"}))
    assert {n: (p.face, p.in_region, p.flags) for n, p in placed.items()} == {"A": (0, True, []), "B": (1, True, [])}


def test_swap_missing_face_outside_region_and_leakage_are_flagged():
    swapped = place_characters(np.array([[4.0, -3.0], [-2.0, 5.0]]), NAMES, regions({0: "B", 1: "A"}))
    assert swapped["A"].flags == ["swap: A and B"] and not swapped["B"].in_region
    missing = place_characters(np.array([[4.0, 1.0]]), NAMES, regions({0: "A"}))
    assert missing["B"].face is None and missing["B"].flags == ["no face: B"] and missing["A"].flags == []
    outside = place_characters(np.array([[4.0, -3.0], [-2.0, 5.0]]), NAMES, regions({0: "A"}))
    assert outside["B"].flags == ["outside region: B"]
    # Both faces look like A: B gets the second one, which matches A better than B.
    leaking = place_characters(np.array([[5.0, -1.0], [4.0, 0.5]]), NAMES, regions({0: "A", 1: "B"}))
    assert leaking["B"].better_match == "A" and leaking["B"].flags == ["leakage: B's face looks more like A"]
    faceless = place_characters(np.array([[INF, INF], [INF, INF]]), NAMES, regions({0: "A", 1: "B"}))
    assert {p.face for p in faceless.values()} == {0, 1}  # assigned, and judged "no face" by the scorer


@pytest.fixture(scope="module")
def scorers(tmp_path_factory, faces_dir, fast_analyzer):
    from castkeep.generation.scoring import IdentityScorer
    from castkeep.identity.dlib_recogniser import DlibRecogniser

    folder = tmp_path_factory.mktemp("cast-store")
    recogniser = DlibRecogniser()
    with Store.open(folder, analyzer=fast_analyzer, create=True) as store:
        for person in PEOPLE:
            store.register(person, sorted((faces_dir / "lfw_gallery" / person).glob("*.jpg"))[:3])
        yield {person: IdentityScorer(fast_analyzer, store.get(person).vector, name=person, store=store,
                                      judge="fused", recogniser=recogniser) for person in PEOPLE}


def side_by_side(faces_dir: Path, left: str, right: str) -> Image.Image:
    photos = [Image.open(sorted((faces_dir / "lfw_gallery" / p).glob("*.jpg"))[4]).convert("RGB") for p in (left, right)]
    canvas = Image.new("RGB", (sum(p.width for p in photos), max(p.height for p in photos)))
    canvas.paste(photos[0], (0, 0))
    canvas.paste(photos[1], (photos[0].width, 0))
    return canvas


@pytest.mark.slow
def test_two_real_people_are_found_in_their_regions_and_a_swap_is_caught(scorers, faces_dir):
    from castkeep.generation.config import GenerationConfig
    from castkeep.generation.storyboard.plan import NAMED_REGIONS, Region, Shot
    from castkeep.generation.storyboard.shot import ShotScorer

    shot = Shot(number=1, id="s", prompt="x", negative="", characters=PEOPLE, seed=0, settings={},
                regions={PEOPLE[0]: Region(box=NAMED_REGIONS["left"], label="left"),
                         PEOPLE[1]: Region(box=NAMED_REGIONS["right"], label="right")})
    judge = ShotScorer(shot, scorers, GenerationConfig("x", seed=0))
    score, value, passed = judge.score(side_by_side(faces_dir, *PEOPLE))
    assert passed and score["flags"] == [] and value > 0, score["flags"]
    assert {score["characters"][p]["face"] for p in PEOPLE} == {0, 1}
    assert all(score["characters"][p]["same"] and score["characters"][p]["in_region"] for p in PEOPLE)
    swapped, _, passed = judge.score(side_by_side(faces_dir, PEOPLE[1], PEOPLE[0]))
    assert not passed and swapped["flags"] == [f"swap: {PEOPLE[0]} and {PEOPLE[1]}"]
    # The same person twice: the second character's face is someone else (leakage), whoever gets which face.
    twice, _, passed = judge.score(side_by_side(faces_dir, PEOPLE[0], PEOPLE[0]))
    assert not passed and any(flag.startswith(f"leakage: {PEOPLE[1]}") for flag in twice["flags"]), twice["flags"]
