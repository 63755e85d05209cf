"""`castkeep store copy SRC DST`: move a store between backends (a folder <-> PostgreSQL) row for row.

Every table's rows are copied with their ids and every column as stored (names, tags, dates, face
crops, keypoints, each reference's embeddings in every space, each character's vectors), and the
store's meta (model fingerprint, embedding size, generation, index kind, creation date); only the
search's derived state (the FAISS cache and its checksum, pgvector's column and index) is rebuilt at
the destination. The copy is one transaction at the destination, which must be empty; afterwards the
destination is verified and compared with the source table by table (`dump`).
"""

from __future__ import annotations

from typing import Any

from ..errors import StoreError
from .backend import StoreDatabase
from .vectors import from_blob

# Parents before children (foreign keys); every column both backends' version-2 schemas share.
TABLES: dict[str, tuple[str, ...]] = {
    "characters": ("id", "name", "name_key", "description", "tags", "fingerprint", "dim", "vector", "baseline",
                   "created_at", "updated_at"),
    "refs": ("id", "character_id", "sha256", "source_path", "face_index", "bbox", "det_score", "quality",
             "quality_report", "pose", "fingerprint", "embedding", "flagged", "added_at", "crop", "crop_kps"),
    "character_vectors": ("character_id", "fingerprint", "dim", "vector", "baseline", "updated_at"),
    "ref_embeddings": ("ref_id", "fingerprint", "dim", "vector"),
}
ORDER = {"characters": "id", "refs": "id", "character_vectors": "character_id, fingerprint",
         "ref_embeddings": "ref_id, fingerprint"}
# Derived from the rows (the search cache's bookkeeping) or the destination's own (its schema version).
LOCAL_META = {"index_generation", "index_sha256", "schema_version"}


def dump(db: StoreDatabase) -> dict[str, Any]:
    """Every stored row and meta value of a store (in one snapshot), bytes as bytes: two stores with equal
    dumps hold the same characters, references, crops and vectors bit for bit."""
    with db.guard(), db.snapshot():
        content: dict[str, Any] = {"meta": {k: v for k, v in db.execute("SELECT key, value FROM meta")
                                            if k not in LOCAL_META}}
        for table, columns in TABLES.items():
            content[table] = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in db.execute(
                f"SELECT {', '.join(columns)} FROM {table} ORDER BY {ORDER[table]}")]
    return content


def copy(source: Any, target: Any) -> dict[str, Any]:
    """Copy store `source` into the empty store `target` (both open Stores); returns a report (counts,
    the target's verify report). StoreError when the target holds characters or the copy differs."""
    if target.read_only:
        raise StoreError("the destination store is read-only", path=target.location)
    if len(target):
        raise StoreError(f"the destination store is not empty ({len(target)} characters): copy into a new "
                         f"store (a new folder, or a database without a castkeep store)", path=target.location)
    content = dump(source._db)
    db: StoreDatabase = target._db
    with db.guard():
        with db.write():
            if db.execute("SELECT COUNT(*) FROM characters").fetchone()[0]:
                raise StoreError("the destination store got characters meanwhile", path=target.location)
            for key, value in content["meta"].items():
                db.set_meta(key, value)
            db.set_meta("index_generation", "-1")  # whatever search cache the destination had is stale
            for table, columns in TABLES.items():
                marks = ", ".join("?" * len(columns))
                db.executemany(f"INSERT INTO {table}({', '.join(columns)}) VALUES ({marks})", content[table])
            primary = content["meta"].get("fingerprint")
            for character_id, fingerprint, _, vector, *_ in content["character_vectors"]:
                if fingerprint == primary:
                    db.index_vector(character_id, from_blob(vector))
            db.restore_ids()
    target._index.forget()
    target.rebuild_index()
    report = target.verify()
    copied = dump(db)
    if copied != content:
        differing = [table for table in content if copied.get(table) != content[table]]
        raise StoreError(f"the copy differs from the source in {', '.join(differing)}", path=target.location)
    return {"source": source.location, "destination": target.location, "characters": len(content["characters"]),
            "references": len(content["refs"]), "verify": report}
