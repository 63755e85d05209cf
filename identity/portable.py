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
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreError
from ..utils import utc_now, write_bytes_atomic
from . import fields
from .enrolment import MAX_REFERENCES
from .names import MAX_TAG_LENGTH, MAX_TAGS, clean_description, clean_tags, normalize_name
from .vectors import decode_vector

FORMAT = "castkeep-character"
VERSION = 2
READABLE_VERSIONS = (1, 2)
SUFFIX = ".castkeep.json"
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_SPACES = 16                # embedding spaces of one character (one per recogniser)
MAX_FINGERPRINT_LENGTH = 256
MAX_DATE_LENGTH = 64
MAX_CROP_BASE64 = 1_400_000    # a 320 x 320 RGB PNG is at most ~310 kB; 1 MB of PNG in base64


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


# File names are limited to 255 bytes on every common file system (ext4, APFS, NTFS in UTF-16 units).
MAX_FILE_NAME_BYTES = 255


def export_file_name(name: str) -> str:
    """`<name>.castkeep.json`, or, when that does not fit in a file name (64 four-byte letters do not),
    the name cut at a letter boundary with a hash of the whole name so that names stay distinct."""
    whole = f"{name}{SUFFIX}"
    if len(whole.encode("utf-8")) <= MAX_FILE_NAME_BYTES:
        return whole
    tag = "-" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]
    room = MAX_FILE_NAME_BYTES - len(tag) - len(SUFFIX)
    cut = name.encode("utf-8")[:room].decode("utf-8", errors="ignore")
    return f"{cut}{tag}{SUFFIX}"


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
        out_path = out_path / export_file_name(character.name)
    check_export_target(out_path, protected=protected, overwrite=overwrite)
    document: dict[str, Any] = {
        "format": FORMAT, "version": VERSION,
        "exported_at": utc_now(),
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
    try:
        document = json.loads(_read_file(path))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise StoreError("not a castkeep character file (not JSON)", path=path) from None
    except RecursionError:  # the parser recurses per level: [[[[...]]]] 100,000 deep
        raise StoreError("not a castkeep character file (JSON nested too deeply)", path=path) from None
    return parse_character(document, path)


def parse_character(document: Any, path: Path) -> Any:
    """Validate a parsed character file into a Character (not yet stored). Every field is checked
    for what the store may hold (identity/fields.py): sizes, finite unit-length embeddings, pose and
    box types, reference count, text lengths, decodable crops, so that nothing a crafted file holds
    can break the store's later reads. The store checks the model and embedding size (`import_file`)."""
    from .characters import Character

    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise StoreError("not a castkeep character file", path=path)
    if document.get("version") not in READABLE_VERSIONS:
        raise StoreError(f"character file version {document.get('version')} is not supported", path=path)
    if document.get("checksum") != _checksum(document):
        raise StoreError("character file checksum mismatch (damaged or edited)", path=path)
    try:
        name = normalize_name(_field(document, "name", str, path))
        fingerprint = fields.text(_field(document, "fingerprint", str, path), "fingerprint", MAX_FINGERPRINT_LENGTH)
        dims = _space_sizes(document, fingerprint)
        items = _field(document, "references", list, path)
        if len(items) > MAX_REFERENCES:
            raise StoreError(f"{len(items)} references (at most {MAX_REFERENCES})")
        references = [_reference(item, i, fingerprint, dims) for i, item in enumerate(items)]
        if len({r.sha256 for r in references}) < len(references):
            raise StoreError("two references are the same photo (sha256)")
        vectors = {fingerprint: decode_vector(_field(document, "vector", str, path), dims[fingerprint])}
        for space in document.get("spaces") or []:
            vectors[space["fingerprint"]] = decode_vector(space["vector"], dims[space["fingerprint"]])
        for vector in vectors.values():
            fields.unit_vector(vector, "a character vector")
        description = clean_description(document.get("description", ""))
        tags = clean_tags(fields.string_list(document.get("tags", []), "tags", MAX_TAGS, MAX_TAG_LENGTH))
        created_at = fields.text(document.get("created_at", ""), "created_at", MAX_DATE_LENGTH)
    except StoreError as exc:
        raise StoreError(f"character file is malformed: {exc.args[0]}", path=path) from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StoreError(f"character file is malformed ({type(exc).__name__}: {exc})", path=path) from None
    if not references:
        raise StoreError("character file has no references", path=path)
    if any(r.fingerprint != fingerprint for r in references):
        raise StoreError("character file mixes embeddings from different models", path=path)
    character = Character(name=name, vector=vectors[fingerprint], fingerprint=fingerprint, description=description,
                          tags=tags, references=references, created_at=created_at)
    try:
        character.refit()
    except StoreError as exc:  # references whose weighted mean is zero
        raise StoreError(f"character file is malformed: {exc.args[0]}", path=path) from None
    if set(character.spaces) != set(vectors):
        raise StoreError("character file's spaces do not match its references' embeddings", path=path)
    for space_fingerprint, vector in vectors.items():
        expected = character.spaces[space_fingerprint].vector
        if float(np.dot(expected, vector)) < 1 - 1e-4:
            raise StoreError("character vector does not match its references", path=path)
    return character


def _space_sizes(document: dict[str, Any], fingerprint: str) -> dict[str, int]:
    """{fingerprint: embedding size} of every space the file lists, its primary one first."""
    dims = {fingerprint: fields.embedding_dim(document.get("dim"), "'dim'")}
    spaces = document.get("spaces", [])
    if not isinstance(spaces, list) or len(spaces) > MAX_SPACES:
        raise StoreError(f"'spaces' is not a list of at most {MAX_SPACES} spaces")
    for space in spaces:
        if not isinstance(space, dict):
            raise StoreError("a space is not a JSON object")
        space_fingerprint = fields.text(space.get("fingerprint"), "a space's fingerprint", MAX_FINGERPRINT_LENGTH)
        dim = fields.embedding_dim(space.get("dim"), f"space '{space_fingerprint}''s size")
        if dims.setdefault(space_fingerprint, dim) != dim:
            raise StoreError(f"space '{space_fingerprint}' is given two sizes")
    return dims


def _reference(item: Any, position: int, fingerprint: str, dims: dict[str, int]) -> Any:
    """One reference of a file: version 1 (one embedding) or 2 (every space, face crop), every
    field checked."""
    from .characters import Reference

    if not isinstance(item, dict):
        raise StoreError(f"reference {position + 1} is not a JSON object")
    try:
        embeddings = _embeddings(item, fingerprint, dims)
        primary = fields.text(item.get("fingerprint", fingerprint), "fingerprint", MAX_FINGERPRINT_LENGTH)
        if primary not in embeddings:
            raise StoreError("has no embedding in its own model's space")
        flagged = item.get("flagged", False)
        if not isinstance(flagged, bool):
            raise StoreError("'flagged' is not true or false")
        return Reference(
            sha256=fields.sha256(item.get("sha256")),
            source_path=fields.text(item.get("source_path", ""), "source path"),
            embedding=embeddings[primary], quality=fields.number(item.get("quality"), "quality", 0.0, 1.0),
            det_score=fields.number(item.get("det_score", 0.0), "detection score", 0.0, 1.0),
            bbox=fields.bbox(item.get("bbox")), face_index=fields.face_index(item.get("face_index")),
            pose=fields.pose(item.get("pose", {})),
            quality_report=fields.json_object(item.get("quality_report", {}), "quality report"),
            fingerprint=primary, flagged=flagged,
            added_at=fields.text(item.get("added_at", ""), "added_at", MAX_DATE_LENGTH),
            embeddings=embeddings, crop=_crop(item))
    except StoreError as exc:
        raise StoreError(f"reference {position + 1}: {exc.args[0]}") from None


def _embeddings(item: dict[str, Any], fingerprint: str, dims: dict[str, int]) -> dict[str, np.ndarray]:
    """A reference's embeddings by space: version 2's `embeddings`, and `embedding` (its primary space,
    all version 1 has), which must agree. Each is finite, unit length and of its space's size."""
    listed = item.get("embeddings", {})
    if not isinstance(listed, dict):
        raise StoreError("'embeddings' is not a JSON object")
    embeddings = {}
    for space, text in listed.items():
        if space not in dims:
            raise StoreError(f"is embedded in space '{space}', which the file does not list")
        embeddings[space] = fields.unit_vector(decode_vector(text, dims[space]), "an embedding")
    primary = item.get("fingerprint", fingerprint)
    if primary in dims and "embedding" in item:
        embedding = fields.unit_vector(decode_vector(item["embedding"], dims[primary]), "an embedding")
        if not np.array_equal(embeddings.setdefault(primary, embedding), embedding):
            raise StoreError("'embedding' differs from its copy in 'embeddings'")
    return embeddings


def _crop(item: dict[str, Any]) -> Any:
    """The reference's face crop (None when the file has none): a PNG of the crop size that decodes,
    with 5 keypoints inside it."""
    from .crops import FaceCrop, decode_png

    if item.get("crop") is None:
        if item.get("crop_kps") is not None:
            raise StoreError("has crop keypoints but no crop")
        return None
    if not isinstance(item["crop"], str) or len(item["crop"]) > MAX_CROP_BASE64:
        raise StoreError("crop is not base64 text of a PNG (at most 1 MB)")
    try:
        png = base64.b64decode(item["crop"], validate=True)
    except (binascii.Error, ValueError):
        raise StoreError("crop is not valid base64") from None
    crop = FaceCrop.from_stored(png, item.get("crop_kps"))
    decode_png(png)
    return crop
