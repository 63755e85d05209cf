"""Portable character files: one JSON document with base64 float32 embeddings (no pickle).

    {"format": "castkeep-character", "version": 1, "name": ..., "fingerprint": ...,
     "vector": "<b64>", "references": [{..., "embedding": "<b64>"}], "checksum": "<sha256>"}

`checksum` is the sha256 of the canonical JSON of everything else, so a damaged or edited file is
refused on import rather than silently stored.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreError
from ..utils import write_bytes_atomic
from .names import normalize_name

FORMAT = "castkeep-character"
VERSION = 1
SUFFIX = ".castkeep.json"
MAX_FILE_BYTES = 64 * 1024 * 1024


def _checksum(document: dict[str, Any]) -> str:
    body = {k: v for k, v in document.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def write_character(character: Any, out_path: Path) -> Path:
    """Write `character` to `out_path` (a folder gets `<name>.castkeep.json`); returns the file."""
    from .vectors import encode_vector

    if out_path.is_dir():
        out_path = out_path / f"{character.name}{SUFFIX}"
    document: dict[str, Any] = {
        "format": FORMAT, "version": VERSION,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "name": character.name, "description": character.description, "tags": character.tags,
        "fingerprint": character.fingerprint, "dim": int(character.vector.size),
        "created_at": character.created_at, "vector": encode_vector(character.vector),
        "baseline": character.baseline,
        # Exact floats (to_dict rounds for display): the importer recomputes the same vector.
        "references": [{**r.to_dict(include_embedding=True), "quality": r.quality,
                        "det_score": r.det_score, "bbox": r.bbox} for r in character.references],
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


def read_character(path: Path) -> Any:
    """Parse and validate an exported character file into a Character (not yet stored)."""
    from .characters import Character, Reference
    from .references import combine
    from .vectors import decode_vector

    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise StoreError("character file is too large", path=path)
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise StoreError("character file not found", path=path) from None
    except IsADirectoryError:
        raise StoreError("is a directory, not a character file", path=path) from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise StoreError("not a castkeep character file (not JSON)", path=path) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise StoreError("not a castkeep character file", path=path)
    if document.get("version") != VERSION:
        raise StoreError(f"character file version {document.get('version')} is not supported", path=path)
    if document.get("checksum") != _checksum(document):
        raise StoreError("character file checksum mismatch (damaged or edited)", path=path)
    try:
        name = normalize_name(_field(document, "name", str, path))
        dim = int(_field(document, "dim", int, path))
        fingerprint = _field(document, "fingerprint", str, path)
        references = []
        for item in _field(document, "references", list, path):
            pose = item.get("pose") or {}
            references.append(Reference(
                sha256=str(item["sha256"]), source_path=str(item.get("source_path", "")),
                embedding=decode_vector(item["embedding"], dim), quality=float(item["quality"]),
                det_score=float(item.get("det_score", 0.0)), bbox=[float(v) for v in item.get("bbox", [])],
                face_index=item.get("face_index"), pose=dict(pose),
                quality_report=dict(item.get("quality_report") or {}),
                fingerprint=str(item.get("fingerprint", fingerprint)), flagged=bool(item.get("flagged")),
                added_at=str(item.get("added_at", ""))))
        vector = decode_vector(_field(document, "vector", str, path), dim)
    except StoreError as exc:
        raise StoreError(f"character file is malformed: {exc}", path=path) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"character file is malformed ({type(exc).__name__}: {exc})", path=path) from None
    if not references:
        raise StoreError("character file has no references", path=path)
    if any(r.fingerprint != fingerprint for r in references):
        raise StoreError("character file mixes embeddings from different models", path=path)
    expected = combine(np.stack([r.embedding for r in references]), np.array([r.quality for r in references]))
    if float(np.dot(expected, vector / max(np.linalg.norm(vector), 1e-12))) < 1 - 1e-4:
        raise StoreError("character vector does not match its references", path=path)
    tags = document.get("tags") or []
    if not isinstance(tags, list):
        raise StoreError("character file field 'tags' is malformed", path=path)
    return Character(name=name, vector=expected, fingerprint=fingerprint,
                     description=str(document.get("description", "")), tags=[str(t) for t in tags],
                     references=references, created_at=str(document.get("created_at", "")))
