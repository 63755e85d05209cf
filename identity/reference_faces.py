"""dlib descriptors of a stored character's references, for `score`/`identify --scorer dlib|fused`.

The store keeps ArcFace vectors and, per reference, an aligned face crop (identity/crops.py); dlib needs
pixels. A reference is described from its stored crop: SCRFD finds the face in it (the one nearest the
crop's centre) and dlib describes it as in any photo. A reference stored before crops were kept falls back
to its original photo at `source_path`, checked against its stored sha256 (an edited or replaced file
would describe another face) and described at its stored SCRFD box; without either it is one clear error.

Crop or photo: on 14 real photos the two descriptors of a face differ by a Euclidean 0.03–0.21 (mean 0.09;
the largest on tight, hard-pose photos whose crop has black margins); such a difference is mostly
orthogonal to the genuine-pair difference (about 0.4), so distances to a query barely move, and the crop
keeps a character's score independent of where its photos are now.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageError, StoreError
from ..utils import file_sha256
from .references import MIN_WEIGHT


def _unavailable(name: str, path: str, reason: str) -> StoreError:
    return StoreError(f"{reason}: the dlib and fused scorers need a stored face crop or the reference photos of "
                      f"'{name}' (`castkeep reembed` stores crops); use --scorer arcface", path=path)


class ReferenceDescriptors:
    """Describes characters' references with a `DlibRecogniser`, each reference once per instance.
    `detector` (castkeep's SCRFD `FaceDetector`) finds the face in stored crops."""

    def __init__(self, recogniser: Any, detector: Any) -> None:
        self.recogniser = recogniser
        self.detector = detector
        self._seen: dict[tuple[str, tuple[float, ...]], np.ndarray] = {}

    def _from_crop(self, crop: Any) -> np.ndarray | None:
        from ..landmarks.detection import select_face

        pixels = crop.pixels()
        detections = self.detector.detect(pixels)
        if not detections:
            return None
        chosen = detections[select_face(detections, pixels.shape, "center")]
        return self.recogniser.describe(pixels, [chosen.bbox])[0]

    def _from_photo(self, name: str, reference: Any) -> np.ndarray:
        from ..landmarks.images import load_image

        path = Path(reference.source_path)
        if not path.is_file():
            raise _unavailable(name, reference.source_path, "reference photo not found and no face crop stored")
        if file_sha256(path) != reference.sha256:
            raise _unavailable(name, reference.source_path, "reference photo changed since it was registered "
                                                            "and no face crop stored")
        try:
            image = load_image(path)
        except ImageError as exc:
            raise _unavailable(name, reference.source_path, f"reference photo unreadable ({exc})") from None
        return self.recogniser.describe(image, [reference.bbox])[0]

    def of_reference(self, name: str, reference: Any) -> np.ndarray:
        key = (reference.sha256, tuple(reference.bbox))
        if key not in self._seen:
            described = None if reference.crop is None else self._from_crop(reference.crop)
            self._seen[key] = described if described is not None else self._from_photo(name, reference)
        return self._seen[key]

    def of_character(self, character: Any) -> np.ndarray:
        """The character's dlib descriptor: the quality-weighted mean of its references' (the same
        weights as its ArcFace vector; dlib descriptors are compared by distance, so not renormalised).
        Pass a character read with its crops (`store.get(name, crops=True)`)."""
        if not character.references:
            raise StoreError(f"character '{character.name}' has no references to describe with dlib")
        descriptors = np.stack([self.of_reference(character.name, r) for r in character.references])
        weights = np.maximum(np.array([r.quality for r in character.references], dtype=np.float64), MIN_WEIGHT)
        return ((weights[:, None] * descriptors).sum(axis=0) / weights.sum()).astype(np.float32)
