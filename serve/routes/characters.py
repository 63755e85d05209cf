"""The store's characters: list, show (with reference crops and pose coverage), register by upload, add
references, remove, export and import."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import Response

from ...errors import StoreError
from ...identity.enrolment import MAX_REFERENCES_PER_CALL
from ...identity.names import normalize_name
from ...identity.portable import export_file_name, read_character
from ..errors import ApiError, json_error_schema
from ..security import require_writer, writer_responses
from ..state import state, uploads
from ..uploads import Uploads
from . import views

router = APIRouter(prefix=views.API, tags=["characters"], responses={"4XX": json_error_schema()})
writes = [Depends(require_writer)]

Photos = Annotated[list[UploadFile], File(description=f"1-{MAX_REFERENCES_PER_CALL} photos of one person")]
Force = Annotated[bool, Form(description="keep photos the quality gate refuses, or that look like another person (flagged)")]
Strict = Annotated[bool, Form(description="all or nothing: refuse the call if any photo fails the quality gate")]
Face = Annotated[int | None, Form(ge=0, description="use this face (0 = largest) of every photo")]


@router.get("/characters", summary="List the characters")
def list_characters(request: Request) -> list[dict[str, Any]]:
    with state(request).store() as store:
        return [views.summary(c) for c in store.characters()]


@router.get("/characters/{name}", summary="One character: references, quality, pose coverage, crop URLs")
def show(request: Request, name: str) -> dict[str, Any]:
    with state(request).store() as store:
        return views.detail(store.get(name))


@router.get("/characters/{name}/references/{reference_id}/crop.png", summary="A reference's aligned face crop",
            response_class=Response, responses={200: {"content": {"image/png": {}}}})
def crop(request: Request, name: str, reference_id: int) -> Response:
    with state(request).store() as store:
        character = store.get(name, crops=True)
    for reference in character.references:
        if reference.id == reference_id and reference.crop is not None:
            return Response(reference.crop.png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
    raise ApiError(404, f"'{character.name}' has no reference {reference_id} with a stored face crop", type_name="NotFound")


def _photos(batch: Uploads, photos: list[UploadFile]) -> tuple[list[str], dict[str, str]]:
    """The spooled photos and the source names the store records for them (`upload:NAME`)."""
    if not 1 <= len(photos) <= MAX_REFERENCES_PER_CALL:
        raise ApiError(400, f"{len(photos)} photos sent; send 1 to {MAX_REFERENCES_PER_CALL} per call",
                       type_name="StoreError", code=StoreError.exit_code)
    paths = [os.fspath(batch.image(photo, fallback=f"photo {i + 1}")) for i, photo in enumerate(photos)]
    return paths, {path: f"upload:{batch.labels[path]}" for path in paths}


@router.post("/characters", status_code=201, dependencies=writes, responses=writer_responses(),
             summary="Register a character from uploaded photos")
def register(request: Request, name: Annotated[str, Form()], photos: Photos,
             description: Annotated[str, Form()] = "", tags: Annotated[list[str] | None, Form()] = None,
             force: Force = False, strict: Strict = False, face: Face = None,
             batch: Uploads = Depends(uploads)) -> dict[str, Any]:
    name = normalize_name(name)  # a bad name is refused before any photo is read
    paths, labels = _photos(batch, photos)
    serve = state(request)
    with serve.pool.borrow() as worker, serve.store(worker, enrol=True) as store:
        character = store.register(name, paths, description=description, tags=tags or (), force=force, strict=strict,
                                   face=face, labels=labels)
    return {**views.detail(character), "warnings": [batch.redact(w) for w in character.warnings]}


@router.post("/characters/{name}/references", dependencies=writes, responses=writer_responses(),
             summary="Add reference photos to a character")
def add_references(request: Request, name: str, photos: Photos, force: Force = False, strict: Strict = False,
                   face: Face = None, batch: Uploads = Depends(uploads)) -> dict[str, Any]:
    serve = state(request)
    with serve.store() as store:
        store.get(name)  # an unknown character is refused before any photo is read
    paths, labels = _photos(batch, photos)
    with serve.pool.borrow() as worker, serve.store(worker, enrol=True) as store:
        character = store.add_refs(name, paths, force=force, strict=strict, face=face, labels=labels)
    return {**views.detail(character), "warnings": [batch.redact(w) for w in character.warnings]}


@router.delete("/characters/{name}", dependencies=writes, responses=writer_responses(), summary="Remove a character")
def remove(request: Request, name: str) -> dict[str, str]:
    with state(request).store() as store:
        return {"removed": store.remove(name)}


@router.get("/characters/{name}/export", summary="Download a character as a .castkeep.json file",
            response_class=Response, responses={200: {"content": {"application/json": {}}}})
def export(request: Request, name: str, batch: Uploads = Depends(uploads)) -> Response:
    with state(request).store() as store:
        written = store.export(name, batch.folder / "export.castkeep.json")
        file_name = export_file_name(store.get(name).name)
    return Response(written.read_bytes(), media_type="application/json",
                    headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(file_name, safe='')}"})


@router.post("/import", status_code=201, dependencies=writes, responses=writer_responses(),
             summary="Add a character from an exported .castkeep.json file")
def import_character(request: Request, file: Annotated[UploadFile, File(description="a .castkeep.json export")],
                     name: Annotated[str | None, Form(description="store it under this name instead")] = None,
                     batch: Uploads = Depends(uploads)) -> dict[str, Any]:
    path = batch.file(file, fallback="character file")
    try:
        read_character(Path(path))  # a malformed file is the request's fault (422), not a conflict in the store
    except StoreError as exc:
        raise ApiError.of(422, exc) from None
    with state(request).store() as store:
        character = store.import_file(path, name=name or None)
    return {**views.detail(character), "warnings": [batch.redact(w) for w in character.warnings]}
