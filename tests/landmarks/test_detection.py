"""SCRFD detection with retries, on real photos."""

from __future__ import annotations

import numpy as np
import pytest

from castkeep.landmarks.detection import FaceDetector, select_face
from castkeep.landmarks.images import load_image


@pytest.fixture(scope="module")
def detector(model_pack):
    return FaceDetector(model_pack.model("detection"))


def test_one_face_in_a_portrait(detector, faces_dir):
    image = load_image(faces_dir / "lfw_gallery" / "Angelina_Jolie" / "Angelina_Jolie_0001.jpg")
    faces = detector.detect(image)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.5 and face.kps.shape == (5, 2)
    x1, y1, x2, y2 = face.bbox
    # Keypoints lie inside the box, eyes above the mouth.
    assert np.all((face.kps[:, 0] > x1) & (face.kps[:, 0] < x2) & (face.kps[:, 1] > y1) & (face.kps[:, 1] < y2))
    assert face.kps[:2, 1].mean() < face.kps[3:, 1].mean()


def test_group_photo_finds_everyone_largest_first(detector, faces_dir):
    image = load_image(faces_dir / "groups" / "bbt3.jpg")  # 5 people
    faces = detector.detect(image)
    assert len(faces) == 5
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True)


@pytest.mark.slow
def test_retry_schedule_recovers_faces_the_first_pass_misses(detector, faces_dir):
    # Tight 150px crops (the face fills the frame): count what one pass finds vs the schedule.
    paths = sorted((faces_dir / "bbt_faceapi").glob("*/*.png"))
    images = [load_image(p) for p in paths]
    first_pass = sum(bool(detector.detect(im, retry=False)) for im in images)
    with_retries = [detector.detect(im) for im in images]
    assert sum(bool(f) for f in with_retries) == len(images)
    assert first_pass < len(images)
    assert any(f and f[0].attempt > 0 for f in with_retries)


def test_no_face_in_a_blank_or_noise_image(detector):
    rng = np.random.default_rng(0)
    assert detector.detect(np.full((256, 256, 3), 127, np.uint8)) == []
    assert detector.detect(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)) == []


def test_center_selection_prefers_the_central_face(detector, faces_dir):
    image = load_image(faces_dir / "groups" / "bbt3.jpg")
    faces = detector.detect(image)
    center_x = image.shape[1] / 2
    chosen = faces[select_face(faces, image.shape, "center")]
    assert abs(chosen.center[0] - center_x) == min(abs(f.center[0] - center_x) for f in faces)
    assert select_face(faces, image.shape, "largest") == 0
