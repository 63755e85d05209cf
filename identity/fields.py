"""What the stored fields of a character may hold, checked where data comes from outside castkeep's own
code: character files being imported (identity/portable.py) and rows read back from SQLite
(identity/rows.py), which anyone can edit.

Each check returns the value in its stored form or raises StoreError with a message fragment
("pose 'yaw' is not a number") that the caller prefixes with where the field is.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

from ..errors import StoreError

MAX_TEXT_LENGTH = 4096       # source paths, dates and other free text of a reference
MAX_DESCRIPTION_LENGTH = 4096
MAX_EMBEDDING_DIM = 4096     # ArcFace gives 512; no face recogniser comes near this
MAX_JSON_CHARS = 16_384      # a reference's quality report or pose, as JSON
UNIT_TOLERANCE = 1e-3        # embeddings and vectors are L2-normalised float32: |norm - 1| is ~1e-7
POSE_ANGLES = ("yaw", "pitch", "roll")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def text(value: Any, what: str, max_length: int = MAX_TEXT_LENGTH) -> str:
    if not isinstance(value, str):
        raise StoreError(f"{what} is not text")
    if len(value) > max_length:
        raise StoreError(f"{what} is too long ({len(value)} > {max_length} characters)")
    return value


def number(value: Any, what: str, low: float = -math.inf, high: float = math.inf) -> float:
    """A finite JSON/SQLite number within [low, high] (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise StoreError(f"{what} is not a finite number")
    if not low <= value <= high:
        raise StoreError(f"{what} is {value}, outside [{low:g}, {high:g}]")
    return float(value)


def sha256(value: Any) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise StoreError("sha256 is not 64 lowercase hex digits")
    return value


def face_index(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 10_000:
        raise StoreError("face index is not a whole number from 0")
    return value


def bbox(value: Any) -> list[float]:
    """A face box: [x0, y0, x1, y1], finite numbers (a face may reach past the photo's edge)."""
    if not isinstance(value, list) or len(value) != 4:
        raise StoreError("bbox is not a list of 4 numbers")
    return [number(v, "bbox value") for v in value]


def json_object(value: Any, what: str) -> dict[str, Any]:
    """A small JSON object (quality reports, poses): text keys, at most MAX_JSON_CHARS as JSON."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise StoreError(f"{what} is not a JSON object")
    try:
        size = len(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError, RecursionError):
        raise StoreError(f"{what} holds values that are not plain JSON") from None
    if size > MAX_JSON_CHARS:
        raise StoreError(f"{what} is too large ({size} > {MAX_JSON_CHARS} characters of JSON)")
    return value


def pose(value: Any) -> dict[str, Any]:
    """A head pose: yaw, pitch and roll in degrees (each may be missing), other keys plain values
    (`source`). `show` and the pose coverage compute with the angles."""
    value = json_object(value, "pose")
    for key in POSE_ANGLES:
        if key in value:
            number(value[key], f"pose '{key}'", -360.0, 360.0)
    if any(isinstance(v, (dict, list)) for v in value.values()):
        raise StoreError("pose holds nested values")
    return value


def string_list(value: Any, what: str, max_items: int, max_length: int) -> list[str]:
    if not isinstance(value, list) or len(value) > max_items:
        raise StoreError(f"{what} is not a list of at most {max_items} texts")
    return [text(item, f"a value of {what}", max_length) for item in value]


def embedding_dim(value: Any, what: str = "embedding size") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_EMBEDDING_DIM:
        raise StoreError(f"{what} is not a whole number from 1 to {MAX_EMBEDDING_DIM}")
    return value


def unit_vector(vector: np.ndarray, what: str) -> np.ndarray:
    """An L2-normalised embedding or character vector: every value finite, length 1."""
    if not np.all(np.isfinite(vector)):
        raise StoreError(f"{what} holds non-finite values")
    norm = float(np.linalg.norm(vector.astype(np.float64)))
    if abs(norm - 1.0) > UNIT_TOLERANCE:
        raise StoreError(f"{what} is not unit length (norm {norm:.4g})")
    return vector
