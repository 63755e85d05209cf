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
from collections.abc import Sequence
from typing import Any

import numpy as np

from .characters import Character, Reference, Space
from .crops import FaceCrop
from .database import Database
from .vectors import from_blob, to_blob

CHUNK = 500  # SQLite caps the number of bound parameters per statement

_CHARACTER_COLUMNS = ("id, name, description, tags, fingerprint, dim, vector, baseline, created_at, "
                      "updated_at")
_REFERENCE_COLUMNS = ("character_id, id, sha256, source_path, face_index, bbox, det_score, quality, "
                      "quality_report, pose, fingerprint, embedding, flagged, added_at, crop_kps")


def _placeholders(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


# -- reading ---------------------------------------------------------------------------------------
def read_characters(db: Database, where: str = "", args: Sequence[Any] = (), *,
                    crops: bool = False) -> list[Character]:
    """Characters (with their references, oldest first, and every space) matching `where`, ordered
    by name key. Face crops (~150 kB each) are read only with `crops`; otherwise `has_crop` says
    whether there is one."""
    rows = db.execute(f"SELECT {_CHARACTER_COLUMNS} FROM characters {where} ORDER BY name_key",
                      args).fetchall()
    characters = {}
    for row in rows:
        characters[row[0]] = Character(
            id=row[0], name=row[1], description=row[2], tags=json.loads(row[3]),
            fingerprint=row[4], vector=from_blob(row[6]), baseline=json.loads(row[7]),
            created_at=row[8], updated_at=row[9])
        characters[row[0]].spaces.clear()  # filled from character_vectors below
    ids = list(characters)
    references: dict[int, Reference] = {}
    crop_column = "crop" if crops else "NULL"
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        marks = _placeholders(chunk)
        for r in db.execute(f"SELECT {_REFERENCE_COLUMNS}, {crop_column} FROM refs WHERE character_id IN "
                            f"({marks}) ORDER BY id", chunk):
            crop = None if r[15] is None else FaceCrop.from_stored(r[15], json.loads(r[14]))
            reference = Reference(
                id=r[1], sha256=r[2], source_path=r[3], face_index=r[4], bbox=json.loads(r[5]),
                det_score=r[6], quality=r[7], quality_report=json.loads(r[8]), pose=json.loads(r[9]),
                fingerprint=r[10], embedding=from_blob(r[11]), flagged=bool(r[12]), added_at=r[13],
                embeddings={}, crop=crop, has_crop=r[14] is not None)
            reference.embeddings.clear()  # filled from ref_embeddings below
            references[r[1]] = reference
            characters[r[0]].references.append(reference)
        # The primary space first, then the others by fingerprint.
        for e in db.execute("SELECT e.ref_id, e.fingerprint, e.vector FROM ref_embeddings e JOIN refs r "
                            f"ON r.id = e.ref_id WHERE r.character_id IN ({marks}) "
                            "ORDER BY e.ref_id, e.fingerprint != r.fingerprint, e.fingerprint", chunk):
            references[e[0]].embeddings[e[1]] = from_blob(e[2])
        for v in db.execute("SELECT v.character_id, v.fingerprint, v.vector, v.baseline, "
                            "(SELECT COUNT(*) FROM ref_embeddings e JOIN refs r ON r.id = e.ref_id "
                            " WHERE r.character_id = v.character_id AND e.fingerprint = v.fingerprint) "
                            "FROM character_vectors v JOIN characters c ON c.id = v.character_id "
                            f"WHERE v.character_id IN ({marks}) "
                            "ORDER BY v.character_id, v.fingerprint != c.fingerprint, v.fingerprint", chunk):
            characters[v[0]].spaces[v[1]] = Space(v[1], from_blob(v[2]), json.loads(v[3]), int(v[4]))
    return list(characters.values())


def name_taken(db: Database, key: str) -> bool:
    return db.execute("SELECT 1 FROM characters WHERE name_key = ?", (key,)).fetchone() is not None


def character_exists(db: Database, character_id: int) -> bool:
    return db.execute("SELECT 1 FROM characters WHERE id = ?", (character_id,)).fetchone() is not None


def names(db: Database) -> list[str]:
    return [row[0] for row in db.execute("SELECT name FROM characters ORDER BY name_key")]


def count(db: Database) -> int:
    return int(db.execute("SELECT COUNT(*) FROM characters").fetchone()[0])


def count_references(db: Database) -> int:
    return int(db.execute("SELECT COUNT(*) FROM refs").fetchone()[0])


def names_by_id(db: Database, ids: Sequence[int]) -> dict[int, tuple[str, str]]:
    """{id: (name, name_key)} for those of `ids` that exist."""
    found: dict[int, tuple[str, str]] = {}
    for start in range(0, len(ids), CHUNK):
        chunk = list(ids[start:start + CHUNK])
        found.update((r[0], (r[1], r[2])) for r in db.execute(
            f"SELECT id, name, name_key FROM characters WHERE id IN ({_placeholders(chunk)})", chunk))
    return found


def owners_of_photos(db: Database, sha256s: Sequence[str]) -> list[tuple[str, int]]:
    """(name, id) of every character holding one of these photos as a reference."""
    return [(r[0], r[1]) for r in db.execute(
        "SELECT DISTINCT c.name, c.id FROM refs r JOIN characters c ON c.id = r.character_id "
        f"WHERE r.sha256 IN ({_placeholders(sha256s)})", list(sha256s))]


def character_vectors(db: Database) -> tuple[np.ndarray, np.ndarray | None]:
    """(ids, vectors) of every character in the store's primary space, by id; vectors is None for
    an empty store (whose embedding size is not known yet)."""
    rows = db.execute("SELECT v.character_id, v.vector FROM character_vectors v JOIN meta m "
                      "ON m.key = 'fingerprint' AND v.fingerprint = m.value ORDER BY v.character_id").fetchall()
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    return ids, (np.stack([from_blob(r[1]) for r in rows]) if rows else None)


def space_embeddings(db: Database, character_id: int, fingerprint: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(embeddings, quality weights) of a character's references embedded in one space; None when
    none is."""
    rows = db.execute("SELECT e.vector, r.quality FROM ref_embeddings e JOIN refs r ON r.id = e.ref_id "
                      "WHERE r.character_id = ? AND e.fingerprint = ? ORDER BY r.id",
                      (character_id, fingerprint)).fetchall()
    if not rows:
        return None
    return np.stack([from_blob(r[0]) for r in rows]), np.array([r[1] for r in rows])


def reference_ids(db: Database, character_id: int) -> set[int]:
    return {r[0] for r in db.execute("SELECT id FROM refs WHERE character_id = ?", (character_id,))}


def crop_headers(db: Database) -> list[tuple[int, bytes, str]]:
    """(reference id, first 24 bytes of its crop, its keypoints JSON) of every stored crop, for
    `verify`: enough to check the PNG header without reading whole images."""
    return [(r[0], b"" if r[1] is None else bytes(r[1]), r[2]) for r in db.execute(
        "SELECT id, CAST(substr(crop, 1, 24) AS BLOB), crop_kps FROM refs "
        "WHERE crop IS NOT NULL OR crop_kps IS NOT NULL")]


# -- writing ---------------------------------------------------------------------------------------
def insert_character(db: Database, character: Character, key: str, now: str) -> int:
    """Insert a character, its spaces and its references; returns its new id. The one place a
    character row is written, whether it came from photos (register) or from a file (import)."""
    cursor = db.execute(
        "INSERT INTO characters(name, name_key, description, tags, fingerprint, dim, vector, baseline, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (character.name, key, character.description, json.dumps(character.tags, ensure_ascii=False),
         character.fingerprint, int(character.vector.size), to_blob(character.vector),
         json.dumps(character.baseline), character.created_at or now, now))
    character_id = cursor.lastrowid
    assert character_id is not None  # always set after an INSERT
    for space in character.spaces.values():
        write_space(db, character_id, space, now, primary=False)  # the row above is the primary's
    insert_references(db, character_id, character.references, now)
    return character_id


def insert_references(db: Database, character_id: int, references: Sequence[Reference], now: str) -> None:
    """Insert references with their crops and their embeddings in every space they have."""
    for r in references:
        cursor = db.execute(
            "INSERT INTO refs(character_id, sha256, source_path, face_index, bbox, det_score, quality, "
            "quality_report, pose, fingerprint, embedding, flagged, added_at, crop, crop_kps) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (character_id, r.sha256, r.source_path, r.face_index, json.dumps(r.bbox), r.det_score,
             r.quality, json.dumps(r.quality_report), json.dumps(r.pose), r.fingerprint,
             to_blob(r.embedding), int(r.flagged), r.added_at or now,
             None if r.crop is None else r.crop.png, None if r.crop is None else json.dumps(r.crop.kps_list())))
        assert cursor.lastrowid is not None
        add_embeddings(db, [(cursor.lastrowid, fingerprint, vector) for fingerprint, vector in r.embeddings.items()])


def add_embeddings(db: Database, embeddings: Sequence[tuple[int, str, np.ndarray]]) -> None:
    """Store (reference id, fingerprint, embedding) rows, replacing an older one of the same space."""
    db.executemany("INSERT OR REPLACE INTO ref_embeddings(ref_id, fingerprint, dim, vector) VALUES (?, ?, ?, ?)",
                   [(ref_id, fingerprint, int(vector.size), to_blob(vector))
                    for ref_id, fingerprint, vector in embeddings])


def set_crop(db: Database, ref_id: int, crop: FaceCrop) -> None:
    db.execute("UPDATE refs SET crop = ?, crop_kps = ? WHERE id = ?",
               (crop.png, json.dumps(crop.kps_list()), ref_id))


def write_space(db: Database, character_id: int, space: Space, now: str, *, primary: bool) -> None:
    """Store a character's vector and baseline in one space; the primary space also goes into the
    version-1 columns of `characters`."""
    db.execute("INSERT OR REPLACE INTO character_vectors(character_id, fingerprint, dim, vector, baseline, "
               "updated_at) VALUES (?, ?, ?, ?, ?, ?)",
               (character_id, space.fingerprint, space.dim, to_blob(space.vector), json.dumps(space.baseline), now))
    if primary:
        db.execute("UPDATE characters SET vector = ?, baseline = ?, updated_at = ? WHERE id = ?",
                   (to_blob(space.vector), json.dumps(space.baseline), now, character_id))
    else:
        db.execute("UPDATE characters SET updated_at = ? WHERE id = ?", (now, character_id))


def delete_character(db: Database, character_id: int) -> bool:
    """Delete a character (its references, spaces and embeddings go with it: ON DELETE CASCADE);
    False if it was gone."""
    return db.execute("DELETE FROM characters WHERE id = ?", (character_id,)).rowcount > 0
