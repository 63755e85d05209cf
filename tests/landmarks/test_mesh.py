"""MediaPipe dense landmarks on SCRFD crops, 106-point landmarks and head pose, on real photos."""

from __future__ import annotations

import numpy as np
import pytest

from castkeep.landmarks.images import load_image


def _inside(points: np.ndarray, bbox: np.ndarray, margin: float) -> float:
    x1, y1, x2, y2 = bbox
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    inside = ((points[:, 0] >= x1 - mx) & (points[:, 0] <= x2 + mx)
              & (points[:, 1] >= y1 - my) & (points[:, 1] <= y2 + my))
    return float(inside.mean())


def test_dense_mesh_has_478_points_inside_the_face_box(analyzer, faces_dir):
    analysis = analyzer.analyze(faces_dir / "lfw_gallery" / "Angelina_Jolie" / "Angelina_Jolie_0001.jpg")
    face = analysis.face()
    assert face.mesh is not None and face.mesh.points.shape == (478, 3)
    assert len(face.mesh.blendshapes) == 52
    assert _inside(face.mesh.points, face.bbox, 0.0) > 0.9
    assert _inside(face.mesh.points, face.bbox, 0.1) == 1.0
    assert face.landmarks_106.shape == (106, 2)
    assert _inside(face.landmarks_106, face.bbox, 0.1) == 1.0
    assert face.pose.source == "mesh"


def test_every_face_of_a_group_photo_gets_its_own_mesh(analyzer, faces_dir):
    analysis = analyzer.analyze(faces_dir / "groups" / "bbt4.jpg")
    assert len(analysis.faces) >= 5
    centers = []
    for face in analysis.faces:
        assert face.mesh is not None and face.mesh.points.shape[0] == 478
        assert _inside(face.mesh.points, face.bbox, 0.1) > 0.95
        centers.append(face.mesh.points[:, :2].mean(axis=0))
    # Meshes sit on different faces, not all on one.
    distances = [np.linalg.norm(a - b) for i, a in enumerate(centers) for b in centers[i + 1:]]
    assert min(distances) > 20


def test_yaw_and_roll_flip_sign_on_a_mirrored_photo(analyzer, faces_dir):
    image = load_image(faces_dir / "lfw_gallery" / "Angelina_Jolie" / "Angelina_Jolie_0001.jpg")
    original = analyzer.analyze(image).face().pose
    mirrored = analyzer.analyze(np.ascontiguousarray(image[:, ::-1])).face().pose
    assert abs(original.yaw) > 5, "needs a photo with a visibly turned head"
    assert np.sign(original.yaw) == -np.sign(mirrored.yaw)
    assert abs(original.yaw + mirrored.yaw) < 5
    assert abs(original.pitch - mirrored.pitch) < 5


@pytest.mark.slow
def test_yaw_sign_matches_where_the_nose_points(analyzer, faces_dir):
    # Nose right of the eye midpoint in the image = face turned toward the image's right = yaw > 0.
    offsets, yaws = [], []
    for path in sorted((faces_dir / "lfw_gallery").glob("*/*_0001.jpg"))[:24]:
        face = analyzer.analyze(path).face()
        offsets.append((face.kps[2, 0] - face.kps[:2, 0].mean()) / (face.kps[1, 0] - face.kps[0, 0]))
        yaws.append(face.pose.yaw)
    offsets, yaws = np.array(offsets), np.array(yaws)
    turned = np.abs(offsets) > 0.1
    # These 24 photos hold heads visibly turned both ways, and the mesh's yaw follows the nose.
    assert (offsets[turned] > 0).sum() >= 3 and (offsets[turned] < 0).sum() >= 3
    assert np.array_equal(np.sign(yaws[turned]), np.sign(offsets[turned]))
    assert np.corrcoef(offsets, yaws)[0, 1] > 0.9


def test_roll_follows_an_in_plane_rotation(analyzer, faces_dir):
    import cv2

    image = load_image(faces_dir / "lfw_gallery" / "Colin_Powell" / "Colin_Powell_0001.jpg")
    base = analyzer.analyze(image).face().pose.roll
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), -20, 1.0)  # 20° clockwise on screen
    rotated = cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)
    roll = analyzer.analyze(rotated).face().pose.roll
    assert 12 < roll - base < 28
