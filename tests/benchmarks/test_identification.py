"""`castkeep bench identify` through a real store: the split, the CLI on a 5-identity slice of the LFW
gallery, and open-set numbers on a gallery built so that the answer is known in advance."""

from __future__ import annotations

import json
import shutil

import pytest

from castkeep.benchmarks.identification import read_gallery, run_identification, split_gallery
from castkeep.errors import BenchmarkInputError
from castkeep.identity.open_set import open_set_threshold
from castkeep.identity.similarity import SAME_PERSON_THRESHOLD


def test_split_holds_out_whole_identities(faces_dir):
    gallery = read_gallery(faces_dir / "lfw_gallery", limit_identities=10)
    enrol, known, unknown = split_gallery(gallery, k=2, unknown_fraction=0.2, seed=0)
    unknown_names = {n for n, _ in unknown}
    assert len(unknown_names) == 2 and not unknown_names & set(enrol)
    assert all(len(photos) == 2 for photos in enrol.values())
    enrolled_photos = {p for photos in enrol.values() for p in photos}
    assert not enrolled_photos & {p for _, p in known}  # a probe is never its own reference
    assert len(known) == 8 * 4 and len(unknown) == 2 * 6


def test_identify_cli_on_gallery_slice(invoke, faces_dir, tmp_path):
    result = invoke("bench", "identify", "--gallery", str(faces_dir / "lfw_gallery"), "--limit-identities", "5",
                    "--refs", "2", "--unknown-fraction", "0.2", "--no-flip", "--out", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["bench"] == "identify"
    assert data["enrolled"] == 4 and data["unknown_identities"] == 1
    assert data["known_probes"] == 16 and data["unknown_probes"] == 6
    assert 0.8 <= data["rank1"] <= data["rank5"] <= 1.0
    assert data["open_set"]["dir"] <= data["rank1"]
    product, one_to_one = data["open_set"]["product"], data["open_set"]["one_to_one"]
    assert product["characters"] == 4 and product["target_fpir"] == 0.01 and product["fitted"]
    assert product["threshold"] == open_set_threshold("arcface", "photo", 4).threshold  # the product's, not fitted here
    assert one_to_one["threshold"] == SAME_PERSON_THRESHOLD and one_to_one["fpir"] == data["open_set"]["fpir"]
    for part in ("embed", "search", "total"):
        assert data["latency"][part]["p50_ms"] > 0
    assert (tmp_path / "identify-lfw_gallery.json").is_file()


def test_open_set_rates_on_a_gallery_with_a_known_answer(fast_analyzer, faces_dir, tmp_path):
    """Two enrolled people and two held-out "unknown" identities: a stranger (6 photos, never accepted)
    and 4 photos of an enrolled person filed under another name (always accepted). So FPIR is 4/10,
    the rejection rate 6/10, and every enrolled person's probe is found first and above the threshold.
    A very strict target FPIR puts the product's open-set threshold above some of those same-person scores."""
    lfw = faces_dir / "lfw_gallery"
    for person in ("Alejandro_Toledo", "Adrien_Brody", "Abdullah_Gul"):
        shutil.copytree(lfw / person, tmp_path / "gallery" / person)
    (tmp_path / "gallery" / "Toledo_again").mkdir()
    for photo in sorted((lfw / "Alejandro_Toledo").glob("*.jpg"))[:4]:
        shutil.copy(photo, tmp_path / "gallery" / "Toledo_again" / photo.name)
    gallery = read_gallery(tmp_path / "gallery")
    seed = next(seed for seed in range(100) if {name for name, _ in split_gallery(gallery, 2, 0.5, seed)[2]}
                == {"Abdullah_Gul", "Toledo_again"})
    result = run_identification(gallery, fast_analyzer, k=2, unknown_fraction=0.5, seed=seed,
                                target_fpir=1e-7, store_dir=str(tmp_path))
    assert result["enrolled"] == 2 and result["known_probes"] == 8 and result["unknown_probes"] == 10
    open_set = result["open_set"]
    assert open_set["fpir"] == pytest.approx(4 / 10)
    assert open_set["rejection_rate"] == pytest.approx(6 / 10)
    assert result["rank1"] == 1.0 and open_set["dir"] == 1.0 and open_set["fnir"] == 0.0
    assert open_set["one_to_one"]["fpir"] == open_set["fpir"] and open_set["one_to_one"]["dir"] == 1.0
    product = open_set["product"]
    assert product["threshold"] == open_set_threshold("arcface", "photo", 2, 1e-7).threshold > 0.5
    assert product["fpir"] < open_set["fpir"] and product["dir"] < 1.0  # fewer "Toledo_again" accepted, at a cost


def test_refused_enrolment_is_retried_and_reported(model_pack, faces_dir, tmp_path):
    """John_Allen_Muhammad_0001 holds two faces of similar size, which the store refuses to guess
    between with only two photos: the bench retries with face 0 (the central face) and says so."""
    from castkeep.identity.analyzer import FaceAnalyzer

    for name in ("John_Allen_Muhammad", "Alejandro_Toledo"):
        shutil.copytree(faces_dir / "lfw_gallery" / name, tmp_path / "gallery" / name)
    gallery = read_gallery(tmp_path / "gallery")
    analyzer = FaceAnalyzer(model_pack, dense=False, landmarks_106=False, selection="center")
    result = run_identification(gallery, analyzer, k=2, unknown_fraction=0.0, store_dir=str(tmp_path))
    problems = {p["identity"]: p for p in result["enrolment_problems"]}
    assert problems["John_Allen_Muhammad"]["enrolled_with"] == "force + face 0"
    assert "faces" in problems["John_Allen_Muhammad"]["problem"]
    assert result["enrolled"] == 2 and result["not_enrolled"] == []
    assert result["rank1"] >= 0.875


def test_gallery_without_identity_folders_is_an_error(invoke, tmp_path):
    result = invoke("bench", "identify", "--gallery", str(tmp_path), "--out", str(tmp_path / "o"))
    assert result.returncode == BenchmarkInputError.exit_code and result.stderr.startswith("error:")
