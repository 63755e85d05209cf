"""Per-face quality report: is this face good enough to register as a reference?"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .pose import HeadPose


@dataclass(frozen=True)
class QualityThresholds:
    min_face_px: float = 48.0      # shorter side of the face box, in source pixels
    min_det_score: float = 0.5     # SCRFD confidence
    min_sharpness: float = 30.0    # variance of the Laplacian on the 112x112 aligned crop
    max_abs_yaw: float = 60.0      # degrees; ArcFace degrades fast past profile-ish poses
    max_abs_pitch: float = 40.0


@dataclass
class QualityReport:
    face_px: float
    det_score: float
    sharpness: float
    yaw: float
    pitch: float
    score: float                 # 0..1, used to weight references
    usable: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str | None:
        return "; ".join(self.reasons) if self.reasons else None

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        for key in ("face_px", "det_score", "sharpness", "yaw", "pitch", "score"):
            data[key] = round(float(data[key]), 3)
        data["reason"] = self.reason
        return data


def sharpness(aligned_bgr: np.ndarray) -> float:
    """Variance of the Laplacian of the aligned face: low means blurred."""
    import cv2

    gray = cv2.cvtColor(aligned_bgr, cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def assess(face_px: float, det_score: float, aligned_bgr: np.ndarray, pose: HeadPose,
           thresholds: QualityThresholds = QualityThresholds()) -> QualityReport:
    sharp = sharpness(aligned_bgr)
    reasons = []
    if face_px < thresholds.min_face_px:
        reasons.append(f"face too small ({face_px:.0f} px < {thresholds.min_face_px:.0f})")
    if det_score < thresholds.min_det_score:
        reasons.append(f"low detector confidence ({det_score:.2f} < {thresholds.min_det_score})")
    if sharp < thresholds.min_sharpness:
        reasons.append(f"blurred (sharpness {sharp:.0f} < {thresholds.min_sharpness:.0f})")
    if abs(pose.yaw) > thresholds.max_abs_yaw:
        reasons.append(f"turned too far (yaw {pose.yaw:.0f}°)")
    if abs(pose.pitch) > thresholds.max_abs_pitch:
        reasons.append(f"tilted too far (pitch {pose.pitch:.0f}°)")
    # Each factor saturates at a comfortable level; the product punishes any single weakness.
    factors = [
        min(1.0, face_px / (2 * thresholds.min_face_px)),
        min(1.0, det_score / 0.8),
        min(1.0, sharp / (3 * thresholds.min_sharpness)),
        max(0.0, 1.0 - (abs(pose.yaw) / 90.0) ** 2),
        max(0.0, 1.0 - (abs(pose.pitch) / 90.0) ** 2),
    ]
    score = float(np.prod(factors))
    return QualityReport(face_px=face_px, det_score=det_score, sharpness=sharp, yaw=pose.yaw,
                         pitch=pose.pitch, score=score, usable=not reasons, reasons=reasons)
