"""Rows of the `characters` and `refs` tables <-> Character and Reference records.

Every SQL statement that touches those two tables is here; callers hold the transaction
(`Database.write()` / `snapshot()`) and the error mapping (`Database.guard()`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from .characters import Character, Reference
from .database import Database
from .vectors import from_blob, to_blob

CHUNK = 500  # SQLite caps the number of bound parameters per statement

_CHARACTER_COLUMNS = ("id, name, description, tags, fingerprint, dim, vector, baseline, created_at, "
                      "updated_at")
_REFERENCE_COLUMNS = ("character_id, id, sha256, source_path, face_index, bbox, det_score, quality, "
                      "quality_report, pose, fingerprint, embedding, flagged, added_at")


def _placeholders(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


# -- reading ---------------------------------------------------------------------------------------
def read_characters(db: Database, where: str = "", args: Sequence[Any] = ()) -> list[Character]:
    """Characters (with their references, oldest first) matching `where`, ordered by name key."""
    rows = db.execute(f"SELECT {_CHARACTER_COLUMNS} FROM characters {where} ORDER BY name_key",
                      args).fetchall()
    characters = {}
    for row in rows:
        characters[row[0]] = Character(
            id=row[0], name=row[1], description=row[2], tags=json.loads(row[3]),
            fingerprint=row[4], vector=from_blob(row[6]), baseline=json.loads(row[7]),
            created_at=row[8], updated_at=row[9])
    ids = list(characters)
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        for r in db.execute(f"SELECT {_REFERENCE_COLUMNS} FROM refs WHERE character_id IN "
                            f"({_placeholders(chunk)}) ORDER BY id", chunk):
            characters[r[0]].references.append(Reference(
                id=r[1], sha256=r[2], source_path=r[3], face_index=r[4], bbox=json.loads(r[5]),
                det_score=r[6], quality=r[7], quality_report=json.loads(r[8]), pose=json.loads(r[9]),
                fingerprint=r[10], embedding=from_blob(r[11]), flagged=bool(r[12]), added_at=r[13]))
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
    """(ids, vectors) of every character, by id; vectors is None for an empty store (whose
    embedding size is not known yet)."""
    rows = db.execute("SELECT id, vector FROM characters ORDER BY id").fetchall()
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    return ids, (np.stack([from_blob(r[1]) for r in rows]) if rows else None)


def reference_embeddings(db: Database, character_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, quality weights) of a character's stored references."""
    rows = db.execute("SELECT embedding, quality FROM refs WHERE character_id = ? ORDER BY id",
                      (character_id,)).fetchall()
    return np.stack([from_blob(r[0]) for r in rows]), np.array([r[1] for r in rows])


# -- writing ---------------------------------------------------------------------------------------
def insert_character(db: Database, character: Character, key: str, now: str) -> int:
    """Insert a character and its references; returns its new id. The one place a character row
    is written, whether it came from photos (register) or from a file (import)."""
    cursor = db.execute(
        "INSERT INTO characters(name, name_key, description, tags, fingerprint, dim, vector, baseline, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (character.name, key, character.description, json.dumps(character.tags, ensure_ascii=False),
         character.fingerprint, int(character.vector.size), to_blob(character.vector),
         json.dumps(character.baseline), character.created_at or now, now))
    character_id = cursor.lastrowid
    assert character_id is not None  # always set after an INSERT
    insert_references(db, character_id, character.references, now)
    return character_id


def insert_references(db: Database, character_id: int, references: Sequence[Reference], now: str) -> None:
    db.executemany(
        "INSERT INTO refs(character_id, sha256, source_path, face_index, bbox, det_score, quality, "
        "quality_report, pose, fingerprint, embedding, flagged, added_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(character_id, r.sha256, r.source_path, r.face_index, json.dumps(r.bbox), r.det_score,
          r.quality, json.dumps(r.quality_report), json.dumps(r.pose), r.fingerprint,
          to_blob(r.embedding), int(r.flagged), r.added_at or now) for r in references])


def update_vector(db: Database, character_id: int, vector: np.ndarray, baseline: dict[str, Any],
                  now: str) -> None:
    db.execute("UPDATE characters SET vector = ?, baseline = ?, updated_at = ? WHERE id = ?",
               (to_blob(vector), json.dumps(baseline), now, character_id))


def delete_character(db: Database, character_id: int) -> bool:
    """Delete a character (its references go with it: ON DELETE CASCADE); False if it was gone."""
    return db.execute("DELETE FROM characters WHERE id = ?", (character_id,)).rowcount > 0
