"""The two face pipelines the benchmarks compare, on the same model pack.

- `CastkeepPipeline`: castkeep's FaceAnalyzer fast path (SCRFD with retries, ArcFace). For
  verification it detects once per image and derives the four variants {largest, center face} x
  {flip TTA off, on} from that one detection, bit-identical to what
  `FaceAnalyzer(selection=..., flip=...).embed(image)` returns (a test checks this).
- `InsightFaceBaseline`: insightface's own `FaceAnalysis` (detection + recognition modules only,
  det_size 640, one pass, the face insightface ranks first with `max_num=1`: big and central).
"""

from __future__ import annotations

import contextlib
import io
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageError
from ..identity.embedder import align_face, l2_normalize
from ..landmarks.detection import select_face
from ..landmarks.images import load_image

SELECTIONS = ("center", "largest")


def variant_name(selection: str, flip: bool) -> str:
    return f"{selection}+flip" if flip else selection


@dataclass
class ImageEmbeddings:
    """What one pipeline got from one image. `embeddings` is empty when no face was found."""

    path: Path
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    descriptors: dict[str, np.ndarray] = field(default_factory=dict)  # dlib, per face choice (with a recogniser)
    faces: int = 0
    attempt: int | None = None     # castkeep: which detection pass found the face (0 = first)
    error: str | None = None       # unreadable image
    seconds: float = 0.0


class CastkeepPipeline:
    """With a `DlibRecogniser`, each chosen face also gets its dlib descriptor (same detection)."""

    name = "castkeep"

    def __init__(self, pack: Any, recogniser: Any = None) -> None:
        from ..identity.analyzer import FaceAnalyzer

        self.analyzer = FaceAnalyzer(pack, dense=False, landmarks_106=False)
        self.recogniser = recogniser

    def analyze(self, path: Path) -> int:
        """The full fast-path analysis of one image (every face embedded); returns the face count."""
        return len(self.analyzer.analyze(path).faces)

    def analyze_all(self, paths: list[Path]) -> int:
        """Every image analysed as one batch (how a folder is processed); returns the face count."""
        return sum(len(r.analysis.faces) for r in self.analyzer.analyze_many(paths) if r.analysis is not None)

    def variants(self, path: Path) -> ImageEmbeddings:
        result = ImageEmbeddings(path=path)
        start = time.perf_counter()
        try:
            image = load_image(path)
        except ImageError as exc:
            result.error = str(exc)
            return result
        detections = self.analyzer.detector.detect(image)
        result.faces = len(detections)
        if detections:
            result.attempt = detections[0].attempt
            embedder = self.analyzer.embedder
            chosen = {s: select_face(detections, image.shape, s) for s in SELECTIONS}
            for index in sorted(set(chosen.values())):
                crop = align_face(image, detections[index].kps, embedder.input_size)
                plain, mirrored = embedder.embed_aligned([crop, np.ascontiguousarray(crop[:, ::-1])], flip=False)
                flipped = l2_normalize(plain + mirrored)
                descriptor = (None if self.recogniser is None
                              else self.recogniser.describe(image, [detections[index].bbox])[0])
                for selection, picked in chosen.items():
                    if picked == index:
                        result.embeddings[variant_name(selection, False)] = plain
                        result.embeddings[variant_name(selection, True)] = flipped
                        if descriptor is not None:
                            result.descriptors[selection] = descriptor
        result.seconds = time.perf_counter() - start
        return result


class InsightFaceBaseline:
    name = "insightface"
    variant = "insightface"

    def __init__(self, pack_dir: str | os.PathLike, device: str = "cpu") -> None:
        from insightface.app import FaceAnalysis

        from ..landmarks.model_pack import select_providers

        # The same providers castkeep's side gets (CUDA only where onnxruntime has it).
        providers = select_providers("cpu" if device == "cpu" else "auto")
        # insightface 0.7.x print()s each model it finds, skips and prepares on stdout (it would corrupt
        # `bench --json`); nothing there that the result does not record.
        with contextlib.redirect_stdout(io.StringIO()):
            self.app = FaceAnalysis(name=os.fspath(pack_dir), allowed_modules=["detection", "recognition"],
                                    providers=providers)
            # det_size explicitly: insightface 2.x otherwise uses a multi-scale default.
            self.app.prepare(ctx_id=0 if providers[0].startswith("CUDA") else -1, det_size=(640, 640))

    @staticmethod
    def _read(path: Path) -> np.ndarray | None:
        import cv2

        return cv2.imread(os.fspath(path))

    def analyze(self, path: Path) -> int:
        image = self._read(path)
        if image is None:
            return 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return len(self.app.get(image))

    def analyze_all(self, paths: list[Path]) -> int:
        return sum(self.analyze(path) for path in paths)

    def variants(self, path: Path) -> ImageEmbeddings:
        result = ImageEmbeddings(path=path)
        start = time.perf_counter()
        image = self._read(path)
        if image is None:
            result.error = f"{path}: OpenCV cannot read this image"
            return result
        with warnings.catch_warnings():
            # insightface's norm_crop calls a scikit-image API deprecated upstream; result unchanged.
            warnings.simplefilter("ignore", FutureWarning)
            faces = self.app.get(image, max_num=1)
        result.faces = len(faces)
        if faces:
            result.embeddings[self.variant] = np.asarray(faces[0].normed_embedding, dtype=np.float32)
        result.seconds = time.perf_counter() - start
        return result
