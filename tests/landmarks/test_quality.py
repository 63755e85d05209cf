"""Quality reports flag what makes a reference photo unusable."""

from __future__ import annotations

import cv2
import pytest

from castkeep.benchmarks.quality_gate import downscale
from castkeep.landmarks.images import load_image


def test_good_portrait_is_usable(analyzer, faces_dir):
    face = analyzer.analyze(faces_dir / "lfw_gallery" / "Colin_Powell" / "Colin_Powell_0001.jpg").face()
    assert face.quality.usable and face.quality.reason is None
    assert 0.3 < face.quality.score <= 1.0


def test_blur_lowers_sharpness_and_is_flagged(analyzer, faces_dir):
    image = load_image(faces_dir / "lfw_gallery" / "Colin_Powell" / "Colin_Powell_0001.jpg")
    sharp = analyzer.analyze(image).face().quality
    blurred = analyzer.analyze(cv2.GaussianBlur(image, (0, 0), 4)).faces
    assert blurred, "the detector still finds a blurred face"
    quality = blurred[0].quality
    assert quality.sharpness < sharp.sharpness / 3
    assert not quality.usable and "blurred" in quality.reason
    assert quality.score < sharp.score


def test_small_faces_in_a_crowd_are_flagged_too_small(analyzer, faces_dir):
    analysis = analyzer.analyze(faces_dir / "groups" / "street_people.jpeg", dense=False)
    small = [f for f in analysis.faces if f.size < analyzer.thresholds.min_face_px]
    assert small
    assert all(not f.quality.usable and "too small" in f.quality.reason for f in small)


def test_gate_refuses_only_where_embeddings_degrade_and_warns_above(fast_analyzer, faces_dir):
    """The measured gate (landmarks/quality.py): refused under 16 px or sharpness 5, warned under 32 px or 15."""
    image = load_image(faces_dir / "lfw_gallery" / "Colin_Powell" / "Colin_Powell_0001.jpg")
    size = fast_analyzer.analyze(image).face().quality.face_px
    tiny = fast_analyzer.analyze(downscale(image, size, 12)).face().quality
    assert not tiny.usable and "face too small" in tiny.reason
    small = fast_analyzer.analyze(downscale(image, size, 24)).face().quality
    assert small.usable and [w for w in small.warnings if w.startswith("small face")]
    soft = fast_analyzer.analyze(cv2.GaussianBlur(image, (0, 0), 2)).face().quality
    assert soft.usable and [w for w in soft.warnings if w.startswith("slightly blurred")], soft


@pytest.mark.slow
def test_typical_press_photos_pass_without_warning(fast_analyzer, faces_dir):
    """The first 3 photos of 14 LFW people (faces ~90 px): every one usable, none borderline."""
    people = sorted(p for p in (faces_dir / "lfw_gallery").iterdir() if p.is_dir())[::10]
    for person in people:
        for photo in sorted(person.glob("*.jpg"))[:3]:
            quality = fast_analyzer.analyze(photo).face().quality
            assert quality.usable and not quality.warnings, (photo.name, quality)
