"""The scorers on real photos: dlib's descriptor on SCRFD boxes (also where dlib's own HOG detector finds
nothing), the fused scorer, `compare(scorer=, domain=)`, and score/identify against a store with dlib."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import castkeep
from castkeep.errors import CastkeepError, StoreError
from castkeep.identity import domains
from castkeep.identity.dlib_recogniser import SCRFD_TO_DLIB_BOX, DlibRecogniser, distance, dlib_box
from castkeep.identity.scorers import describe_face, get_scorer, judge_all

CELEBS = "deepface_celebs"


@pytest.fixture(scope="module")
def recogniser():
    return DlibRecogniser()


def _descriptor(analyzer, recogniser, path):
    return describe_face(analyzer, path, recogniser=recogniser).descriptor


def test_dlib_descriptor_same_person_closer_than_another(faces_dir, fast_analyzer, recogniser):
    celebs = faces_dir / CELEBS
    anchor = _descriptor(fast_analyzer, recogniser, celebs / "angelina_jolie" / "img1.jpg")
    same = _descriptor(fast_analyzer, recogniser, celebs / "angelina_jolie" / "img2.jpg")
    others = [_descriptor(fast_analyzer, recogniser, celebs / person / image)
              for person, image in (("mark_zuckerberg", "img13.jpg"), ("jennifer_aniston", "img3.jpg"))]
    assert anchor.shape == (128,) and anchor.dtype == np.float32
    threshold = domains.DLIB["photo"].threshold
    assert distance(anchor, same) < threshold
    assert all(distance(anchor, other) > threshold for other in others)
    assert abs(threshold - 0.6) < 0.05  # the photo fit lands next to dlib's documented 0.6


def test_chip_alignment_uses_scrfd_boxes_where_hog_finds_nothing(faces_dir, fast_analyzer, recogniser):
    """dlib's HOG detector finds no face in these celeb5 photos; SCRFD's box still gives a good chip."""
    import dlib

    from castkeep.landmarks.images import load_image

    celeb5 = faces_dir / "celeb5"
    hard = celeb5 / "mindy_kaling" / "train_15.jpg"
    image = load_image(hard)
    assert len(dlib.get_frontal_face_detector()(np.ascontiguousarray(image[:, :, ::-1]), 1)) == 0
    face = fast_analyzer.embed(image)
    chip = recogniser.chip(image, face.bbox)
    assert chip.shape == (150, 150, 3)
    missed = recogniser.describe(image, [face.bbox])[0]
    same = _descriptor(fast_analyzer, recogniser, celeb5 / "mindy_kaling" / "train_01.jpg")
    other = _descriptor(fast_analyzer, recogniser, celeb5 / "madonna" / "train_01.jpg")
    assert distance(missed, same) < domains.DLIB["photo"].threshold < distance(missed, other)
    # another HOG miss: still nearer its own person than someone else
    ben = celeb5 / "ben_affleck"
    assert distance(_descriptor(fast_analyzer, recogniser, ben / "train_07.jpg"),
                    _descriptor(fast_analyzer, recogniser, ben / "train_01.jpg")) < \
        distance(_descriptor(fast_analyzer, recogniser, ben / "train_07.jpg"), other)


@pytest.mark.slow
def test_descriptors_on_scrfd_boxes_match_dlibs_own_pipeline(faces_dir, fast_analyzer, recogniser):
    """Where dlib's HOG detector does find the face, castkeep's SCRFD-box descriptor is nearly dlib's own
    (HOG box, RGB pixels): the box mapping puts the 5-point model where it was trained to start. (The
    SCRFD box as it is: mean distance 0.074; BGR pixels: 0.18; the same-person threshold is 0.6.)"""
    import dlib

    from castkeep.landmarks.images import load_image

    hog = dlib.get_frontal_face_detector()
    gaps = []
    for path in sorted((faces_dir / CELEBS).glob("*/img1*.jpg"))[:8]:
        image = load_image(path)
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        box = max(hog(rgb, 1), key=lambda r: r.area())
        chip = dlib.get_face_chip(rgb, recogniser.shape_predictor(rgb, box), size=150, padding=0.25)
        reference = np.asarray(recogniser.model.compute_face_descriptor(chip))
        gaps.append(distance(recogniser.describe(image, [fast_analyzer.embed(image).bbox])[0], reference))
    assert len(gaps) == 8 and np.mean(gaps) < 0.06 and max(gaps) < 0.1, np.round(gaps, 3)


def test_dlib_box_maps_scrfd_to_dlib_convention():
    left, top, right, bottom = SCRFD_TO_DLIB_BOX
    assert dlib_box([100, 200, 300, 400]) == (round(100 + 200 * left), round(200 + 200 * top),
                                              round(100 + 200 * right), round(200 + 200 * bottom))
    assert dlib_box([0, 0, 100, 100]) == (-12, 14, 102, 96)


def test_fused_score_is_the_logistic_fusion_of_both_calibrated_scores():
    raw = {"arcface": 0.2, "dlib": 0.55}
    for domain in ("photo", "generated"):
        fusion = domains.FUSION[domain]
        expected = (fusion.weights[0] * domains.ARCFACE[domain].log_odds(0.2)
                    + fusion.weights[1] * domains.DLIB[domain].log_odds(0.55) + fusion.bias)
        result = get_scorer("fused").judge(raw, domain)
        assert result.score == pytest.approx(expected) and result.same == (expected >= 0)
        assert result.probability == pytest.approx(1 / (1 + np.exp(-expected)))
    # Each recogniser's vote counts with its own sign: a closer dlib distance or a higher cosine never
    # lowers the fused log-odds, in either domain.
    fused = get_scorer("fused")
    for domain in ("photo", "generated"):
        assert min(domains.FUSION[domain].weights) > 0
        assert fused.score({"arcface": 0.3, "dlib": 0.5}, domain) > fused.score({"arcface": 0.3, "dlib": 0.7}, domain)
        assert fused.score({"arcface": 0.4, "dlib": 0.6}, domain) > fused.score({"arcface": 0.2, "dlib": 0.6}, domain)
    # both recognisers agree on "same" in generated images; the fusion follows them
    assert get_scorer("fused").judge({"arcface": 0.4, "dlib": 0.5}, "generated").same
    assert not get_scorer("fused").judge({"arcface": 0.0, "dlib": 0.9}, "generated").same
    results = judge_all(get_scorer("dlib"), raw, "photo", threshold=0.5)
    assert list(results) == ["dlib", "arcface", "fused"] and results["dlib"].threshold == 0.5
    assert not results["dlib"].same and results["dlib"].probability > 0.5  # threshold moves the verdict only
    with pytest.raises(CastkeepError):
        get_scorer("facenet")
    with pytest.raises(CastkeepError):
        get_scorer("arcface").judge(raw, "sketch")


def test_compare_with_each_scorer_and_domain(faces_dir, fast_analyzer, recogniser):
    celebs = faces_dir / CELEBS
    a, b = celebs / "angelina_jolie" / "img1.jpg", celebs / "angelina_jolie" / "img2.jpg"
    other = celebs / "mark_zuckerberg" / "img13.jpg"
    same = castkeep.compare(a, b, analyzer=fast_analyzer, recogniser=recogniser, scorer="fused")
    different = castkeep.compare(a, other, analyzer=fast_analyzer, recogniser=recogniser, scorer="dlib")
    assert same.same and set(same.scores) == {"arcface", "dlib", "fused"} and same.score == same.scores["fused"].score
    assert not different.same and different.scorer == "dlib" and different.score > different.threshold
    assert different.dlib_model.startswith("dlib:dlib_face_recognition_resnet_model_v1:")
    photo = castkeep.compare(a, other, analyzer=fast_analyzer)
    generated = castkeep.compare(a, other, analyzer=fast_analyzer, domain="generated")
    assert photo.similarity == generated.similarity and set(photo.scores) == {"arcface"}
    assert photo.threshold == castkeep.SAME_PERSON_THRESHOLD
    assert generated.threshold == domains.ARCFACE["generated"].threshold < photo.threshold
    assert generated.probability > photo.probability  # the same cosine is more likely genuine for generated images
    data = same.to_dict()
    assert data["scores"]["dlib"]["metric"] == "euclidean distance" and data["domain"] == "photo"


def test_character_distance_keeps_the_pair_scale(faces_dir, fast_analyzer, recogniser):
    """A face against a character scores on the photo-pair scale: exactly the pair distance for one reference;
    for three, the distance to their weighted mean with the averaged-out spread added back, which keeps an
    impostor among its pair distances where the plain distance to the mean pulls it below all of them."""
    from castkeep.identity.reference_faces import WITHIN_PERSON_VARIANCE, CharacterDescriptors

    gallery = faces_dir / "lfw_gallery"
    person = sorted((gallery / "Alejandro_Toledo").glob("*.jpg"))
    references = np.stack([_descriptor(fast_analyzer, recogniser, path) for path in person[:3]])
    impostors = [_descriptor(fast_analyzer, recogniser, path)
                 for path in sorted((gallery / "Adrien_Brody").glob("*.jpg"))[:3]]
    genuine = _descriptor(fast_analyzer, recogniser, person[4])
    for probe in [*impostors, genuine]:
        assert CharacterDescriptors.single(references[0]).distance(probe) == distance(probe, references[0])
    weights = np.array([1.0, 0.6, 0.3])
    character = CharacterDescriptors(references.astype(np.float64), weights)
    assert character.averaged_out == pytest.approx(WITHIN_PERSON_VARIANCE * (1 - 1.45 / 1.9 ** 2), rel=1e-12)
    mean = (weights[:, None] * references).sum(axis=0) / weights.sum()
    probes = np.stack([*impostors, genuine])
    np.testing.assert_allclose(character.distances(probes), [character.distance(p) for p in probes], rtol=1e-12)
    for probe in impostors:
        pairs = [distance(probe, reference) for reference in references]
        to_mean = float(np.linalg.norm(probe - mean))
        assert character.distance(probe) ** 2 == pytest.approx(to_mean ** 2 + character.averaged_out, rel=1e-9)
        # The mean pulls the impostor in below every pair distance; the pair-scaled distance puts it back
        # near them (within the pairs' range up to a fraction of their spread).
        assert to_mean < min(pairs)
        assert abs(character.distance(probe) - np.mean(pairs)) < abs(to_mean - np.mean(pairs)) / 2
        assert character.distance(probe) > domains.DLIB["photo"].threshold
    assert character.distance(genuine) < domains.DLIB["photo"].threshold


@pytest.mark.subprocess
def test_cli_scorer_and_domain(cli, faces_dir):
    celebs = faces_dir / CELEBS
    a, b = str(celebs / "angelina_jolie" / "img1.jpg"), str(celebs / "angelina_jolie" / "img2.jpg")
    result = cli("compare", a, b, "--scorer", "fused", "--domain", "generated", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["scorer"], data["domain"], data["same"]) == ("fused", "generated", True)
    assert data["scores"]["arcface"]["threshold"] == pytest.approx(domains.ARCFACE["generated"].threshold, abs=1e-4)
    text = cli("compare", a, b, "--scorer", "dlib")
    assert text.returncode == 0 and text.stdout.startswith("dlib") and "same person" in text.stdout
    bad = cli("compare", a, b, "--scorer", "facenet")
    assert bad.returncode == 2 and "facenet" in bad.stderr


@pytest.mark.slow
def test_store_score_and_identify_with_dlib(tmp_path, faces_dir, fast_analyzer, recogniser):
    from castkeep.identity import store_scoring

    celebs = faces_dir / CELEBS
    photos = tmp_path / "photos"
    photos.mkdir()
    people = {"Angelina": ("angelina_jolie", ["img1.jpg", "img2.jpg"]), "Jennifer": ("jennifer_aniston", ["img3.jpg"])}
    with castkeep.Store.open(tmp_path / "cast", analyzer=fast_analyzer, create=True) as store:
        for name, (folder, files) in people.items():
            copies = [shutil.copy(celebs / folder / f, photos / f"{folder}_{f}") for f in files]
            store.register(name, copies)
        probe = celebs / "angelina_jolie" / "img4.jpg"
        judged = store_scoring.score(store, probe, "Angelina", scorer="dlib", recogniser=recogniser)
        assert judged.match.result.same and judged.match.result.metric == "euclidean distance"
        # Jennifer has one reference: her dlib score is exactly the distance to its stored crop's descriptor.
        from castkeep.identity.reference_faces import ReferenceDescriptors

        query = _descriptor(fast_analyzer, recogniser, probe)
        [only] = store.get("Jennifer", crops=True).references
        crop = ReferenceDescriptors(recogniser, fast_analyzer.detector).of_reference("Jennifer", only)
        assert judged.closest_other.scores["dlib"].score == distance(query, crop)
        assert judged.closest_other.name == "Jennifer" and not judged.leakage
        wrong = store_scoring.score(store, probe, "Jennifer", scorer="fused", domain="generated", recogniser=recogniser)
        assert not wrong.match.result.same and wrong.leakage and wrong.closest_other.name == "Angelina"
        assert set(wrong.to_dict()["scores"]) == {"arcface", "dlib", "fused"}
        ranked = store_scoring.identify(store, probe, scorer="dlib", recogniser=recogniser)
        assert [m.name for m in ranked] == ["Angelina", "Jennifer"] and ranked[0].result.same
        # ArcFace in the generated domain: the store's cosine, judged by the generated calibration
        generated = store_scoring.identify(store, probe, domain="generated")
        assert generated[0].result.threshold == domains.ARCFACE["generated"].threshold
        # dlib describes the stored face crops: moving or editing the photos changes nothing.
        (photos / "angelina_jolie_img2.jpg").write_bytes((celebs / "jennifer_aniston" / "img3.jpg").read_bytes())
        again = store_scoring.score(store, probe, "Angelina", scorer="dlib", recogniser=recogniser)
        assert again.match.result.score == pytest.approx(judged.match.result.score)
        # A reference without a crop (stored before crops were kept) falls back to its photo, sha256-checked:
        # the original photo gives the crop's verdict; an edited or missing one is one clear error.
        descriptors = ReferenceDescriptors(recogniser, fast_analyzer.detector)
        jennifer = store.get("Jennifer")  # crops not read: as for an old store
        assert jennifer.references[0].crop is None
        from_photo = descriptors.of_character(jennifer)
        from_crop = ReferenceDescriptors(recogniser, fast_analyzer.detector).of_character(
            store.get("Jennifer", crops=True))
        assert distance(from_photo.mean, from_crop.mean) < 0.15
        angelina = store.get("Angelina")
        with pytest.raises(StoreError, match="changed since it was registered.*--scorer arcface"):
            descriptors.of_character(angelina)
        (photos / "angelina_jolie_img1.jpg").unlink()
        with pytest.raises(StoreError, match="not found"):
            ReferenceDescriptors(recogniser, fast_analyzer.detector).of_character(angelina)
        assert store_scoring.score(store, probe, "Angelina", scorer="arcface").match.result.same  # arcface needs no photos
