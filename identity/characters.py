"""The records a store holds and returns: characters, their references and embedding spaces, and
search results.

A character is embedded in one or more *spaces*, one per recogniser (model fingerprint). The store's
own fingerprint is the character's primary space: `vector`, `baseline` and each reference's
`embedding` are that space; `spaces` and `Reference.embeddings` hold every space, primary included.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import StoreError, UnknownSpaceError
from ..landmarks.model_pack import same_space
from .crops import FaceCrop
from .references import baseline_of, combine
from .vectors import encode_vector

# Head-yaw ranges reported by `show` (degrees; > 0 = face turned toward the image's right).
YAW_BINS = (("far left", -90.0, -45.0), ("left", -45.0, -15.0), ("frontal", -15.0, 15.0),
            ("right", 15.0, 45.0), ("far right", 45.0, 90.0))


@dataclass
class Reference:
    sha256: str
    source_path: str
    embedding: np.ndarray
    quality: float
    det_score: float
    bbox: list[float]
    face_index: int | None
    pose: dict[str, Any]
    quality_report: dict[str, Any]
    fingerprint: str
    flagged: bool = False
    added_at: str = ""
    id: int | None = None
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # fingerprint -> embedding
    crop: FaceCrop | None = None  # the aligned face; read from a store only when asked for
    has_crop: bool = False        # whether the store holds a crop (also when `crop` was not read)

    def __post_init__(self) -> None:
        self.embeddings.setdefault(self.fingerprint, self.embedding)
        self.has_crop = self.has_crop or self.crop is not None

    @property
    def yaw(self) -> float | None:
        return self.pose.get("yaw")

    def rename_space(self, old: str, new: str) -> None:
        """Spell space `old` as `new` (the same recogniser weights under another pack folder's name)."""
        self.embeddings = {new if f == old else f: e for f, e in self.embeddings.items()}
        if self.fingerprint == old:
            self.fingerprint = new

    def to_dict(self, *, include_embedding: bool = False) -> dict[str, Any]:
        data = {"sha256": self.sha256, "source_path": self.source_path, "face_index": self.face_index,
                "bbox": [round(float(v), 1) for v in self.bbox], "det_score": round(self.det_score, 4),
                "quality": round(self.quality, 4), "quality_report": self.quality_report,
                "pose": self.pose, "flagged": self.flagged, "added_at": self.added_at,
                "fingerprint": self.fingerprint, "spaces": list(self.embeddings), "crop": self.has_crop}
        if include_embedding:
            data["embedding"] = encode_vector(self.embedding)
        return data


def pack_of(fingerprint: str) -> str:
    """The model pack name in a fingerprint `pack:recognition-file:sha256-prefix`."""
    return fingerprint.rsplit(":", 2)[0]


@dataclass
class Space:
    """A character in one recogniser's embedding space: the vector combined from its references
    embedded there (`references` of them; fewer than the character has when some could not be)."""

    fingerprint: str
    vector: np.ndarray
    baseline: dict[str, Any]
    references: int

    @property
    def pack(self) -> str:
        return pack_of(self.fingerprint)

    @property
    def dim(self) -> int:
        return int(self.vector.size)

    @classmethod
    def fit(cls, fingerprint: str, embeddings: np.ndarray, weights: np.ndarray) -> Space:
        return cls(fingerprint, combine(embeddings, weights), baseline_of(embeddings, weights), len(embeddings))

    def to_dict(self, *, primary: bool = False, of: int | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"fingerprint": self.fingerprint, "pack": self.pack, "dim": self.dim,
                                "references": self.references, "primary": primary}
        if of is not None:
            data["complete"] = self.references == of
        return data


@dataclass
class Character:
    name: str
    vector: np.ndarray
    fingerprint: str
    description: str = ""
    tags: list[str] = field(default_factory=list)
    references: list[Reference] = field(default_factory=list)
    baseline: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    updated_at: str = ""
    id: int | None = None
    warnings: list[str] = field(default_factory=list)  # from the call that returned it, not stored
    spaces: dict[str, Space] = field(default_factory=dict)  # fingerprint -> space, primary included

    def __post_init__(self) -> None:
        if self.fingerprint not in self.spaces:
            self.spaces[self.fingerprint] = Space(self.fingerprint, self.vector, self.baseline,
                                                  len(self.references))

    def refit(self) -> None:
        """Every space's vector and baseline from the references embedded in it."""
        spaces = {}
        for fingerprint in dict.fromkeys(f for r in self.references for f in r.embeddings):
            embedded = [r for r in self.references if fingerprint in r.embeddings]
            spaces[fingerprint] = Space.fit(fingerprint, np.stack([r.embeddings[fingerprint] for r in embedded]),
                                            np.array([r.quality for r in embedded]))
        self.spaces = spaces
        self.vector, self.baseline = spaces[self.fingerprint].vector, spaces[self.fingerprint].baseline

    def rename_space(self, old: str, new: str) -> None:
        """Spell space `old` as `new` everywhere (the same recogniser weights under another pack folder's
        name): a store keeps one spelling per space, its own."""
        for reference in self.references:
            reference.rename_space(old, new)
        self.spaces = {new if f == old else f: replace(s, fingerprint=new) if f == old else s
                       for f, s in self.spaces.items()}
        if self.fingerprint == old:
            self.fingerprint = new

    def space(self, wanted: str) -> Space:
        """The space of fingerprint `wanted` (by content: see `same_space`), or of the one fingerprint
        starting with `wanted:` (a pack name, or `pack:file`); UnknownSpaceError naming the command that adds it."""
        if wanted in self.spaces:
            return self.spaces[wanted]
        matches = [s for fingerprint, s in self.spaces.items() if same_space(fingerprint, wanted)]
        matches = matches or [s for fingerprint, s in self.spaces.items() if fingerprint.startswith(wanted + ":")]
        if len(matches) == 1:
            return matches[0]
        have = ", ".join(self.spaces)
        if matches:
            raise StoreError(f"'{self.name}' has {len(matches)} spaces matching '{wanted}' ({have}); give the "
                             f"full fingerprint")
        raise UnknownSpaceError(f"'{self.name}' has no embeddings from model '{wanted}' (it has: {have}); add "
                                f"them with `castkeep reembed {self.name} --models {pack_of(wanted)}`")

    def with_primary(self, fingerprint: str) -> Character:
        """This character with another of its spaces as the primary one (every reference must be
        embedded in it): what importing into a store of that model needs."""
        references = [replace(r, embedding=r.embeddings[fingerprint], fingerprint=fingerprint,
                              embeddings=dict(r.embeddings)) for r in self.references]
        character = replace(self, fingerprint=fingerprint, references=references, spaces={})
        character.refit()
        return character

    def pose_coverage(self) -> dict[str, Any]:
        """How many references fall in each yaw range, and which ranges have none."""
        counts = {label: 0 for label, _, _ in YAW_BINS}
        for ref in self.references:
            yaw = ref.yaw
            if yaw is None:
                continue
            for label, low, high in YAW_BINS:
                if low <= yaw < high or (label == "far right" and yaw >= high):
                    counts[label] += 1
                    break
            else:
                counts["far left"] += 1  # yaw < -90 (should not happen)
        return {"bins": counts, "covered": [k for k, v in counts.items() if v],
                "missing": [k for k, v in counts.items() if not v]}

    def to_dict(self, *, include_embeddings: bool = False) -> dict[str, Any]:
        data = {"name": self.name, "description": self.description, "tags": self.tags,
                "fingerprint": self.fingerprint, "references": len(self.references),
                "spaces": [s.to_dict(primary=s.fingerprint == self.fingerprint, of=len(self.references))
                           for s in self.spaces.values()],
                "baseline": self.baseline, "pose_coverage": self.pose_coverage(),
                "created_at": self.created_at, "updated_at": self.updated_at,
                "reference_details": [r.to_dict(include_embedding=include_embeddings)
                                      for r in self.references]}
        if include_embeddings:
            data["vector"] = encode_vector(self.vector)
        if self.warnings:
            data["warnings"] = self.warnings
        return data


@dataclass
class Match:
    name: str
    score: float
    probability: float
    same: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "score": round(self.score, 4),
                "probability": round(self.probability, 4), "same": self.same}


@dataclass
class CharacterScore:
    name: str
    cosine: float
    probability: float
    same: bool
    threshold: float
    closest_other: Match | None
    leakage: bool
    baseline_mean: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "cosine": round(self.cosine, 4),
                "probability": round(self.probability, 4), "same": self.same,
                "threshold": self.threshold, "baseline_mean": self.baseline_mean,
                "closest_other": None if self.closest_other is None else self.closest_other.to_dict(),
                "leakage": self.leakage}
