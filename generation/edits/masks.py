"""Where an edit may change pixels: float masks in [0, 1] (1 = repaint), built from the dense face mesh or
read from a file, and the paste-back that changes pixels only where the mask is above 0.

- face: the MediaPipe face oval (36 mesh points around forehead, cheeks and chin), grown a little and
  feathered with a Gaussian whose kernel is finite, so the mask is exactly 0 a known distance outside it.
- hair: a heuristic, not a segmentation. The region around and above the face: an ellipse centred a
  quarter of the face's height above the oval's centre, 1.7x the oval's width and 1.6x its height, cut
  off below the ear line (the mesh's cheek points 234/454, where hair ends for short hair), minus the
  face oval itself. Long hair over the shoulders is outside it: pass a mask file for that.
- background: everything but the person: 1 minus (the head (the hair ellipse plus the face) and a body
  block below the chin, 3x the face's width, down to the bottom of the image). Also a heuristic.
- FILE: any image of the same size as the edited one; grey levels are the mask (white = repaint).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image

from ...errors import ImageError
from ...landmarks.mesh import FACE_OVAL

MASK_KINDS = ("face", "hair", "background")
GROW = 0.04     # the face mask covers the oval grown by this fraction of the face's size...
FEATHER = 0.08  # ...and fades out over this fraction of it (the Gaussian kernel's radius)
EAR_POINTS = (234, 454)  # the mesh's outermost cheek points, at ear height


def face_oval(points: np.ndarray) -> np.ndarray:
    """The face oval polygon (36 x 2, image pixels) of a 478-point mesh."""
    return np.asarray(points, dtype=np.float32)[list(FACE_OVAL), :2]


def _face_size(oval: np.ndarray) -> float:
    return float(max(np.ptp(oval[:, 0]), np.ptp(oval[:, 1]), 1.0))


def _fill(shape: tuple[int, int], polygon: np.ndarray) -> np.ndarray:
    import cv2

    mask = np.zeros(shape, dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 255, lineType=cv2.LINE_8)
    return mask


def feather(binary: np.ndarray, radius: int) -> np.ndarray:
    """A 0/255 mask blurred into [0, 1] with a (2 radius + 1)-pixel Gaussian kernel: exactly 0 more than
    `radius` pixels outside the binary region."""
    import cv2

    mask = (binary > 0).astype(np.float32)
    if radius < 1:
        return mask
    size = 2 * radius + 1
    return np.clip(cv2.GaussianBlur(mask, (size, size), sigmaX=size / 6, borderType=cv2.BORDER_CONSTANT), 0, 1)


def _grown(binary: np.ndarray, pixels: int) -> np.ndarray:
    import cv2

    if pixels < 1:
        return binary
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(binary, kernel)


def face_mask(shape: tuple[int, int], points: np.ndarray, *, grow: float = GROW, feather_by: float = FEATHER
              ) -> np.ndarray:
    """The feathered face-oval mask (height x width float32) of one face's mesh `points`."""
    oval = face_oval(points)
    size = _face_size(oval)
    binary = _grown(_fill(shape, oval), int(round(grow * size)))
    return feather(binary, int(round(feather_by * size)))


def _head(shape: tuple[int, int], points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hair region, face oval) as 0/255 masks: see the module docstring for the hair heuristic."""
    import cv2

    oval = face_oval(points)
    width, height = float(np.ptp(oval[:, 0])), float(np.ptp(oval[:, 1]))
    centre = oval.mean(axis=0)
    ellipse = np.zeros(shape, dtype=np.uint8)
    cv2.ellipse(ellipse, (int(round(centre[0])), int(round(centre[1] - 0.25 * height))),
                (int(round(0.85 * width)), int(round(0.8 * height))), 0, 0, 360, 255, thickness=-1)
    ear_line = int(round(float(np.asarray(points)[list(EAR_POINTS), 1].max())))
    ellipse[max(ear_line, 0):] = 0
    return ellipse, _fill(shape, oval)


def hair_mask(shape: tuple[int, int], points: np.ndarray, *, feather_by: float = FEATHER) -> np.ndarray:
    hair, face = _head(shape, points)
    size = _face_size(face_oval(points))
    return feather(np.where(face > 0, 0, hair).astype(np.uint8), int(round(feather_by * size)))


def background_mask(shape: tuple[int, int], points: np.ndarray, *, feather_by: float = FEATHER) -> np.ndarray:
    hair, face = _head(shape, points)
    oval = face_oval(points)
    width = float(np.ptp(oval[:, 0]))
    person = np.maximum(hair, _grown(face, int(round(GROW * _face_size(oval)))))
    chin = int(round(float(oval[:, 1].max())))
    centre = float(oval[:, 0].mean())
    left, right = int(round(centre - 1.5 * width)), int(round(centre + 1.5 * width))
    person[max(chin - int(0.1 * width), 0):, max(left, 0):max(right, 0)] = 255
    return feather(np.where(person > 0, 0, 255).astype(np.uint8), int(round(feather_by * _face_size(oval))))


def landmark_mask(kind: str, shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    """`face`, `hair` or `background` for the face with mesh `points`, in an image of `shape` (h, w)."""
    builders = {"face": face_mask, "hair": hair_mask, "background": background_mask}
    return builders[kind](shape, points)


def load_mask(path: str | os.PathLike[str], size: tuple[int, int]) -> np.ndarray:
    """A mask image as float32 in [0, 1] (its luminance: white = repaint). `size` is the edited image's
    (width, height): a mask of another size is an ImageError, never silently stretched."""
    from ...landmarks.images import load_pil

    image = load_pil(path)
    if image.size != tuple(size):
        raise ImageError(f"mask is {image.width}x{image.height} but the image is {size[0]}x{size[1]}: a mask "
                         "file must have the image's size", path=path)
    grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    if not (grey > 0).any():
        raise ImageError("mask is black everywhere: nothing to repaint (white = repaint)", path=path)
    return grey


def compose(original: Image.Image, edited: Image.Image, mask: np.ndarray) -> Image.Image:
    """`original` with `edited` blended in by `mask`, in float and rounded: where the mask is 0 the output
    bytes are the original's, exactly."""
    base = np.asarray(original.convert("RGB"), dtype=np.float64)
    new = np.asarray(edited.convert("RGB").resize(original.size, Image.Resampling.LANCZOS)
                     if edited.size != original.size else edited.convert("RGB"), dtype=np.float64)
    alpha = np.asarray(mask, dtype=np.float64)[..., None]
    blended = np.rint(base + (new - base) * alpha)
    out = np.where(alpha > 0, np.clip(blended, 0, 255), base).astype(np.uint8)
    return Image.fromarray(out, "RGB")


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2), exclusive, of the pixels where `mask` > 0."""
    rows, cols = np.nonzero(np.asarray(mask) > 0)
    if rows.size == 0:
        raise ImageError("the mask is empty: nothing to repaint")
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def mask_image(mask: np.ndarray) -> Image.Image:
    """The mask as an 8-bit image (white = repaint), for the pipeline and for saving beside an output."""
    return Image.fromarray(np.round(np.clip(mask, 0, 1) * 255).astype(np.uint8), "L")


def mask_stats(mask: np.ndarray) -> dict[str, Any]:
    inside = np.asarray(mask) > 0
    return {"pixels": int(inside.sum()), "fraction": round(float(inside.mean()), 4)}
