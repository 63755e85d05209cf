"""Schema versions of the store database: the version-1 tables, and the ordered steps that bring an
older store up to SCHEMA_VERSION.

A new store is created at version 1 and then migrated like any other, so the steps are the one
record of how the schema grew:

- version 1: characters (one vector each) and their references (one embedding each), one model.
- version 2: references keep their aligned face crop (PNG) and its keypoints, and characters hold
  embeddings per recogniser fingerprint (`ref_embeddings`, `character_vectors`); the store's meta
  fingerprint is the primary space, still mirrored in the version-1 columns.

`MIGRATIONS[v]` turns a version-v database into version v + 1; the steps run in order inside a
single write transaction at open, so a store is at its old version or at the new one, never in
between (SQLite's DDL is transactional). A store newer than this castkeep is refused rather than
guessed at.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import StoreError
from ..utils import utc_now
from .database import Database

SCHEMA_VERSION = 2

Migration = Callable[[Database], None]

SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS characters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '[]',
    fingerprint TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    baseline TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    character_id INTEGER NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
    sha256 TEXT NOT NULL,
    source_path TEXT NOT NULL,
    face_index INTEGER,
    bbox TEXT NOT NULL,
    det_score REAL NOT NULL,
    quality REAL NOT NULL,
    quality_report TEXT NOT NULL,
    pose TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    embedding BLOB NOT NULL,
    flagged INTEGER NOT NULL DEFAULT 0,
    added_at TEXT NOT NULL,
    UNIQUE (character_id, sha256)
);
CREATE INDEX IF NOT EXISTS refs_by_character ON refs(character_id);
CREATE INDEX IF NOT EXISTS refs_by_sha256 ON refs(sha256);
"""


# Version 1 -> 2. Existing embeddings and vectors are copied into the per-fingerprint tables; the
# references of a version-1 store have no crop (NULL): `reembed` re-reads their photos when it can.
SCHEMA_V2 = """
ALTER TABLE refs ADD COLUMN crop BLOB;
ALTER TABLE refs ADD COLUMN crop_kps TEXT;
CREATE TABLE ref_embeddings (
    ref_id INTEGER NOT NULL REFERENCES refs(id) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (ref_id, fingerprint)
) WITHOUT ROWID;
CREATE TABLE character_vectors (
    character_id INTEGER NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    baseline TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (character_id, fingerprint)
) WITHOUT ROWID;
INSERT INTO ref_embeddings(ref_id, fingerprint, dim, vector)
    SELECT id, fingerprint, length(embedding) / 4, embedding FROM refs;
INSERT INTO character_vectors(character_id, fingerprint, dim, vector, baseline, updated_at)
    SELECT id, fingerprint, dim, vector, baseline, updated_at FROM characters;
"""


def _run_script(db: Database, script: str) -> None:
    # One statement at a time through `execute`: executescript would COMMIT the open transaction.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def to_v2(db: Database) -> None:
    """Version 1 -> 2: face crops on references, embeddings per recogniser fingerprint."""
    _run_script(db, SCHEMA_V2)


# from_version -> the step to from_version + 1
MIGRATIONS: dict[int, Migration] = {1: to_v2}


def refuse_foreign(db: Database) -> None:
    """A database with tables but no `meta` table belongs to something else: leave it alone."""
    tables = db.tables()
    if tables and "meta" not in tables:
        raise StoreError("this database is not a castkeep store", path=db.path)


def prepare(db: Database) -> None:
    """Create a new store's tables, or migrate an older store to SCHEMA_VERSION; refuse a newer one.

    A current store is only read (read-only stores still open); anything else takes the write lock
    and looks again, since another process may have created or migrated the store meanwhile.
    """
    if _is_complete(db) and _version(db) == SCHEMA_VERSION:
        return
    if db.read_only:
        raise StoreError(f"store needs upgrading to schema version {SCHEMA_VERSION}, but it is read-only (its "
                         f"folder or database file cannot be written); open it once where it can be written",
                         path=db.path)
    with db.write():
        if not _is_complete(db):
            _create_v1(db)
        version = _version(db)
        while version < SCHEMA_VERSION:
            step = MIGRATIONS.get(version)
            if step is None:
                raise StoreError(f"store schema version {version} cannot be upgraded by this castkeep "
                                 f"(no migration to version {version + 1})", path=db.path)
            step(db)
            version += 1
            db.set_meta("schema_version", str(version))


def _is_complete(db: Database) -> bool:
    # A process killed while creating a store leaves no tables at all (the creation is one
    # transaction), but stay safe for files made by hand: the last table created is `refs`.
    return {"meta", "refs"} <= db.tables()


def _version(db: Database) -> int:
    """The stored schema version; StoreError when it is unreadable or newer than this castkeep's."""
    text = db.meta("schema_version")
    version = int(text) if text is not None and text.isdigit() else 0
    if version > SCHEMA_VERSION:
        raise StoreError(f"store schema version {version} is not supported by this castkeep (it reads "
                         f"versions up to {SCHEMA_VERSION}); a newer castkeep made this store: upgrade "
                         f"castkeep to open it", path=db.path)
    if version < 1:
        raise StoreError(f"store schema version {text} is not supported by this castkeep (expects "
                         f"{SCHEMA_VERSION})", path=db.path)
    return version


def _create_v1(db: Database) -> None:
    _run_script(db, SCHEMA_V1)
    defaults = {"schema_version": "1", "generation": "0", "index_kind": "exact",
                "created_at": utc_now()}
    db.executemany("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", defaults.items())
