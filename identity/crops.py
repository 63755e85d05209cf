"""The aligned face crop a store keeps for every reference, so that a character can be embedded
again later, with any model pack, without the original photos.

Geometry. insightface aligns a face for ArcFace by fitting the similarity transform M that maps the
5 detected keypoints (eye centres, nose tip, mouth corners) onto a fixed template in a 112 × 112
box (`face_align.estimate_norm`; `norm_crop` warps with it). The stored crop uses that same fitted
M, scaled by 2 and shifted by a 48 px margin on every side:

    crop = warp(photo, 2·M + (48, 48)),  320 × 320 px,  lossless PNG

so the ArcFace box is the crop's central 224 × 224 square, ARCFACE_BOX = [48, 272)². Why:

- Exact re-embedding. Re-aligning the crop from its stored keypoints (`norm_crop(crop, kps, 112)`,
  the analyzer's own path) fits the transform (x − 48) / 2: it samples the crop at every other
  pixel, exactly where the photo was sampled for the registration's 112 px crop, so the pixels and
  the embedding are the same (measured cosine ≥ 0.99999 on real photos; a 160 px box, i.e. a
  non-integer scale, resamples twice and lost up to 0.05 on faces larger than the box).
- The central 224 square is `norm_crop(photo, kps, 224)`: the crop IP-Adapter FaceID Plus gives its
  CLIP image encoder, here without resampling.
- Margin for other aligners. With d the inter-ocular distance (35.2 px in the 112 template), the
  ArcFace box reaches 1.46 d above the eye line and 1.72 d below it. dlib's face chip (150 px,
  padding 0.25 around its mean face) needs about 1.41 d to each side, 0.87 d above and 1.95 d below:
  the 112 box cuts off its chin. The 320 crop holds 2.27 d to each side, 2.15 d above and 2.40 d
  below, which leaves room for dlib's own fit of roll and scale, at nearly its chip's resolution
  (d = 70 px here, 53 px in dlib's chip).
- Size: about 150 kB of PNG per reference. A face smaller than the box in the photo is upsampled
  (no detail is invented or lost; PNG stores it compactly).

The keypoints are stored in crop pixels (`FaceCrop.kps`), so a recogniser with another template
fits its own alignment from them; pose and quality are stored with the reference already.
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import StoreError

CROP_SIZE = 320
TEMPLATE_SCALE = 2.0       # crop pixels per ArcFace-template (112 px box) pixel
MARGIN = 48.0              # crop pixels around the scaled ArcFace box, on every side
ARCFACE_BOX = (48, 48, 272, 272)  # x0, y0, x1, y1 of the ArcFace (norm_crop) box in the crop

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def crop_transform(kps: np.ndarray) -> np.ndarray:
    """The 2 × 3 affine map from photo pixels to crop pixels for a face's 5 keypoints."""
    from insightface.utils import face_align

    with warnings.catch_warnings():
        # scikit-image deprecates the estimate() call insightface makes; the result is unchanged.
        warnings.simplefilter("ignore", FutureWarning)
        arcface = face_align.estimate_norm(np.asarray(kps, dtype=np.float32), 112)
    transform = np.asarray(arcface, dtype=np.float64) * TEMPLATE_SCALE
    transform[:, 2] += MARGIN
    return transform


@dataclass
class FaceCrop:
    """A stored face crop: PNG bytes (RGB, CROP_SIZE square) and its 5 keypoints in crop pixels."""

    png: bytes
    kps: np.ndarray  # (5, 2) float32

    @classmethod
    def from_photo(cls, image: np.ndarray, kps: np.ndarray) -> FaceCrop:
        """Cut the crop out of a BGR photo for a face detected with keypoints `kps`."""
        import cv2

        transform = crop_transform(kps)
        pixels = cv2.warpAffine(image, transform, (CROP_SIZE, CROP_SIZE), borderValue=0.0)
        points = np.c_[np.asarray(kps, dtype=np.float64), np.ones(5)] @ transform.T
        return cls(png=encode_png(pixels), kps=points.astype(np.float32))

    @classmethod
    def from_stored(cls, png: bytes, kps: Any) -> FaceCrop:
        """A crop read back from a store or a file; StoreError when it is not a valid one."""
        points = np.asarray(kps, dtype=np.float32)
        if points.shape != (5, 2) or not np.all(np.isfinite(points)) or not np.all((points >= 0) & (points <= CROP_SIZE)):
            raise StoreError("a reference's crop keypoints are malformed (expected 5 [x, y] points inside the crop)")
        check_png(png)
        return cls(png=bytes(png), kps=points)

    def pixels(self) -> np.ndarray:
        """The crop as a BGR uint8 array (what insightface models and OpenCV take)."""
        return decode_png(self.png)

    def aligned(self, size: int = 112) -> np.ndarray:
        """The ArcFace input of `size` px, aligned from the stored keypoints like any photo."""
        from .embedder import align_face

        return align_face(self.pixels(), self.kps, size)

    def kps_list(self) -> list[list[float]]:
        return [[round(float(x), 3), round(float(y), 3)] for x, y in self.kps]


def encode_png(pixels: np.ndarray) -> bytes:
    """A BGR uint8 image as PNG bytes (lossless; OpenCV writes the channels as RGB)."""
    import cv2

    ok, data = cv2.imencode(".png", pixels)
    if not ok:
        raise StoreError("could not encode a face crop as PNG")
    return data.tobytes()


def check_png(data: bytes) -> None:
    """Cheap structural check (no decoding): a PNG of CROP_SIZE × CROP_SIZE pixels."""
    if len(data) < 24 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise StoreError("a reference's face crop is not a PNG image")
    width, height = struct.unpack(">II", data[16:24])
    if (width, height) != (CROP_SIZE, CROP_SIZE):
        raise StoreError(f"a reference's face crop is {width}x{height}, expected {CROP_SIZE}x{CROP_SIZE}")


def decode_png(data: bytes) -> np.ndarray:
    import cv2

    check_png(data)
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if pixels is None or pixels.shape != (CROP_SIZE, CROP_SIZE, 3):
        raise StoreError("a reference's face crop is damaged (the PNG does not decode)")
    return pixels
