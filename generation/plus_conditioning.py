"""What FaceID Plus / Plus v2 and Portrait adapters take besides one ArcFace vector, from a stored character.

- **Plus / Plus v2** also condition on CLIP image features of the face: the character's stored reference
  crops, aligned to 224 px (`FaceCrop.aligned(224)`: insightface's `norm_crop(photo, kps, 224)`, the crop
  IP-Adapter's reference code takes, here the crop's central square without resampling), through the CLIP
  image encoder's penultimate hidden states, as diffusers encodes images for every projection that is not
  a plain `ImageProjection`. Rule for several references: the **mean of those hidden states over the
  non-flagged references with a crop, best quality first, at most MAX_REFERENCES** (the crops are aligned,
  so token i is the same face region in each). The unconditional features are the encoder's on an all-zero
  input, as in diffusers' `encode_image` and the reference code. They are handed to diffusers' projection
  layer (`image_projection_layers[0].clip_embeds`), with `.shortcut` on for Plus v2 and `.shortcut_scale`
  = the run's `s_scale`.
- **Portrait** checkpoints take several reference vectors as separate token groups (16 tokens each): the
  character's non-flagged references' vectors in the adapter's space, best quality first, at most
  MAX_REFERENCES (the Portrait model card's default is 5 face images), negatives zero.

Channel order: IP-Adapter's reference code (and diffusers' FaceID docs) pass the `cv2`/insightface crop, a BGR
array, straight to the CLIP image processor, which takes it for RGB; castkeep feeds the crop the same way
(CLIP_CHANNELS), to match what the adapters were published with.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import GenerationError

MAX_REFERENCES = 5
CLIP_CROP_SIZE = 224
CLIP_CHANNELS = "bgr"  # see the module docstring
REFERENCE_RULE = (f"non-flagged references, best quality first, at most {MAX_REFERENCES}; Plus: mean of their "
                  "crops' CLIP penultimate hidden states; Portrait: one token group per reference vector")


def chosen_references(character: Any, *, fingerprint: str | None = None, crops: bool = False,
                      limit: int = MAX_REFERENCES) -> list[Any]:
    """The references a Plus/Portrait adapter is conditioned on: not flagged, holding what is needed (a
    crop, or an embedding in `fingerprint`'s space), best quality first, at most `limit`."""
    usable = [r for r in character.references if not r.flagged
              and (not crops or r.crop is not None) and (fingerprint is None or fingerprint in r.embeddings)]
    return sorted(usable, key=lambda r: -float(r.quality))[:limit]


def clip_face_image(reference: Any) -> np.ndarray:
    """A reference's 224 px aligned face crop, in the channel order the adapters were published with."""
    aligned = reference.crop.aligned(CLIP_CROP_SIZE)  # BGR, like insightface's norm_crop on a cv2 image
    return np.ascontiguousarray(aligned if CLIP_CHANNELS == "bgr" else aligned[:, :, ::-1])


@dataclass
class ClipFaceEmbeds:
    """CLIP penultimate hidden states of the face crops: positive (1, seq, hidden), the mean over the crops,
    and negative (1, seq, hidden), the encoder's on a zero input."""

    positive: Any
    negative: Any
    references: int
    crops_sha256: list[str] = field(default_factory=list)


def encode_face_crops(loaded: Any, images: list[np.ndarray]) -> ClipFaceEmbeds:
    """Run the loaded CLIP image encoder on the crops (once per run: they do not change with the seed)."""
    import torch

    if not images:
        raise GenerationError("no face crops to condition FaceID Plus on")
    encoder = loaded.pipe.image_encoder
    pixels = loaded.image_processor(images=list(images), return_tensors="pt").pixel_values
    pixels = pixels.to(device=loaded.device, dtype=next(encoder.parameters()).dtype)
    with torch.no_grad():
        hidden = encoder(pixels, output_hidden_states=True).hidden_states[-2]
        empty = encoder(torch.zeros_like(pixels[:1]), output_hidden_states=True).hidden_states[-2]
    digests = [hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()[:16] for image in images]
    return ClipFaceEmbeds(positive=hidden.mean(dim=0, keepdim=True), negative=empty, references=len(images),
                          crops_sha256=digests)


@contextmanager
def clip_embeds_for_call(loaded: Any, clip: ClipFaceEmbeds | None, *, images: int, guidance: bool,
                         s_scale: float) -> Iterator[None]:
    """For one pipeline call of `images` images: a FaceID Plus adapter's CLIP features handed to diffusers'
    projection, (batch, 1, seq, hidden) in the order diffusers lays out `ip_adapter_image_embeds` (negatives
    first), so batch row i's ID vector meets row i's CLIP features; forgotten when the call ends, so a later
    call that sets none fails loudly (guard below) instead of conditioning on another character's face.
    Nothing for the other adapters; a Plus adapter without `clip` is one GenerationError."""
    if not loaded.checkpoint.needs_image_encoder:
        yield
        return
    if clip is None:
        raise GenerationError(f"{loaded.checkpoint.path.name} (FaceID Plus) needs CLIP features of the character's "
                              "stored face crops, and none were given")
    import torch

    layer = loaded.pipe.unet.encoder_hid_proj.image_projection_layers[0]
    positive = clip.positive.repeat(images, 1, 1)
    batch = torch.cat([clip.negative.repeat(images, 1, 1), positive]) if guidance else positive
    layer.clip_embeds = batch.unsqueeze(1).to(device=loaded.device, dtype=loaded.pipe.unet.dtype)
    layer.shortcut = loaded.checkpoint.shortcut
    layer.shortcut_scale = s_scale
    try:
        yield
    finally:
        layer.clip_embeds = None


def guard_plus_projection(pipe: Any) -> None:
    """A FaceID Plus projection run without CLIP features (a caller that calls the pipeline itself, not through
    generate_images or the edits' run_pipe) stops with one line instead of diffusers' AttributeError."""
    layer = pipe.unet.encoder_hid_proj.image_projection_layers[0]

    def check(module: Any, _inputs: Any) -> None:
        if module.clip_embeds is None:
            raise GenerationError("this FaceID Plus adapter needs CLIP features of the character's face crops, and "
                                  "none were set (castkeep's generate, storyboard and edit commands set them)")

    layer.register_forward_pre_hook(check)


def adapter_inputs(checkpoint: Any, *, tokens_rows: int, references: int | None, s_scale: float,
                   clip: ClipFaceEmbeds | None, image_encoder: str | None, image_encoder_hash: str | None
                   ) -> dict[str, Any]:
    """What the adapter was given, for sidecars and summaries."""
    plus = checkpoint.needs_image_encoder
    return {"variant": checkpoint.variant, "identity_tokens": tokens_rows * checkpoint.num_tokens,
            "identity_vectors": tokens_rows, "references": references,
            "reference_rule": REFERENCE_RULE if references is not None else None,
            "shortcut": checkpoint.shortcut if plus else None, "s_scale": s_scale if plus else None,
            "clip_references": clip.references if clip is not None else None,
            "clip_crops_sha256": clip.crops_sha256 if clip is not None else None,
            "image_encoder": image_encoder, "image_encoder_hash": image_encoder_hash}
