"""Per-face quality report: is this face good enough to register as a reference?

The gate refuses a face only where ArcFace embeddings really degrade, and warns in a band above. Measured with
`python -m castkeep.benchmarks.quality_gate FACES/lfw_gallery --people 139 --probes 2` (buffalo_s_lite, no
dense landmarks): each probe photo against its person's reference (the quality-weighted vector of their other
photos, clean), degraded synthetically; genuine = probe vs own reference (median, 10th percentile), TAR = share
of probes at or above the 0.27 same-person threshold (an undetected face counts as a miss), FAR = probe vs the
138 other people's references at or above 0.27. Clean LFW photos (faces 60-150 px box side, sharpness 20-400):
genuine median 0.73, p10 0.61, TAR 0.99-1.00, FAR 0.0008.

    face box side (whole photo downscaled)      Gaussian blur of the photo (faces ~93 px)
    px  sharp  det   gen.med  p10   TAR         sigma  sharp  gen.med  p10   TAR
     8     6   0.80   0.22   0.10  0.20         1.0     51    0.73   0.61  0.99
    10     8   0.94   0.32   0.21  0.66         1.5     28    0.71   0.59  0.99
    12    10   0.99   0.41   0.29  0.93         2.0     17    0.68   0.54  0.99
    14    13   0.99   0.47   0.35  0.97         2.5     12    0.63   0.50  1.00
    16    16   1.00   0.52   0.40  0.99         3.0      9    0.58   0.44  1.00
    20    23   1.00   0.59   0.48  0.99         4.0      6    0.47   0.33  0.97
    24    30   1.00   0.65   0.53  0.99         5.0      4    0.37   0.25  0.83
    32    44   1.00   0.70   0.59  0.99         6.0      4    0.28   0.16  0.55
    48    69   1.00   0.73   0.61  0.99         8.0      3    0.18   0.06  0.12

FAR stays at or below the clean photos' 0.0008 at every level: degraded faces lose their likeness to their own
person rather than gaining one to others, so the cost of a poor reference is a character that its own later
photos match less well. Refused: faces under 16 px (from 14 px down the 10th percentile of genuine cosines
nears the threshold and the detector starts to miss faces) and sharpness under 5 (sigma 5: TAR 0.83). Warned:
faces under 32 px and sharpness under 15, where the median genuine cosine has lost 0.03-0.10 of its clean 0.73.
Sharpness is the variance of the Laplacian of the 112x112 aligned crop, so it also falls with face size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .pose import HeadPose

# A reference's weight in its character's vector saturates at these (kept from before the measured gate, so
# stored weights keep their meaning).
FULL_WEIGHT_FACE_PX = 96.0
FULL_WEIGHT_SHARPNESS = 90.0


@dataclass(frozen=True)
class QualityThresholds:
    """Below a `min_` value a face is refused as a reference; below a `warn_` value it is kept with a warning."""

    min_face_px: float = 16.0      # shorter side of the face box, in source pixels
    warn_face_px: float = 32.0
    min_det_score: float = 0.5     # SCRFD confidence
    min_sharpness: float = 5.0     # variance of the Laplacian on the 112x112 aligned crop
    warn_sharpness: float = 15.0
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
    reasons: list[str] = field(default_factory=list)     # why it is refused
    warnings: list[str] = field(default_factory=list)    # borderline: kept, but worth replacing

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
    reasons, warnings = [], []
    if face_px < thresholds.min_face_px:
        reasons.append(f"face too small ({face_px:.0f} px < {thresholds.min_face_px:.0f})")
    elif face_px < thresholds.warn_face_px:
        warnings.append(f"small face ({face_px:.0f} px < {thresholds.warn_face_px:.0f}): "
                        f"its embedding is less reliable")
    if det_score < thresholds.min_det_score:
        reasons.append(f"low detector confidence ({det_score:.2f} < {thresholds.min_det_score})")
    if sharp < thresholds.min_sharpness:
        reasons.append(f"blurred (sharpness {sharp:.1f} < {thresholds.min_sharpness:g})")
    elif sharp < thresholds.warn_sharpness:
        warnings.append(f"slightly blurred (sharpness {sharp:.0f} < {thresholds.warn_sharpness:g}): "
                        f"its embedding is less reliable")
    if abs(pose.yaw) > thresholds.max_abs_yaw:
        reasons.append(f"turned too far (yaw {pose.yaw:.0f}°)")
    if abs(pose.pitch) > thresholds.max_abs_pitch:
        reasons.append(f"tilted too far (pitch {pose.pitch:.0f}°)")
    # Each factor saturates at a comfortable level; the product punishes any single weakness.
    factors = [
        min(1.0, face_px / FULL_WEIGHT_FACE_PX),
        min(1.0, det_score / 0.8),
        min(1.0, sharp / FULL_WEIGHT_SHARPNESS),
        max(0.0, 1.0 - (abs(pose.yaw) / 90.0) ** 2),
        max(0.0, 1.0 - (abs(pose.pitch) / 90.0) ** 2),
    ]
    score = float(np.prod(factors))
    return QualityReport(face_px=face_px, det_score=det_score, sharpness=sharp, yaw=pose.yaw,
                         pitch=pose.pitch, score=score, usable=not reasons, reasons=reasons,
                         warnings=warnings)
