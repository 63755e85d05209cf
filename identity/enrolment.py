"""Turning reference photos into accepted references: which face of a photo is meant, the quality
gate, and the impostor gate (a photo that is not the same person as the others).

All of it runs before the store takes its write lock: embedding is slow, and a rejected photo must
leave the store untouched.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CastkeepError, ImpostorReferenceError, MultipleFacesError, ReferenceQualityError, StoreError
from ..utils import file_sha256, text_path
from . import similarity
from .analyzer import PhotoFace
from .characters import Reference
from .crops import FaceCrop
from .references import combine, identity_groups
from .vectors import normalise

MAX_REFERENCES_PER_CALL = 13
MAX_REFERENCES = 64

# A second face counts as "another person in the photo" only if it is at least this fraction of the
# largest face's size (background faces in news photos are far smaller than the subject's).
BYSTANDER_RATIO = 0.5

_IMAGE_SPEC = re.compile(r"^(?P<path>.+):(?P<face>\d+)$")


def parse_image_spec(spec: Any) -> tuple[Any, int | None]:
    """`photo.jpg:1` picks face 1 of a group photo; anything else is the image itself."""
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        match = _IMAGE_SPEC.match(text)
        if match and not Path(text).exists() and Path(match["path"]).exists():
            return match["path"], PhotoFace(match["face"])
    return spec, None


def reference_candidates(analyzer: Any, image: Any, face: int | None = None, label: str | None = None) -> list[Reference]:
    """The reference a photo gives: one face, or every comparable face when it is ambiguous. Each
    keeps its aligned face crop, so the character can be embedded with other models later. `label`
    is what the reference records as its source (default: the file's absolute path), e.g. the name of
    an uploaded file whose bytes sit in a temporary file."""
    from ..landmarks.images import describe_source, load_image

    source, spec_face = parse_image_spec(image)
    face = spec_face if spec_face is not None else face
    if isinstance(source, (str, os.PathLike)):
        # Decoded once, here: one clear ImageError for missing/corrupt files before hashing.
        pixels = load_image(source)
        digest = file_sha256(source)  # streamed: load_image refused files over its size limit
        label = label or text_path(Path(source).resolve())  # a non-UTF-8 file name is stored escaped
    else:
        pixels = load_image(source)
        array = np.asarray(source)
        digest = hashlib.sha256(array.tobytes() + str(array.shape).encode()).hexdigest()
        label = label or describe_source(source)
    analysis = analyzer.analyze(pixels, dense=getattr(analyzer, "dense", None) is not None)
    analysis.source = label  # face errors name the photo, not the decoded array
    if face is not None:
        chosen = [analysis.face(face)]
    elif len(analysis.faces) <= 1:
        chosen = [analysis.face()]  # NoFaceError naming the file when there is none
    else:
        largest = analysis.faces[0]
        chosen = [largest] + [f for f in analysis.faces[1:] if f.size >= BYSTANDER_RATIO * largest.size]
    return [Reference(sha256=digest, source_path=label, embedding=normalise(f.embedding),
                      quality=float(f.quality.score), det_score=float(f.det_score),
                      bbox=[float(v) for v in f.bbox], face_index=f.index,
                      pose=f.pose.to_dict(), quality_report=f.quality.to_dict(),
                      fingerprint=analyzer.fingerprint, crop=FaceCrop.from_photo(pixels, f.kps))
            for f in chosen]


def embed_references(analyzer: Any, images: Sequence[Any], *, face: int | None = None,
                     force: bool = False, strict: bool = False, progress: Callable[[Any], Any] | None = None,
                     anchors: Sequence[Reference] = (),
                     labels: Mapping[str, str] | None = None) -> tuple[list[Reference], list[str]]:
    """Embed every photo and apply the quality gate; returns (references, warnings).

    A photo with several comparable faces uses the face that matches the unambiguous references
    (`anchors`, the character's stored references, plus the other photos). A photo the gate refuses, or
    whose face cannot be told apart, is left out (named in the warnings) while at least one photo is
    usable; with `strict`, or when none is, its error is raised. `force` keeps refused photos instead.
    Borderline photos (landmarks/quality.py's warn band) are kept with a warning. `labels` maps an image
    path to the source name its reference records (see `reference_candidates`).
    """
    if isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim == 3):
        images = [images]
    if not len(images):
        raise StoreError("no reference photos given")
    if len(images) > MAX_REFERENCES_PER_CALL:
        raise StoreError(f"{len(images)} reference photos given; at most "
                         f"{MAX_REFERENCES_PER_CALL} per call (add more with add-refs)")
    warnings: list[str] = []
    found: list[list[Reference]] = []
    seen: set[str] = set()
    for image in (progress(images) if progress is not None else images):
        label = labels.get(os.fspath(image)) if labels and isinstance(image, (str, os.PathLike)) else None
        candidates = reference_candidates(analyzer, image, face, label)
        if candidates[0].sha256 in seen:
            warnings.append(f"{candidates[0].source_path}: same photo given twice; used once")
            continue
        seen.add(candidates[0].sha256)
        found.append(candidates)
    settled = list(anchors) + [c[0] for c in found if len(c) == 1]
    references: list[Reference] = []
    unusable: list[CastkeepError] = []
    for candidates in found:
        ref = candidates[0]
        try:
            if len(candidates) > 1:
                ref = disambiguate(candidates, settled)
                warnings.append(f"{ref.source_path}: {len(candidates)} faces; used face {ref.face_index}, "
                                f"the one that matches the other references")
            _gate_quality(ref, force, warnings)
        except (MultipleFacesError, ReferenceQualityError) as exc:
            if strict:
                raise
            unusable.append(exc)
            continue
        references.append(ref)
    if unusable and not references:
        raise _none_usable(unusable)
    for error in unusable:
        warnings.append(f"{error.path}: left out: {error.args[0]}")
    return references, warnings


def _gate_quality(ref: Reference, force: bool, warnings: list[str]) -> None:
    """Refuse (ReferenceQualityError) a reference the quality gate refuses, unless `force`; warn on a
    borderline one."""
    report = ref.quality_report
    if not report.get("usable", True):
        reason = report.get("reason") or "low quality"
        if not force:
            raise ReferenceQualityError(f"reference photo fails the quality gate: {reason} "
                                        f"(use another photo, or --force to keep it)", path=ref.source_path)
        warnings.append(f"{ref.source_path}: kept despite low quality ({reason})")
    for warning in report.get("warnings") or ():
        warnings.append(f"{ref.source_path}: borderline quality, kept: {warning}")


def _none_usable(unusable: list[CastkeepError]) -> CastkeepError:
    """The error for a call none of whose photos is usable: the first photo's, naming the others."""
    first = unusable[0]
    if len(unusable) == 1:
        return first
    others = "; ".join(f"{Path(str(e.path)).name}: {e.args[0]}" for e in unusable[1:4])
    more = " ..." if len(unusable) > 4 else ""
    return type(first)(f"{first.args[0]}; no photo is usable (also {others}{more})", path=first.path)


def disambiguate(candidates: list[Reference], settled: list[Reference]) -> Reference:
    """The one candidate face that is the same person as the settled references."""
    advice = (f"{len(candidates)} faces of similar size found; crop the photo or pick one as "
              f"PHOTO:N (0 = largest)")
    if not settled:
        raise MultipleFacesError(advice, path=candidates[0].source_path)
    anchor = combine(np.stack([r.embedding for r in settled]), np.array([r.quality for r in settled]))
    scores = [float(np.dot(anchor, c.embedding)) for c in candidates]
    order = np.argsort(scores)[::-1]
    best, runner_up = scores[order[0]], scores[order[1]]
    threshold = similarity.SAME_PERSON_THRESHOLD
    if best < threshold or runner_up >= threshold:
        raise MultipleFacesError(f"{advice} (none, or more than one, matches the other references)",
                                 path=candidates[0].source_path)
    return candidates[int(order[0])]


def _file(reference: Reference) -> str:
    return Path(reference.source_path).name


def gate_impostors(references: list[Reference], new: set[int], force: bool, warnings: list[str]) -> None:
    """Refuse (or with `force`, flag) newly given references that are not the same person as the
    character; `new` holds their positions in `references` (the others are stored already).

    Stored references define who the character is: a new photo must match them (the character's
    stored vector), so new photos can never outvote stored ones (register A, then add two photos of B:
    both refused). A registration has no stored references: its photos are grouped by who they show
    (`identity_groups`); the largest group is the character and must be a clear majority, or nothing
    is registered, --force or not (three photos of A and three of B). The rest are refused, named."""
    threshold = similarity.SAME_PERSON_THRESHOLD
    stored = [i for i in range(len(references)) if i not in new]
    embeddings = np.stack([normalise(r.embedding) for r in references])
    weights = np.array([r.quality for r in references])

    def below_threshold(anchors: list[int], candidates: list[int]) -> dict[int, float]:
        """The candidates whose cosine to the anchors' combined vector is under the threshold."""
        anchor = combine(embeddings[anchors], weights[anchors])
        scores = {i: float(np.dot(anchor, embeddings[i])) for i in candidates}
        return {i: v for i, v in scores.items() if v < threshold}

    if stored:  # references once kept with --force despite a flag do not speak for the character
        trusted = [i for i in stored if not references[i].flagged] or stored
        outliers = below_threshold(trusted, sorted(new))
        what = "does not look like the same person as this character's stored references"
    elif len(references) == 2:
        pair = float(np.dot(embeddings[0], embeddings[1]))
        outliers = {0: pair, 1: pair} if pair < threshold else {}
        what = "the two reference photos do not match each other"
    else:
        groups = identity_groups(embeddings, threshold)
        if len(groups) > 1 and len(groups[1]) == len(groups[0]):
            shown = "; ".join(", ".join(_file(references[i]) for i in g[:3]) + (" ..." if len(g) > 3 else "")
                              for g in groups[:3])
            raise ImpostorReferenceError(f"these photos show more than one person and none is a clear majority "
                                         f"({shown}): register each person separately")
        # Outside the largest group yet close enough to it (a hard pose of the same person) is kept.
        outliers = below_threshold(groups[0], [i for g in groups[1:] for i in g])
        what = "does not look like the same person as the other references"
    if not outliers:
        return
    worst = min(outliers, key=outliers.__getitem__)
    if not force:
        others = [_file(references[i]) for i in sorted(outliers) if i != worst]
        also = f" (also: {', '.join(others[:5])}{' ...' if len(others) > 5 else ''})" if others else ""
        path = references[worst].source_path if len(references) != 2 or stored else None
        raise ImpostorReferenceError(
            f"{what} (similarity {outliers[worst]:.2f} < {threshold:.2f}){also}; remove it or pass "
            f"--force to keep it", path=path)
    for i, score in outliers.items():
        references[i].flagged = True
        warnings.append(f"{references[i].source_path}: kept with --force although flagged as "
                        f"another person (similarity {score:.2f})")
