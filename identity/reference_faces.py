"""dlib descriptors of a stored character's references, for `score`/`identify --scorer dlib|fused`.

The store keeps ArcFace vectors and, per reference, an aligned face crop (identity/crops.py); dlib needs
pixels. A reference is described from its stored crop: SCRFD finds the face in it (the one nearest the
crop's centre) and dlib describes it as in any photo. A reference stored before crops were kept falls back
to its original photo at `source_path`, checked against its stored sha256 (an edited or replaced file
would describe another face) and described at its stored SCRFD box; without either it is one clear error.

Crop or photo: on 14 real photos the two descriptors of a face differ by a Euclidean 0.03–0.21 (mean 0.09;
the largest on tight, hard-pose photos whose crop has black margins); such a difference is mostly
orthogonal to the genuine-pair difference (about 0.4), so distances to a query barely move, and the crop
keeps a character's score independent of where its photos are now.

A face against a character (`CharacterDescriptors.distance`): the distance to the quality-weighted mean of
the references' descriptors, put back on the scale of a single photo pair, sqrt(d_mean^2 + V (1 - sum w^2 /
(sum w)^2)) with V = `WITHIN_PERSON_VARIANCE`. Why: the dlib calibrations (identity/domains.py) were fitted
on photo *pairs*, and a mean of descriptors is no face's descriptor: averaging k references removes all but
1/k of their within-person variance V (E|e|^2 of one photo's descriptor about its person), so every face,
impostors included, is nearer to the mean than to any one reference. The term adds back what averaging
removed (for equal weights, d_pair^2 = d_mean^2 + V (1 - 1/k) in expectation, impostor and genuine alike),
and it is 0 for one reference: a one-reference character scores exactly the pair distance.
Measured on ../shared/faces/lfw_gallery (139 people x 6 photos; characters of k random photos, equal
weights, 4 draws per person; probes: the person's other photos and every photo of the other 138):

    rule (k = 3 | k = 5)                     FMR at 0.623      genuine rejected at 0.623
    distance to the mean (before)            4.7 % | 5.7 %     0.8 % | 1.1 %
    mean of the pair distances               1.0 % | 0.9 %     1.0 % | 1.1 %
    median of the pair distances             1.1 % | 1.0 %     1.1 % | 1.3 %
    pair-scaled distance to the mean (kept)  1.0 % | 0.9 %     0.8 % | 1.1 %
    (k = 1, every rule: 1.5 % FMR, 1.7 % rejected; the photo calibration's own pairs: about 1 %)

One threshold for characters of 1-5 references (what a store holds), genuine rejected at impostor FMR 1e-3 |
1e-4: distance to the mean 12.0 % | 34.9 %, mean of distances 10.4 % | 37.9 %, pair-scaled 6.3 % | 29.6 %
(held out, ../shared/faces/lfw_pairs_fold1, characters of 1-3: 8.0 | 20.0, 7.2 | 21.9, 6.5 | 19.8). The mean
of distances also keeps the pair scale but discriminates worse: the references' own noise stays in every
distance, where the mean averages it out; the pair-scaled rule keeps the mean's ranking for a character and
puts characters of every size on the one pair scale. V is fitted on photos (generated_dev's reference photos
give 0.093): a character's references are photos in every domain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageError, StoreError
from ..utils import file_sha256
from .dlib_recogniser import distance
from .references import MIN_WEIGHT

# E|e|^2, the variance of one photo's dlib descriptor about its person's: half the mean squared distance of
# the 2,085 same-person photo pairs of ../shared/faces/lfw_gallery (0.1008; the 931 of lfw_pairs_fold1 give 0.1034).
WITHIN_PERSON_VARIANCE = 0.1008


def _unavailable(name: str, path: str, reason: str) -> StoreError:
    return StoreError(f"{reason}: the dlib and fused scorers need a stored face crop or the reference photos of "
                      f"'{name}' (`castkeep reembed` stores crops); use --scorer arcface", path=path)


@dataclass(frozen=True)
class CharacterDescriptors:
    """A character's reference descriptors (k x 128) and their weights, as dlib compares a face with it."""

    descriptors: np.ndarray
    weights: np.ndarray

    @classmethod
    def single(cls, descriptor: np.ndarray) -> CharacterDescriptors:
        """One face as a one-reference character (a reference photo): scored by the plain pair distance."""
        return cls(np.asarray(descriptor, dtype=np.float64)[None, :], np.ones(1))

    @property
    def mean(self) -> np.ndarray:
        """The weighted mean descriptor (the one reference itself when there is one)."""
        if len(self.descriptors) == 1:
            return np.asarray(self.descriptors[0], dtype=np.float64)
        return np.average(np.asarray(self.descriptors, dtype=np.float64), axis=0, weights=self.weights)

    @property
    def averaged_out(self) -> float:
        """The within-person variance the weighted mean removes: V (1 - sum w^2 / (sum w)^2), 0 for one reference."""
        weights = np.asarray(self.weights, dtype=np.float64)
        return float(WITHIN_PERSON_VARIANCE * (1.0 - (weights ** 2).sum() / weights.sum() ** 2))

    def distance(self, descriptor: np.ndarray) -> float:
        """A face's dlib distance to the character on the pair scale (exactly the pair distance for one reference)."""
        to_mean = distance(descriptor, self.mean)
        spread = self.averaged_out
        return to_mean if spread == 0.0 else math.sqrt(to_mean ** 2 + spread)

    def distances(self, descriptors: np.ndarray) -> np.ndarray:
        """`distance` of each row of `descriptors` (n x 128)."""
        to_mean = np.linalg.norm(np.asarray(descriptors, dtype=np.float64) - self.mean[None, :], axis=1)
        return np.sqrt(to_mean ** 2 + self.averaged_out)


class ReferenceDescriptors:
    """Describes characters' references with a `DlibRecogniser`, each reference once per instance.
    `detector` (castkeep's SCRFD `FaceDetector`) finds the face in stored crops."""

    def __init__(self, recogniser: Any, detector: Any) -> None:
        self.recogniser = recogniser
        self.detector = detector
        self._seen: dict[tuple[str, tuple[float, ...]], np.ndarray] = {}

    def _from_crop(self, crop: Any) -> np.ndarray | None:
        from ..landmarks.detection import select_face

        pixels = crop.pixels()
        detections = self.detector.detect(pixels)
        if not detections:
            return None
        chosen = detections[select_face(detections, pixels.shape, "center")]
        return self.recogniser.describe(pixels, [chosen.bbox])[0]

    def _from_photo(self, name: str, reference: Any) -> np.ndarray:
        from ..landmarks.images import load_image

        path = Path(reference.source_path)
        if not path.is_file():
            raise _unavailable(name, reference.source_path, "reference photo not found and no face crop stored")
        if file_sha256(path) != reference.sha256:
            raise _unavailable(name, reference.source_path, "reference photo changed since it was registered "
                                                            "and no face crop stored")
        try:
            image = load_image(path)
        except ImageError as exc:
            raise _unavailable(name, reference.source_path, f"reference photo unreadable ({exc})") from None
        return self.recogniser.describe(image, [reference.bbox])[0]

    def of_reference(self, name: str, reference: Any) -> np.ndarray:
        key = (reference.sha256, tuple(reference.bbox))
        if key not in self._seen:
            described = None if reference.crop is None else self._from_crop(reference.crop)
            self._seen[key] = described if described is not None else self._from_photo(name, reference)
        return self._seen[key]

    def of_character(self, character: Any) -> CharacterDescriptors:
        """The character's references' dlib descriptors, weighted by quality as its ArcFace vector is.
        Pass a character read with its crops (`store.get(name, crops=True)`)."""
        if not character.references:
            raise StoreError(f"character '{character.name}' has no references to describe with dlib")
        descriptors = np.stack([self.of_reference(character.name, r) for r in character.references])
        weights = np.maximum(np.array([r.quality for r in character.references], dtype=np.float64), MIN_WEIGHT)
        return CharacterDescriptors(descriptors.astype(np.float64), weights)
