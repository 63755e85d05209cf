"""Portable character files: one JSON document with base64 float32 embeddings and base64 PNG face
crops (no pickle).

    {"format": "castkeep-character", "version": 2, "name": ..., "fingerprint": ..., "dim": ...,
     "vector": "<b64>", "spaces": [{"fingerprint", "dim", "vector"}, ...],
     "references": [{..., "embedding": "<b64>", "embeddings": {fingerprint: "<b64>"},
                     "crop": "<b64 PNG>" | null, "crop_kps": [[x, y] x 5] | null}],
     "checksum": "<sha256>"}

`fingerprint`, `vector` and each reference's `embedding` are the primary space, as in version 1;
`spaces` and `embeddings` hold every space (primary included). Version-1 files (one space, no crops)
still import. `checksum` is the sha256 of the canonical JSON of everything else, so a damaged or
edited file is refused on import rather than silently stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreError
from ..utils import write_bytes_atomic
from .names import normalize_name
from .vectors import decode_vector

FORMAT = "castkeep-character"
VERSION = 2
READABLE_VERSIONS = (1, 2)
SUFFIX = ".castkeep.json"
MAX_FILE_BYTES = 64 * 1024 * 1024


def _checksum(document: dict[str, Any]) -> str:
    body = {k: v for k, v in document.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def is_character_file(path: Path) -> bool:
    """Whether `path` is a castkeep export (read from its first bytes only: any file may be given)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(256)
    except OSError:
        return False
    return head.lstrip().startswith(b"{") and f'"format": "{FORMAT}"'.encode() in head


def check_export_target(out_path: Path, *, protected: Path | None = None, overwrite: bool = False) -> None:
    """Refuse to write over the store's own files (anything inside `protected`, the store folder) or an
    existing file that is not a castkeep export, unless `overwrite`; both would lose data silently."""
    target = out_path.resolve()
    if protected is not None and target.is_relative_to(protected.resolve()):
        raise StoreError("will not write an export inside the store's own folder (it would replace or "
                         "clutter the store's files); choose another path", path=out_path)
    if target.is_dir():
        raise StoreError("export target is a folder", path=out_path)
    if target.exists() and not overwrite and not is_character_file(target):
        raise StoreError("file exists and is not a castkeep export; pass --overwrite to replace it",
                         path=out_path)


def write_character(character: Any, out_path: Path, *, protected: Path | None = None,
                    overwrite: bool = False) -> Path:
    """Write `character` to `out_path` (a folder gets `<name>.castkeep.json`); returns the file.
    Existing files that are not castkeep exports, and the `protected` folder, are never written over
    (see check_export_target)."""
    from .vectors import encode_vector

    def reference(r: Any) -> dict[str, Any]:
        data = r.to_dict(include_embedding=True)
        del data["spaces"], data["crop"]  # summaries for display; the file holds the real thing
        # Exact floats (to_dict rounds for display): the importer recomputes the same vector.
        data.update(quality=r.quality, det_score=r.det_score, bbox=r.bbox,
                    embeddings={fingerprint: encode_vector(e) for fingerprint, e in r.embeddings.items()},
                    crop=None if r.crop is None else base64.b64encode(r.crop.png).decode("ascii"),
                    crop_kps=None if r.crop is None else r.crop.kps_list())
        return data

    if out_path.is_dir():
        out_path = out_path / f"{character.name}{SUFFIX}"
    check_export_target(out_path, protected=protected, overwrite=overwrite)
    document: dict[str, Any] = {
        "format": FORMAT, "version": VERSION,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "name": character.name, "description": character.description, "tags": character.tags,
        "fingerprint": character.fingerprint, "dim": int(character.vector.size),
        "created_at": character.created_at, "vector": encode_vector(character.vector),
        "baseline": character.baseline,
        "spaces": [{"fingerprint": space.fingerprint, "dim": space.dim, "vector": encode_vector(space.vector)}
                   for space in character.spaces.values()],
        "references": [reference(r) for r in character.references],
    }
    document["checksum"] = _checksum(document)
    try:
        write_bytes_atomic(out_path, json.dumps(document, indent=1, ensure_ascii=False).encode())
    except OSError as exc:
        raise StoreError(f"cannot write export file ({exc.strerror})", path=out_path) from None
    return out_path


def _field(document: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    value = document.get(key)
    if not isinstance(value, kind):
        raise StoreError(f"character file field '{key}' is missing or malformed", path=path)
    return value


def _read_file(path: Path) -> bytes:
    """The bytes of a character file: a regular file, read up to MAX_FILE_BYTES and refused past it. The
    limit is enforced on what is read, not on a size from stat: /dev/zero or a FIFO reports none."""
    try:
        # O_NONBLOCK: opening a FIFO without a writer would wait forever; a regular file ignores it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise StoreError("character file not found", path=path) from None
    except OSError as exc:
        raise StoreError(f"cannot read character file ({exc.strerror or exc})", path=path) from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        mode = info.st_mode
        if stat.S_ISDIR(mode):
            raise StoreError("is a directory, not a character file", path=path)
        if not stat.S_ISREG(mode):
            kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device or special file"
            raise StoreError(f"is {kind}, not a regular character file", path=path)
        if info.st_size > MAX_FILE_BYTES:
            raise StoreError(f"character file is too large (over {MAX_FILE_BYTES // (1024 * 1024)} MiB)", path=path)
        try:
            data = handle.read(MAX_FILE_BYTES + 1)  # the file may have grown since fstat
        except OSError as exc:
            raise StoreError(f"cannot read character file ({exc.strerror or exc})", path=path) from None
    if len(data) > MAX_FILE_BYTES:
        raise StoreError(f"character file is too large (over {MAX_FILE_BYTES // (1024 * 1024)} MiB)", path=path)
    return data


def read_character(path: Path) -> Any:
    """Parse and validate an exported character file into a Character (not yet stored)."""
    from .characters import Character

    try:
        document = json.loads(_read_file(path))
    except FileNotFoundError:
        raise StoreError("character file not found", path=path) from None
    except IsADirectoryError:
        raise StoreError("is a directory, not a character file", path=path) from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise StoreError("not a castkeep character file (not JSON)", path=path) from None
    except RecursionError:  # the parser recurses per level: [[[[...]]]] 100,000 deep
        raise StoreError("not a castkeep character file (JSON nested too deeply)", path=path) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise StoreError("not a castkeep character file", path=path)
    if document.get("version") not in READABLE_VERSIONS:
        raise StoreError(f"character file version {document.get('version')} is not supported", path=path)
    if document.get("checksum") != _checksum(document):
        raise StoreError("character file checksum mismatch (damaged or edited)", path=path)
    try:
        name = normalize_name(_field(document, "name", str, path))
        fingerprint = _field(document, "fingerprint", str, path)
        dims = {fingerprint: int(_field(document, "dim", int, path))}
        for space in document.get("spaces") or []:
            dims[str(space["fingerprint"])] = int(space["dim"])
        references = [_reference(item, fingerprint, dims) for item in _field(document, "references", list, path)]
        vectors = {fingerprint: decode_vector(_field(document, "vector", str, path), dims[fingerprint])}
        for space in document.get("spaces") or []:
            vectors[str(space["fingerprint"])] = decode_vector(space["vector"], dims[str(space["fingerprint"])])
    except StoreError as exc:
        raise StoreError(f"character file is malformed: {exc.args[0]}", path=path) from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StoreError(f"character file is malformed ({type(exc).__name__}: {exc})", path=path) from None
    if not references:
        raise StoreError("character file has no references", path=path)
    if any(r.fingerprint != fingerprint for r in references):
        raise StoreError("character file mixes embeddings from different models", path=path)
    tags = document.get("tags") or []
    if not isinstance(tags, list):
        raise StoreError("character file field 'tags' is malformed", path=path)
    character = Character(name=name, vector=vectors[fingerprint], fingerprint=fingerprint,
                          description=str(document.get("description", "")), tags=[str(t) for t in tags],
                          references=references, created_at=str(document.get("created_at", "")))
    character.refit()
    if set(character.spaces) != set(vectors):
        raise StoreError("character file's spaces do not match its references' embeddings", path=path)
    for space_fingerprint, vector in vectors.items():
        expected = character.spaces[space_fingerprint].vector
        if float(np.dot(expected, vector / max(np.linalg.norm(vector), 1e-12))) < 1 - 1e-4:
            raise StoreError("character vector does not match its references", path=path)
    return character


def _reference(item: dict[str, Any], fingerprint: str, dims: dict[str, int]) -> Any:
    """One reference of a file: version 1 (one embedding) or 2 (every space, face crop)."""
    from .characters import Reference
    from .crops import FaceCrop

    embeddings = {str(f): decode_vector(text, dims[str(f)]) for f, text in (item.get("embeddings") or {}).items()}
    primary = str(item.get("fingerprint", fingerprint))
    embeddings.setdefault(primary, decode_vector(item["embedding"], dims[fingerprint]))
    crop = None
    if item.get("crop") is not None:
        try:
            png = base64.b64decode(item["crop"], validate=True)
        except (binascii.Error, ValueError):
            raise StoreError("a reference's crop is not valid base64") from None
        crop = FaceCrop.from_stored(png, item.get("crop_kps"))
    pose = item.get("pose") or {}
    return Reference(
        sha256=str(item["sha256"]), source_path=str(item.get("source_path", "")),
        embedding=embeddings[primary], quality=float(item["quality"]),
        det_score=float(item.get("det_score", 0.0)), bbox=[float(v) for v in item.get("bbox", [])],
        face_index=item.get("face_index"), pose=dict(pose), quality_report=dict(item.get("quality_report") or {}),
        fingerprint=primary, flagged=bool(item.get("flagged")), added_at=str(item.get("added_at", "")),
        embeddings=embeddings, crop=crop)
