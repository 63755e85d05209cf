"""Head pose (yaw, pitch, roll in degrees).

Sign convention (checked on mirrored photos in the tests): yaw > 0 when the face turns toward the
image's right, pitch > 0 when it tilts up, roll > 0 when it leans clockwise in the image.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class HeadPose:
    yaw: float
    pitch: float
    roll: float
    source: str  # "mesh" (MediaPipe transformation matrix) or "keypoints" (5-point estimate)

    def to_dict(self) -> dict[str, float | str]:
        data = asdict(self)
        for key in ("yaw", "pitch", "roll"):
            data[key] = round(float(data[key]), 2)
        return data


def pose_from_matrix(matrix: np.ndarray) -> HeadPose:
    """Euler angles from MediaPipe's facial transformation matrix (canonical face → camera).

    MediaPipe's canonical face looks down +z at the camera, y up, x to the subject's left.
    """
    rotation = np.asarray(matrix, dtype=np.float64)[:3, :3]
    # R = Ry(yaw) @ Rx(pitch) @ Rz(roll) decomposition.
    yaw = math.degrees(math.atan2(rotation[0, 2], rotation[2, 2]))
    pitch = math.degrees(math.asin(max(-1.0, min(1.0, -rotation[1, 2]))))
    roll = math.degrees(math.atan2(rotation[1, 0], rotation[1, 1]))
    return HeadPose(yaw=yaw, pitch=-pitch, roll=-roll, source="mesh")


def pose_from_keypoints(kps: np.ndarray) -> HeadPose:
    """Rough pose from SCRFD's 5 keypoints, used when the mesh is unavailable.

    Roll is the eye-line angle; yaw and pitch come from where the nose sits relative to the
    eyes and mouth (about ±45° at the extremes).
    """
    kps = np.asarray(kps, dtype=np.float64)
    left_eye, right_eye, nose, mouth_left, mouth_right = kps
    dx, dy = right_eye - left_eye
    roll = math.degrees(math.atan2(dy, dx))
    eye_mid = (left_eye + right_eye) / 2
    mouth_mid = (mouth_left + mouth_right) / 2
    eye_dist = max(float(np.hypot(dx, dy)), 1e-6)
    # Rotate into the face frame so roll doesn't leak into yaw and pitch.
    c, s = math.cos(math.radians(-roll)), math.sin(math.radians(-roll))
    rot = np.array([[c, -s], [s, c]])
    nose_rel = rot @ (nose - eye_mid)
    mouth_rel = rot @ (mouth_mid - eye_mid)
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, nose_rel[0] / (0.5 * eye_dist)))) / 2)
    face_height = max(float(mouth_rel[1]), 1e-6)
    # A frontal face has the nose tip ~55 % of the way from the eye line to the mouth.
    pitch = (0.55 - nose_rel[1] / face_height) * 90.0
    return HeadPose(yaw=yaw, pitch=pitch, roll=roll, source="keypoints")
