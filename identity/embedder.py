"""ArcFace identity embeddings: 112x112 aligned crops in, L2-normalised 512-d vectors out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def l2_normalize(vectors: np.ndarray, axis: int = -1) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=axis, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def align_face(image: np.ndarray, kps: np.ndarray, size: int = 112) -> np.ndarray:
    """The ArcFace-standard similarity-aligned crop (insightface's norm_crop)."""
    import warnings

    from insightface.utils import face_align

    with warnings.catch_warnings():
        # scikit-image deprecates the estimate() call insightface makes; the result is unchanged.
        warnings.simplefilter("ignore", FutureWarning)
        return face_align.norm_crop(image, np.asarray(kps, dtype=np.float32), image_size=size)


class ArcFaceEmbedder:
    """Wraps insightface's ArcFaceONNX (from `ModelPack.model("recognition")`).

    `flip=True` averages the embeddings of the crop and its mirror image (test-time augmentation):
    it costs one more forward pass per face and removes some pose/lighting asymmetry.
    """

    def __init__(self, model: Any, flip: bool = False) -> None:
        self.model = model
        self.flip = flip

    @property
    def input_size(self) -> int:
        return int(self.model.input_size[0])

    @property
    def dim(self) -> int:
        """Embedding size, from the model's declared output (or one forward pass when it is dynamic)."""
        shape = self.model.output_shape
        if shape and isinstance(shape[-1], int):
            return int(shape[-1])
        blank = np.zeros((self.input_size, self.input_size, 3), dtype=np.uint8)
        return int(self.model.get_feat([blank]).shape[-1])

    def embed_aligned(self, crops: Sequence[np.ndarray], flip: bool | None = None) -> np.ndarray:
        """(N, dim) L2-normalised embeddings for aligned BGR crops."""
        crops = list(crops)
        if not crops:
            return np.zeros((0, self.dim), dtype=np.float32)
        flip = self.flip if flip is None else flip
        if not flip:
            return l2_normalize(self._features(crops))
        # The crops and their mirror images in one batch: one model run instead of two.
        mirrored = [np.ascontiguousarray(crop[:, ::-1]) for crop in crops]
        features = l2_normalize(self._features(crops + mirrored))
        return l2_normalize(features[:len(crops)] + features[len(crops):])

    def _features(self, crops: list[np.ndarray]) -> np.ndarray:
        """Raw features of all crops in as few model runs as the model allows: a recogniser exported with a
        fixed batch size (1 in some converted packs) takes its crops that many at a time."""
        batch = (self.model.input_shape or [None])[0]
        step = batch if isinstance(batch, int) and batch > 0 else len(crops)
        return np.concatenate([np.asarray(self.model.get_feat(crops[i:i + step]), dtype=np.float32)
                               for i in range(0, len(crops), step)])
