"""Drawing detections and landmarks onto an image so a person can check them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class DrawableFace(Protocol):
    """What a drawing needs of a face (identity.analyzer.Face has it); landmarks never imports
    the identity layer, so the shape is stated here."""

    index: int
    bbox: np.ndarray
    kps: np.ndarray
    det_score: float
    quality: Any  # .usable
    pose: Any  # .yaw
    mesh: Any  # None or .points (N, 3)
    landmarks_106: np.ndarray | None

KPS_COLORS = [(0, 255, 0), (0, 255, 0), (0, 0, 255), (255, 0, 255), (255, 0, 255)]  # BGR


def draw_faces(image: np.ndarray, faces: Sequence[DrawableFace]) -> np.ndarray:
    """A copy of a BGR image with boxes, face index, quality verdict, pose, 5 keypoints, mesh and
    106 landmarks drawn on it."""
    import cv2

    canvas = image.copy()
    scale = max(1.0, max(canvas.shape[:2]) / 800.0)
    thickness = max(1, int(round(scale)))
    for face in faces:
        x1, y1, x2, y2 = [int(round(v)) for v in face.bbox]
        box_color = (0, 200, 0) if face.quality.usable else (0, 140, 255)
        if face.mesh is not None:
            for x, y in face.mesh.points[:, :2].astype(int):
                cv2.circle(canvas, (int(x), int(y)), max(1, thickness // 2), (255, 200, 0), -1)
        if face.landmarks_106 is not None:
            for x, y in face.landmarks_106.astype(int):
                cv2.circle(canvas, (int(x), int(y)), thickness, (0, 255, 255), -1)
        for (x, y), color in zip(face.kps.astype(int), KPS_COLORS, strict=True):
            cv2.circle(canvas, (int(x), int(y)), 2 * thickness, color, -1)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), box_color, thickness + 1)
        label = f"#{face.index} {face.det_score:.2f} yaw {face.pose.yaw:+.0f}"
        cv2.putText(canvas, label, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * scale,
                    box_color, thickness, cv2.LINE_AA)
    return canvas


def save_drawing(image: np.ndarray, faces: Sequence[DrawableFace], out: str | os.PathLike) -> None:
    from PIL import Image

    drawn = draw_faces(image, faces)
    Image.fromarray(np.ascontiguousarray(drawn[:, :, ::-1])).save(out)
