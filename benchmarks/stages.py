"""Where the time of one image goes: each stage of castkeep's face pipeline timed on its own, image by image.

The stages are what `FaceAnalyzer`, the scorers and registration run: decode, SCRFD detection (with the
retry schedule), ArcFace alignment and embedding, the flip pass, MediaPipe's dense mesh, insightface's
106 points and dlib's descriptor. Each is also timed the way it used to run (PIL decode, a first
detection pass at 640x640, one model run per crop) so the report shows what each change bought.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CastkeepError
from ..identity.embedder import align_face
from ..landmarks.images import load_image, load_pil
from ..utils import Progress, no_progress


def _decode_pil(path: Path) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(load_pil(path))[:, :, ::-1])


class StageClock:
    """Milliseconds per stage, summed over images (`mean_ms` divides by the images timed)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.images = 0

    def time(self, stage: str, work: Callable[..., Any], *args: Any) -> Any:
        start = time.perf_counter()
        result = work(*args)
        self.totals[stage] = self.totals.get(stage, 0.0) + (time.perf_counter() - start) * 1000
        return result

    def mean_ms(self) -> dict[str, float]:
        return {stage: total / max(self.images, 1) for stage, total in self.totals.items()}


def stage_breakdown(images: list[Path], analyzer: Any, *, recogniser: Any = None, landmarker: Any = None,
                    landmarks_106: Any = None, progress: Progress = no_progress) -> dict[str, Any]:
    """Mean milliseconds per image of every stage (per image, not per face: an image with two faces
    counts both). `recogniser` (dlib), `landmarker` (MediaPipe) and `landmarks_106` (insightface's
    106-point model) are timed when given. Unreadable images and images without a face are skipped."""
    clock = StageClock()
    detector, embedder = analyzer.detector, analyzer.embedder
    faces = 0
    for path in progress(images, label="stages", total=len(images)):
        try:
            image = clock.time("decode", load_image, path)
        except CastkeepError:
            continue
        clock.time("decode_pil", _decode_pil, path)
        detections = clock.time("detect", detector.detect, image)
        clock.time("detect_640", detector._run, image, 640, 0.5, 0.0)
        if not detections:
            continue
        clock.images += 1
        faces += len(detections)
        boxes = [d.bbox for d in detections]
        crops = clock.time("align", _align, image, detections, embedder.input_size)
        clock.time("embed", embedder.embed_aligned, crops, False)
        clock.time("embed_one_run_per_crop", _each, lambda crop: embedder.embed_aligned([crop], False), crops)
        clock.time("embed_with_flip", embedder.embed_aligned, crops, True)
        if landmarker is not None:
            clock.time("dense_mesh", _each, partial(landmarker.detect, image), boxes)
        if landmarks_106 is not None:
            clock.time("landmarks_106", _each, partial(landmarks_106, image), detections)
        if recogniser is not None:
            clock.time("dlib_chip", _each, partial(recogniser.chip, image), boxes)
            clock.time("dlib", recogniser.describe, image, boxes)  # chip + network
    means = clock.mean_ms()
    pipeline = ("decode", "detect", "align", "embed")
    return {
        "images": clock.images,
        "faces": faces,
        "ms_per_image": {stage: round(value, 3) for stage, value in means.items()},
        "fast_path_ms": round(sum(means.get(stage, 0.0) for stage in pipeline), 3),
        "stages_of_fast_path": list(pipeline),
        "reference_stages": {"decode": "decode_pil", "detect": "detect_640", "embed": "embed_one_run_per_crop"},
    }


def _align(image: np.ndarray, detections: list[Any], size: int) -> list[np.ndarray]:
    return [align_face(image, d.kps, size) for d in detections]


def _each(work: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    return [work(item) for item in items]


def stage_text(stages: dict[str, Any]) -> str:
    from .report import table

    ms = stages["ms_per_image"]
    rows = [[stage, value] for stage, value in ms.items()]
    return (f"stages ({stages['images']} images, {stages['faces']} faces; ms per image, one image at a time):\n"
            + table(rows, ["stage", "ms/image"]))
