"""Judging faces: compare two uploads, identify an upload among the characters, score it against one. Each
answer is the CLI's `--json` object for the same files and options (`castkeep compare`, `identify`, `score`),
computed by the same library calls."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile

from ...errors import ConfigError
from ...identity.comparison import compare as compare_faces
from ...identity.domains import resolve_domain
from ...identity.open_set import open_set_threshold
from ...identity.scorers import get_scorer
from ...identity.store_scoring import ImageJudgement, judge_many
from ...identity.store_scoring import identify as identify_face
from ...identity.store_scoring import score as score_face
from ..errors import json_error_schema
from ..state import state, uploads
from ..uploads import Uploads
from ..workers import Worker
from .views import API

router = APIRouter(prefix=API, tags=["judging"], responses={"4XX": json_error_schema()})

Scorer = Annotated[Literal["arcface", "dlib", "fused"], Form(
    description="ArcFace (cosine), dlib's ResNet descriptor (another model family), or both fused")]
Domain = Annotated[Literal["auto", "photo", "generated"], Form(
    description="which calibration judges: real photos or generated images; auto reads the image's generator metadata")]
Face = Annotated[int | None, Form(ge=0, description="which face of the image (0 = largest)")]
Image = Annotated[UploadFile, File(description="an image: JPEG, PNG, WebP, BMP or TIFF")]


def _judge_one(store: Any, worker: Worker, path: Any, judge: Any, face: int | None, scorer: str,
               domain: str) -> ImageJudgement:
    """One image through `judge_many`, as `castkeep identify`/`score` judge it; its error raised."""
    dlib = get_scorer(scorer).needs_dlib
    (result,) = judge_many(store, [path], judge, face=face, scorer=scorer, domain=domain,
                           recogniser=worker.recogniser if dlib else None, references=worker.references if dlib else None)
    if result.error is not None:
        raise result.error
    return result


@router.post("/identify", summary="Who is in this image: the closest characters, best first")
def identify(request: Request, image: Image,
             k: Annotated[int, Form(ge=1, le=100, description="how many characters to list")] = 5,
             fpir: Annotated[float, Form(gt=0, lt=1, description="target false-positive identification rate")] = 0.01,
             scorer: Scorer = "arcface", domain: Domain = "auto", face: Face = None,
             batch: Uploads = Depends(uploads)) -> dict[str, Any]:
    path = batch.image(image)
    serve = state(request)

    def judge(store: Any, source: Any, **kwargs: Any) -> Any:
        return identify_face(store, source, k=k, fpir=fpir, **kwargs)

    with serve.pool.borrow() as worker, serve.store(worker) as store:
        open_set_threshold(scorer, "photo", len(store), fpir)
        result = _judge_one(store, worker, path, judge, face, scorer, domain)
    return {"image": batch.labels[str(path)], "domain": result.domain,
            "matches": [match.to_dict() for match in result.result]}


@router.post("/score", summary="How well the face in this image matches one character")
def score(request: Request, image: Image, character: Annotated[str, Form(description="the character's name")],
          scorer: Scorer = "arcface", domain: Domain = "auto", face: Face = None,
          batch: Uploads = Depends(uploads)) -> dict[str, Any]:
    serve = state(request)
    with serve.store() as store:
        store.get(character)  # an unknown character is refused before the image is read
    path = batch.image(image)

    def judge(store: Any, source: Any, **kwargs: Any) -> Any:
        return score_face(store, source, character, **kwargs)

    with serve.pool.borrow() as worker, serve.store(worker) as store:
        result = _judge_one(store, worker, path, judge, face, scorer, domain)
    return {"image": batch.labels[str(path)], "domain": result.domain, **result.result.to_dict()}


@router.post("/compare", summary="Whether the faces in two images are the same person")
def compare(request: Request, image_a: Image, image_b: Image, scorer: Scorer = "arcface", domain: Domain = "auto",
            face_a: Face = None, face_b: Face = None,
            threshold: Annotated[float | None, Form(description="verdict threshold on the scorer's own scale")] = None,
            batch: Uploads = Depends(uploads)) -> dict[str, Any]:
    if threshold is not None and not math.isfinite(threshold):
        raise ConfigError(f"threshold {threshold!r} is not a finite number")
    a, b = batch.image(image_a, "image_a"), batch.image(image_b, "image_b")
    serve = state(request)
    with serve.pool.borrow() as worker:
        result = compare_faces(a, b, analyzer=worker.query, face_a=face_a, face_b=face_b, threshold=threshold,
                               scorer=scorer, domain=resolve_domain(domain, a, b),
                               recogniser=worker.recogniser if get_scorer(scorer).needs_dlib else None)
    return {"image_a": batch.labels[str(a)], "image_b": batch.labels[str(b)], **result.to_dict()}
