"""Embedding stored references with another model pack: the work `Store.reembed` does before it
takes the store's write lock.

A reference is embedded from its stored face crop (no original photo needed). A reference without
a crop (stored by a version-1 store) is re-read from its `source_path` when that file still exists
with the same sha256: the registered face is found again by its box, and its crop is kept from now
on. Otherwise it is reported, and the character keeps the spaces it has.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CastkeepError
from ..utils import file_sha256
from .characters import Character, Reference
from .crops import FaceCrop

# The registered face is the detection that overlaps its stored box at least this much (IoU).
MIN_BOX_OVERLAP = 0.5


@dataclass
class CharacterReembedding:
    """What re-embedding did for one character."""

    name: str
    references: int
    from_crops: int = 0
    from_photos: int = 0
    already: int = 0  # references that had an embedding in this space before
    missing: list[dict[str, str]] = field(default_factory=list)  # {"source_path", "reason"}

    @property
    def embedded(self) -> int:
        return self.from_crops + self.from_photos

    @property
    def complete(self) -> bool:
        return not self.missing

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "references": self.references, "embedded": self.embedded,
                "from_crops": self.from_crops, "from_photos": self.from_photos, "already": self.already,
                "complete": self.complete, "missing": self.missing}


@dataclass
class ReembedReport:
    """`Store.reembed`'s result: the space added to (fingerprint, pack) and each character's outcome."""

    fingerprint: str
    pack: str
    characters: list[CharacterReembedding] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return all(c.complete for c in self.characters)

    def to_dict(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "pack": self.pack, "complete": self.complete,
                "characters": [c.to_dict() for c in self.characters]}


@dataclass
class PendingSpace:
    """New embeddings of one character's references in one space, not yet stored."""

    outcome: CharacterReembedding
    embeddings: dict[int, np.ndarray] = field(default_factory=dict)  # reference id -> embedding
    new_crops: dict[int, FaceCrop] = field(default_factory=dict)     # crops made from source photos


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def crop_from_photo(detector: Any, reference: Reference) -> tuple[FaceCrop | None, str]:
    """The crop of a reference re-made from its original photo, or (None, why it cannot be)."""
    from ..landmarks.images import load_image

    path = Path(reference.source_path)
    if not path.is_file():
        return None, "no stored face crop, and the original photo is not there any more"
    try:
        if file_sha256(path) != reference.sha256:
            return None, "no stored face crop, and the original photo has changed (sha256 differs)"
        image = load_image(path)
    except (OSError, CastkeepError) as exc:
        return None, f"no stored face crop, and the original photo cannot be read ({exc})"
    stored_box = np.asarray(reference.bbox, dtype=np.float64)
    overlaps = [(_iou(np.asarray(d.bbox, dtype=np.float64), stored_box), d) for d in detector.detect(image)]
    best = max(overlaps, key=lambda pair: pair[0], default=None)
    if best is None or best[0] < MIN_BOX_OVERLAP:
        return None, "no stored face crop, and the registered face is not found again in the original photo"
    return FaceCrop.from_photo(image, best[1].kps), ""


def embed_character(character: Character, fingerprint: str, embedder: Any,
                    detector: Callable[[], Any], progress: Callable[[Any], Any] | None = None) -> PendingSpace:
    """Embed the references of `character` that lack space `fingerprint`. `detector()` gives the
    face detector for references without a crop (made only when one needs it)."""
    outcome = CharacterReembedding(name=character.name, references=len(character.references))
    pending = PendingSpace(outcome)
    todo = [r for r in character.references if fingerprint not in r.embeddings]
    outcome.already = len(character.references) - len(todo)
    crops: dict[int, FaceCrop] = {}
    for reference in (progress(todo) if progress is not None and todo else todo):
        assert reference.id is not None  # stored references
        crop = reference.crop
        if crop is None:
            crop, reason = crop_from_photo(detector(), reference)
            if crop is None:
                outcome.missing.append({"source_path": reference.source_path, "reason": reason})
                continue
            pending.new_crops[reference.id] = crop
            outcome.from_photos += 1
        else:
            outcome.from_crops += 1
        crops[reference.id] = crop
    if crops:
        vectors = embedder.embed_aligned([c.aligned(embedder.input_size) for c in crops.values()])
        pending.embeddings = dict(zip(crops, vectors, strict=True))
    return pending
