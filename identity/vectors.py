"""Embedding vectors on disk and in files: exact float32 bytes, base64 for JSON, never pickle."""

from __future__ import annotations

import base64

import numpy as np

from ..errors import StoreError


def to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def normalise(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float64).ravel()
    norm = np.linalg.norm(vector)
    if not np.isfinite(norm) or norm == 0:
        raise StoreError("embedding is zero or not finite")
    return (vector / norm).astype(np.float32)


def encode_vector(vector: np.ndarray) -> str:
    """float32 little-endian bytes in base64: exact, compact, no pickle."""
    return base64.b64encode(to_blob(vector)).decode("ascii")


def decode_vector(text: str, dim: int | None = None) -> np.ndarray:
    try:
        vector = from_blob(base64.b64decode(text, validate=True))
    except (ValueError, TypeError):
        raise StoreError("embedding is not valid base64 float32 data") from None
    if dim is not None and vector.shape != (dim,):
        raise StoreError(f"embedding has {vector.size} values, expected {dim}")
    if not np.all(np.isfinite(vector)):
        raise StoreError("embedding holds non-finite values")
    return vector
