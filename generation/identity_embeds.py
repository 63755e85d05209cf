"""A stored ArcFace identity vector → the `ip_adapter_image_embeds` diffusers' FaceID path takes."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import GenerationError


def normalised_identity(vector: Any, dim: int | None = None) -> np.ndarray:
    """A finite, non-zero identity vector, L2-normalised (FaceID was trained on `normed_embedding`).
    `dim` is the size the adapter's projection takes (its checkpoint says; 512 for ArcFace FaceID)."""
    array = np.asarray(vector, dtype=np.float32).ravel()
    if array.size == 0 or (dim is not None and array.size != dim):
        raise GenerationError(f"identity vector has {array.size} values; this FaceID adapter takes {dim}")
    norm = float(np.linalg.norm(array))
    if not np.isfinite(array).all() or norm == 0.0:
        raise GenerationError("identity vector is zero or not finite")
    return array / norm


def uses_guidance(pipe: Any, guidance: float) -> bool:
    """Whether the pipeline will run classifier-free guidance (then it wants negative + positive)."""
    return guidance > 1.0 and getattr(pipe.unet.config, "time_cond_proj_dim", None) is None


def identity_embeds(vector: Any, *, guidance: bool, device: Any = "cpu", dtype: Any = None,
                    dim: int | None = None) -> list[Any]:
    """`[cat([negative, positive])]`, each (1, n, dim): one IP-Adapter, n identities (a 2-D `vector` holds
    one per row: several characters in one image, each confined to its region by `ip_adapter_masks`).

    The negative is a zero vector, as in the FaceID reference code and diffusers' docs; diffusers
    repeats both for `num_images_per_prompt`.
    """
    import torch

    rows = np.asarray(vector, dtype=np.float32)
    rows = rows.reshape(1, -1) if rows.ndim < 2 else rows
    identities = np.stack([normalised_identity(row, dim) for row in rows])
    positive = torch.from_numpy(identities).reshape(1, *identities.shape)
    embeds = torch.cat([torch.zeros_like(positive), positive]) if guidance else positive
    return [embeds.to(device=device, dtype=dtype)]
