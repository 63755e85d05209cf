"""Quality reports flag what makes a reference photo unusable."""

from __future__ import annotations

import cv2

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
