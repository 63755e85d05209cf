"""The records a store holds and returns: characters, their references, and search results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

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

    @property
    def yaw(self) -> float | None:
        return self.pose.get("yaw")

    def to_dict(self, *, include_embedding: bool = False) -> dict[str, Any]:
        data = {"sha256": self.sha256, "source_path": self.source_path, "face_index": self.face_index,
                "bbox": [round(float(v), 1) for v in self.bbox], "det_score": round(self.det_score, 4),
                "quality": round(self.quality, 4), "quality_report": self.quality_report,
                "pose": self.pose, "flagged": self.flagged, "added_at": self.added_at,
                "fingerprint": self.fingerprint}
        if include_embedding:
            data["embedding"] = encode_vector(self.embedding)
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
