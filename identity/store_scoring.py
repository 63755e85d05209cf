"""Scoring a face against stored characters with any scorer and domain (`score`/`identify --scorer --domain`).

ArcFace numbers come from the store as they are (the character vector, the index search); only their
verdict and P(same) are read in the chosen domain. dlib needs faces, not stored vectors: the query image is
described directly and each character through `ReferenceDescriptors` (its stored face crops; the
distance to a character is on the photo-pair scale, `CharacterDescriptors.distance`). So that a
large store is never re-described in full, dlib and the fusion re-rank ArcFace's nearest characters
(`SHORTLIST`, or k when larger): a character ArcFace puts below that is not considered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CastkeepError, FaceIndexError, ImageError, NoFaceError, StoreError
from ..landmarks.model_pack import same_space
from ..utils import Progress, no_progress
from .open_set import DEFAULT_FPIR, OpenSetThreshold, open_set_threshold
from .scorers import FaceFeatures, ScoreResult, check_domain, describe_face, get_scorer, judge_all

if TYPE_CHECKING:
    from .reference_faces import ReferenceDescriptors

SHORTLIST = 5


@dataclass
class ScoredMatch:
    """A stored character judged against a face by one scorer."""

    name: str
    cosine: float  # ArcFace cosine to the character vector
    result: ScoreResult  # the chosen scorer's judgement
    scores: dict[str, ScoreResult] = field(default_factory=dict)  # every scorer that could judge it
    open_set: OpenSetThreshold | None = None  # set by `identify`: `result.same` is judged at its threshold

    @property
    def log_odds(self) -> float:
        """The chosen scorer's calibrated log-odds of "same person" (orders matches across scorers' scales)."""
        return float(get_scorer(self.result.scorer).calibration(self.result.domain).log_odds(self.result.score))

    def to_dict(self) -> dict[str, Any]:
        # `score`, `probability`, `same` are the chosen scorer's (for arcface, score = cosine as before).
        return {"name": self.name, "score": round(self.result.score, 4), "probability": round(self.result.probability, 4),
                "same": self.result.same, "cosine": round(self.cosine, 4), "scorer": self.result.scorer,
                "metric": self.result.metric, "domain": self.result.domain,
                "scores": {k: v.to_dict() for k, v in self.scores.items()},
                **({} if self.open_set is None else {"open_set": self.open_set.to_dict()})}


@dataclass
class CharacterJudgement:
    """How well a face matches one character, by the chosen scorer, and whether another matches better."""

    match: ScoredMatch
    closest_other: ScoredMatch | None
    leakage: bool  # another character is more likely the same person, by the chosen scorer
    baseline_mean: float | None

    def to_dict(self) -> dict[str, Any]:
        result = self.match.result
        return {"name": self.match.name, "cosine": round(self.match.cosine, 4),
                "probability": round(result.probability, 4), "same": result.same, "threshold": round(result.threshold, 4),
                "baseline_mean": self.baseline_mean, "scorer": result.scorer, "metric": result.metric,
                "domain": result.domain, "score": round(result.score, 4),
                "scores": {k: v.to_dict() for k, v in self.match.scores.items()},
                "closest_other": None if self.closest_other is None else self.closest_other.to_dict(),
                "leakage": self.leakage}


class _Judge:
    """One query face against stored characters: ArcFace from the store, dlib from stored face crops."""

    def __init__(self, store: Any, source: Any, face: int | None, scorer: str, domain: str,
                 recogniser: Any = None, features: FaceFeatures | None = None,
                 references: ReferenceDescriptors | None = None) -> None:
        self.store, self.scorer, self.domain = store, get_scorer(scorer), check_domain(domain)
        self.descriptor: np.ndarray | None = None
        if features is not None:  # the caller has detected and described the face already
            self.query: Any = features.embedding
            self.descriptor = features.descriptor
            if self.scorer.needs_dlib and self.descriptor is None:
                raise StoreError(f"--scorer {self.scorer.name} needs the face's dlib descriptor")
        elif self.scorer.needs_dlib:
            from .enrolment import parse_image_spec

            if isinstance(source, (np.ndarray, list, tuple)) and np.ndim(source) == 1:
                raise StoreError(f"--scorer {self.scorer.name} needs an image, not an embedding")
            recogniser = recogniser if recogniser is not None else _dlib()
            analyzer = store.analyzer
            if store.fingerprint is not None and not same_space(analyzer.fingerprint, store.fingerprint):
                raise StoreError(f"this store holds embeddings of {store.fingerprint}; the face models loaded are "
                                 f"{analyzer.fingerprint} (use the store's --models)")
            image, spec_face = parse_image_spec(source)
            described = describe_face(analyzer, image, face=spec_face if spec_face is not None else face,
                                      recogniser=recogniser)
            self.query = described.embedding  # the store searches by this vector: one detection only
            self.descriptor = described.descriptor
        else:
            self.query = source
        if self.descriptor is not None and references is None:
            from .reference_faces import ReferenceDescriptors

            references = ReferenceDescriptors(recogniser if recogniser is not None else _dlib(),
                                              store.analyzer.detector)
        self.references = references

    def judge(self, name: str, cosine: float, open_set: OpenSetThreshold | None = None) -> ScoredMatch:
        raw = {"arcface": cosine}
        if self.descriptor is not None:
            assert self.references is not None  # set with the descriptor
            character = self.references.of_character(self.store.get(name, crops=True))
            raw["dlib"] = character.distance(self.descriptor)  # on the pair scale the calibrations use
        results = judge_all(self.scorer, raw, self.domain, None if open_set is None else open_set.threshold)
        return ScoredMatch(name=name, cosine=cosine, result=results[self.scorer.name], scores=results,
                           open_set=open_set)


def identify(store: Any, source: Any, *, k: int = 5, face: int | None = None, scorer: str = "arcface",
             domain: str = "photo", recogniser: Any = None, fpir: float = DEFAULT_FPIR,
             features: FaceFeatures | None = None, references: ReferenceDescriptors | None = None) -> list[ScoredMatch]:
    """The k characters most likely to be the face in `source`, by `scorer` in `domain`, best first; each
    verdict at the open-set threshold that accepts about `fpir` of faces not enrolled (identity/open_set.py).
    `features` and `references` as for `score`."""
    open_set = open_set_threshold(scorer, domain, len(store), fpir)  # a bad fpir fails before any model loads
    judge = _Judge(store, source, face, scorer, domain, recogniser, features, references)
    shortlist = k if judge.scorer.name == "arcface" else max(k, SHORTLIST)
    matches = [judge.judge(m.name, m.score, open_set) for m in store.identify(judge.query, k=shortlist, face=face)]
    matches.sort(key=lambda m: -m.log_odds)
    return matches[:k]


def score(store: Any, source: Any, name: str, *, face: int | None = None, scorer: str = "arcface",
          domain: str = "photo", recogniser: Any = None, features: FaceFeatures | None = None,
          references: ReferenceDescriptors | None = None) -> CharacterJudgement:
    """How well the face in `source` matches character `name`, by `scorer` in `domain`; leakage when
    another stored character (of ArcFace's nearest) is more likely the same person.

    `features` (the face already detected, embedded and described) skips detection, and `references`
    keeps characters' dlib descriptors across calls: what scoring many generated outputs needs."""
    judge = _Judge(store, source, face, scorer, domain, recogniser, features, references)
    stored = store.score(judge.query, name, face=face)  # the ArcFace cosine, the nearest others
    own = judge.judge(stored.name, stored.cosine)
    if judge.scorer.name == "arcface":  # the store already found the nearest other character
        others = [] if stored.closest_other is None else [stored.closest_other]
    else:
        others = [m for m in store.identify(judge.query, k=SHORTLIST + 1, face=face) if m.name != stored.name]
    judged = sorted((judge.judge(m.name, m.score) for m in others), key=lambda m: -m.log_odds)
    closest = judged[0] if judged else None
    leakage = (stored.leakage if judge.scorer.name == "arcface"
               else closest is not None and closest.log_odds > own.log_odds)
    return CharacterJudgement(match=own, closest_other=closest, leakage=leakage, baseline_mean=stored.baseline_mean)


@dataclass
class ImageJudgement:
    """One image of a batch: what was judged (a `score` or an `identify` answer), or why it could not be."""

    image: str
    domain: str | None = None
    result: Any = None
    error: CastkeepError | None = None


def judge_many(store: Any, images: Iterable[Any], judge: Callable[..., Any], *, face: int | None = None,
               scorer: str = "arcface", domain: str = "photo", recogniser: Any = None,
               references: ReferenceDescriptors | None = None,
               progress: Progress = no_progress) -> Iterator[ImageJudgement]:
    """`judge(store, image, face=, scorer=, domain=, features=, references=, recogniser=)` (`score` with its
    character bound, or `identify`) for each image, in order, detecting and embedding them as one batch
    (`FaceAnalyzer.analyze_many`) and describing each chosen face with dlib when the scorer needs it.
    `domain` "auto" is resolved per image. An image that cannot be read, has no face or lacks the asked
    face is an `ImageJudgement` with its error; store errors stop the batch. `references` keeps characters'
    dlib descriptors across batches (a server's; made for this batch when None)."""
    from .domains import resolve_domain
    from .enrolment import parse_image_spec

    chosen = get_scorer(scorer)
    recogniser = recogniser if recogniser is not None else (_dlib() if chosen.needs_dlib else None)
    if recogniser is not None and references is None:
        from .reference_faces import ReferenceDescriptors

        references = ReferenceDescriptors(recogniser, store.analyzer.detector)  # once for the whole batch
    specs = [(image, *parse_image_spec(image)) for image in images]
    analyzed = store.analyzer.analyze_many((path for _, path, _ in specs), prefetch=min(4, len(specs) - 1))
    for (label, path, spec_face), result in progress(zip(specs, analyzed, strict=True), label="images",
                                                     total=len(specs)):
        try:
            if result.error is not None:
                raise result.error
            assert result.analysis is not None and result.image is not None  # set when there is no error
            result.analysis.source = str(path)
            picked = result.analysis.face(spec_face if spec_face is not None else face)
            descriptor = None if recogniser is None else recogniser.describe(result.image, [picked.bbox])[0]
            features = FaceFeatures(index=picked.index, embedding=picked.embedding, descriptor=descriptor)
            image_domain = resolve_domain(domain, path)
            answer = judge(store, path, face=picked.index, scorer=scorer, domain=image_domain, features=features,
                           references=references, recogniser=recogniser)
        except (ImageError, NoFaceError, FaceIndexError) as exc:
            yield ImageJudgement(image=str(label), error=exc)
            continue
        yield ImageJudgement(image=str(label), domain=image_domain, result=answer)


def _dlib() -> Any:
    from .dlib_recogniser import DlibRecogniser

    return DlibRecogniser()
