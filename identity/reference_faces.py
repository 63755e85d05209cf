"""dlib descriptors of a stored character's references, for `score`/`identify --scorer dlib|fused`.

The store keeps ArcFace vectors, not faces, and dlib needs pixels. Until the store keeps each reference's
aligned face crop, the photo is re-read from its `source_path`, checked against its stored sha256 (an
edited or replaced file would describe another face), and described at its stored SCRFD box. This module
is the one place to change when stored crops arrive.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageError, StoreError
from ..utils import file_sha256
from .references import MIN_WEIGHT


def _unavailable(name: str, path: str, reason: str) -> StoreError:
    return StoreError(f"{reason}: the dlib and fused scorers re-read the reference photos of '{name}' "
                      f"(the store keeps no face crops yet); use --scorer arcface", path=path)


class ReferenceDescriptors:
    """Describes characters' references with a `DlibRecogniser`, each photo once per instance."""

    def __init__(self, recogniser: Any) -> None:
        self.recogniser = recogniser
        self._seen: dict[tuple[str, tuple[float, ...]], np.ndarray] = {}

    def of_reference(self, name: str, reference: Any) -> np.ndarray:
        from ..landmarks.images import load_image

        key = (reference.sha256, tuple(reference.bbox))
        if key not in self._seen:
            path = Path(reference.source_path)
            if not path.is_file():
                raise _unavailable(name, reference.source_path, "reference photo not found")
            if file_sha256(path) != reference.sha256:
                raise _unavailable(name, reference.source_path, "reference photo changed since it was registered")
            try:
                image = load_image(path)
            except ImageError as exc:
                raise _unavailable(name, reference.source_path, f"reference photo unreadable ({exc})") from None
            self._seen[key] = self.recogniser.describe(image, [reference.bbox])[0]
        return self._seen[key]

    def of_character(self, character: Any) -> np.ndarray:
        """The character's dlib descriptor: the quality-weighted mean of its references' (the same
        weights as its ArcFace vector; dlib descriptors are compared by distance, so not renormalised)."""
        if not character.references:
            raise StoreError(f"character '{character.name}' has no references to describe with dlib")
        descriptors = np.stack([self.of_reference(character.name, r) for r in character.references])
        weights = np.maximum(np.array([r.quality for r in character.references], dtype=np.float64), MIN_WEIGHT)
        return ((weights[:, None] * descriptors).sum(axis=0) / weights.sum()).astype(np.float32)
