"""SCRFD face detection with 5 keypoints, retried at other scales before giving up."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# The detector input of the first pass: FIT sizes it to the image (each side rounded up to SCRFD's stride
# of 32, the long side at most MAX_FITTED_SIDE), so a 250x250 photo runs at 256x256, not upscaled to
# 640x640 (6x fewer pixels, same LFW accuracy), and a 512x768 output at 448x640, not letterboxed into
# 640x640. The later passes are the misses' schedule: 640 is insightface's standard size and also
# catches small faces in small images; smaller sizes catch faces that fill the frame (SCRFD's anchors
# top out near 1/2 of the input); the padded pass catches tight crops whose chin or forehead touch the
# border; the last pass lowers the score threshold for faint, blurred or dark faces.
FIT = 0
MAX_FITTED_SIDE = 640
STRIDE = 32
DEFAULT_ATTEMPTS: tuple[tuple[int, float, float], ...] = (
    # (det size (FIT: fitted to the image), score threshold, padding as a fraction of the longer side)
    (FIT, 0.5, 0.0),
    (640, 0.5, 0.0),
    (320, 0.5, 0.0),
    (640, 0.5, 0.5),
    (160, 0.4, 0.0),
    (640, 0.3, 0.25),
)

# The fewest pixels the short side of an image may have once scaled into the detector's input.
MIN_SCALED_SIDE = 2


@dataclass
class Detection:
    """One detected face: box (x1, y1, x2, y2), 5 keypoints (eyes, nose, mouth corners), score."""

    bbox: np.ndarray
    kps: np.ndarray
    score: float
    attempt: int = 0  # which pass of the retry schedule found it (0 = the first)

    @property
    def width(self) -> float:
        return float(self.bbox[2] - self.bbox[0])

    @property
    def height(self) -> float:
        return float(self.bbox[3] - self.bbox[1])

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        return float(self.bbox[0] + self.bbox[2]) / 2, float(self.bbox[1] + self.bbox[3]) / 2


def pad_to_aspect(image: np.ndarray, size: int) -> np.ndarray:
    """Black rows or columns after the short side of an extremely elongated image (640x2, 20000x20), so
    that fitting its long side into size x size leaves the short side at least MIN_SCALED_SIDE pixels:
    SCRFD's resize asserts on a side that rounds to 0. Padding at the end keeps every coordinate."""
    height, width = image.shape[:2]
    short = max(height, width) * MIN_SCALED_SIDE // size + 1
    if min(height, width) >= short:
        return image
    rows, cols = max(short - height, 0), max(short - width, 0)
    return np.pad(image, ((0, rows), (0, cols), (0, 0)))


def fitted_input_size(shape: tuple[int, ...], max_side: int = MAX_FITTED_SIDE) -> tuple[int, int]:
    """(width, height) of the detector input for an image of `shape`: its own size, scaled down so the
    long side is at most `max_side`, each side rounded up to a multiple of SCRFD's stride."""
    height, width = shape[:2]
    scale = min(1.0, max_side / max(height, width))

    def rounded(side: float) -> int:
        return min(max_side, max(STRIDE, -(-int(np.ceil(side * scale)) // STRIDE) * STRIDE))

    return rounded(width), rounded(height)


class FaceDetector:
    """Wraps insightface's SCRFD model (from `ModelPack.model("detection")`)."""

    def __init__(self, model: Any, attempts: Sequence[tuple[int, float, float]] = DEFAULT_ATTEMPTS,
                 nms_threshold: float = 0.4) -> None:
        self.model = model
        self.attempts = tuple(attempts)
        # insightface 0.7.x print()s "det_size is already set" on stdout when a second detector wraps the same
        # model object (a pack's models are shared): stdout is for --json output.
        with contextlib.redirect_stdout(io.StringIO()):
            self.model.prepare(0, input_size=(640, 640), det_thresh=0.5, nms_thresh=nms_threshold)

    @classmethod
    def from_pretrained(cls, pack: Any = None, **kwargs: Any) -> FaceDetector:
        from .model_pack import ModelPack

        pack = pack if isinstance(pack, ModelPack) else ModelPack.from_pretrained(pack)
        return cls(pack.model("detection"), **kwargs)

    def input_size(self, image: np.ndarray, size: int) -> tuple[int, int]:
        """(width, height) the detector runs at for `size` (FIT: fitted to the image)."""
        return fitted_input_size(image.shape) if size == FIT else (size, size)

    def _run(self, image: np.ndarray, size: int, threshold: float, pad: float) -> list[Detection]:
        offset = 0
        if pad > 0:
            # A fraction of the long side, at most twice the short one: the same for photos up to 4:1, and a
            # 20000x20 strip gets a 40-pixel border, not a 2.4 GB canvas.
            offset = int(round(min(max(image.shape[:2]) * pad, 2 * min(image.shape[:2]))))
            image = np.pad(image, ((offset, offset), (offset, offset), (0, 0)), mode="edge")
        input_size = self.input_size(image, size)
        image = pad_to_aspect(image, max(input_size))
        # An attribute, not detect(det_thresh=...), so insightface 0.7.x works too.
        self.model.det_thresh = threshold
        boxes, kpss = self.model.detect(image, input_size=input_size)
        detections = []
        for i in range(boxes.shape[0]):
            bbox = boxes[i, :4].astype(np.float32) - offset
            kps = kpss[i].astype(np.float32) - offset
            detections.append(Detection(bbox=bbox, kps=kps, score=float(boxes[i, 4])))
        return detections

    def detect(self, image: np.ndarray, *, retry: bool = True) -> list[Detection]:
        """Faces in a BGR image, largest first. Returns [] only after every retry pass failed."""
        attempts = self.attempts if retry else self.attempts[:1]
        tried: set[tuple[tuple[int, int], float, float]] = set()
        for attempt, (size, threshold, pad) in enumerate(attempts):
            if pad == 0:  # a pass identical to one already run (a 900x900 photo fits at 640x640) is skipped
                key = (self.input_size(image, size), threshold, pad)
                if key in tried:
                    continue
                tried.add(key)
            detections = self._run(image, size, threshold, pad)
            if detections:
                for detection in detections:
                    detection.attempt = attempt
                return sorted(detections, key=lambda d: d.area, reverse=True)
        return []


def select_face(detections: Sequence[Detection], image_shape: tuple[int, ...],
                policy: str = "largest") -> int:
    """Index of the face a single-face operation should use.

    `largest` picks the biggest box; `center` prefers big faces near the image centre, the way
    insightface ranks faces (and the way LFW-style photos are framed).
    """
    if not detections:
        raise ValueError("no detections")
    if policy == "largest":
        return int(np.argmax([d.area for d in detections]))
    if policy == "center":
        cy, cx = image_shape[0] / 2, image_shape[1] / 2
        values = [d.area - 2.0 * ((d.center[0] - cx) ** 2 + (d.center[1] - cy) ** 2) for d in detections]
        return int(np.argmax(values))
    raise ValueError(f"unknown face selection policy '{policy}'")
