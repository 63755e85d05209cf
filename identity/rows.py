"""Rows of the `characters`, `refs`, `character_vectors` and `ref_embeddings` tables <-> Character,
Reference and Space records.

Every SQL statement that touches those tables is here; callers hold the transaction
(`Database.write()` / `snapshot()`) and the error mapping (`Database.guard()`).

`character_vectors` and `ref_embeddings` hold every embedding space, one row per (character or
reference, fingerprint). The primary space is also kept in the version-1 columns
(`characters.vector/baseline`, `refs.embedding/fingerprint`), written in the same statements'
transaction, so those columns stay readable; `verify` checks that both agree.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from ..errors import StoreError
from . import fields
from .backend import StoreDatabase
from .characters import Character, Reference, Space
from .crops import FaceCrop
from .vectors import from_blob, to_blob

CHUNK = 500  # SQLite caps the number of bound parameters per statement

_CHARACTER_COLUMNS = ("id, name, description, tags, fingerprint, dim, vector, baseline, created_at, "
                      "updated_at")
_REFERENCE_COLUMNS = ("character_id, id, sha256, source_path, face_index, bbox, det_score, quality, "
                      "quality_report, pose, fingerprint, embedding, flagged, added_at, crop_kps")


def _placeholders(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


# -- reading ---------------------------------------------------------------------------------------
def read_characters(db: StoreDatabase, where: str = "", args: Sequence[Any] = (), *,
                    crops: bool = False, damaged: list[str] | None = None) -> list[Character]:
    """Characters (with their references, oldest first, and every space) matching `where`, ordered
    by name key. Face crops (~150 kB each) are read only with `crops`; otherwise `has_crop` says
    whether there is one.

    Every value is checked as it is decoded (rows can be edited outside castkeep): a row that does
    not decode raises StoreError naming it, or, with `damaged` (what `verify` passes), its character
    is left out and the problem appended there."""
    broken: dict[int, str] = {}
    labels: dict[int, str] = {}
    characters: dict[int, Character] = {}
    for row in db.execute(f"SELECT {_CHARACTER_COLUMNS} FROM characters {where} ORDER BY name_key", args):
        labels[row[0]] = f"character {row[1]!r} (id {row[0]})" if isinstance(row[1], str) else f"character id {row[0]}"
        try:
            characters[row[0]] = _character(row)
        except StoreError as exc:
            broken[row[0]] = f"{labels[row[0]]}: {exc.args[0]}"
    ids = list(labels)
    references: dict[int, Reference] = {}
    crop_column = "crop" if crops else "NULL"

    def decode(character_id: int, what: str, make: Callable[[], Any]) -> Any:
        if character_id in broken:
            return None
        try:
            return make()
        except StoreError as exc:
            broken[character_id] = f"{labels[character_id]}: {what}{exc.args[0]}"
            return None

    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        marks = _placeholders(chunk)
        for r in db.execute(f"SELECT {_REFERENCE_COLUMNS}, {crop_column} FROM refs WHERE character_id IN "
                            f"({marks}) ORDER BY id", chunk):
            reference = decode(r[0], f"reference {r[1]}: ", partial(_reference, r))
            if reference is not None:
                references[r[1]] = reference
                characters[r[0]].references.append(reference)
        # The primary space first, then the others by fingerprint.
        for e in db.execute("SELECT r.character_id, e.ref_id, e.fingerprint, e.vector FROM ref_embeddings e JOIN refs r "
                            f"ON r.id = e.ref_id WHERE r.character_id IN ({marks}) "
                            "ORDER BY e.ref_id, e.fingerprint != r.fingerprint, e.fingerprint", chunk):
            vector = decode(e[0], f"reference {e[1]}'s embedding in space {e[2]!r}: ", partial(_vector, e[3]))
            if vector is not None and e[1] in references:
                references[e[1]].embeddings[e[2]] = vector
        for v in db.execute("SELECT v.character_id, v.fingerprint, v.vector, v.baseline, "
                            "(SELECT COUNT(*) FROM ref_embeddings e JOIN refs r ON r.id = e.ref_id "
                            " WHERE r.character_id = v.character_id AND e.fingerprint = v.fingerprint) "
                            "FROM character_vectors v JOIN characters c ON c.id = v.character_id "
                            f"WHERE v.character_id IN ({marks}) "
                            "ORDER BY v.character_id, v.fingerprint != c.fingerprint, v.fingerprint", chunk):
            space = decode(v[0], f"vector in space {v[1]!r}: ", partial(_space, v))
            if space is not None:
                characters[v[0]].spaces[v[1]] = space
    if broken and damaged is None:
        first = next(iter(broken.values()))
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        raise StoreError(f"damaged row in the store: {first}{more}; `castkeep verify` lists every problem "
                         f"(remove the character, or restore the store from a backup or an export)", path=db.location)
    if damaged is not None:
        damaged.extend(broken.values())
    return [c for character_id, c in characters.items() if character_id not in broken]


def _character(row: Sequence[Any]) -> Character:
    character = Character(
        id=row[0], name=_text(row[1], "name"), description=_text(row[2], "description"),
        tags=fields.string_list(_json(row[3], list, "tags"), "tags", 10_000, fields.MAX_TEXT_LENGTH),
        fingerprint=_text(row[4], "fingerprint"), vector=_vector(row[6]), baseline=_json(row[7], dict, "baseline"),
        created_at=_text(row[8], "created_at"), updated_at=_text(row[9], "updated_at"))
    character.spaces.clear()  # filled from character_vectors
    return character


def _reference(r: Sequence[Any]) -> Reference:
    crop = None if r[15] is None else FaceCrop.from_stored(r[15], _json(r[14], list, "crop keypoints"))
    reference = Reference(
        id=r[1], sha256=_text(r[2], "sha256"), source_path=_text(r[3], "source path"),
        face_index=fields.face_index(r[4]), bbox=fields.bbox(_json(r[5], list, "bbox")),
        det_score=fields.number(r[6], "detection score"), quality=fields.number(r[7], "quality"),
        quality_report=_json(r[8], dict, "quality report"), pose=fields.pose(_json(r[9], dict, "pose")),
        fingerprint=_text(r[10], "fingerprint"), embedding=_vector(r[11]), flagged=bool(r[12]),
        added_at=_text(r[13], "added_at"), embeddings={}, crop=crop, has_crop=r[14] is not None)
    reference.embeddings.clear()  # filled from ref_embeddings
    return reference


def _checked_vector(db: StoreDatabase, blob: Any, label: str) -> np.ndarray:
    try:
        return _vector(blob)
    except StoreError as exc:
        raise StoreError(f"damaged row in the store: {label}: {exc.args[0]}; `castkeep verify` lists every "
                         f"problem", path=db.location) from None


def _space(v: Sequence[Any]) -> Space:
    return Space(_text(v[1], "fingerprint"), _vector(v[2]), _json(v[3], dict, "baseline"), int(v[4]))


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise StoreError(f"{what} is not text")
    return value


def _json(value: Any, kind: type, what: str) -> Any:
    """A JSON column of the expected kind (list or dict)."""
    try:
        decoded = json.loads(value)
    except (TypeError, ValueError, RecursionError):
        raise StoreError(f"{what} is not valid JSON") from None
    if not isinstance(decoded, kind):
        raise StoreError(f"{what} is not a JSON {'object' if kind is dict else 'list'}")
    return decoded


def _vector(blob: Any) -> np.ndarray:
    """A float32 vector column: a non-empty blob whose size is a multiple of 4 bytes."""
    if not isinstance(blob, bytes) or not blob or len(blob) % 4:
        size = f"{len(blob)}-byte blob" if isinstance(blob, bytes) else f"{type(blob).__name__} value"
        raise StoreError(f"vector is a {size}, not float32 values")
    return from_blob(blob)


def name_taken(db: StoreDatabase, key: str) -> bool:
    return db.execute("SELECT 1 FROM characters WHERE name_key = ?", (key,)).fetchone() is not None


def find(db: StoreDatabase, key: str) -> tuple[int, str] | None:
    """(id, name) of the character with name key `key`, without decoding its rows."""
    row = db.execute("SELECT id, name FROM characters WHERE name_key = ?", (key,)).fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def character_exists(db: StoreDatabase, character_id: int) -> bool:
    return db.execute("SELECT 1 FROM characters WHERE id = ?", (character_id,)).fetchone() is not None


def names(db: StoreDatabase) -> list[str]:
    return [row[0] for row in db.execute("SELECT name FROM characters ORDER BY name_key")]


def character_ids(db: StoreDatabase) -> set[int]:
    return {int(row[0]) for row in db.execute("SELECT id FROM characters")}


def count(db: StoreDatabase) -> int:
    return int(db.execute("SELECT COUNT(*) FROM characters").fetchone()[0])


def count_references(db: StoreDatabase) -> int:
    return int(db.execute("SELECT COUNT(*) FROM refs").fetchone()[0])


def names_by_id(db: StoreDatabase, ids: Sequence[int]) -> dict[int, tuple[str, str]]:
    """{id: (name, name_key)} for those of `ids` that exist."""
    found: dict[int, tuple[str, str]] = {}
    for start in range(0, len(ids), CHUNK):
        chunk = list(ids[start:start + CHUNK])
        found.update((r[0], (r[1], r[2])) for r in db.execute(
            f"SELECT id, name, name_key FROM characters WHERE id IN ({_placeholders(chunk)})", chunk))
    return found


def owners_of_photos(db: StoreDatabase, sha256s: Sequence[str]) -> list[tuple[str, int]]:
    """(name, id) of every character holding one of these photos as a reference."""
    return [(r[0], r[1]) for r in db.execute(
        "SELECT DISTINCT c.name, c.id FROM refs r JOIN characters c ON c.id = r.character_id "
        f"WHERE r.sha256 IN ({_placeholders(sha256s)})", list(sha256s))]


def character_vectors(db: StoreDatabase) -> tuple[np.ndarray, np.ndarray | None]:
    """(ids, vectors) of every character in the store's primary space, by id; vectors is None for
    an empty store (whose embedding size is not known yet)."""
    rows = db.execute("SELECT v.character_id, v.vector FROM character_vectors v JOIN meta m "
                      "ON m.key = 'fingerprint' AND v.fingerprint = m.value ORDER BY v.character_id").fetchall()
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    if not rows:
        return ids, None
    vectors = [_checked_vector(db, r[1], f"character id {r[0]}") for r in rows]
    if len({v.size for v in vectors}) > 1:
        raise StoreError("damaged rows in the store: its character vectors differ in size; `castkeep verify` "
                         "names them", path=db.location)
    return ids, np.stack(vectors)


def stored_dim(db: StoreDatabase, fingerprint: str) -> int | None:
    """The embedding size of the store's model: recorded with its fingerprint (meta `dim`), else
    (stores from before it was recorded) the size most of its vectors in that space have."""
    recorded = db.meta("dim")
    if recorded is not None and recorded.isdigit():
        return int(recorded)
    row = db.execute("SELECT length(vector) / 4 AS dim FROM character_vectors WHERE fingerprint = ? "
                     "GROUP BY dim ORDER BY COUNT(*) DESC LIMIT 1", (fingerprint,)).fetchone()
    return None if row is None else int(row[0])


def space_embeddings(db: StoreDatabase, character_id: int, fingerprint: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(embeddings, quality weights) of a character's references embedded in one space; None when
    none is."""
    rows = db.execute("SELECT e.vector, r.quality FROM ref_embeddings e JOIN refs r ON r.id = e.ref_id "
                      "WHERE r.character_id = ? AND e.fingerprint = ? ORDER BY r.id",
                      (character_id, fingerprint)).fetchall()
    if not rows:
        return None
    embeddings = [_checked_vector(db, r[0], f"character id {character_id}") for r in rows]
    if len({e.size for e in embeddings}) > 1:
        raise StoreError(f"damaged rows in the store: the embeddings of character id {character_id} differ in "
                         f"size; `castkeep verify` names them", path=db.location)
    return np.stack(embeddings), np.array([fields.number(r[1], "quality") for r in rows])


def reference_ids(db: StoreDatabase, character_id: int) -> set[int]:
    return {r[0] for r in db.execute("SELECT id FROM refs WHERE character_id = ?", (character_id,))}


def crop_headers(db: StoreDatabase) -> list[tuple[int, bytes, str]]:
    """(reference id, first 24 bytes of its crop, its keypoints JSON) of every stored crop, for
    `verify`: enough to check the PNG header without reading whole images."""
    return [(r[0], b"" if r[1] is None else bytes(r[1]), r[2]) for r in db.execute(
        "SELECT id, CAST(substr(crop, 1, 24) AS BLOB), crop_kps FROM refs "
        "WHERE crop IS NOT NULL OR crop_kps IS NOT NULL")]


# -- writing ---------------------------------------------------------------------------------------
def insert_character(db: StoreDatabase, character: Character, key: str, now: str) -> int:
    """Insert a character, its spaces and its references; returns its new id. The one place a
    character row is written, whether it came from photos (register) or from a file (import)."""
    row = db.execute(
        "INSERT INTO characters(name, name_key, description, tags, fingerprint, dim, vector, baseline, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (character.name, key, character.description, json.dumps(character.tags, ensure_ascii=False),
         character.fingerprint, int(character.vector.size), to_blob(character.vector),
         json.dumps(character.baseline), character.created_at or now, now)).fetchone()
    character_id = int(row[0])
    db.index_vector(character_id, character.vector)
    for space in character.spaces.values():
        write_space(db, character_id, space, now, primary=False)  # the row above is the primary's
    insert_references(db, character_id, character.references, now)
    return character_id


def insert_references(db: StoreDatabase, character_id: int, references: Sequence[Reference], now: str) -> None:
    """Insert references with their crops and their embeddings in every space they have."""
    for r in references:
        row = db.execute(
            "INSERT INTO refs(character_id, sha256, source_path, face_index, bbox, det_score, quality, "
            "quality_report, pose, fingerprint, embedding, flagged, added_at, crop, crop_kps) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (character_id, r.sha256, r.source_path, r.face_index, json.dumps(r.bbox), r.det_score,
             r.quality, json.dumps(r.quality_report), json.dumps(r.pose), r.fingerprint,
             to_blob(r.embedding), int(r.flagged), r.added_at or now,
             None if r.crop is None else r.crop.png, None if r.crop is None else json.dumps(r.crop.kps_list()))).fetchone()
        add_embeddings(db, [(int(row[0]), fingerprint, vector) for fingerprint, vector in r.embeddings.items()])


def add_embeddings(db: StoreDatabase, embeddings: Sequence[tuple[int, str, np.ndarray]]) -> None:
    """Store (reference id, fingerprint, embedding) rows, replacing an older one of the same space."""
    db.executemany("INSERT INTO ref_embeddings(ref_id, fingerprint, dim, vector) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT(ref_id, fingerprint) DO UPDATE SET dim = excluded.dim, vector = excluded.vector",
                   [(ref_id, fingerprint, int(vector.size), to_blob(vector))
                    for ref_id, fingerprint, vector in embeddings])


def set_crop(db: StoreDatabase, ref_id: int, crop: FaceCrop) -> None:
    db.execute("UPDATE refs SET crop = ?, crop_kps = ? WHERE id = ?",
               (crop.png, json.dumps(crop.kps_list()), ref_id))


def write_space(db: StoreDatabase, character_id: int, space: Space, now: str, *, primary: bool) -> None:
    """Store a character's vector and baseline in one space; the primary space also goes into the
    version-1 columns of `characters`."""
    db.execute("INSERT INTO character_vectors(character_id, fingerprint, dim, vector, baseline, updated_at) "
               "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(character_id, fingerprint) DO UPDATE SET dim = excluded.dim, "
               "vector = excluded.vector, baseline = excluded.baseline, updated_at = excluded.updated_at",
               (character_id, space.fingerprint, space.dim, to_blob(space.vector), json.dumps(space.baseline), now))
    if primary:
        db.execute("UPDATE characters SET vector = ?, baseline = ?, updated_at = ? WHERE id = ?",
                   (to_blob(space.vector), json.dumps(space.baseline), now, character_id))
        db.index_vector(character_id, space.vector)
    else:
        db.execute("UPDATE characters SET updated_at = ? WHERE id = ?", (now, character_id))


def delete_character(db: StoreDatabase, character_id: int) -> bool:
    """Delete a character (its references, spaces and embeddings go with it: ON DELETE CASCADE);
    False if it was gone."""
    return db.execute("DELETE FROM characters WHERE id = ?", (character_id,)).rowcount > 0
