"""One shot on a loaded pipeline: the images of one pipeline call, each scored against the shot's
characters. This is what a worker does; it writes no file and no ledger row (the driver does both), so
a pool of workers could take shots from the same ledger.

A one-character shot is judged like `castkeep generate` judges an output. In a shot of several
characters each identity conditions only its region (diffusers' `ip_adapter_masks`), and each character
is judged on its region of the image: the shot passes when every character passes there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..config import GenerationConfig
from ..loading import LoadedPipeline
from ..provenance.output import MarkedImage
from ..runner import AdapterConditioning, Identity, generate_images, passes
from ..scoring import OutputScore, Scorer
from .plan import Region, Shot


@dataclass
class Take:
    """One generated and scored image of a shot (the image is held only until the driver writes it)."""

    attempt: int
    seed: int
    image: Image.Image = field(repr=False)
    score: dict[str, Any]  # JSON-ready: per-character scores and the shot's verdict
    value: float  # what ranks takes: the weakest character's log-odds (-inf when a face is missing)
    passed: bool
    nsfw: bool | None = None
    pipeline_s: float = 0.0
    scoring_s: float = 0.0
    marked: MarkedImage | None = field(default=None, repr=False)  # the image as saved, when a Ray worker marked it


def region_box(region: Region, width: int, height: int) -> tuple[int, int, int, int]:
    """A region's bounding box in pixels (a mask's: the box of its white part)."""
    if region.box is not None:
        left, top, right, bottom = region.box
        return (round(left * width), round(top * height), round(right * width), round(bottom * height))
    mask = np.asarray(region_mask(region, width, height)) > 127
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return (0, 0, width, height)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def region_mask(region: Region, width: int, height: int) -> Image.Image:
    """The region as a white-on-black mask of the output's size."""
    if region.mask is not None:
        with Image.open(region.mask) as mask:
            return mask.convert("L").resize((width, height), Image.Resampling.BILINEAR)
    image = Image.new("L", (width, height), 0)
    left, top, right, bottom = region_box(region, width, height)
    ImageDraw.Draw(image).rectangle((left, top, right - 1, bottom - 1), fill=255)
    return image


class ShotScorer:
    """Judges a shot's image against its characters, each by its own scorer (the store's ArcFace + dlib,
    fused). One character without a region: the main face, as `castkeep generate` judges. Otherwise every
    face is judged against every character and faces are assigned to characters (cast.py)."""

    def __init__(self, shot: Shot, scorers: dict[str, Scorer], config: GenerationConfig) -> None:
        self.shot = shot
        self.scorers = scorers
        self.config = config

    def score(self, image: Image.Image) -> tuple[dict[str, Any], float, bool]:
        if self.shot.regions:
            characters, flags = self._cast(image)
        else:
            name = self.shot.characters[0]
            result = self.scorers[name].score(image)
            characters = {name: {**_entry(result), "region": None, "passed": passes(result, self.config)}}
            flags = _flags(name, result, characters[name]["passed"])
        values = [float("-inf") if entry["log_odds"] is None else entry["log_odds"] for entry in characters.values()]
        value = min(values)
        probabilities = [entry["probability"] for entry in characters.values() if entry["probability"] is not None]
        passed = all(entry["passed"] for entry in characters.values())
        score = {"characters": characters, "value": None if value == float("-inf") else round(value, 4),
                 "probability": round(float(min(probabilities)), 4) if len(probabilities) == len(characters) else None,
                 "face_found": all(entry["face_found"] for entry in characters.values()), "passed": passed,
                 "flags": flags}
        return score, value, passed

    def _cast(self, image: Image.Image) -> tuple[dict[str, dict[str, Any]], list[str]]:
        from ...errors import CastkeepError
        from ...landmarks.images import load_image
        from .cast import face_centre, place_characters

        names = list(self.shot.characters)
        scorers = [self.scorers[name] for name in names]
        try:
            pixels = load_image(image)
            faces = list(scorers[0].analyzer.analyze(pixels, dense=False).faces)  # type: ignore[attr-defined]
        except CastkeepError:
            pixels, faces = None, []
        results = [[scorer.score_face(pixels, face, faces=len(faces)) for scorer in scorers]  # type: ignore[attr-defined]
                   for face in faces]
        values = np.array([[r.value for r in row] for row in results], dtype=np.float64).reshape(len(faces), len(names))
        masks = {name: np.asarray(region_mask(self.shot.regions[name], image.width, image.height)) > 127
                 for name in names}

        def centre_in(face: int, name: str) -> bool:
            x, y = face_centre(faces[face].bbox)
            mask = masks[name]
            return bool(mask[min(mask.shape[0] - 1, max(0, int(y))), min(mask.shape[1] - 1, max(0, int(x)))])

        placements = place_characters(values, names, centre_in)
        characters: dict[str, dict[str, Any]] = {}
        flags: list[str] = []
        for column, name in enumerate(names):
            placement = placements[name]
            result = (results[placement.face][column] if placement.face is not None
                      else OutputScore(face_found=False, faces=len(faces)))
            ok = (placement.face is not None and placement.in_region and placement.better_match is None
                  and passes(result, self.config))
            characters[name] = {**_entry(result), "region": self.shot.regions[name].label, "face": placement.face,
                                "in_region": placement.in_region, "better_match": placement.better_match, "passed": ok}
            flags += placement.flags
            if placement.face is not None and placement.in_region and placement.better_match is None:
                flags += _flags(name, result, ok)
        return characters, flags


def _entry(result: OutputScore) -> dict[str, Any]:
    """A character's score as recorded, with the log-odds that rank takes (None without a face)."""
    return {**result.to_dict(), "log_odds": None if result.value == float("-inf") else result.value}


def _flags(name: str, result: OutputScore, passed: bool) -> list[str]:
    """What the report lists for one character's face: missing, leaking to another stored character, or
    below the shot's min_score."""
    if not result.face_found:
        return [f"no face: {name}"]
    flags = []
    if result.leakage:
        flags.append(f"leakage: {name} looks more like {(result.closest_other or {}).get('name', 'another character')}")
    if not passed:
        flags.append(f"below target: {name}")
    return flags


def conditioning(shot: Shot, identities: dict[str, Identity], width: int, height: int,
                 prepared: dict[str, AdapterConditioning] | None = None
                 ) -> tuple[np.ndarray, list[Image.Image] | None, Any]:
    """The identity vector(s) the shot conditions on, with several characters one mask per character, and a
    FaceID Plus adapter's CLIP features. `prepared`: each character's adapter inputs (runner.adapter_conditioning:
    a Portrait adapter's reference vectors, Plus's CLIP features), else the characters' vectors."""
    if len(shot.characters) == 1 and not shot.regions:
        name = shot.characters[0]
        if prepared is not None:
            return prepared[name].vector, None, prepared[name].clip
        return identities[name].vector, None, None
    vectors = np.stack([identities[name].vector for name in shot.characters])
    return vectors, [region_mask(shot.regions[name], width, height) for name in shot.characters], None


def make_takes(loaded: LoadedPipeline, shot: Shot, config: GenerationConfig, identities: dict[str, Identity],
               scorer: ShotScorer, attempts: list[int], width: int, height: int,
               prepared: dict[str, AdapterConditioning] | None = None) -> list[Take]:
    """One pipeline call for `attempts` (their seeds: config.seed_for), each image scored."""
    vector, masks, clip = conditioning(shot, identities, width, height, prepared)
    seeds = [config.seed_for(attempt) for attempt in attempts]
    started = time.perf_counter()
    images, nsfw = generate_images(loaded, config, vector, seeds, width, height, masks=masks, clip=clip)
    pipeline_s = (time.perf_counter() - started) / len(seeds)
    takes = []
    for attempt, seed, image, flag in zip(attempts, seeds, images, nsfw, strict=True):
        started = time.perf_counter()
        score, value, passed = scorer.score(image)
        takes.append(Take(attempt=attempt, seed=seed, image=image, score=score, value=value, passed=passed,
                          nsfw=flag, pipeline_s=pipeline_s, scoring_s=time.perf_counter() - started))
    return takes
