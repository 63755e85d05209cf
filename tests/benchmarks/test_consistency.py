"""`castkeep bench consistency` on run folders built from real images.

- LFW photos: four of one person, one impostor, one faceless frame. The impostor must come out as the (only)
  outlier, and every score must be what the test computes itself from the same faces.
- generated_dev (real generated images): four PhotoMaker outputs of one identity, two of another that ArcFace
  (the conditioning model) calls the same person at the generated-domain threshold and dlib does not, and one
  of a third that only dlib accepts, against the identity's reference photo. The planted impostors must be
  flagged, and every verdict must be what the scorers say of the pairs the test describes itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from castkeep.errors import BenchmarkInputError

PERSON = "Alejandro_Toledo"
IMPOSTOR = "Adrien_Brody"


def _png(source: Path, target: Path) -> None:
    with Image.open(source) as image:
        image.convert("RGB").save(target)


@pytest.fixture
def run_dir(faces_dir, tmp_path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    photos = sorted((faces_dir / "lfw_gallery" / PERSON).glob("*.jpg"))
    for i, photo in enumerate(photos[2:6]):  # photos 0-1 are kept for the store's references
        _png(photo, run / f"out_{i:02d}.png")
        (run / f"out_{i:02d}.json").write_text(json.dumps({"character": "toledo", "seed": i}))
    _png(sorted((faces_dir / "lfw_gallery" / IMPOSTOR).glob("*.jpg"))[0], run / "out_04.png")
    Image.new("RGB", (256, 256), (90, 120, 90)).save(run / "out_05.png")  # no face: a failed output
    for i in (4, 5):
        (run / f"out_{i:02d}.json").write_text(json.dumps({"character": "toledo", "seed": i}))
    Image.new("RGB", (64, 64)).save(run / "contact_sheet.png")  # no sidecar: not an output
    (run / "summary.json").write_text(json.dumps({"character": "toledo", "images": 6}))
    return run


@pytest.fixture(scope="module")
def recogniser():
    from castkeep.identity.dlib_recogniser import DlibRecogniser

    return DlibRecogniser()


def _faces(run: Path, analyzer) -> dict[str, np.ndarray]:
    return {f"out_{i:02d}.png": analyzer.embed(run / f"out_{i:02d}.png").embedding for i in range(5)}


def _descriptors(run: Path, analyzer, recogniser) -> dict[str, np.ndarray]:
    from castkeep.identity.scorers import describe_face

    return {f"out_{i:02d}.png": describe_face(analyzer, run / f"out_{i:02d}.png", recogniser=recogniser).descriptor
            for i in range(5)}


@pytest.mark.slow
def test_consistency_without_store_uses_the_run_centroid(invoke, run_dir, fast_analyzer, recogniser, tmp_path):
    result = invoke("bench", "consistency", str(run_dir), "--store", str(tmp_path / "no-store"), "--domain", "photo",
                    "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["reference"].startswith("run centroid")
    assert data["notes"]  # says why the character named in the run was not used
    assert data["conditioning"] is None  # the run does not name its conditioning space
    assert data["outputs"] == 6 and data["with_face"] == 5
    assert [r["image"] for r in data["no_face"]] == ["out_05.png"]
    assert data["outliers"] == ["out_04.png"]
    # Leave-one-out: each face against the normalised sum of the other four (ArcFace) and against the other
    # four as a character (dlib: the distance to their mean with the averaged-out spread added back), computed here.
    from castkeep.identity.reference_faces import WITHIN_PERSON_VARIANCE

    faces = _faces(run_dir, fast_analyzer)
    descriptors = _descriptors(run_dir, fast_analyzer, recogniser)
    total, total_descriptor = sum(faces.values()), sum(descriptors.values())
    for row in data["images"]:
        others = total - faces[row["image"]]
        assert row["cosine"] == pytest.approx(float(others @ faces[row["image"]]) / np.linalg.norm(others), abs=1e-4)
        assert row["scores"]["arcface"]["score"] == pytest.approx(row["cosine"], abs=1e-4)
        mean_others = (total_descriptor - descriptors[row["image"]]) / 4
        to_mean = float(np.linalg.norm(mean_others - descriptors[row["image"]]))
        assert row["scores"]["dlib"]["score"] == pytest.approx(
            np.sqrt(to_mean ** 2 + WITHIN_PERSON_VARIANCE * (1 - 1 / 4)), abs=1e-4)
    # The impostor and the faceless frame both fail, by every scorer; the four photos of one person pass.
    assert data["below_threshold"] == ["out_04.png"] and data["consistency_rate"] == pytest.approx(4 / 6)
    for name in ("arcface", "dlib", "fused"):
        assert data["scorers"][name]["below_threshold"] == ["out_04.png"]
    assert data["agreement"]["disagree"] == 0 and data["agreement"]["agree"] == 5
    names = list(faces)
    assert data["pairwise"]["labels"] == names
    expected = np.array([[faces[a] @ faces[b] for b in names] for a in names])
    np.testing.assert_allclose(data["pairwise"]["matrix"], expected, atol=1e-4)
    distances = np.array([[np.linalg.norm(descriptors[a] - descriptors[b]) for b in names] for a in names])
    np.testing.assert_allclose(data["pairwise"]["dlib"], distances, atol=1e-4)
    assert len(data["plots"]) == 3
    for plot in data["plots"].values():
        assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(data["result_json"]).parent == run_dir / "consistency"


@pytest.mark.slow
def test_consistency_against_a_stored_character(invoke, run_dir, faces_dir, fast_analyzer, recogniser, tmp_path):
    from castkeep.identity.reference_faces import ReferenceDescriptors
    from castkeep.identity.store import Store

    store = tmp_path / "store"
    refs = sorted((faces_dir / "lfw_gallery" / PERSON).glob("*.jpg"))[:2]
    with Store.open(store, analyzer=fast_analyzer, create=True) as opened:
        vector = opened.register("toledo", refs).vector
        character = opened.get("toledo", crops=True)
    result = invoke("bench", "consistency", str(run_dir), "--store", str(store), "--scorer", "arcface",
                    "--domain", "photo", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["reference"] == "character 'toledo'"
    faces = _faces(run_dir, fast_analyzer)
    scores = {r["image"]: r["score"] for r in data["images"]}
    assert scores == pytest.approx({name: float(face @ vector) / np.linalg.norm(vector)
                                    for name, face in faces.items()}, abs=1e-4)
    assert scores["out_04.png"] < data["threshold"] < min(scores[f"out_{i:02d}.png"] for i in range(4))
    assert data["consistency_rate"] == pytest.approx(4 / 6)
    assert data["below_threshold"] == ["out_04.png"]
    # dlib judges against the character's references, described from its stored face crops.
    stored = ReferenceDescriptors(recogniser, fast_analyzer.detector).of_character(character)
    assert len(stored.descriptors) == 2
    descriptors = _descriptors(run_dir, fast_analyzer, recogniser)
    for row in data["images"]:
        assert row["scores"]["dlib"]["score"] == pytest.approx(stored.distance(descriptors[row["image"]]), abs=1e-4)
    # A re-run does not embed its own plots (they live under RUN_DIR/consistency).
    again = invoke("bench", "consistency", str(run_dir), "--store", str(store), "--json")
    assert json.loads(again.stdout)["outputs"] == 6


def test_unknown_character_is_an_error(invoke, run_dir, tmp_path):
    store = tmp_path / "store"
    result = invoke("bench", "consistency", str(run_dir), "--character", "nobody", "--store", str(store))
    assert result.returncode not in (0, 1, 70) and result.stderr.startswith("error:")
    assert len(result.stderr.splitlines()) == 1


def test_empty_run_dir_is_an_error(invoke, tmp_path):
    result = invoke("bench", "consistency", str(tmp_path))
    assert result.returncode == BenchmarkInputError.exit_code and "no images" in result.stderr


def test_a_generation_run_counts_only_outputs_with_sidecars(tmp_path):
    from castkeep.benchmarks.consistency import run_images

    for name in ("Mara_01_s1.png", "Mara_02_s2.png", "contact_sheet.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    for name in ("Mara_01_s1.json", "Mara_02_s2.json", "summary.json"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in run_images(tmp_path)] == ["Mara_01_s1.png", "Mara_02_s2.png"]
    (tmp_path / "Mara_01_s1.json").unlink()
    (tmp_path / "Mara_02_s2.json").unlink()
    assert len(run_images(tmp_path)) == 3  # plain folders of images: everything counts


# ---------------------------------------------------------------------------------- generated images
GENERATED = "generated_dev/images"
REFERENCE_PHOTO = f"{GENERATED}/lenna/photomaker_page__lenna.jpg"
# (file in the run, source image, what ArcFace and dlib say of it against REFERENCE_PHOTO in the generated domain)
PLANTED = [
    ("out_00.jpg", "lenna/photomaker_page__real5thCol_r0c0.jpg", None),
    ("out_01.jpg", "lenna/photomaker_page__real5thCol_r1c0.jpg", None),
    ("out_02.jpg", "lenna/photomaker_page__real5thCol_r1c1.jpg", None),
    ("out_03.jpg", "lenna/photomaker_page__real5thCol_r2c1.jpg", None),
    ("out_04.jpg", "qianxi/photomaker_page__real3rdCol_r0c1.jpg", "conditioning-only"),  # another woman
    ("out_05.jpg", "qianxi/photomaker_page__real3rdCol_r0c2.jpg", "conditioning-only"),
    ("out_06.jpg", "scarlett/photomaker_page__real2ndCol_r1c1.jpg", "independent-only"),
]
CONDITIONING = {"pack": "buffalo_l", "recogniser": "w600k_r50.onnx", "declared_by": "file name",
                "fingerprint": "buffalo_l:w600k_r50.onnx:0123456789abcdef"}  # as `castkeep generate` writes it


@pytest.fixture(scope="module")
def generated_run(faces_dir, tmp_path_factory) -> Path:
    """A run folder of real generated images with sidecars and a summary naming the conditioning space."""
    run = tmp_path_factory.mktemp("generated") / "run"
    run.mkdir()
    for name, source, _ in PLANTED:
        (run / name).write_bytes((faces_dir / GENERATED / source).read_bytes())
        (run / name).with_suffix(".json").write_text(json.dumps({"character": "lenna"}))
    (run / "summary.json").write_text(json.dumps({"character": "lenna", "models": {"conditioning": CONDITIONING}}))
    return run


@pytest.fixture(scope="module")
def expected_verdicts(generated_run, faces_dir, fast_analyzer, recogniser) -> dict[str, dict]:
    """Each scorer's judgement of (reference photo, output), from features described here."""
    from castkeep.identity.scorers import describe_face, get_scorer, raw_scores

    reference = describe_face(fast_analyzer, faces_dir / REFERENCE_PHOTO, recogniser=recogniser)
    verdicts = {}
    for name, _, _ in PLANTED:
        raw = raw_scores(reference, describe_face(fast_analyzer, generated_run / name, recogniser=recogniser))
        verdicts[name] = {s: get_scorer(s).judge(raw, "generated").to_dict() for s in ("arcface", "dlib", "fused")}
    return verdicts


def _bench(invoke, run: Path, faces_dir: Path, tmp_path: Path, *options: str) -> dict:
    result = invoke("bench", "consistency", str(run), "--reference", str(faces_dir / REFERENCE_PHOTO),
                    "--out", str(tmp_path), *options, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_both_scorers_judge_every_output_and_disagreements_are_flagged(invoke, generated_run, faces_dir, tmp_path,
                                                                       expected_verdicts):
    data = _bench(invoke, generated_run, faces_dir, tmp_path)
    assert (data["scorer"], data["domain"]) == ("fused", "generated")  # the defaults for a run
    assert data["reference"] == "image 'photomaker_page__lenna.jpg'"
    assert data["outputs"] == data["with_face"] == len(PLANTED)
    for row in data["images"]:
        expected = expected_verdicts[row["image"]]
        assert set(row["scores"]) == {"arcface", "dlib", "fused"}
        for name, judged in row["scores"].items():
            assert judged["domain"] == "generated"
            assert judged == pytest.approx(expected[name], abs=2e-4)
        assert (row["score"], row["same"]) == (pytest.approx(expected["fused"]["score"], abs=2e-4),
                                               expected["fused"]["same"])
    rows = {row["image"]: row for row in data["images"]}
    for name, _, kind in PLANTED:
        agreement = rows[name]["agreement"]
        assert agreement["kind"] == kind and agreement["disagree"] == (kind is not None)
        assert agreement["conditioning"] == rows[name]["scores"]["arcface"]["same"]
        assert agreement["independent"] == rows[name]["scores"]["dlib"]["same"]
    # The planted impostors: dlib calls them different although ArcFace, the conditioning model, accepts them.
    for name in ("out_04.jpg", "out_05.jpg"):
        assert rows[name]["scores"]["arcface"]["same"] and not rows[name]["scores"]["dlib"]["same"]
    summary = data["agreement"]
    assert summary["agree"] == 4 and summary["disagree"] == 3
    assert summary["agree"] + summary["disagree"] == data["with_face"]
    assert summary["disagreeing"] == ["out_04.jpg", "out_05.jpg", "out_06.jpg"]
    assert summary["conditioning_only"] == ["out_04.jpg", "out_05.jpg"]
    assert summary["independent_only"] == ["out_06.jpg"]
    for name in ("arcface", "dlib", "fused"):
        same = [expected_verdicts[n][name]["same"] for n, _, _ in PLANTED]
        assert data["scorers"][name]["consistency_rate"] == pytest.approx(sum(same) / len(PLANTED))
    assert data["consistency_rate"] == data["scorers"]["fused"]["consistency_rate"]
    # The run names its conditioning space: recorded, and it is not the pack judging here.
    assert data["conditioning"] == {**CONDITIONING, "same_as_arcface_scorer": False}
    assert data["models"]["arcface"] == data["model"] and data["models"]["dlib"].startswith("dlib:")
    n = len(PLANTED)
    assert np.asarray(data["pairwise"]["dlib"]).shape == np.asarray(data["pairwise"]["fused"]).shape == (n, n)


@pytest.mark.slow
def test_the_text_summary_shows_both_scorers_and_the_disagreements(invoke, generated_run, faces_dir, tmp_path):
    result = invoke("bench", "consistency", str(generated_run), "--reference", str(faces_dir / REFERENCE_PHOTO),
                    "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "arcface (cosine)" in out and "dlib (euclidean distance)" in out and "fused (log-odds)" in out
    assert "4 agree, 3 disagree (2 arcface only)" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("out_0")}
    assert lines["out_05.jpg"].endswith("conditioning-only") and lines["out_06.jpg"].endswith("independent-only")
    assert not lines["out_00.jpg"].endswith("only")
    assert "alone calls these the same person, dlib does not: out_04.jpg, out_05.jpg" in out


@pytest.mark.slow
def test_scorer_option_chooses_the_headline(invoke, generated_run, faces_dir, tmp_path, expected_verdicts):
    by_scorer = {name: _bench(invoke, generated_run, faces_dir, tmp_path, "--scorer", name)
                 for name in ("arcface", "dlib")}
    arcface, dlib = by_scorer["arcface"], by_scorer["dlib"]
    # ArcFace accepts the two planted impostors; dlib rejects them and accepts the other one.
    assert arcface["consistency_rate"] == pytest.approx(6 / 7) and arcface["below_threshold"] == ["out_06.jpg"]
    assert dlib["consistency_rate"] == pytest.approx(5 / 7)
    assert dlib["below_threshold"] == ["out_04.jpg", "out_05.jpg"]
    for name, data in by_scorer.items():
        assert data["scorer"] == name and data["metric"] == data["scorers"][name]["metric"]
        assert data["threshold"] == pytest.approx(expected_verdicts["out_00.jpg"][name]["threshold"])
        assert [r["score"] for r in data["images"]] == pytest.approx(
            [expected_verdicts[r["image"]][name]["score"] for r in data["images"]], abs=2e-4)
        assert data["outliers"] == data["scorers"][name]["outliers"]
    # Only the headline moves: every scorer's own figures are the same in both runs.
    assert arcface["scorers"] == dlib["scorers"] and arcface["agreement"] == dlib["agreement"]
    # --threshold moves the headline scorer's verdict only (a looser dlib distance accepts everyone).
    loose = _bench(invoke, generated_run, faces_dir, tmp_path, "--scorer", "dlib", "--threshold", "0.95")
    assert loose["consistency_rate"] == 1.0 and loose["threshold"] == 0.95
    assert loose["scorers"]["arcface"] == dlib["scorers"]["arcface"]


def test_character_and_reference_image_together_is_an_error(invoke, run_dir, faces_dir):
    result = invoke("bench", "consistency", str(run_dir), "--character", "toledo",
                    "--reference", str(faces_dir / REFERENCE_PHOTO))
    assert result.returncode == BenchmarkInputError.exit_code and "not both" in result.stderr


def test_conditioning_space_is_compared_with_the_judging_arcface():
    from castkeep.benchmarks.consistency import conditioning_record

    judging = "buffalo_s_lite:w600k_mbf.onnx:9cc6e4a75f0e2bf0"
    space = {"pack": "buffalo_s", "recogniser": "w600k_mbf.onnx", "declared_by": "file name"}
    assert conditioning_record(None, judging) is None
    assert conditioning_record({**space, "fingerprint": judging}, judging)["same_as_arcface_scorer"] is True
    other = "buffalo_s:w600k_mbf.onnx:0000000000000000"  # same recogniser file, another copy of the weights
    assert conditioning_record({**space, "fingerprint": other}, judging)["same_as_arcface_scorer"] is False
    # No fingerprint (a vector given without one): the recogniser file decides.
    assert conditioning_record({**space, "fingerprint": None}, judging)["same_as_arcface_scorer"] is True
    assert conditioning_record({**space, "recogniser": "w600k_r50.onnx"}, judging)["same_as_arcface_scorer"] is False
    assert conditioning_record({"pack": "buffalo_l"}, judging) == {"pack": "buffalo_l", "same_as_arcface_scorer": None}
