"""SCRFD detection with retries, on real photos."""

from __future__ import annotations

import numpy as np
import pytest

from castkeep.landmarks.detection import FaceDetector, fitted_input_size, select_face
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
    # Tight crops (the face fills the frame) as 600px close-ups: the first pass runs at the image's own size,
    # where such a face is larger than SCRFD's biggest anchors. Count what one pass finds vs the schedule.
    import cv2

    paths = sorted((faces_dir / "bbt_faceapi").glob("*/*.png"))
    images = [cv2.resize(load_image(p), (600, 600), interpolation=cv2.INTER_CUBIC) for p in paths]
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


@pytest.mark.parametrize(("shape", "expected"), [
    ((250, 250, 3), (256, 256)),      # an LFW photo runs at its own size, not upscaled to 640
    ((768, 512, 3), (448, 640)),      # portrait output: long side to 640, no letterbox square
    ((2000, 3000, 3), (640, 448)),    # large photos scale down
    ((20, 20000, 3), (640, 32)),      # extreme strips keep a positive short side
    ((40, 60, 3), (64, 64)),          # never below one stride
])
def test_fitted_input_size(shape, expected):
    assert fitted_input_size(shape) == expected


def test_first_pass_at_the_photo_size_finds_the_face_the_640_pass_finds(detector, faces_dir):
    """An LFW photo: the fitted pass (256x256) and insightface's 640x640 pass agree on the face to a pixel or
    two, at a sixth of the pixels."""
    image = load_image(faces_dir / "lfw_gallery" / "Angelina_Jolie" / "Angelina_Jolie_0001.jpg")
    assert detector.input_size(image, 0) == (256, 256)
    (fitted,) = detector.detect(image, retry=False)
    upscaled = max(detector._run(image, 640, 0.5, 0.0), key=lambda d: d.area)
    assert fitted.attempt == 0
    assert np.abs(fitted.kps - upscaled.kps).max() < 3.0
    assert np.abs(fitted.bbox - upscaled.bbox).max() < 6.0
